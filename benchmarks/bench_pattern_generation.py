"""Pattern generation on the bundled datasets against Adam at the same width.

Goal (issue 12): on digits 2-vs-8 and breast_cancer, the convex objective reached by
``ConvexReLU(..., patterns="generate")`` is at most the best of 5 Adam runs of the network
width it produces (same data, loss, weight decay; ``train_nonconvex``, 2000 full-batch
epochs). ``extra_info``: status, rounds, patterns, objective, ``certificate["global"]`` and
``global_max_over_beta`` (the certificate's ``global_ratio``), width, the five Adam
objectives, and ``objective_ratio_vs_adam`` = ours / best Adam (below 1: ours is better).

Two starts: ``sampled`` (``patterns="generate"``: 16 sampled patterns) and ``adam`` (the
patterns of one width-64 Adam run with seed 100, not one of the five compared seeds,
through ``patterns="from_network"``; its training time is inside the timed call).

Run (15-25 minutes per case on one core; ``-k "not sampled"`` for the Adam start only)::

    pytest benchmarks/bench_pattern_generation.py --benchmark-only -o addopts=""
"""

from __future__ import annotations

import pytest

import neurosolve as ns
from neurosolve.demos.convex_relu import _datasets
from neurosolve.problems import ConvexReLU

DATASETS = {name: (Xtr, ytr) for name, Xtr, _, ytr, _ in _datasets()}


@pytest.mark.parametrize("start", ["sampled", "adam"])
@pytest.mark.parametrize("name", list(DATASETS))
def test_generation_vs_adam(benchmark, name, start):
    from threadpoolctl import threadpool_limits

    from neurosolve.neural.relu_network import train_nonconvex
    from neurosolve.solvers import ADMM, PatternGeneration

    X, y = DATASETS[name]
    beta = 1e-2 * len(y)
    solver = PatternGeneration(inner=ADMM(rtol=1e-4, maxiter=20_000), max_rounds=20)
    out = {}

    def run():
        with threadpool_limits(1):
            prob = ConvexReLU(X, y, beta=beta, loss="squared", patterns="generate", seed=0)
            if start == "adam":
                net = train_nonconvex(prob, width=64, epochs=2000, lr=1e-2, seed=100)
                prob = ConvexReLU(X, y, beta=beta, loss="squared", patterns="from_network",
                                  network=net)
            out["prob"], out["res"] = prob, ns.solve(prob, solver)

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    prob, res = out["prob"], out["res"]
    c = res.certificate
    width = int(c["active_neurons"])
    adam = [prob.nc_objective(train_nonconvex(prob, width=width, epochs=2000, lr=1e-2, seed=s))
            for s in range(5)]
    benchmark.extra_info.update(
        status=res.status.name, rounds=res.stats["rounds"], patterns=prob.P,
        objective=c["objective"], global_certificate=c["global"],
        global_max_over_beta=c["global_ratio"], width=width, adam_objectives=adam,
        objective_ratio_vs_adam=c["objective"] / min(adam))
