"""LearnedMG (GMG with learned per-cell smoother weights) against GMG: PCG iterations on
held-out geometries, after a short training run on this machine.

Run::

    pytest benchmarks/bench_learned_mg.py --benchmark-only --benchmark-json /tmp/lmg.json

Training (``RECIPES``): ``train_learned_mg`` in 2-D on six 64^2 grids (two pools with
obstacles, two slit plates, two high-contrast inclusion fields with Dirichlet walls), 600
steps of batch 6 (about a minute on one core); in 3-D on three 32^3 grids (one of each),
150 steps of batch 3 (about two minutes); seed 0. ``NEUROSOLVE_BENCH_LMG_INTERPOLATION=1``
also learns the interpolation strength factors. Evaluation: PCG to rtol 1e-8 from x0 = 0
with ``GMG`` and with ``LearnedMG`` on unseen seeds of the same families (64^2 and 128^2;
32^3 and 64^3), blob right-hand sides. ``NEUROSOLVE_BENCH_LMG_PCG_STEPS=K`` trains with
the K-step PCG loss, ``NEUROSOLVE_BENCH_LMG_STEPS=S`` changes the number of steps. ``extra_info``: per case the iterations of both
and ``iteration_ratio`` (LearnedMG / GMG: below 1, LearnedMG takes fewer), plus setup
and solve times of both.
"""

from __future__ import annotations

import os
import time

import pytest

torch = pytest.importorskip("torch")

import neurosolve as ns  # noqa: E402
from neurosolve.neural.mg_weights import train_learned_mg  # noqa: E402
from neurosolve.problems import poisson as P  # noqa: E402
from neurosolve.solvers.preconditioners import GMG, LearnedMG  # noqa: E402


def _grid(kind, n, seed, dim=2):
    shape = (n,) * dim
    if kind == "pool":
        return P.pool(shape, obstacles=2, seed=seed)
    if kind == "plates":
        return P.plates(shape, seed=seed)
    return P.box(shape, walls="dirichlet").with_coefficients(P.inclusions_field(shape, seed=seed))


KINDS = ("pool", "plates", "inclusions")


# dim: (training size, seeds per family, steps, batch, evaluation sizes)
RECIPES = {2: (64, (0, 1), 600, 6, (64, 128)), 3: (32, (0,), 150, 3, (32, 64))}


@pytest.mark.parametrize("dim", [2, 3])
def test_learned_mg_vs_gmg(benchmark, dim):
    torch.set_num_threads(1)
    n_train, seeds, steps, batch, sizes = RECIPES[dim]
    train = [_grid(k, n_train, s, dim) for k in KINDS for s in seeds]
    interpolation = os.environ.get("NEUROSOLVE_BENCH_LMG_INTERPOLATION") == "1"
    pcg_steps = int(os.environ.get("NEUROSOLVE_BENCH_LMG_PCG_STEPS", "1"))
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
    warm = _grid(KINDS[0], sizes[0], 11, dim)  # JIT and torch warm-up for both sides
    for M in (GMG(warm), LearnedMG(warm, net)):
        ns.solve(warm.system(P.rhs_blobs(warm, seed=3)), ns.solvers.CG(rtol=1e-8, M=M),
                 progress=False)
    rows = []
    for kind in KINDS:
        for n in sizes:
            g = _grid(kind, n, 11, dim)
            prob = g.system(P.rhs_blobs(g, seed=3))
            row = {"case": f"{kind} {n}^{dim}"}
            for name, make in (("gmg", lambda: GMG(g)), ("lmg", lambda: LearnedMG(g, net))):
                t = time.perf_counter()
                M = make()
                row[f"{name}_setup_s"] = round(time.perf_counter() - t, 4)
                out = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M), progress=False)
                row[name] = out.n_iter if out.success else None
                row[f"{name}_solve_s"] = round(out.stats["wall_time"], 4)
            row["iteration_ratio"] = round(row["lmg"] / row["gmg"], 3) if row["lmg"] and row["gmg"] else None
            rows.append(row)
    benchmark.extra_info.update(train_s=round(box["train_s"], 1), interpolation=interpolation,
                                pcg_steps=pcg_steps, steps=steps,
                                loss_first=res.losses[0], loss_final=res.final_loss,
                                cases=rows)
