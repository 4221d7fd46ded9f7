"""GNS Newton against scipy's Newton-type methods, L-BFGS-B and jaxopt LBFGS.

Problems (all to ||grad f||_2 <= 1e-8, x0 = 0 for logistic, x0 = 1 for log-sum-exp):

* logistic regression on breast_cancer (569 x 30, mu = 1/m);
* logistic regression on a synthetic 50,000 x 200 set (seeded, Gram condition 1e4,
  10% flipped labels, mu = 1e-4) -- the issue's goal problem;
* log-sum-exp, the paper's shifted instance (mu = 0.1, x0 = 1) with n = m = 200 by
  default, n = m = 1000 with ``NEUROSOLVE_BENCH_LARGE=1``. The metric is the identity
  here (the paper uses B = A^T A) so that every method stops on the same Euclidean
  gradient norm.

GNS configurations: ``exact`` (dense Hessian, Cholesky: the default ``GNSNewton()``),
``exact-newton-first`` (gamma0 = 1e6, now the default too: kept for the history of the table),
``hessp`` (exact Hessian-vector products, CG to 1e-10), ``fisher``, ``diag``,
``weighted-gn`` (log-sum-exp).

Every benchmark records iterations, oracle calls, the final gradient norm and, for GNS,
``peer`` / ``peer_time_s`` / ``ratio`` (ours / the fastest scipy Newton-type method that
reached the tolerance, timed in the same run) and ``iter_ratio`` (ours / the fewest
iterations among those methods). BLAS runs on ``NEUROSOLVE_BENCH_THREADS`` threads
(default 1: on the shared 2-core machine multi-threaded BLAS was erratic).

Run: ``pytest benchmarks/bench_gns.py --benchmark-only --benchmark-disable-gc -q``
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.demos.gns import scipy_peer
from neurosolve.problems import smooth_gallery as gal
from neurosolve.solvers import GNSNewton

GTOL = 1e-8
LARGE = os.environ.get("NEUROSOLVE_BENCH_LARGE", "0") == "1"
THREADS = int(os.environ.get("NEUROSOLVE_BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("NEUROSOLVE_BENCH_ROUNDS", "3"))
NEWTON_TYPE = ("trust-exact", "trust-ncg", "trust-krylov", "Newton-CG")
#: seconds after which a scipy peer is stopped (reported as not reached)
PEER_TIME_LIMIT = float(os.environ.get("NEUROSOLVE_BENCH_PEER_LIMIT", "600"))


@pytest.fixture(autouse=True)
def _blas_threads():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(THREADS):
        yield


def _problems():
    A, y = gal.breast_cancer()
    probs = {"logistic-breast_cancer": lambda: gal.logistic(A, y, 1.0 / A.shape[0])}

    def big():
        Ab, yb = gal.synthetic_classification(50_000, 200, seed=0, cond=1e4)
        return gal.logistic(Ab, yb, 1e-4, name="logistic-50000x200")

    probs["logistic-50000x200"] = big
    n = 1000 if LARGE else 200
    probs[f"logsumexp-{n}"] = lambda: gal.lse_instance(n, n, 0.1, seed=3124, B=None)
    return probs


PROBLEMS = _problems()
_CACHE: dict = {}


def problem(name):
    if name not in _CACHE:
        p = PROBLEMS[name]()
        o = p.oracles("numba")
        x0 = np.asarray(p.x0)
        o["fun_and_grad"](x0)  # numba compilation and caches before any timing
        o["hess"](x0)
        _CACHE[name] = p
    return _CACHE[name]


def _best_of(fn, n=ROUNDS):
    best, out = np.inf, None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


_PEERS: dict = {}


def peer(name, meth):
    """One scipy method on this problem (best of rounds(name)), cached: test_scipy fills the
    cache (it runs first), test_gns reads it, so every peer runs once per session."""
    key = (name, meth)
    if key not in _PEERS:
        p = problem(name)
        maxiter = 20000 if meth == "L-BFGS-B" else 2000
        t, r = _best_of(lambda: scipy_peer(p, meth, GTOL, maxiter=maxiter,
                                           time_limit=PEER_TIME_LIMIT), rounds(name))
        r["time_s"] = t
        _PEERS[key] = r
    return _PEERS[key]


def peers(name):
    return {meth: peer(name, meth) for meth in NEWTON_TYPE}


def _best_newton(name):
    ok = {k: v for k, v in peers(name).items() if k in NEWTON_TYPE and v["reached"]}
    if not ok:
        return None, None
    fastest = min(ok, key=lambda k: ok[k]["time_s"])
    fewest = min(ok, key=lambda k: ok[k]["nit"])
    return ok[fastest] | {"name": fastest}, ok[fewest] | {"name": fewest}


GNS_CONFIGS = {
    "exact": dict(hessian="exact"),
    "exact-newton-first": dict(hessian="exact", gamma0=1e6),
    "hessp": dict(hessian="hessp"),
    "fisher": dict(hessian="fisher"),
    "diag": dict(hessian="diag"),
    "weighted-gn": dict(hessian="weighted-gauss-newton"),
    "weighted-gn-newton-first": dict(hessian="weighted-gauss-newton", gamma0=1e6),
}
CASES = [(p, c) for p in PROBLEMS for c in GNS_CONFIGS
         if not (c.startswith("weighted") and not p.startswith("logsumexp"))
         and not (p.startswith("logsumexp") and c in ("fisher", "diag", "hessp"))
         and not (c == "hessp" and p != "logistic-50000x200")]


def rounds(pname):
    """Best of ROUNDS on the logistic problems; one round on the slow log-sum-exp peers."""
    return 1 if pname.startswith("logsumexp") else ROUNDS


@pytest.mark.benchmark(group="gns-peers")
@pytest.mark.parametrize("pname", list(PROBLEMS))
@pytest.mark.parametrize("method", NEWTON_TYPE + ("L-BFGS-B",))
def test_scipy(benchmark, pname, method):
    p = problem(pname)
    maxiter = 20000 if method == "L-BFGS-B" else 2000
    r = benchmark.pedantic(lambda: scipy_peer(p, method, GTOL, maxiter=maxiter,
                                                      time_limit=PEER_TIME_LIMIT),
                           rounds=rounds(pname), iterations=1)
    r["time_s"] = benchmark.stats.stats.min
    _PEERS[(pname, method)] = r
    benchmark.extra_info.update(iterations=r["nit"], nfev=r["nfev"], nhev=r["nhev"],
                                grad_norm=r["grad_norm"], reached=bool(r["reached"]),
                                blas_threads=THREADS)


@pytest.mark.benchmark(group="gns")
@pytest.mark.parametrize("pname,config", CASES, ids=[f"{p}-{c}" for p, c in CASES])
def test_gns(benchmark, pname, config):
    p = problem(pname)
    maxiter = 5000
    solver = GNSNewton(gtol=GTOL, maxiter=maxiter, **GNS_CONFIGS[config])
    ns.solve(p, solver.replace(maxiter=1))  # warm-up (first-call costs)
    res = benchmark.pedantic(lambda: ns.solve(p, solver), rounds=rounds(pname), iterations=1)
    ours = benchmark.stats.stats.min
    fastest, fewest = _best_newton(pname)
    info = {
        "status": res.status.name, "iterations": res.n_iter,
        "factorizations": res.stats.get("factorizations"), "nfev": res.stats.get("nfev"),
        "nhev": res.stats.get("nhev"), "grad_norm": res.certificate["grad_norm_2"],
        "time_per_iteration_s": ours / max(res.n_iter, 1), "blas_threads": THREADS,
    }
    if fastest is not None:
        info.update(peer=f"scipy {fastest['name']}", peer_time_s=fastest["time_s"],
                    ratio=ours / fastest["time_s"], peer_iterations=fastest["nit"],
                    fewest_iter_peer=f"scipy {fewest['name']}",
                    iter_ratio=res.n_iter / fewest["nit"])
    benchmark.extra_info.update(info)
    assert res.success, res.message


def _jax_objective(p):
    """The same objective in jax.numpy, from the gallery problem's data."""
    import jax.numpy as jnp

    d = p.data
    mu = d["mu"]
    if "y" in d:
        A, y = jnp.asarray(d["A"]), jnp.asarray(d["y"])

        def fun(x):
            return jnp.mean(jnp.logaddexp(0.0, -y * (A @ x))) + 0.5 * mu * x @ x

        return fun
    A, b = jnp.asarray(d["A"]), jnp.asarray(d["b"])

    def fun(x):
        z = (A @ x - b) / mu
        mx = jnp.max(z)
        return mu * (mx + jnp.log(jnp.sum(jnp.exp(z - mx))))

    return fun


