"""LearnedMG (GMG with learned per-cell smoother weights) against GMG: PCG iterations on
held-out geometries, after a short training run on this machine.

Run::

    pytest benchmarks/bench_learned_mg.py --benchmark-only --benchmark-json /tmp/lmg.json

Training: ``train_learned_mg`` on six 64^2 grids (two pools with obstacles, two slit plates,
two high-contrast inclusion fields with Dirichlet walls), 600 steps of batch 6, seed 0
(about a minute on one core). ``NEUROSOLVE_BENCH_LMG_CORRECTION=1`` also learns the
per-cell correction scaling. Evaluation: PCG to rtol 1e-8 from x0 = 0 with ``GMG`` and with
``LearnedMG`` on unseen seeds of the same families at 64^2 and 128^2, blob right-hand
sides. ``extra_info``: per case the iterations of both and ``iteration_ratio``
(LearnedMG / GMG: below 1, LearnedMG takes fewer), plus setup and solve times of both.
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


def _grid(kind, n, seed):
    if kind == "pool":
        return P.pool((n, n), obstacles=2, seed=seed)
    if kind == "plates":
        return P.plates((n, n), seed=seed)
    return P.box((n, n), walls="dirichlet").with_coefficients(P.inclusions_field((n, n), seed=seed))


KINDS = ("pool", "plates", "inclusions")


def test_learned_mg_vs_gmg(benchmark):
    torch.set_num_threads(1)
    train = [_grid(k, 64, s) for k in KINDS for s in (0, 1)]
    correction = os.environ.get("NEUROSOLVE_BENCH_LMG_CORRECTION") == "1"
    box = {}

    def run():
        t = time.perf_counter()
        box["net"], box["res"] = train_learned_mg(train, steps=600, batch=6, progress=False,
                                                  correction=correction)
        box["train_s"] = time.perf_counter() - t

    benchmark.pedantic(run, rounds=1, iterations=1)
    net, res = box["net"], box["res"]
    rows = []
    for kind in KINDS:
        for n in (64, 128):
            g = _grid(kind, n, 11)
            prob = g.system(P.rhs_blobs(g, seed=3))
            row = {"case": f"{kind} {n}^2"}
            for name, make in (("gmg", lambda: GMG(g)), ("lmg", lambda: LearnedMG(g, net))):
                t = time.perf_counter()
                M = make()
                row[f"{name}_setup_s"] = round(time.perf_counter() - t, 4)
                out = ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=M), progress=False)
                row[name] = out.n_iter if out.success else None
                row[f"{name}_solve_s"] = round(out.stats["wall_time"], 4)
            row["iteration_ratio"] = round(row["lmg"] / row["gmg"], 3) if row["lmg"] and row["gmg"] else None
            rows.append(row)
    benchmark.extra_info.update(train_s=round(box["train_s"], 1), correction=correction,
                                loss_first=res.losses[0], loss_final=res.final_loss,
                                cases=rows)
