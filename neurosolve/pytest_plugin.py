"""A pytest plugin: convergence facts in pytest-benchmark's ``extra_info``.

Installed with the package (entry point ``pytest11``: ``neurosolve``), it adds one fixture,
``convergence``, and changes nothing for tests that do not request it. The fixture runs a
solve under the pytest-benchmark timer and records JSON-safe convergence facts in
``benchmark.extra_info``::

    def test_poisson_cg(convergence):
        res = convergence(problem, ns.solvers.CG(rtol=1e-6), backend="numba")
        assert res.success

``convergence(problem, solver, **solve_kwargs)`` times ``neurosolve.solve(problem, solver,
**solve_kwargs)``; ``convergence(fn)`` times ``fn()``, which returns a
:class:`neurosolve.Result` (or a tuple holding one; the value is passed back unchanged).
Keyword-only options: ``rounds`` / ``warmup_rounds`` / ``iterations`` (then
``benchmark.pedantic`` runs; without ``rounds`` pytest-benchmark calibrates),
``metric`` (the history column to fit; default the solver's leading metric, the first
column of ``result.history``) and ``tail`` (the fraction of the history the rate is fitted
on, default 0.5).

Recorded keys (see :func:`convergence_facts`): ``iterations``, ``status``,
``certificate``, ``counters`` (the integer counters of ``result.stats``) and each counter
flat (e.g. ``matvecs``), ``setup_time_s``, ``metric``, ``residual_history`` (at most
:data:`MAX_HISTORY_POINTS` values of the metric) with ``residual_history_iterations``,
``rate`` (the per-iteration contraction factor ``exp(slope)`` of a least-squares line
through ``log(metric)`` over the tail; < 1 converges), ``rate_points``, ``time_s`` (the
fastest round) and ``time_per_iteration_s``.

Without pytest-benchmark, or under ``--benchmark-skip``, the fixture still runs the solve
once (timed with ``time.perf_counter``) and records the same facts, in
``convergence.extra_info`` and the test's ``user_properties``; the test is not skipped.

:func:`compare` (and ``python -m neurosolve.pytest_plugin SAVED CURRENT``) flags a rate,
iteration or status regression of a ``--benchmark-json`` file against a saved one.

Importing this module imports only the standard library and pytest (plus the
``neurosolve`` package itself, which imports no torch).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

__all__ = ["convergence_facts", "asymptotic_rate", "downsample", "compare", "Regression",
           "main", "MAX_HISTORY_POINTS"]

MAX_HISTORY_POINTS = 200
_TIME_KEYS = ("wall_time", "setup_time")


# -- facts -----------------------------------------------------------------------------------

def _json_float(v: Any) -> float | None:
    """A finite float, or None (JSON has no NaN or infinity)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _json_safe(v: Any) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if hasattr(v, "name") and hasattr(v, "value") and not hasattr(v, "shape"):  # an Enum
        return str(v.name)
    try:
        if float(v) == int(v) and "int" in type(v).__name__:
            return int(v)  # numpy integers
    except (TypeError, ValueError, OverflowError):
        pass
    f = _json_float(v)
    return f if f is not None or _is_number(v) else str(v)


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def downsample(values: list, max_points: int = MAX_HISTORY_POINTS) -> tuple[list[int], list]:
    """``(indices, values)``: at most ``max_points`` evenly spaced entries, first and last
    kept."""
    n = len(values)
    if n <= max_points:
        return list(range(n)), list(values)
    idx = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
    return idx, [values[i] for i in idx]


