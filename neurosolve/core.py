"""The Problem / Solver / Result core and the one iteration loop, :func:`solve`.

Every method family in neurosolve plugs into the same three-method protocol::

    state = solver.init(problem, x0, ctx)
    state = solver.step(problem, state, ctx)
    status = solver.check(problem, state, ctx)     # None: keep going

and :func:`solve` drives it: timing, counters, history, callbacks, progress bars,
warm starts and failure reporting are written once, here.
"""

from __future__ import annotations

import enum
import math
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Status",
    "State",
    "Context",
    "Result",
    "SolveError",
    "Problem",
    "Solver",
    "IterView",
    "solve",
    "to_float",
]


class Status(str, enum.Enum):
    """Why a solve ended. Each member carries a ``message`` saying what to try."""

    CONVERGED = "converged"
    MAX_ITER = "max_iter"
    BREAKDOWN = "breakdown"
    STAGNATION = "stagnation"
    DIVERGED = "diverged"
    NONFINITE = "nonfinite"
    STOPPED = "stopped"
    INFEASIBLE = "infeasible"

    @property
    def message(self) -> str:
        return _STATUS_MESSAGES[self]

    @property
    def success(self) -> bool:
        return self is Status.CONVERGED


_STATUS_MESSAGES = {
    Status.CONVERGED: "The stopping rule was met.",
    Status.MAX_ITER: (
        "The iteration limit was reached before the tolerance. Raise maxiter, loosen "
        "rtol/atol, use a better preconditioner, or warm start from result.state."
    ),
    Status.BREAKDOWN: (
        "The method broke down (a zero or negative curvature denominator). The operator "
        "may not be SPD, or the preconditioner may not be SPD/linear; check both."
    ),
    Status.STAGNATION: (
        "The iterates stopped making progress. The tolerance may be below what the "
        "floating-point precision allows, or the problem may be inconsistent."
    ),
    Status.DIVERGED: (
        "The iteration diverged. Reduce the step size, check the problem's scaling, or "
        "pick a more robust solver."
    ),
    Status.NONFINITE: (
        "A NaN or infinity appeared. Check the inputs, the oracles and any learned "
        "component (a network or preconditioner returning NaN)."
    ),
    Status.STOPPED: "The callback asked to stop.",
    Status.INFEASIBLE: "The problem has no feasible point other than a trivial one.",
}


class SolveError(RuntimeError):
    """Raised by :func:`solve` with ``throw=True`` when the solve did not converge."""

    def __init__(self, result: "Result"):
        self.result = result
        super().__init__(f"{result.status.name}: {result.message}")


class State(types.SimpleNamespace):
    """Mutable per-solve state that a solver creates in ``init`` and updates in ``step``.

    Required attributes: ``x`` (the current iterate, in the input's array library) and
    ``k`` (the iteration count). ``metrics`` maps metric names to scalars (Python floats,
    numpy scalars or 0-d torch tensors, which are synced to the host only when checked or
    at the end). Solvers add whatever else they need.
    """

    def __init__(self, x: Any = None, k: int = 0, **kwargs: Any):
        kwargs.setdefault("metrics", {})
        super().__init__(x=x, k=k, **kwargs)


