"""LV-HBA benchmarks: time per iteration, time to tolerance, SVM problems, hyper-cleaning.

Run::

    pytest benchmarks/bench_lvhba.py --benchmark-only --benchmark-disable-gc
    LVHBA_BENCH_FULL=1 pytest benchmarks/bench_lvhba.py --benchmark-only ...   # 10 seeds, full size

BLAS is limited to one thread for every implementation (on the shared 2-core machine a
threaded OpenBLAS product of 30k entries costs milliseconds of thread contention).

Groups:

* ``iter toy_X n=N``: time per iteration of the same LV-HBA iteration on toys A and B
  (n = 100, 1000, 10000; ``3n`` variables) by ``lvhba-numba`` (the fused kernel),
  ``lvhba-numpy`` and ``lvhba-torch`` (the solver's generic path), ``numpy-loop-sparse``
  (:func:`~neurosolve.solvers.bilevel_reference.array_numpy_loop`: the iteration written
  straightforwardly with numpy and scipy.sparse on the problem's arrays) and
  ``numpy-loop-closed-form`` (:func:`~neurosolve.solvers.bilevel_reference.toy_numpy_loop`:
  hand-derived gradients of the toy, reference-code style). ``us_per_iteration`` in
  ``extra_info``; ``speed_goal`` measures the n = 10000 ratios side by side.
* ``tolerance``: time until the relative x error reaches 1e-3 (toy B) / 3e-2 (toy A, bias
  limited), n = 100. The implicit-differentiation baseline does not apply (the lower
  levels are not strongly convex, their solution sets are not singletons).
* ``torch vs numpy n=10000``: per-iteration time of the torch generic path over the numpy
  one (``ratio_vs_numpy``, ours = torch), and numba's (``numba_ratio_vs_numpy``).
* ``coupled``: toy B (a coupled constraint ``-(1^T x + 1^T y) <= 0``, a lower level that is
  not strongly convex: implicit differentiation does not apply) with a constant penalty
  ``c = 50``: LV-HBA against :func:`~neurosolve.solvers.bilevel_reference.value_function_penalty`
  (the same reformulation, inner problem solved accurately at every outer step), both
  stopped when :func:`~neurosolve.problems.value_function.penalized_stationarity` is
  ``<= 1e-3`` (checked every 100 / 25 iterations).
* ``svm``: hyper-cleaning on breast_cancer with 40% flipped labels (LV-HBA on the paper's
  constrained SVM, implicit differentiation on the same problem with the slacks eliminated,
  LinearSVC on the noisy labels), the clean SVM hyperparameter problem and the coupled SVM.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.backends import resolve_backend
from neurosolve.core import Context
from neurosolve.problems import bilevel_gallery as G
from neurosolve.problems.bilevel import BilevelSolution
from neurosolve.problems.value_function import penalized_stationarity
from neurosolve.solvers import LVHBA
from neurosolve.solvers.bilevel_reference import (
    ImplicitDiff,
    array_numpy_loop,
    sklearn_svm_baseline,
    toy_numpy_loop,
    value_function_penalty,
)

FULL = os.environ.get("LVHBA_BENCH_FULL", "") == "1"
SIZES = [100, 1000, 10000]
ITERS = {100: 2000, 1000: 1000, 10000: 200}
IMPLS = ["lvhba-numba", "lvhba-numpy", "lvhba-torch", "numpy-loop-sparse", "numpy-loop-closed-form"]
SEEDS = range(10) if FULL else range(3)
CLEAN = dict(n_train=300, iters=300) if FULL else dict(n_train=200, iters=150)


@contextlib.contextmanager
def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def _blas():
    import torch

    nthreads = torch.get_num_threads()
    torch.set_num_threads(1)   # torch's own pool contends the same way
    try:
        with _one_blas_thread():
            yield
    finally:
        torch.set_num_threads(nthreads)


@functools.lru_cache(maxsize=None)
def _toy(toy, n, library="numpy"):
    p = G.toy_a(n=n) if toy == "a" else G.toy_b(n=n)
    return p.to(library="torch") if library == "torch" else p


def _steps(p, s, backend, K):
    """init + K x (step + check) by hand: the solve loop without the final certificate
    (an exact QP plus a v_gamma solve, which would dominate small timings)."""
    ctx = Context(resolve_backend(backend, s, p))
    ctx.setup = s.setup(p, ctx)
    st = s.init(p, None, ctx)
    for _ in range(K):
        st = s.step(p, st, ctx)
        s.check(p, st, ctx)
    return st


def _runner(toy, n, impl, K):
    p = _toy(toy, n)
    kw = p.meta["solver_kwargs"]
    s = LVHBA(**kw, maxiter=K)
    if impl == "lvhba-numba":
        _steps(p, s, "numba", 2)   # compile / load the kernel
        return lambda: _steps(p, s, "numba", K)
    if impl == "lvhba-numpy":
        return lambda: _steps(p, s, "numpy", K)
    if impl == "lvhba-torch":
        pt = _toy(toy, n, "torch")
        return lambda: _steps(pt, s, "torch", K)
    if impl == "numpy-loop-sparse":
        return lambda: array_numpy_loop(p, K, **kw)
    return lambda: toy_numpy_loop(toy, n, K, **kw)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("toy", ["a", "b"])
def test_iteration_time(benchmark, toy, n, impl):
    K = ITERS[n] // (5 if impl == "lvhba-numpy" and n == 10000 else 1)
    benchmark.group = f"iter toy_{toy} n={n}"
    fn = _runner(toy, n, impl, K)
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(iterations=K, variables=3 * n,
                                us_per_iteration=benchmark.stats.stats.min / K * 1e6)


def _best(fn, rounds=5):
    best = np.inf
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize("toy", ["a", "b"])
def test_speed_goal(benchmark, toy):
    """n = 10000: fused numba vs the straightforward loops, measured side by side."""
    n, K = 10000, 300
    benchmark.group = "speed goal n=10000"
    fns = {impl: _runner(toy, n, impl, K) for impl in
           ("lvhba-numba", "numpy-loop-sparse", "numpy-loop-closed-form")}
    times = {impl: _best(fn) / K for impl, fn in fns.items()}
    small = {impl: _best(_runner(toy, 1000, impl, K)) / K for impl in ("lvhba-numba",)}
    benchmark.pedantic(fns["lvhba-numba"], rounds=1, iterations=1)
    benchmark.extra_info.update(
        us_per_iteration={k: round(v * 1e6, 1) for k, v in times.items()},
        ratio_vs_sparse_loop=times["lvhba-numba"] / times["numpy-loop-sparse"],
        ratio_vs_closed_form_loop=times["lvhba-numba"] / times["numpy-loop-closed-form"],
        numba_cost_growth_n1000_to_n10000=times["lvhba-numba"] / small["lvhba-numba"],
    )


@pytest.mark.parametrize("toy", ["a", "b"])
def test_time_to_tolerance(benchmark, toy):
    """Iterations and time until the relative x error reaches tol AND stays there.

    The trajectories overshoot (they pass near x* long before settling), so the first
    hit is not a fair stopping time: errors are recorded every 100 iterations of a
    50000-iteration run and the time to tolerance is the last crossing.
    """
    n, K = 100, 50000
    tol = 3e-2 if toy == "a" else 1e-3
    p = _toy(toy, n)
    kw = p.meta["solver_kwargs"]
    xs = p.meta["x_star"]
    nx = np.linalg.norm(xs)
    rec = []

    def cb(view):
        if view.k % 100 == 0:
            rec.append((view.k, float(np.linalg.norm(view.x[0] - xs) / nx), time.perf_counter()))
        return False

    s = LVHBA(**kw, maxiter=K)
    _steps(p, s, "numba", 2)
    t0 = time.perf_counter()
    res = benchmark.pedantic(lambda: ns.solve(p, s, backend="numba", callback=cb), rounds=1, iterations=1)
    ks, errs, ts = map(np.array, zip(*rec))
    above = np.nonzero(errs > tol)[0]
    i = above[-1] + 1 if above.size else 0
    reached = i < len(ks)
    k_tol = int(ks[i]) if reached else None
    t_tol = float(ts[i] - t0) if reached else None
    t_loop = _best(lambda: toy_numpy_loop(toy, n, k_tol or K, **kw), rounds=1)
    benchmark.group = "tolerance"
    benchmark.extra_info.update(
        tolerance=tol, iterations_to_tolerance=k_tol, time_to_tolerance=t_tol,
        final_rel_x_error=float(errs[-1]), final_lam=float(res.x.lam[0]), ll_gap=res.certificate["ll_gap"],
        numpy_loop_closed_form_time_same_iterations=t_loop,
        ratio_vs_closed_form=(t_tol / t_loop) if reached else None,
        implicit_diff="not applicable: lower level not strongly convex (non-singleton solution set)")


# ----------------------------------------------------------------------------------------
# SVM problems
# ----------------------------------------------------------------------------------------
def _lvhba_svm(p, iters):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        res = ns.solve(p, LVHBA(**p.meta["solver_kwargs"], maxiter=iters))
        dt = time.perf_counter() - t
    return res, dt


def _implicit_svm(p, steps=80):
    F, f, x0, y0 = p.meta["reduced"]()
    t = time.perf_counter()
    out = ImplicitDiff(F, f, lr=0.1, outer_steps=steps, optimizer="adam").run(x0, y0)
    dt = time.perf_counter() - t
    y = np.concatenate([out["y"].numpy(), np.zeros(p.meta["n_train"])])
    return p.meta["accuracy"](out["x"].numpy(), y), dt


def _hyper_cleaning_seed(seed: int) -> dict:
    """One seed of the hyper-cleaning comparison (a sweep point)."""
    p = G.hyper_cleaning("breast_cancer", corruption=0.4, seed=seed, n_train=CLEAN["n_train"])
    res, t_lv = _lvhba_svm(p, CLEAN["iters"])
    acc_id, t_id = _implicit_svm(p)
    base = sklearn_svm_baseline(p.meta["data"])
    return dict(seed=seed, lvhba=p.meta["accuracy"](res.x.x, res.x.y), lvhba_time=t_lv,
                lvhba_ll_gap=res.certificate["ll_gap"], implicit=acc_id, implicit_time=t_id,
                noisy_svm=base["test_accuracy"], noisy_svm_time=base["time"])


def test_hyper_cleaning_breast_cancer(benchmark):
    """The seeds run through :func:`neurosolve.sweep`: serially by default,
    ``NEUROSOLVE_BENCH_ENGINE=ray`` runs them as Ray tasks (one CPU each; each method's time
    is still measured inside its own task)."""
    benchmark.group = "svm"
    rows = []
    engine = os.environ.get("NEUROSOLVE_BENCH_ENGINE", "serial")
    if engine == "ray":
        import sys

        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def run_all():
        rows.extend(ns.sweep(_hyper_cleaning_seed, SEEDS, engine=engine, progress=False))

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    a = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    benchmark.extra_info.update(
        engine=engine,
        seeds=len(rows), n_train=CLEAN["n_train"], lvhba_iterations=CLEAN["iters"], implicit_outer_steps=80,
        **{f"{k}_mean": float(v.mean()) for k, v in a.items() if k != "seed"},
        **{f"{k}_std": float(v.std()) for k, v in a.items() if k in ("lvhba", "implicit", "noisy_svm")},
        per_seed=rows)


@pytest.mark.parametrize("which", ["svm_hyperparameter", "coupled_svm"])
def test_svm_problems(benchmark, which):
    benchmark.group = "svm"
    maker = G.svm_hyperparameter if which == "svm_hyperparameter" else G.coupled_svm
    p = maker("breast_cancer", seed=0, n_train=CLEAN["n_train"])
    res, t_lv = benchmark.pedantic(lambda: _lvhba_svm(p, CLEAN["iters"]), rounds=1, iterations=1)
    info = dict(lvhba_test_accuracy=p.meta["accuracy"](res.x.x, res.x.y), lvhba_time=t_lv,
                lvhba_ms_per_iteration=1e3 * t_lv / CLEAN["iters"], ll_gap=res.certificate["ll_gap"],
                sklearn_svm=sklearn_svm_baseline(p.meta["data"])["test_accuracy"])
    if which == "svm_hyperparameter":
        info["implicit_test_accuracy"], info["implicit_time"] = _implicit_svm(p)
    else:
        info["implicit"] = "not applicable: xi <= c couples the levels through active constraints"
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("toy", ["a", "b"])
def test_torch_vs_numpy(benchmark, toy):
    """n = 10000: torch generic path vs numpy generic path (and the fused numba kernel)."""
    n, K = 10000, 200
    benchmark.group = "torch vs numpy n=10000"
    fns = {impl: _runner(toy, n, impl, K) for impl in ("lvhba-numpy", "lvhba-torch", "lvhba-numba")}
    times = {impl: _best(fn, 3) / K for impl, fn in fns.items()}
    benchmark.pedantic(fns["lvhba-torch"], rounds=1, iterations=1)
    benchmark.extra_info.update(
        us_per_iteration={k: round(v * 1e6, 1) for k, v in times.items()},
        ratio_vs_numpy=times["lvhba-torch"] / times["lvhba-numpy"],
        numba_ratio_vs_numpy=times["lvhba-numba"] / times["lvhba-numpy"])


COUPLED = dict(c=50.0, step=1e-2, gamma1=1.0, gamma2=1.0, r=10.0, tol=1e-3)


def test_coupled_vs_value_function_penalty(benchmark):
    """Same reformulation, same constant penalty, same stationarity measure and tolerance."""
    n = 10
    cfg = COUPLED
    p = G.toy_b(n=n)
    xs = p.meta["x_star"]
    s = LVHBA(alpha=cfg["step"], beta=cfg["step"], eta=cfg["step"], gamma1=cfg["gamma1"],
              gamma2=cfg["gamma2"], c0=cfg["c"], p=0.0, r=cfg["r"], maxiter=30000,
              tol_stat=0.0, tol_inner=0.0, tol_gap=0.0)
    hit = {}

    def cb(view):
        if view.k % 100 == 0:
            st = view.state
            sol = BilevelSolution(st.w[:n], st.w[n:], st.z, st.lam, st.theta, cfg["gamma1"],
                                  cfg["gamma2"], cfg["c"], cfg["r"])
            ps = penalized_stationarity(p, sol, tol=1e-8)["stationarity"]
            if ps <= cfg["tol"]:
                hit.update(k=view.k, stationarity=ps)
                return True
        return False

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # p = 0 is outside the theory range
        _steps(p, s, "numba", 2)
        t = time.perf_counter()
        res = benchmark.pedantic(lambda: ns.solve(p, s, backend="numba", callback=cb), rounds=1, iterations=1)
        t_lv = time.perf_counter() - t
    out = value_function_penalty(p, c=cfg["c"], alpha=cfg["step"], beta=cfg["step"], gamma1=cfg["gamma1"],
                                 gamma2=cfg["gamma2"], r=cfg["r"], tol=cfg["tol"], maxiter=10000,
                                 check_every=25, inner_tol=1e-8)
    def rel(v):
        return float(np.linalg.norm(v - xs) / np.linalg.norm(xs))

    benchmark.group = "coupled"
    benchmark.extra_info.update(
        tolerance=cfg["tol"], lvhba_iterations=hit.get("k"), lvhba_time=t_lv,
        lvhba_stationarity=hit.get("stationarity"), lvhba_rel_x_error=rel(res.x.x),
        penalty_outer_iterations=out["iterations"], penalty_inner_iterations=out["inner_iterations"],
        penalty_time=out["time"], penalty_stationarity=out["stationarity"], penalty_converged=out["converged"],
        penalty_rel_x_error=rel(out["sol"].x),
        ratio_vs_value_function_penalty=t_lv / out["time"],
        implicit_diff="not applicable: coupled constraint, lower level not strongly convex")