def asymptotic_rate(values, iterations=None, tail: float = 0.5) -> tuple[float | None, int]:
    """``(rate, points)``: ``exp`` of the least-squares slope of ``log(values)`` against
    the iteration over the last ``tail`` fraction of the points (at least 3 when there are
    that many), i.e. the per-iteration contraction factor (< 1: converging). Non-positive
    or non-finite values are left out; ``(None, points)`` when fewer than 2 remain."""
    vals = [float(v) for v in values]
    its = list(range(len(vals))) if iterations is None else [float(k) for k in iterations]
    n = len(vals)
    start = min(max(0, n - max(3, math.ceil(tail * n))), n)
    pts = [(k, math.log(v)) for k, v in zip(its[start:], vals[start:])
           if math.isfinite(v) and v > 0]
    if len(pts) < 2:
        return None, len(pts)
    mk = sum(k for k, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((k - mk) ** 2 for k, _ in pts)
    if sxx == 0:
        return None, len(pts)
    slope = sum((k - mk) * (y - my) for k, y in pts) / sxx
    return _json_float(math.exp(min(slope, 700.0))), len(pts)


def convergence_facts(result, *, metric: str | None = None, tail: float = 0.5,
                      time_s: float | None = None) -> dict:
    """The JSON-safe convergence facts of a :class:`neurosolve.Result` (the keys the
    ``convergence`` fixture records; ``time_s`` is the timing to divide by the iterations,
    ``result.stats['wall_time']`` when None)."""
    n_iter = int(result.n_iter)
    stats = dict(getattr(result, "stats", {}) or {})
    counters = {k: int(v) for k, v in stats.items()
                if k not in _TIME_KEYS and not isinstance(v, bool) and _is_number(v)
                and "int" in type(v).__name__}
    history = dict(getattr(result, "history", {}) or {})
    columns = [k for k in history if k != "iteration"]
    if metric is None:
        metric = columns[0] if columns else None
    elif metric not in columns:
        raise KeyError(f"metric {metric!r} is not in result.history (has {columns})")
    values = [float(v) for v in history[metric]] if metric is not None else []
    # history points are record_every apart; solve() adds an "iteration" column then
    its = ([int(k) for k in history["iteration"]] if "iteration" in history
           else list(range(len(values))))
    rate, points = asymptotic_rate(values, its, tail=tail)
    idx, kept = downsample(values)
    if time_s is None:
        time_s = stats.get("wall_time")
    time_s = _json_float(time_s)
    status = getattr(result.status, "name", str(result.status))
    facts = {
        "iterations": n_iter,
        "status": status,
        "certificate": _json_safe(dict(result.certificate)),
        "counters": counters,
        **counters,
        "setup_time_s": _json_float(stats.get("setup_time")),
        "metric": metric,
        "residual_history": [_json_float(v) for v in kept],
        "residual_history_iterations": [its[i] for i in idx],
        "rate": rate,
        "rate_points": points,
        "time_s": time_s,
        "time_per_iteration_s": (time_s / n_iter) if (time_s is not None and n_iter) else None,
    }
    return facts


# -- fixture ---------------------------------------------------------------------------------

def _find_result(out: Any):
    from neurosolve.core import Result

    if isinstance(out, Result):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, Result):
                return o
    raise TypeError("convergence(fn): fn must return a neurosolve.Result (or a tuple holding "
                    f"one), got {type(out).__name__}")


class Convergence:
    """The ``convergence`` fixture's value: call it to time a solve and record its facts."""

    def __init__(self, benchmark, node):
        self.benchmark = benchmark
        self._node = node
        self.extra_info: dict = benchmark.extra_info if benchmark is not None else {}
        self.result = None

    @property
    def timed(self) -> bool:
        """Whether pytest-benchmark times the solve (False: one plain run)."""
        return self.benchmark is not None and not getattr(self.benchmark, "disabled", False)

    def __call__(self, target, solver=None, *, rounds: int | None = None,
                 warmup_rounds: int | None = None, iterations: int = 1,
                 metric: str | None = None, tail: float = 0.5, **solve_kwargs):
        if solver is None and not solve_kwargs and callable(target):
            fn: Callable[[], Any] = target
        else:
            import neurosolve

            def fn():
                return neurosolve.solve(target, solver, **solve_kwargs)

        bench = self.benchmark
        if bench is not None:
            if rounds is None:
                out = bench(fn)
            else:
                out = bench.pedantic(fn, rounds=rounds, iterations=iterations,
                                     warmup_rounds=warmup_rounds or 0)
            stats = getattr(bench, "stats", None)
            t = stats.stats.min if stats is not None else None
        else:
            t0 = time.perf_counter()
            out = fn()
            t = time.perf_counter() - t0
        res = _find_result(out)
        if t is None:  # benchmark disabled: one untimed run
            t = res.stats.get("wall_time")
        self.result = res
        facts = convergence_facts(res, metric=metric, tail=tail, time_s=t)
        self.extra_info.update(facts)
        if bench is None:
            self._node.user_properties.append(("convergence", facts))
        return out