class Context:
    """Per-solve services a solver may use: the backend, counters and a scratch space.

    Parameters
    ----------
    backend : neurosolve.backends.Backend
        The kernels and array operations chosen for this solve.
    """

    def __init__(self, backend: Any):
        self.backend = backend
        self.counters: dict[str, int] = {}

    @property
    def xp(self):
        """The array operations of the active backend (see :mod:`neurosolve.backends`)."""
        return self.backend.ops

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (matvecs, factorizations, network evaluations...)."""
        self.counters[name] = self.counters.get(name, 0) + n


@runtime_checkable
class Problem(Protocol):
    """What a problem offers: validated data, oracles, and ``certificate(x)``.

    ``certificate`` recomputes from scratch the numbers that prove an answer correct
    (a true relative residual, a duality gap, a gradient norm...). ``default_solver()``
    returns the family's default solver instance.
    """

    def certificate(self, x: Any) -> dict[str, float]: ...

    def default_solver(self) -> "Solver": ...


@dataclass(frozen=True, kw_only=True)
class Solver:
    """Base class for solvers: a frozen dataclass holding configuration only.

    Subclasses set ``metrics`` (names of the scalars recorded each iteration, the first
    one shown in progress bars), ``problem_types`` (the accepted problem classes) and
    ``backends`` (kernels they implement), and implement ``init``, ``step`` and ``check``.
    ``maxiter`` is enforced by :func:`solve`.
    """

    maxiter: int | None = None
    callback: Callable[["IterView"], Any] | None = field(default=None, compare=False)

    metrics: ClassVar[tuple[str, ...]] = ()
    problem_types: ClassVar[tuple[type, ...]] = ()
    backends: ClassVar[tuple[str, ...]] = ("numpy",)

    def __post_init__(self):
        if self.maxiter is not None and (not isinstance(self.maxiter, (int, np.integer))
                                         or self.maxiter < 0):
            raise ValueError(f"maxiter must be a non-negative integer or None, got {self.maxiter!r}")

    # -- protocol ------------------------------------------------------------------------
    def validate(self, problem: Any) -> None:
        """Raise ``TypeError`` unless ``problem`` is one of ``problem_types``."""
        if self.problem_types and not isinstance(problem, self.problem_types):
            names = ", ".join(t.__name__ for t in self.problem_types)
            raise TypeError(
                f"{type(self).__name__} solves {names} problems, got {type(problem).__name__}"
            )

    def init(self, problem: Any, x0: Any, ctx: Context) -> State:  # pragma: no cover
        raise NotImplementedError

    def step(self, problem: Any, state: State, ctx: Context) -> State:  # pragma: no cover
        raise NotImplementedError

    def check(self, problem: Any, state: State, ctx: Context):  # pragma: no cover
        """Return None to continue, a :class:`Status`, or ``(Status, message)``."""
        raise NotImplementedError

    def max_iterations(self, problem: Any) -> int | None:
        """The iteration limit for ``problem`` (``maxiter``, or a problem-dependent default)."""
        return self.maxiter

    def finalize(self, problem: Any, state: State, ctx: Context) -> Any:
        """The answer to return as ``Result.x`` (default: ``state.x``)."""
        return state.x

    def replace(self, **changes: Any) -> "Solver":
        """A copy with some fields changed (the dataclass is frozen)."""
        import dataclasses

        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class IterView:
    """What a callback sees once per iteration (and at k = 0)."""

    k: int
    x: Any
    metrics: Mapping[str, Any]
    state: State


@dataclass(frozen=True)
class Result:
    """The outcome of :func:`solve`.

    Attributes
    ----------
    x : array
        The answer, in the same array library, dtype and device as the input.
    status : Status
        Why the solve ended; ``status.message`` says what to try.
    message : str
        A message specific to this solve (falls back to ``status.message``).
    n_iter : int
        Number of iterations taken by this solve (a warm start counts from its state).
    history : dict[str, numpy.ndarray]
        Each recorded metric, indexed from iteration 0 (``record_every`` apart).
    certificate : dict[str, float]
        What proves the answer, recomputed from scratch by the problem.
    stats : dict
        ``wall_time``, ``setup_time``, ``backend`` and per-kind counters.
    state : State
        The final solver state, for warm starts: ``solve(..., init=result.state)``.
    """

    x: Any
    status: Status
    message: str
    n_iter: int
    history: dict[str, np.ndarray]
    certificate: dict[str, float]
    stats: dict[str, Any]
    state: State = field(repr=False)

    @property
    def success(self) -> bool:
        return self.status is Status.CONVERGED

    def raise_for_status(self) -> "Result":
        """Raise :class:`SolveError` unless the solve converged; return self otherwise."""
        if not self.success:
            raise SolveError(self)
        return self

    def summary(self) -> str:
        """One line: status, iterations, time and the certificate."""
        cert = ", ".join(f"{k}={v:.3g}" for k, v in self.certificate.items()
                         if isinstance(v, (int, float)))
        return (f"{self.status.name} after {self.n_iter} iterations in "
                f"{self.stats.get('wall_time', float('nan')):.3g} s ({cert})")


def to_float(v: Any) -> float:
    """Host float of a Python/numpy scalar or 0-d torch tensor (syncs a CUDA tensor)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, complex):
        return float(abs(v))
    return float(v)


