"""neurosolve.sweep: serial and Ray engines give the same results in grid order; worker
deaths are retried without recomputing finished tasks; a failing point comes back with its
grid point; chunked warm starts (the convex ReLU regularization path); bad arguments.

The Ray tests share one local Ray (``num_cpus=2``) and skip cleanly without the
``distributed`` extra; the serial tests never need Ray.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import neurosolve as ns
from neurosolve.problems import poisson as P
from neurosolve.solvers import preconditioners as PC
from neurosolve.sweeps import SweepError, expand_grid

ROOT = pathlib.Path(__file__).resolve().parents[1]


# -- what the sweeps run (module level: Ray pickles them) ------------------------------------

def poisson_problem(point):
    shape = (point["n"],) * 2
    grid = P.sphere(shape, walls=point["walls"])
    return grid.system(P.rhs_blobs(grid, seed=point.get("seed", 0)))


def poisson_gmg(point):
    grid = P.sphere((point["n"],) * 2, walls=point["walls"])
    prob = grid.system(P.rhs_blobs(grid, seed=0))
    return ns.solve(prob, ns.solvers.CG(rtol=1e-8, M=PC.GMG(grid)))


POISSON_GRID = {"n": [16, 24], "walls": ["neumann", "dirichlet"]}


def square_or_fail(x):
    if x == 3:
        raise ValueError(f"point {x} is bad")
    return x * x


def slow_first(i):
    time.sleep(0.8 if i == 0 else 0.01)  # point 0 finishes last
    return i * 10


def crash_once(point):
    """Kill the worker process on the first attempt of the crashing point; every attempt
    leaves a file, so the test can count how often each point ran."""
    (pathlib.Path(point["dir"]) / f"attempt-{point['i']}-{os.getpid()}-{time.time_ns()}").touch()
    marker = pathlib.Path(point["dir"]) / "crashed"
    if point["i"] == point["crash"] and not marker.exists():
        marker.touch()
        os._exit(1)
    return poisson_gmg({"n": 16, "walls": "dirichlet"}) if point["i"] % 2 else point["i"]


def crash_always(point):
    if point == 1:
        os._exit(1)
    return point


def previous_point(point, previous):
    return (point, None if previous is None else previous[0])


def assert_same_result(a, b):
    assert type(a) is type(b)
    assert a.status is b.status and a.message == b.message and a.n_iter == b.n_iter
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    assert a.certificate == b.certificate
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        np.testing.assert_array_equal(a.history[k], b.history[k])
    def counters(r):  # every stat but the timings
        return {k: v for k, v in r.stats.items() if not k.endswith("time")}

    assert counters(a) == counters(b) and "backend" in counters(a)


# -- serial engine and argument checks (no Ray) ----------------------------------------------

def test_expand_grid_is_the_nested_loop_product():
    pts = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert pts == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    assert expand_grid(range(3)) == [0, 1, 2]
    assert expand_grid(p for p in "ab") == ["a", "b"]


def test_serial_spec_equals_a_serial_loop():
    solver = ns.solvers.CG(rtol=1e-8)
    got = ns.sweep((poisson_problem, solver), POISSON_GRID, progress=False)
    want = [ns.solve(poisson_problem(p), solver) for p in expand_grid(POISSON_GRID)]
    assert len(got) == 4
    for a, b in zip(got, want):
        assert_same_result(a, b)
    # the dict spec with solve() options and a per-point solver factory
    spec = {"problem": poisson_problem, "solver": lambda p: ns.solvers.CG(rtol=1e-6),
            "options": {"backend": "numpy"}}
    got = ns.sweep(spec, POISSON_GRID, progress=False)
    assert {r.stats["backend"] for r in got} == {"numpy"}
    assert_same_result(got[3], ns.solve(poisson_problem(expand_grid(POISSON_GRID)[3]),
                                        ns.solvers.CG(rtol=1e-6), backend="numpy"))


def test_serial_order_and_errors():
    assert ns.sweep(square_or_fail, [5, 1, 2], progress=False) == [25, 1, 4]
    with pytest.raises(SweepError) as info:
        ns.sweep(square_or_fail, [1, 3, 2, 3], progress=False)
    err = info.value
    assert [(f.index, f.point) for f in err.failures] == [(1, 3), (3, 3)]
    assert all(isinstance(f.error, ValueError) for f in err.failures)
    assert "#1 3: ValueError: point 3 is bad" in str(err) and "square_or_fail" in str(err)
    assert err.results[0] == 1 and err.results[2] == 4  # finished points are kept
    out = ns.sweep(square_or_fail, [1, 3, 2], on_error="return", progress=False)
    assert out[0] == 1 and out[2] == 4 and isinstance(out[1], ValueError)


def test_chunks_warm_start_within_a_chunk_only():
    out = ns.sweep(previous_point, list(range(7)), chunksize=3, warm_start=True, progress=False)
    assert out == [(0, None), (1, 0), (2, 1), (3, None), (4, 3), (5, 4), (6, None)]


def test_keep_state_false_drops_only_the_state():
    full = ns.sweep(poisson_gmg, [{"n": 16, "walls": "neumann"}], progress=False)[0]
    lean = ns.sweep(poisson_gmg, [{"n": 16, "walls": "neumann"}], keep_state=False,
                    progress=False)[0]
    assert full.state is not None and lean.state is None
    assert_same_result(full, lean)
    assert len(pickle.dumps(lean)) < len(pickle.dumps(full)) / 2


def test_spec_warm_start_passes_the_previous_answer():
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((60, 60))
    A = Q @ Q.T + 60 * np.eye(60)
    b0 = rng.standard_normal(60)
    spec = (lambda eps: ns.problems.LinearSystem(A, b0 + eps * np.ones(60)),
            ns.solvers.CG(rtol=1e-10))
    cold = ns.sweep(spec, [0.0, 1e-6], chunksize=2, progress=False)
    warm = ns.sweep(spec, [0.0, 1e-6], chunksize=2, warm_start=True, keep_state=False,
                    progress=False)
    assert_same_result(cold[0], warm[0])
    assert warm[1].success and warm[1].n_iter < cold[1].n_iter


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(engine="dask"), ValueError, "engine"),
    (dict(on_error="ignore"), ValueError, "on_error"),
    (dict(chunksize=0), ValueError, "chunksize"),
    (dict(max_retries=-1), ValueError, "max_retries"),
    (dict(warm_start="yes"), TypeError, "warm_start"),
    (dict(keep_state=None), TypeError, "keep_state"),
    (dict(address="auto"), ValueError, "address"),
    (dict(num_cpus=2), ValueError, "num_cpus"),
    (dict(engine="ray", address="auto", num_cpus=2), ValueError, "num_cpus"),
])
def test_bad_options_name_the_argument(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        ns.sweep(abs, [1], progress=False, **kwargs)


@pytest.mark.parametrize("fn, grid, exc, words", [
    (abs, [], ValueError, "grid is empty"),
    (abs, {"a": [1], "b": []}, ValueError, r"grid\['b'\] has no values"),
    (abs, {"a": 1}, TypeError, r"grid\['a'\] must be a list"),
    (abs, "abc", TypeError, "grid must be"),
    (abs, 5, TypeError, "grid must be"),
    (3, [1], TypeError, "fn_or_spec must be a callable"),
    ((poisson_problem,), [1], ValueError, "fn_or_spec"),
    ((3, None), [1], TypeError, "problem factory must be callable"),
    ((poisson_problem, 3), [1], TypeError, "solver must be"),
    ({"solver": None}, [1], ValueError, "'problem' factory"),
    ({"problem": abs, "tol": 1}, [1], ValueError, "unknown key 'tol'"),
])
def test_bad_fn_or_grid_name_the_argument(fn, grid, exc, words):
    with pytest.raises(exc, match=words):
        ns.sweep(fn, grid, progress=False)


def test_importing_neurosolve_imports_no_ray():
    """Neither the package nor the sweep modules import Ray (or torch, numba)."""
    code = ("import sys, neurosolve, neurosolve.sweeps, neurosolve.sweep_tools; "
            "assert callable(neurosolve.sweep); "
            "heavy = [m for m in ('ray', 'torch', 'numba') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ray_engine_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    with pytest.raises(ImportError, match=re.escape('pip install "neurosolve[distributed]"')):
        ns.sweep(abs, [1], engine="ray", progress=False)


def test_results_pickle_round_trip_equal():
    res = poisson_gmg({"n": 16, "walls": "neumann"})
    back = pickle.loads(pickle.dumps(res))
    assert_same_result(res, back)
    assert back.stats == res.stats and back.state.k == res.state.k


def test_docs_python_blocks_run():
    text = (ROOT / "docs" / "sweeps.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/sweeps.md[{i}]", "exec"), {})


# -- Ray engine ------------------------------------------------------------------------------

@pytest.mark.slow
def test_ray_against_a_running_cluster():
    """address= connects to a cluster and disconnects after the sweep, leaving the cluster
    up; keep_ray=True stays connected. (A head node of its own: slow, ~10 s.)"""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("needs a driver that is not connected to Ray yet")
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        assert ns.sweep(abs, [-1, -2, 3], engine="ray", address=cluster.address,
                        progress=False) == [1, 2, 3]
        assert not ray.is_initialized()
        # the cluster survived the first sweep's disconnect
        assert ns.sweep(abs, [-5], engine="ray", address=cluster.address, keep_ray=True,
                        progress=False) == [5]
        assert ray.is_initialized()
        with pytest.warns(RuntimeWarning, match="already initialized"):
            assert ns.sweep(abs, [-6], engine="ray", address=cluster.address,
                            progress=False) == [6]
        assert ray.is_initialized()  # a Ray this sweep did not start is left alone
        ray.shutdown()
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("ray.cloudpickle")

    # this test module is not importable on the workers: ship its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if started:
        ray.shutdown()


def test_ray_equals_serial(ray_cluster):
    grid = [dict(p) for p in expand_grid(POISSON_GRID)]
    with threadpool_limits(1):  # Ray workers run one BLAS thread, like this reference
        ref = ns.sweep(poisson_gmg, grid, progress=False)
        spec_ref = ns.sweep((poisson_problem, ns.solvers.CG(rtol=1e-8)), grid, progress=False)
    for chunksize in (1, 3):
        got = ns.sweep(poisson_gmg, grid, engine="ray", chunksize=chunksize, progress=False)
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            assert_same_result(a, b)
    got = ns.sweep((poisson_problem, ns.solvers.CG(rtol=1e-8)), grid, engine="ray",
                   progress=False)
    for a, b in zip(got, spec_ref):
        assert_same_result(a, b)
    assert ray_cluster.is_initialized()  # a Ray the caller started is left running
    # ordinary arrays owned by this process (not read-only views of Ray's object store)
    assert got[0].x.flags.writeable and got[0].history["relative_residual"].flags.writeable


def test_ray_unpicklable_fn_names_the_argument(ray_cluster):
    import threading

    lock = threading.Lock()
    with pytest.raises(TypeError, match="fn_or_spec cannot be pickled"):
        ns.sweep(lambda p: (lock, p)[1], [1], engine="ray", progress=False)


def unpicklable_result(p):
    import threading

    return threading.Lock() if p == 1 else p


def test_ray_unpicklable_result_fails_its_point_only(ray_cluster):
    out = ns.sweep(unpicklable_result, [0, 1, 2], engine="ray", chunksize=3,
                   on_error="return", progress=False)
    assert out[0] == 0 and out[2] == 2
    assert isinstance(out[1], TypeError) and "cannot be pickled" in str(out[1])


def test_ray_round_trip_of_a_result(ray_cluster):
    res = poisson_gmg({"n": 16, "walls": "dirichlet"})
    assert_same_result(ray_cluster.get(ray_cluster.put(res)), res)


def test_ray_results_follow_the_grid_not_completion(ray_cluster):
    assert ns.sweep(slow_first, [0, 1, 2, 3, 4], engine="ray", progress=False) == \
        [0, 10, 20, 30, 40]


def test_ray_exception_comes_back_with_its_point(ray_cluster):
    with pytest.raises(SweepError) as info:
        ns.sweep(square_or_fail, [1, 3, 2], engine="ray", progress=False)
    (f,) = info.value.failures
    assert (f.index, f.point) == (1, 3) and isinstance(f.error, ValueError)
    assert "square_or_fail" in f.traceback  # formatted on the worker
    assert info.value.results[0] == 1 and info.value.results[2] == 4
    out = ns.sweep(square_or_fail, [3, 2], engine="ray", on_error="return", progress=False)
    assert isinstance(out[0], ValueError) and out[1] == 4


def test_ray_worker_death_is_retried_without_recomputing(ray_cluster, tmp_path):
    grid = [{"i": i, "crash": 2, "dir": str(tmp_path)} for i in range(6)]
    with threadpool_limits(1):
        want = [crash_once(dict(p, crash=-1)) for p in grid]
    for f in tmp_path.glob("attempt-*"):
        f.unlink()
    got = ns.sweep(crash_once, grid, engine="ray", max_retries=2, progress=False)
    assert (tmp_path / "crashed").exists()  # the worker did die
    for a, b in zip(got, want):
        if isinstance(b, ns.Result):
            assert_same_result(a, b)
        else:
            assert a == b
    attempts = {i: len(list(tmp_path.glob(f"attempt-{i}-*"))) for i in range(6)}
    assert attempts == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 1}


def test_ray_worker_death_past_max_retries_is_a_failed_point(ray_cluster):
    with pytest.raises(SweepError) as info:
        ns.sweep(crash_always, [0, 1, 2], engine="ray", max_retries=0, progress=False)
    (f,) = info.value.failures
    assert (f.index, f.point) == (1, 1)
    assert isinstance(f.error, ray_cluster.exceptions.RayError)
    assert info.value.results[0] == 0 and info.value.results[2] == 2


PATH_BETAS = [4.0, 2.0, 1.0, 0.5]


def _path_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 2))
    return X, np.sign(X[:, 0] * X[:, 1] + 0.1)


def _path(**kw):
    from neurosolve.sweep_tools import regularization_path

    X, y = _path_data()
    return regularization_path(X, y, PATH_BETAS, chunksize=2, patterns=6, seed=0,
                               solver=ns.solvers.ADMM(rtol=1e-3), progress=False, **kw)


def test_regularization_path_warm_starts_inside_chunks():
    cold, warm = _path(warm_start=False), _path()
    assert all(r.success for r in warm + cold)
    # chunk starts (betas 0 and 2) start cold; the second beta of each chunk starts warm
    for i in (0, 2):
        assert_same_result(warm[i], cold[i])
    for i in (1, 3):
        assert warm[i].n_iter != cold[i].n_iter or not np.array_equal(warm[i].x, cold[i].x)
    # the answers agree with a cold solve to the certified tolerance
    for a, b in zip(warm, cold):
        fa, fb = a.certificate["objective"], b.certificate["objective"]
        assert abs(fa - fb) <= 2e-3 * max(1.0, abs(fb))


def test_regularization_path_bad_betas():
    from neurosolve.sweep_tools import regularization_path

    X, y = _path_data()
    for bad in ([], [1.0, -1.0], [float("nan")], ["a"]):
        with pytest.raises(ValueError, match="betas"):
            regularization_path(X, y, bad)
    with pytest.raises(TypeError, match="betas"):
        regularization_path(X, y, 0.5)


def test_regularization_path_ray_equals_serial(ray_cluster):
    with threadpool_limits(1):
        serial = _path()
    for a, b in zip(_path(engine="ray"), serial):
        assert_same_result(a, b)
