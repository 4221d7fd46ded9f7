"""Sweep throughput: a Poisson geometry x resolution sweep (GMG-PCG) through
:func:`neurosolve.sweep`, serial engine vs Ray, with Ray's start-up and per-task overhead
measured apart.

Run::

    pytest benchmarks/bench_sweep.py --benchmark-only --benchmark-json /tmp/sweep.json

The sweep: 4 geometries (solid sphere with Dirichlet walls, pool with obstacles, random
ellipsoids, slit plates) x 3 resolutions (256^2, 512^2, 64^3), each solved by CG with the
:class:`~neurosolve.solvers.preconditioners.GMG` V-cycle to a relative residual of 1e-8,
x0 = 0, a smoke-like blob right-hand side; each task builds its grid, preconditioner and
right-hand side itself, so only the point (a small dict) goes out and the ``Result`` comes
back. BLAS and numba run one thread in the serial engine, as in a Ray worker (one CPU per
task), so the comparison is one core against ``NUM_CPUS`` workers.

Benchmarks (each one timed round; the sweeps are seconds long):

* ``test_poisson_sweep[serial]``: the serial engine, the peer.
* ``test_poisson_sweep[ray]``: the same sweep as Ray tasks on a local Ray of ``NUM_CPUS``
  CPUs (default 2: the machine this library is tuned on); Ray is started and its workers
  warmed up (imports, numba cache) before the timer. ``extra_info``: ``time_ratio_vs_serial``
  (Ray time / serial time; below 1: Ray is faster), ``cold_time_ratio_vs_serial`` (with the
  start-up and warm-up added), ``startup_s`` (``ray.init``), ``warmup_s`` (first tiny sweep:
  worker processes, imports), ``tasks``, ``workers``, ``point_bytes`` / ``result_bytes`` /
  ``result_without_state_bytes`` (pickled sizes of one typical point and Result), identical
  answers checked against the serial run (``same_answers``).
* ``test_poisson_sweep[ray_nostate]``: the same with ``keep_state=False``: each Result comes
  back without its final solver state, which holds the problem's matrix (the state's
  fingerprint keeps the operator alive) and is most of a pickled Result.
* ``test_regularization_path[...]``: the convex ReLU regularization path of
  docs/sweeps.md (n = 100, d = 3, 8 patterns, 8 betas from beta_max/2 to beta_max/50,
  ``ADMM(rtol=1e-4)``, serial engine), cold (``warm_start=False``) or warm started along
  chunks of 8 or 4, with and without solution polishing; ``extra_info``: the iterations
  summed over the path and the statuses.
* ``test_task_overhead[chunk1|chunk25]``: 200 no-op points (``fn`` returns its point) as 200
  tasks or 8 chunks of 25; ``per_point_overhead_s`` is the sweep's time per point, the cost
  the engine adds to every point on top of the work (``per_task_overhead_s`` per task).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import time

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import poisson as P
from neurosolve.solvers import preconditioners as PC
from neurosolve.sweeps import expand_grid

NUM_CPUS = int(os.environ.get("NEUROSOLVE_BENCH_SWEEP_CPUS", "2"))
GRID = {"geometry": ["solids", "pool", "ellipsoids", "plates"],
        "shape": [(256, 256), (512, 512), (64, 64, 64)]}
RTOL = 1e-8
_RUNS: dict = {}


def _grid(geometry, shape):
    if geometry == "solids":
        return P.sphere(shape, walls="dirichlet")
    if geometry == "pool":
        return P.pool(shape, obstacles=2, seed=1)
    if geometry == "ellipsoids":
        return P.ellipsoids(shape, n=4, seed=0, walls="dirichlet")
    return P.plates(shape, seed=0)


def poisson_point(point):
    """One sweep task: build the case and solve it with GMG-PCG."""
    from threadpoolctl import threadpool_limits

    import numba

    numba.set_num_threads(1)
    with threadpool_limits(1):
        grid = _grid(point["geometry"], tuple(point["shape"]))
        prob = grid.system(P.rhs_blobs(grid, seed=0))
        return ns.solve(prob, ns.solvers.CG(rtol=RTOL, maxiter=5000, M=PC.GMG(grid)))


def noop(point):
    return point


@pytest.fixture(scope="module", autouse=True)
def _restore_numba_threads():
    import numba

    old = numba.get_num_threads()
    yield
    numba.set_num_threads(old)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("ray.cloudpickle")

    # the benchmark module is not importable on the workers: ship its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if ray.is_initialized():
        pytest.skip("a Ray is already running; this benchmark measures its own local Ray")
    t0 = time.perf_counter()
    ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    ns.sweep(poisson_point, [{"geometry": "solids", "shape": (16, 16)}] * (2 * NUM_CPUS),
             engine="ray", progress=False)
    warmup = time.perf_counter() - t0
    yield {"startup_s": startup, "warmup_s": warmup}
    ray.shutdown()


def _same(a, b):
    return all(x.status is y.status and x.n_iter == y.n_iter and x.certificate == y.certificate
               and np.array_equal(np.asarray(x.x), np.asarray(y.x)) for x, y in zip(a, b))


@pytest.mark.parametrize("engine", ["serial", "ray", "ray_nostate"])
def test_poisson_sweep(benchmark, engine, request):
    benchmark.group = "sweep poisson"
    info = benchmark.extra_info
    kwargs = {}
    if engine != "serial":
        costs = request.getfixturevalue("ray_local")
        kwargs = dict(engine="ray", keep_state=engine == "ray")
    else:
        poisson_point({"geometry": "solids", "shape": (16, 16)})  # numba kernels loaded
    out = {}
    t = {}

    def run():
        t0 = time.perf_counter()
        out["r"] = ns.sweep(poisson_point, GRID, progress=False, **kwargs)
        t["s"] = time.perf_counter() - t0

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    results = out["r"]
    _RUNS[engine] = (t["s"], results)
    point = expand_grid(GRID)[-1]
    info.update(tasks=len(results), sweep_s=t["s"],
                all_converged=all(r.success for r in results),
                iterations=[int(r.n_iter) for r in results],
                point_bytes=len(pickle.dumps(point)),
                result_bytes=len(pickle.dumps(results[-1])),
                x_bytes=len(pickle.dumps(results[-1].x)),
                result_without_state_bytes=len(pickle.dumps(
                    dataclasses.replace(results[-1], state=None))))
    if engine != "serial":
        info.update(workers=NUM_CPUS, peer="serial engine", **costs)
        serial = _RUNS.get("serial")
        if serial is not None:
            info["time_ratio_vs_serial"] = t["s"] / serial[0]
            info["cold_time_ratio_vs_serial"] = (
                t["s"] + costs["startup_s"] + costs["warmup_s"]) / serial[0]
            info["same_answers"] = _same(results, serial[1])


@pytest.mark.parametrize("chunksize", [1, 25], ids=lambda c: f"chunk{c}")
def test_task_overhead(benchmark, ray_local, chunksize):
    benchmark.group = "sweep overhead"
    points = list(range(200))
    out = {}
    benchmark.pedantic(lambda: out.update(r=ns.sweep(noop, points, engine="ray",
                                                     chunksize=chunksize, progress=False)),
                       rounds=3, warmup_rounds=1)
    assert out["r"] == points
    best = benchmark.stats.stats.min
    tasks = -(-len(points) // chunksize)
    benchmark.extra_info.update(points=len(points), tasks=tasks, chunksize=chunksize,
                                workers=NUM_CPUS, per_point_overhead_s=best / len(points),
                                per_task_overhead_s=best / tasks)


@pytest.mark.parametrize("polish", [True, False], ids=lambda p: "polish" if p else "no-polish")
@pytest.mark.parametrize("start", ["cold", "warm8", "warm4"])
def test_regularization_path(benchmark, start, polish):
    from neurosolve.problems import ConvexReLU
    from neurosolve.sweep_tools import regularization_path

    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    y = np.sign(X[:, 0] * X[:, 1] + 0.2 * X[:, 2])
    bmax = ConvexReLU(X, y, beta=1.0, patterns=8, seed=0).beta_max()
    betas = list(np.geomspace(bmax / 2, bmax / 50, 8))
    kw = {"cold": dict(warm_start=False, chunksize=8), "warm8": dict(chunksize=8),
          "warm4": dict(chunksize=4)}[start]
    benchmark.group = "convex-relu regularization path"
    out = {}
    benchmark.pedantic(lambda: out.update(path=regularization_path(
        X, y, betas, patterns=8, seed=0, solver=ns.solvers.ADMM(rtol=1e-4, polish=polish),
        progress=False, **kw)), rounds=1, warmup_rounds=1)
    path = out["path"]
    benchmark.extra_info.update(iterations=int(sum(r.n_iter for r in path)),
                                statuses=[r.status.name for r in path], polish=polish)
