"""Krylov family benchmarks: CG, PCG preconditioners and the FFT floor on Poisson grids.

Run::

    pytest benchmarks/bench_cg.py --benchmark-only --benchmark-disable-gc
    NEUROSOLVE_BENCH_LARGE=1 pytest benchmarks/bench_cg.py --benchmark-only ...   # + 512^2, 128^3

Problem: a solid sphere (disk) obstacle in a box with Neumann walls and a Dirichlet (air)
top face, a smoke-like blob right-hand side, x0 = 0, relative tolerance 1e-6. Peers run
on the same instance in the same run, with BLAS limited to one thread for everyone (see
``_single_thread_blas``). Our solves run under the ``convergence`` fixture of
:mod:`neurosolve.pytest_plugin`, so ``extra_info`` holds its convergence facts (iterations,
matvecs, status, certificate, residual history, asymptotic ``rate``, time per iteration)
plus ``relative_residual``, ``peer`` and ratios in the report's convention
(:mod:`neurosolve.bench_report`): ``*_ratio`` / ``*ratio_vs_<peer>`` = ours / peer
(best-of-rounds wall times, measured side by side; < 1: we are faster).

Groups:

* ``cg``: our CG (numba kernels; CSR and matrix-free stencil) vs ``scipy.sparse.linalg.cg``;
  ``per_iteration_ratio`` is the goal metric (time per iteration, ours / scipy).
* ``amg``: our PCG + :class:`AMG` (setup + solve) vs pyamg's own ``ml.solve(accel="cg")``.
* ``mg``: PCG with :class:`GMG` vs PCG with :class:`AMG` (SA) and IC(0), setup + solve.
* ``fft``: the exact DST solve of the empty Dirichlet box vs GMG-PCG on the same box.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import neurosolve as ns
from neurosolve.problems import poisson as P
from neurosolve.solvers import preconditioners as PC
from neurosolve.solvers.fast_poisson import fast_poisson_solve

LARGE = os.environ.get("NEUROSOLVE_BENCH_LARGE", "") == "1"
SHAPES = [(256, 256), (64, 64, 64)] + ([(512, 512), (128, 128, 128)] if LARGE else [])
RTOL = 1e-6
MAXITER = 5000
_TIMES: dict = {}   # best times of earlier benchmarks in this run, for ratios


def _id(shape):
    return "x".join(map(str, shape))


def _rounds(shape):
    big = int(np.prod(shape)) > 300_000
    return dict(rounds=1, warmup_rounds=0) if big else dict(rounds=3, warmup_rounds=1)


@functools.lru_cache(maxsize=None)
def _case(shape):
    top = {"y+": "dirichlet"} if len(shape) == 2 else {"z+": "dirichlet"}
    grid = P.sphere(shape, walls=top)
    b = P.rhs_blobs(grid, seed=0)
    prob = grid.system(b)
    A = prob.A.matrix
    fluid = np.flatnonzero(grid.fluid.ravel())
    A_fluid = A[fluid][:, fluid].tocsr()
    return grid, b, prob, A, fluid, A_fluid


@pytest.fixture(scope="module", autouse=True)
def _single_thread_blas():
    """One BLAS thread for ours and the peers alike. On the shared 2-core machine a
    threaded OpenBLAS ``ddot`` of 32k entries was measured at ~20 ms under load (10 us on
    one thread), which made every Krylov timing (scipy's and ours) a measure of thread
    contention instead of the method."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module", autouse=True)
def _warm_numba(_single_thread_blas):
    """Compile every kernel once on a tiny grid so no timing includes compilation."""
    for shape in ((12, 12), (8, 8, 8)):
        grid = P.sphere(shape, walls="dirichlet")
        prob = grid.system(P.rhs_blobs(grid))
        for M in (None, PC.IC0(prob), PC.GMG(grid)):
            ns.solve(prob, ns.solvers.CG(rtol=1e-6, M=M), backend="numba")
        ns.solve(grid.system(prob.b, matrix_free=True), ns.solvers.CG(rtol=1e-6), backend="numba")
        fast_poisson_solve(P.box(shape, walls="dirichlet"), np.ones(int(np.prod(shape))))


