"""Training LearnedMG on this machine: a short run of the shipped recipe, then PCG
iterations against GMG on held-out geometries.

Run::

    pytest benchmarks/bench_learned_mg.py --benchmark-only --benchmark-json /tmp/lmg.json

Training: ``train_learned_mg`` with the recipe of ``neurosolve train lmg`` (the first of
the three stages the shipped ``nmg2d`` / ``nmg3d`` weights were made with; the later two
fine-tune at 256^2 / 64^3 with a plain finest level, see their manifests: smoother
weights and interpolation
strength factors, the energy loss after 3 PCG iterations, the geometry families of
:data:`neurosolve.cli_train.LMG_KINDS` ``pool, plates, inclusions, layered``) but fewer
steps: in 2-D two grids per family at 64^2, 600 steps of batch 6; in 3-D one per family
at 32^3, 150 steps of batch 4; seed 0. ``NEUROSOLVE_BENCH_LMG_STEPS=S``,
``NEUROSOLVE_BENCH_LMG_PCG_STEPS=K`` and ``NEUROSOLVE_BENCH_LMG_INTERPOLATION=0`` change
the recipe. Evaluation: :func:`neurosolve.neural.mg_evaluation.iteration_table` (PCG to
1e-8 on unseen seeds of five families) at 128^2 (2-D) and 32^3 (3-D). ``extra_info``:
training seconds, first and final loss, the rows, and ``iteration_ratio`` (sum of
LearnedMG's iterations over GMG's: below 1, LearnedMG takes fewer).
"""

from __future__ import annotations

import os
import time

import pytest

torch = pytest.importorskip("torch")

from neurosolve.cli_train import lmg_training_grid  # noqa: E402
from neurosolve.neural.mg_evaluation import iteration_table  # noqa: E402
from neurosolve.neural.mg_weights import train_learned_mg  # noqa: E402

KINDS = ("pool", "plates", "inclusions", "layered")
# dim: (training size, seeds per family, steps, batch, evaluation size)
RECIPES = {2: (64, (0, 1), 600, 6, 128), 3: (32, (0,), 150, 4, 32)}


@pytest.mark.parametrize("dim", [2, 3])
def test_learned_mg_vs_gmg(benchmark, dim):
    torch.set_num_threads(1)
    n_train, seeds, steps, batch, size = RECIPES[dim]
    train = [lmg_training_grid(k, (n_train,) * dim, s) for k in KINDS for s in seeds]
    interpolation = os.environ.get("NEUROSOLVE_BENCH_LMG_INTERPOLATION", "1") == "1"
    pcg_steps = int(os.environ.get("NEUROSOLVE_BENCH_LMG_PCG_STEPS", "3"))
    steps = int(os.environ.get("NEUROSOLVE_BENCH_LMG_STEPS", steps))
    box = {}

    def run():
        t = time.perf_counter()
        box["net"], box["res"] = train_learned_mg(train, steps=steps, batch=batch,
                                                  progress=False, interpolation=interpolation,
                                                  pcg_steps=pcg_steps)
        box["train_s"] = time.perf_counter() - t

    benchmark.pedantic(run, rounds=1, iterations=1)
    net, res = box["net"], box["res"]
    rows = iteration_table(net, size)
    benchmark.extra_info.update(train_s=round(box["train_s"], 1), interpolation=interpolation,
                                pcg_steps=pcg_steps, steps=steps,
                                loss_first=res.losses[0], loss_final=res.final_loss,
                                rows=rows,
                                iteration_ratio=round(sum(r["lmg"] for r in rows)
                                                      / sum(r["gmg"] for r in rows), 3))