class _History:
    """Collects metric values without syncing devices; converts once at the end."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.values: dict[str, list] = {}
        self.iters: list[int] = []

    def record(self, k: int, metrics: Mapping[str, Any]) -> None:
        self.iters.append(k)
        for name, v in metrics.items():
            col = self.values.setdefault(name, [])
            # pad late-appearing metrics so every column stays aligned with `iters`
            while len(col) < len(self.iters) - 1:
                col.append(float("nan"))
            col.append(v)

    def finalize(self, record_every: int) -> dict[str, np.ndarray]:
        out = {}
        for name, col in self.values.items():
            while len(col) < len(self.iters):
                col.append(float("nan"))
            out[name] = np.array([to_float(v) for v in col], dtype=float)
        if record_every != 1:
            out["iteration"] = np.array(self.iters, dtype=int)
        return out


def _normalize_status(ret: Any) -> tuple[Status | None, str | None]:
    if ret is None:
        return None, None
    if isinstance(ret, Status):
        return ret, None
    status, message = ret
    return status, message


def solve(
    problem: Any,
    solver: Solver | None = None,
    x0: Any = None,
    *,
    backend: str = "auto",
    callback: Callable[[IterView], Any] | None = None,
    progress: bool = False,
    check_every: int = 1,
    record_every: int = 1,
    throw: bool = False,
    init: State | None = None,
) -> Result:
    """Solve ``problem`` with ``solver`` and return a :class:`Result`.

    Parameters
    ----------
    problem : Problem
        A validated problem instance (e.g. :class:`neurosolve.problems.LinearSystem`).
    solver : Solver, optional
        Configuration of the method; ``None`` picks ``problem.default_solver()``.
    x0 : array, optional
        Starting point, in the same array library as the problem's data.
    backend : {"auto", "numpy", "numba", "torch"}
        Which kernels run. ``auto``: torch inputs use torch; numpy inputs use numba
        kernels where the solver has them, numpy otherwise.
    callback : callable, optional
        ``callback(view)`` with an :class:`IterView`, at k = 0 and after every iteration;
        returning True stops the solve with ``Status.STOPPED``. A callback set on the
        solver runs as well.
    progress : bool
        Show a tqdm progress bar with the solver's leading metric.
    check_every : int
        Evaluate the stopping rule every this many iterations (saves device syncs).
    record_every : int
        Record metrics into ``history`` every this many iterations (iteration 0 and the
        last iteration are always recorded).
    throw : bool
        Raise :class:`SolveError` instead of returning an unsuccessful result.
    init : State, optional
        A state to resume from (``result.state`` of an earlier solve): warm start.

    Returns
    -------
    Result

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]]); b = np.array([1.0, 2.0])
    >>> res = ns.solve(ns.problems.LinearSystem(A, b), ns.solvers.CG(rtol=1e-12))
    >>> res.status.name, np.allclose(A @ res.x, b)
    ('CONVERGED', True)
    """
    from neurosolve.backends import resolve_backend

    if solver is None:
        solver = problem.default_solver()
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a neurosolve Solver instance, got {type(solver).__name__}")
    for name, val in (("check_every", check_every), ("record_every", record_every)):
        if not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    solver.validate(problem)

    t_start = time.perf_counter()
    be = resolve_backend(backend, solver, problem, x0)
    ctx = Context(be)
    if init is not None:
        state = init
        start_k = state.k
        if hasattr(solver, "resume"):
            state = solver.resume(problem, state, ctx)
    else:
        state = solver.init(problem, x0, ctx)
        start_k = 0
    t_setup = time.perf_counter() - t_start

    callbacks = [c for c in (solver.callback, callback) if c is not None]
    history = _History(solver.metrics)
    history.record(state.k, state.metrics)
    maxiter = solver.max_iterations(problem)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=maxiter, desc=type(solver).__name__, leave=False)

    status, message = None, None
    if any(bool(cb(IterView(state.k, state.x, state.metrics, state))) for cb in callbacks):
        status = Status.STOPPED
    if status is None:
        status, message = _normalize_status(solver.check(problem, state, ctx))
    try:
        while status is None:
            if maxiter is not None and state.k - start_k >= maxiter:
                status = Status.MAX_ITER
                break
            state = solver.step(problem, state, ctx)
            k = state.k
            recorded = (k - start_k) % record_every == 0
            if recorded:
                history.record(k, state.metrics)
            if callbacks:
                view = IterView(k, state.x, state.metrics, state)
                if any(bool(cb(view)) for cb in callbacks):
                    status = Status.STOPPED
            if status is None and ((k - start_k) % check_every == 0):
                status, message = _normalize_status(solver.check(problem, state, ctx))
            if status is None and check_every > 1 and maxiter is not None \
                    and state.k - start_k >= maxiter:
                # one last check so a converged final iterate is not reported as MAX_ITER
                status, message = _normalize_status(solver.check(problem, state, ctx))
            if not recorded and status is not None:
                history.record(k, state.metrics)
            if bar is not None:
                bar.update(1)
                if solver.metrics and solver.metrics[0] in state.metrics:
                    bar.set_postfix({solver.metrics[0]: f"{to_float(state.metrics[solver.metrics[0]]):.3e}"})
    finally:
        if bar is not None:
            bar.close()

    x = solver.finalize(problem, state, ctx)
    t_end = time.perf_counter()
    certificate = problem.certificate(x)
    stats = {
        "wall_time": t_end - t_start,
        "setup_time": t_setup,
        "backend": be.name,
        **ctx.counters,
    }
    result = Result(
        x=x,
        status=status,
        message=message or status.message,
        n_iter=state.k - start_k,
        history=history.finalize(record_every),
        certificate=certificate,
        stats=stats,
        state=state,
    )
    if throw and not result.success:
        raise SolveError(result)
    return result


def isfinite_scalar(v: Any) -> bool:
    """True when a scalar (Python, numpy, or 0-d torch tensor) is finite."""
    return math.isfinite(to_float(v))
