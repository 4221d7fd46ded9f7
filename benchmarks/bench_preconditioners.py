"""Preconditioned CG on the Poisson case matrix: solids, free surface, thin plates, high
contrast; every classical preconditioner and DCDM, setup and solve timed apart.

Run::

    pytest benchmarks/bench_preconditioners.py --benchmark-only --benchmark-disable-gc
    NEUROSOLVE_BENCH_LARGE=1 pytest benchmarks/bench_preconditioners.py --benchmark-only   # + 1024^2, 128^3

Cases (relative tolerance 1e-8 on ``||b - A x|| / ||b||``, x0 = 0, a smoke-like blob
right-hand side, BLAS and numba limited to one thread for every side):

* ``solids``: a solid sphere (disk) in a box, Dirichlet walls;
* ``pool``: free surface (air above 60% depth) with two solid obstacles, Neumann walls;
* ``plates``: three one-cell-thick solid plates with slits (:func:`poisson.plates`);
* ``lognormal``: the pool with a log-normal coefficient field, sigma 2;
* ``inclusions``: the pool with inclusions of coefficient 1e4 and 1e-4;
* ``layered``: the pool with SPE10-style layers and channels, contrast 1e4
  (:func:`poisson.layered_field`).

Sizes 256^2 and 64^3 (1024^2 and 128^3 with ``NEUROSOLVE_BENCH_LARGE=1``). Solvers: CG,
IC(0)-PCG, pyamg smoothed aggregation (its own ``solve(accel="cg")``, setup plus solve),
GMG-PCG (:class:`~neurosolve.solvers.preconditioners.GMG`, coefficient-weighted
interpolation; ``gmg_linear`` is the same cycle with plain linear interpolation, run on the
coefficient cases only since the two are identical at ``k = 1``) and DCDM (unit-coefficient
cases only: the shipped networks were trained on the unit stencil). The benchmark's time is setup
plus solve; ``extra_info`` holds ``iterations``, ``setup_s``, ``solve_s``, ``total_s``,
``relative_residual`` (recomputed here from the returned x), ``spmv_per_iteration`` (the time
of one iteration over the time of one CSR matrix-vector product, measured in the same run)
and, for GMG, ``time_ratio_vs_pyamg_sa`` and ``iteration_ratio_vs_pyamg_sa`` (ours / peer;
below 1 means GMG is faster / needs fewer iterations).

This is the classical baseline the learned multigrid preconditioner of issue 13 has to
beat; GMG's weakest cases here (thin plates, high contrast) are where it is meant to.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import poisson as P
from neurosolve.solvers import preconditioners as PC

LARGE = os.environ.get("NEUROSOLVE_BENCH_LARGE", "") == "1"
SHAPES = [(256, 256), (64, 64, 64)] + ([(1024, 1024), (128, 128, 128)] if LARGE else [])
CASES = ["solids", "pool", "plates", "lognormal", "inclusions", "layered"]
RTOL = 1e-8
MAXITER = 20000
_RESULTS: dict = {}


def _id(shape):
    return "x".join(map(str, shape))


@functools.lru_cache(maxsize=None)
def _grid(case, shape):
    if case == "solids":
        return P.sphere(shape, walls="dirichlet")
    if case == "plates":
        return P.plates(shape, seed=0)
    base = P.pool(shape, obstacles=2, seed=1)
    if case == "pool":
        return base
    if case == "lognormal":
        return base.with_coefficients(P.lognormal_field(shape, sigma=2.0, seed=0))
    if case == "layered":
        return base.with_coefficients(P.layered_field(shape, contrast=1e4, seed=0))
    return base.with_coefficients(P.inclusions_field(shape, contrast=1e4, seed=0))


@functools.lru_cache(maxsize=None)
def _problem(case, shape):
    grid = _grid(case, shape)
    prob = grid.system(P.rhs_blobs(grid, seed=0))
    return grid, prob, grid.matrix()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    from threadpoolctl import threadpool_limits

    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(1)
    with threadpool_limits(1):
        for shape in ((16, 16), (8, 8, 8)):  # compile the numba kernels before any timing
            for kind in ("cg", "ic0", "gmg"):
                _ours("pool", shape, kind)
        yield
    numba.set_num_threads(old)


@functools.lru_cache(maxsize=None)
def _spmv_time(case, shape):
    _, prob, A = _problem(case, shape)
    v = np.asarray(prob.b)
    A @ v
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        A @ v
    return (time.perf_counter() - t) / reps


def _ours(case, shape, kind):
    grid, prob, _ = _problem(case, shape)
    t0 = time.perf_counter()
    if kind == "dcdm":
        from neurosolve.solvers import DCDM

        solver = DCDM(rtol=RTOL, maxiter=MAXITER)
    else:
        M = {"cg": lambda: None, "ic0": lambda: PC.IC0(prob), "gmg": lambda: PC.GMG(grid),
             "gmg_linear": lambda: PC.GMG(grid, interpolation="linear")}[kind]()
        solver = ns.solvers.CG(rtol=RTOL, maxiter=MAXITER, M=M)
    t1 = time.perf_counter()
    res = ns.solve(prob, solver)
    t2 = time.perf_counter()
    return np.asarray(res.x), res.n_iter, t1 - t0, t2 - t1, res.status.name


def _pyamg_sa(case, shape):
    import pyamg

    _, prob, A = _problem(case, shape)
    f = np.asarray(prob.grid.fluid).reshape(-1)
    Af = A[f][:, f].tocsr()
    bf = np.asarray(prob.b)[f]
    t0 = time.perf_counter()
    ml = pyamg.smoothed_aggregation_solver(Af)
    t1 = time.perf_counter()
    residuals: list = []
    xf = ml.solve(bf, tol=RTOL, accel="cg", maxiter=MAXITER, residuals=residuals)
    t2 = time.perf_counter()
    x = np.zeros(A.shape[0])
    x[f] = xf
    return x, len(residuals) - 1, t1 - t0, t2 - t1, "converged"


def _record(benchmark, case, shape, kind, out):
    x, n_iter, setup, solve_, status = out
    _, prob, A = _problem(case, shape)
    b = np.asarray(prob.b)
    rel = float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))
    info = benchmark.extra_info
    info.update(iterations=int(n_iter), setup_s=setup, solve_s=solve_, total_s=setup + solve_,
                relative_residual=rel, status=status,
                spmv_per_iteration=(solve_ / max(n_iter, 1)) / _spmv_time(case, shape))
    _RESULTS[(case, shape, kind)] = dict(total=setup + solve_, iterations=int(n_iter))
    peer = _RESULTS.get((case, shape, "pyamg_sa"))
    if kind == "gmg" and peer is not None:
        info["time_ratio_vs_pyamg_sa"] = (setup + solve_) / peer["total"]
        info["iteration_ratio_vs_pyamg_sa"] = n_iter / max(peer["iterations"], 1)


KINDS = ["pyamg_sa", "cg", "ic0", "gmg", "gmg_linear", "dcdm"]
VARIABLE = ("lognormal", "inclusions", "layered")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_pcg(benchmark, shape, case, kind):
    if kind == "dcdm" and case in VARIABLE:
        pytest.skip("the shipped DCDM networks were trained on the unit-coefficient stencil")
    if kind == "gmg_linear" and case not in VARIABLE:
        pytest.skip("with k = 1 the linear and the weighted interpolation are the same")
    if kind == "pyamg_sa":
        pytest.importorskip("pyamg")
    benchmark.group = f"pcg {case} {_id(shape)}"
    out = {}
    run = (lambda: _pyamg_sa(case, shape)) if kind == "pyamg_sa" else \
        (lambda: _ours(case, shape, kind))
    big = int(np.prod(shape)) > 300_000 or kind in ("cg", "dcdm")
    benchmark.pedantic(lambda: out.update(r=run()), rounds=1 if big else 3,
                       warmup_rounds=0 if big else 1)
    _record(benchmark, case, shape, kind, out["r"])