def _best(fn, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _scipy_cg(A, b, M=None):
    its = []
    x, info = spla.cg(A, b, rtol=RTOL, atol=0.0, M=M, maxiter=MAXITER,
                      callback=lambda xk: its.append(1))
    return x, info, len(its)


def _record(benchmark, res, **extra):
    """Our flat keys (kept from before the plugin) next to the plugin's facts."""
    benchmark.extra_info.update({
        "iterations": int(res.n_iter),
        "status": res.status.name,
        "relative_residual": float(res.certificate["relative_residual"]),
        **extra,
    })


# -- cg: ours vs scipy --------------------------------------------------------------------

@pytest.mark.benchmark(group="cg")
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_cg_scipy(benchmark, shape):
    grid, b, prob, A, *_ = _case(shape)
    x, info, its = benchmark.pedantic(lambda: _scipy_cg(A, b), **_rounds(shape))
    benchmark.extra_info.update({"iterations": its, "info": info,
                                 "relative_residual": float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))})
    _TIMES["scipy_cg", shape] = (benchmark.stats.stats.min, its)


@pytest.mark.benchmark(group="cg")
@pytest.mark.parametrize("matrix_free", [False, True], ids=["csr", "stencil"])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_cg_ours(benchmark, convergence, shape, matrix_free):
    grid, b, prob, A, *_ = _case(shape)
    if matrix_free:
        prob = grid.system(b, matrix_free=True)
    solver = ns.solvers.CG(rtol=RTOL, maxiter=MAXITER)
    res = convergence(prob, solver, backend="numba", **_rounds(shape))
    ours = benchmark.stats.stats.min
    if ("scipy_cg", shape) in _TIMES:
        peer, peer_its = _TIMES["scipy_cg", shape]
    else:  # run alone: measure the peer here
        peer, (_, _, peer_its) = _best(lambda: _scipy_cg(A, b), 2)
    _record(benchmark, res, peer="scipy cg", peer_iterations=peer_its, time_ratio=ours / peer,
            per_iteration_ratio=(ours / res.n_iter) / (peer / peer_its),
            ms_per_iteration=1e3 * ours / res.n_iter, scipy_ms_per_iteration=1e3 * peer / peer_its)


# -- amg: our PCG + AMG vs pyamg's own solve ---------------------------------------------

def _pyamg_solve(A_fluid, b_fluid, kind):
    import pyamg

    build = pyamg.smoothed_aggregation_solver if kind == "sa" else pyamg.ruge_stuben_solver
    ml = build(A_fluid, max_coarse=500)
    res = []
    x = ml.solve(b_fluid, tol=RTOL, maxiter=MAXITER, accel="cg", residuals=res)
    return x, len(res) - 1


@pytest.mark.benchmark(group="amg")
@pytest.mark.parametrize("kind", ["sa", "rs"])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_pyamg_own_solve(benchmark, shape, kind):
    pytest.importorskip("pyamg")
    grid, b, prob, A, fluid, A_fluid = _case(shape)
    x, its = benchmark.pedantic(lambda: _pyamg_solve(A_fluid, b[fluid], kind), **_rounds(shape))
    rel = float(np.linalg.norm(b[fluid] - A_fluid @ x) / np.linalg.norm(b))
    benchmark.extra_info.update({"iterations": its, "relative_residual": rel})
    _TIMES["pyamg", kind, shape] = (benchmark.stats.stats.min, its)


@pytest.mark.benchmark(group="amg")
@pytest.mark.parametrize("kind", ["sa", "rs"])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_pcg_amg_ours(benchmark, convergence, shape, kind):
    pytest.importorskip("pyamg")
    grid, b, prob, A, fluid, A_fluid = _case(shape)

    def run():
        M = PC.AMG(prob, kind=kind, max_coarse=500)
        return M, ns.solve(prob, ns.solvers.CG(rtol=RTOL, maxiter=MAXITER, M=M), backend="numba")

    M, res = convergence(run, **_rounds(shape))
    ours = benchmark.stats.stats.min
    peer, peer_its = _TIMES.get(("pyamg", kind, shape)) or (None, None)
    _record(benchmark, res, setup_s=M.setup_time, peer=f"pyamg {kind}", pyamg_iterations=peer_its,
            time_ratio=None if peer is None else ours / peer)
    _TIMES["pcg_amg", kind, shape] = (ours, res.n_iter, M.setup_time)