def _benchmark_active(config) -> bool:
    bs = getattr(config, "_benchmarksession", None)
    return bs is not None and not bs.skip


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A test that requests ``convergence`` is a benchmark test for pytest-benchmark's
    ``--benchmark-only`` (unless benchmarks are skipped: then it runs, untimed)."""
    if not _benchmark_active(config):
        return
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and "convergence" in names and "benchmark" not in names:
            names.append("benchmark")


@pytest.fixture
def convergence(request):
    """Time a solve with pytest-benchmark and record its convergence facts in
    ``benchmark.extra_info``: ``convergence(problem, solver, **solve_kwargs)`` or
    ``convergence(fn)`` (``fn()`` returns a Result). See :mod:`neurosolve.pytest_plugin`."""
    bench = request.getfixturevalue("benchmark") if _benchmark_active(request.config) else None
    return Convergence(bench, request.node)


# -- comparison ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Regression:
    """One flagged change: ``kind`` is ``"rate"``, ``"iterations"`` or ``"status"``."""

    name: str
    kind: str
    saved: Any
    current: Any

    def __str__(self) -> str:
        if self.kind == "rate":
            return (f"{self.name}: rate {self.saved:.4g} -> {self.current:.4g} per iteration "
                    "(slower asymptotic convergence)")
        if self.kind == "iterations":
            return f"{self.name}: iterations {self.saved} -> {self.current}"
        return f"{self.name}: status {self.saved} -> {self.current}"


def _load(data) -> dict:
    if isinstance(data, dict):
        return data
    return json.loads(pathlib.Path(data).read_text())


def _by_name(data: dict) -> dict[str, dict]:
    out = {}
    for b in data.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if "iterations" in info or "rate" in info:
            out[b.get("fullname") or b["name"]] = info
    return out


def compare(saved_json, current_json, *, rate_tol: float = 0.05,
            iter_tol: float = 0.10) -> list[Regression]:
    """Convergence regressions of ``current_json`` against ``saved_json`` (paths to
    ``--benchmark-json`` files, or their loaded dicts), matched by test ``fullname``.

    Flags a test when its iterations grew by more than ``iter_tol`` (relative; and by at
    least one), when its asymptotic rate got slower by more than ``rate_tol`` (relative
    change of ``-log(rate)``, i.e. of the digits gained per iteration; a rate that reaches
    1 where the saved one was below is always flagged), or when a CONVERGED status became
    another. Timings are not compared. Returns ``[]`` when nothing regressed."""
    saved, current = _by_name(_load(saved_json)), _by_name(_load(current_json))
    out = []
    for name, cur in current.items():
        old = saved.get(name)
        if old is None:
            continue
        if old.get("status") == "CONVERGED" and cur.get("status") not in (None, "CONVERGED"):
            out.append(Regression(name, "status", old.get("status"), cur.get("status")))
        i0, i1 = old.get("iterations"), cur.get("iterations")
        if isinstance(i0, int) and isinstance(i1, int) and i1 > i0 * (1 + iter_tol) \
                and i1 - i0 >= 1:
            out.append(Regression(name, "iterations", i0, i1))
        r0, r1 = old.get("rate"), cur.get("rate")
        if isinstance(r0, (int, float)) and isinstance(r1, (int, float)) and 0 < r0 < 1:
            slower = r1 >= 1 or -math.log(r1) < -math.log(r0) * (1 - rate_tol) if r1 > 0 else False
            if slower:
                out.append(Regression(name, "rate", r0, r1))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m neurosolve.pytest_plugin SAVED.json CURRENT.json [--rate-tol] [--iter-tol]``:
    prints each regression; exit status 1 when there is one, 0 otherwise."""
    p = argparse.ArgumentParser(prog="python -m neurosolve.pytest_plugin",
                                description="flag convergence regressions between two "
                                            "pytest-benchmark JSON files")
    p.add_argument("saved", help="the saved --benchmark-json file (the baseline)")
    p.add_argument("current", help="the new --benchmark-json file")
    p.add_argument("--rate-tol", type=float, default=0.05,
                   help="allowed relative slowdown of the asymptotic rate (default 0.05)")
    p.add_argument("--iter-tol", type=float, default=0.10,
                   help="allowed relative growth of the iterations (default 0.10)")
    a = p.parse_args(argv)
    regs = compare(a.saved, a.current, rate_tol=a.rate_tol, iter_tol=a.iter_tol)
    for r in regs:
        print(f"REGRESSION {r}")
    n = len(_by_name(_load(a.current)))
    print(f"{len(regs)} convergence regression(s) in {n} benchmark(s) with convergence facts")
    return 1 if regs else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