@pytest.mark.benchmark(group="gns-peers")
@pytest.mark.parametrize("pname", list(PROBLEMS))
def test_jaxopt_lbfgs(benchmark, pname):
    jax = pytest.importorskip("jax")
    jaxopt = pytest.importorskip("jaxopt")
    jax.config.update("jax_enable_x64", True)
    p = problem(pname)
    fun = _jax_objective(p)
    solver = jaxopt.LBFGS(fun=fun, tol=GTOL, maxiter=20000, history_size=10)
    x0 = jax.numpy.asarray(np.asarray(p.x0))
    run = jax.jit(solver.run)
    params, state = run(x0)  # compile
    params.block_until_ready()

    def go():
        out = run(x0)
        out[0].block_until_ready()
        return out

    params, state = benchmark.pedantic(go, rounds=1, iterations=1)
    g = p.oracles()["grad"](np.asarray(params))
    benchmark.extra_info.update(iterations=int(state.iter_num), grad_norm=float(np.linalg.norm(g)),
                                reached=bool(np.linalg.norm(g) <= GTOL * 1.0001),
                                jax_version=jax.__version__)


# -- where approximations pay: (1/p)||Ax - b||^p, the paper's equations experiment ---------
_EQ: dict = {}


def _equations():
    if "p" not in _EQ:
        rng = np.random.default_rng(3124)
        A = rng.uniform(-1.0, 1.0, (100, 200))
        _EQ["p"] = gal.equations(A, A @ rng.uniform(-1.0, 1.0, 200), 4.0)
    return _EQ["p"]


