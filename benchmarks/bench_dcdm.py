"""DCDM benchmarks: the shipped networks vs CG, IC(0)-PCG, AMG-PCG, GMG-PCG and the FFT floor.

Run::

    pytest benchmarks/bench_dcdm.py --benchmark-only --benchmark-disable-gc
    NEUROSOLVE_BENCH_LARGE=1 pytest benchmarks/bench_dcdm.py --benchmark-only   # + 64^3
    NEUROSOLVE_BENCH_XL=1 ...                                                   # + 128^3

Problems (unseen by the networks), smoke-like blob right-hand side, x0 = 0: ``solids``, a
closed box (solid walls) with three random solid ellipsoids; ``pool``, a box with solid
walls, three random solid ellipsoids and a free surface (air above 80% of the height; air
cells never occur in the shipped networks' training data);
and the empty Neumann box (the paper's in-distribution "smoke plume" case) with the exact
DCT solve as the floor. All solvers stop at the same relative residual (1e-4 and 1e-6).

``extra_info``: iterations, SpMVs (``matvecs``), network evaluations, setup time,
certificate and, for DCDM (``peer`` = plain CG), ``iteration_ratio_vs_cg`` (DCDM
iterations / CG iterations) and ``time_ratio`` (DCDM time / CG time, measured in the same
run); both ours / peer, < 1: DCDM is better. On the empty box, ``<solver>_ratio_vs_fft`` is
that solver's time / the FFT floor's. On a CPU a network
evaluation costs ~100x an SpMV, so the iteration ratio is the figure to quote there;
wall-time ratios are meaningful on a GPU (``torch.cuda.synchronize`` inside the timer).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch

import neurosolve as ns
from neurosolve.problems import poisson as P
from neurosolve.solvers import preconditioners as PC
from neurosolve.solvers.fast_poisson import fast_poisson_solve

LARGE = os.environ.get("NEUROSOLVE_BENCH_LARGE", "") == "1"
XL = os.environ.get("NEUROSOLVE_BENCH_XL", "") == "1"
SHAPES = [(256, 256), (32, 32, 32)] + ([(64, 64, 64)] if LARGE or XL else []) \
    + ([(128, 128, 128)] if XL else [])
RTOLS = [1e-4, 1e-6]
MAXITER = 5000
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_TIMES: dict = {}


def _id(shape):
    return "x".join(map(str, shape))


CASES = ["solids", "pool"]


@functools.lru_cache(maxsize=None)
def _case(shape, case="pool"):
    if case == "solids":
        grid = P.ellipsoids(shape, n=3, seed=2024)
    else:
        grid = P.pool(shape, depth=0.8, obstacles=3, seed=2024)
    return grid, grid.system(P.rhs_blobs(grid, seed=0))


@pytest.fixture(scope="module", autouse=True)
def _setup():
    try:
        from threadpoolctl import threadpool_limits
        ctx = threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover
        ctx = None
    for shape in ((16, 16), (8, 8, 8)):  # warm numba kernels and the networks
        grid, prob = _case(shape)
        for M in (None, PC.IC0(prob), PC.GMG(grid)):
            ns.solve(prob, ns.solvers.CG(rtol=1e-4, M=M))
        ns.solve(prob, ns.solvers.DCDM(rtol=1e-4, maxiter=2, device=DEVICE))
    yield
    if ctx is not None:
        ctx.restore_original_limits()


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _record(benchmark, res, **extra):
    benchmark.extra_info.update({
        "iterations": int(res.n_iter),
        "status": res.status.name,
        "relative_residual": float(res.certificate["relative_residual"]),
        "matvecs": int(res.stats.get("matvecs", 0)),
        "network_evaluations": int(res.stats.get("network_evaluations", 0)),
        **extra,
    })


def _once(benchmark, fn):
    def timed():
        out = fn()
        _sync()
        return out
    return benchmark.pedantic(timed, rounds=1, warmup_rounds=0, iterations=1)


@pytest.mark.benchmark(group="dcdm-obstacles")
@pytest.mark.parametrize("rtol", RTOLS)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("case", CASES)
def test_cg(benchmark, case, shape, rtol):
    grid, prob = _case(shape, case)
    res = _once(benchmark, lambda: ns.solve(prob, ns.solvers.CG(rtol=rtol, maxiter=MAXITER)))
    _TIMES["cg", case, shape, rtol] = (benchmark.stats.stats.min, res.n_iter)
    _record(benchmark, res)


@pytest.mark.benchmark(group="dcdm-obstacles")
@pytest.mark.parametrize("rtol", RTOLS)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("case", CASES)
def test_dcdm(benchmark, case, shape, rtol):
    grid, prob = _case(shape, case)
    solver = ns.solvers.DCDM(rtol=rtol, maxiter=MAXITER, device=DEVICE)
    res = _once(benchmark, lambda: ns.solve(prob, solver))
    t_cg, it_cg = _TIMES.get(("cg", case, shape, rtol), (None, None))
    _record(benchmark, res, guard_steps=int(res.stats.get("guard_steps", 0)),
            network_switched_off_at=res.stats.get("network_switched_off_at"),
            fallbacks=int(res.stats.get("fallbacks", 0)), device=DEVICE,
            cg_iterations=it_cg, peer="CG",
            iteration_ratio_vs_cg=None if not it_cg else res.n_iter / it_cg,
            time_ratio=None if t_cg is None else benchmark.stats.stats.min / t_cg)


@pytest.mark.benchmark(group="dcdm-obstacles")
@pytest.mark.parametrize("kind", ["ic0", "amg", "gmg"])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("case", CASES)
def test_pcg(benchmark, case, shape, kind):
    """Setup + solve at rtol 1e-6 (the multigrid methods barely change between 1e-4 and 1e-6)."""
    grid, prob = _case(shape, case)
    make = {"ic0": lambda: PC.IC0(prob), "amg": lambda: PC.AMG(prob, kind="sa", max_coarse=500),
            "gmg": lambda: PC.GMG(grid)}[kind]

    def run():
        M = make()
        return M, ns.solve(prob, ns.solvers.CG(rtol=1e-6, M=M, maxiter=MAXITER))

    M, res = _once(benchmark, run)
    _record(benchmark, res, setup_s=M.setup_time)


@pytest.mark.benchmark(group="dcdm-box")
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_fft_floor_and_dcdm_on_the_empty_box(benchmark, shape):
    """The paper's in-distribution case (empty Neumann box): exact DCT solve as the floor."""
    grid = P.box(shape)
    b = P.rhs_blobs(grid, seed=0)
    x = _once(benchmark, lambda: fast_poisson_solve(grid, b))
    floor = benchmark.stats.stats.min
    prob = grid.system(b)
    extra = {"relative_residual": float(np.linalg.norm(grid.matrix() @ x - b))}
    import time

    for name, solver in (("cg", ns.solvers.CG(rtol=1e-6, maxiter=MAXITER)),
                         ("dcdm", ns.solvers.DCDM(rtol=1e-6, maxiter=MAXITER, device=DEVICE))):
        t = time.perf_counter()
        res = ns.solve(prob, solver)
        _sync()
        extra[f"{name}_iterations"] = int(res.n_iter)
        extra[f"{name}_ratio_vs_fft"] = (time.perf_counter() - t) / floor
    benchmark.extra_info.update(extra)