# -- mg: GMG-PCG vs AMG-PCG vs IC0-PCG (setup + solve) --------------------------------------

@pytest.mark.benchmark(group="mg")
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_pcg_ic0(benchmark, convergence, shape):
    grid, b, prob, *_ = _case(shape)

    def run():
        M = PC.IC0(prob)
        return M, ns.solve(prob, ns.solvers.CG(rtol=RTOL, maxiter=MAXITER, M=M), backend="numba")

    M, res = convergence(run, **_rounds(shape))
    _record(benchmark, res, setup_s=M.setup_time)


@pytest.mark.benchmark(group="mg")
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_pcg_gmg(benchmark, convergence, shape):
    grid, b, prob, A, fluid, A_fluid = _case(shape)

    def run():
        M = PC.GMG(grid)
        return M, ns.solve(prob, ns.solvers.CG(rtol=RTOL, maxiter=MAXITER, M=M), backend="numba")

    M, res = convergence(run, **_rounds(shape))
    ours = benchmark.stats.stats.min
    extra = {"setup_s": M.setup_time, "levels": len(M.levels)}
    for kind in ("sa", "rs"):
        if ("pcg_amg", kind, shape) in _TIMES:
            t, its, setup = _TIMES["pcg_amg", kind, shape]
            extra[f"amg_{kind}_iterations"] = its
            extra[f"ratio_vs_amg_{kind}"] = ours / t
        if ("pyamg", kind, shape) in _TIMES:
            extra[f"ratio_vs_pyamg_{kind}"] = ours / _TIMES["pyamg", kind, shape][0]
    _record(benchmark, res, **extra)


# -- fft floor on the empty box --------------------------------------------------------------

@pytest.mark.benchmark(group="fft")
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_fft_floor(benchmark, shape):
    grid = P.box(shape, walls="dirichlet")
    b = P.rhs_blobs(grid, seed=0)
    x = benchmark.pedantic(lambda: fast_poisson_solve(grid, b), **_rounds(shape))
    A = grid.matrix()
    floor = benchmark.stats.stats.min
    prob = grid.system(b)

    def gmg_pcg():
        return ns.solve(prob, ns.solvers.CG(rtol=RTOL, M=PC.GMG(grid)), backend="numba")

    t_gmg, res = _best(gmg_pcg, 1 if _rounds(shape)["rounds"] == 1 else 2)
    benchmark.extra_info.update({
        "relative_residual": float(np.linalg.norm(A @ x - b) / np.linalg.norm(b)),
        "gmg_pcg_iterations": res.n_iter,
        "gmg_pcg_ratio_vs_fft": t_gmg / floor,   # GMG-PCG time / this FFT floor
    })


# -- validation: the cost of checking a user's callable against a CG iteration ------------

@pytest.mark.benchmark(group="validation")
def test_validation_overhead(benchmark):
    """Goal (issue 11): validating a user-supplied operator costs < 2% of a CG iteration at
    64^3. ``extra_info["overhead_fraction"]`` = (checked call - raw call) / CG iteration,
    all three measured here on the same 64^3 instance."""
    from neurosolve.operators import checked

    shape = (64, 64, 64)
    grid, b, prob, A, *_ = _case(shape)
    y = np.empty_like(b)
    x = b.copy()

    def raw(v):
        return y

    wrapped = checked(raw, "A", b.size, b)
    wrapped(x)  # the first call does the full check
    n = 20_000
    t_raw, _ = _best(lambda: [raw(x) for _ in range(n)], 5)
    benchmark.pedantic(lambda: [wrapped(x) for _ in range(n)], rounds=5, warmup_rounds=1)
    t_checked = benchmark.stats.stats.min
    res = ns.solve(prob, ns.solvers.CG(rtol=RTOL, maxiter=MAXITER), backend="numba")
    t_cg, res = _best(lambda: ns.solve(prob, ns.solvers.CG(rtol=RTOL, maxiter=MAXITER),
                                       backend="numba"), 2)
    per_call = (t_checked - t_raw) / n
    per_iter = t_cg / res.n_iter
    benchmark.extra_info.update({"check_us_per_call": 1e6 * per_call,
                                 "cg_ms_per_iteration": 1e3 * per_iter,
                                 "overhead_fraction": per_call / per_iter})