EQ_CONFIGS = ("exact", "gauss-newton", "fisher-term")


@pytest.mark.benchmark(group="gns-equations")
@pytest.mark.parametrize("config", EQ_CONFIGS)
def test_gns_equations(benchmark, config):
    """f = ||Ax - b||^4 / 4, A 100 x 200, B = A^T A + 1e-8 I, to f <= 1e-10 (f* = 0).

    The peer is GNS with the exact Hessian in the same run (scipy has no solver for this
    metric); ``ratio`` = this configuration's time / exact GNS's time.
    """
    p = _equations()
    solver = GNSNewton(hessian=config, ftol=1e-10, gtol=0.0, maxiter=500)
    res = benchmark.pedantic(lambda: ns.solve(p, solver), rounds=ROUNDS, iterations=1)
    t = benchmark.stats.stats.min
    _EQ[config] = t
    info = {"status": res.status.name, "iterations": res.n_iter,
            "factorizations": res.stats.get("factorizations"), "f": res.certificate["f"],
            "time_per_iteration_s": t / max(res.n_iter, 1), "blas_threads": THREADS}
    if config != "exact" and "exact" in _EQ:
        info.update(peer="GNS exact Hessian", peer_time_s=_EQ["exact"], ratio=t / _EQ["exact"])
    benchmark.extra_info.update(info)
    assert res.success, res.message
