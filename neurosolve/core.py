"""The Problem / Solver / Result core and the one iteration loop, :func:`solve`.

Every method family in neurosolve plugs into the same protocol::

    ctx.setup = solver.setup(problem, ctx)       # operators, kernels, tolerances
    state = solver.init(problem, x0, ctx)        # (or solver.resume(...) on a warm start)
    state = solver.step(problem, state, ctx)
    stop = solver.check(problem, state, ctx)     # a Stop, or None: keep going

and :func:`solve` drives it: timing, counters, history, callbacks, progress bars, warm
starts, failure reporting and the certificate gate are written once, here.

The certificate gate: a solver's ``check`` may *claim* convergence from its internal
estimate, but :func:`solve` returns ``Status.CONVERGED`` only after recomputing the
problem's certificate at the point it would return and comparing it with
``solver.tolerance(problem, state)``. When they disagree the solver's
``on_uncertified`` decides: continue (CG replaces its recursive residual by the true
one) or stop with ``Status.STAGNATION`` and the measured values in the message.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Status",
    "Stop",
    "State",
    "Context",
    "Result",
    "SolveError",
    "Problem",
    "Solver",
    "IterView",
    "solve",
    "register_adjoint_resolver",
    "to_float",
    "fingerprint",
    "same_fingerprint",
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


@dataclass(frozen=True)
class Stop:
    """What ``Solver.check`` returns to end a solve (``None`` means keep going).

    Parameters
    ----------
    status : Status
        Why the solve ends. ``Status.CONVERGED`` is a *claim*: :func:`solve` verifies it
        against the problem's certificate before returning it.
    message : str, optional
        What happened in this solve, in words a user can act on (default:
        ``status.message``).
    notes : tuple of str
        Extra remarks appended to the message (a fallback that fired, a switch that was
        taken...).

    Examples
    --------
    >>> from neurosolve.core import Stop, Status
    >>> Stop(Status.BREAKDOWN, "p^T A p = -1.0 at iteration 3").status.name
    'BREAKDOWN'
    """

    status: Status
    message: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.status, Status):
            raise TypeError(f"Stop.status must be a Status, got {type(self.status).__name__}")
        if isinstance(self.notes, str):
            object.__setattr__(self, "notes", (self.notes,))

    @property
    def text(self) -> str:
        """The message with the notes appended."""
        parts = [self.message or self.status.message, *self.notes]
        return " ".join(p for p in parts if p)

    def with_note(self, note: str) -> "Stop":
        """A copy with one more note."""
        return Stop(self.status, self.message, self.notes + (note,))


@dataclass(eq=False)
class State:
    """Iteration data of one solve: the base of every solver's typed state.

    A solver subclasses it as a dataclass whose fields are *iteration data only*
    (iterates, residuals, search directions, counters); configuration (tolerances,
    operators, preconditioners, kernels) is derived from the solver and the problem by
    ``Solver.setup`` on every solve, cold or warm, and lives in ``ctx.setup``. So a warm
    start with a tighter ``rtol`` or a new ``M`` uses them.

    Attributes
    ----------
    x : array
        The current iterate, in the problem's array library.
    k : int
        Iterations taken so far (across warm starts).
    metrics : dict
        Metric name -> scalar (Python float, numpy scalar or 0-d tensor; synced to the
        host only when checked or at the end).
    fingerprint : tuple
        Set by :func:`solve`: which problem this state belongs to (see
        :func:`fingerprint`). A state from another problem is refused.
    """

    x: Any = None
    k: int = 0
    metrics: dict = field(default_factory=dict)
    fingerprint: tuple | None = field(default=None, repr=False)


class Context:
    """Per-solve services a solver may use: the backend, counters and the setup.

    Parameters
    ----------
    backend : neurosolve.backends.Backend
        The kernels and array operations chosen for this solve.

    Attributes
    ----------
    setup : object
        What ``solver.setup(problem, ctx)`` returned for this solve (operators, kernels,
        absolute tolerances); configuration never lives in the state.
    counters : dict
        Per-kind counts (matvecs, factorizations, network evaluations...), reported in
        ``Result.stats``.
    """

    def __init__(self, backend: Any):
        self.backend = backend
        self.counters: dict[str, int] = {}
        self.setup: Any = None

    @property
    def kernels(self):
        """The kernels chosen in ``setup`` (``ctx.setup.kernels``), if the solver has any."""
        return getattr(self.setup, "kernels", None)

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
    (a true relative residual, a duality gap, a gradient norm...). A problem may define
    ``fingerprint()`` (see :func:`fingerprint`). Problems know no solver: the default
    one comes from :func:`neurosolve.solvers.default_solver`.
    """

    def certificate(self, x: Any) -> dict[str, float]: ...


@dataclass(frozen=True, kw_only=True)
class Solver:
    """Base class for solvers: a frozen dataclass holding configuration only.

    Subclasses set ``metrics`` (names of the scalars recorded each iteration, the first
    one shown in progress bars), ``problem_types`` (the accepted problem classes) and
    ``backends`` (kernels they implement), and implement

    - ``setup(problem, ctx)``: everything derived from the configuration and the problem
      (operators, kernels from the family's ``kernels.select(backend)``, absolute
      tolerances); it runs on cold and warm starts alike and its result is ``ctx.setup``;
    - ``init(problem, x0, ctx) -> State`` and ``step(problem, state, ctx) -> State``;
    - ``check(problem, state, ctx) -> Stop | None``;
    - ``tolerance(problem, state) -> dict``: the declared tolerance as upper bounds on the
      problem's certificate keys, which :func:`solve` verifies before returning CONVERGED;
    - optionally ``resume(problem, state, ctx)`` (refresh a warm-start state under the new
      setup) and ``on_uncertified`` (what to do when the certificate disagrees).

    ``maxiter`` is enforced by :func:`solve`.
    """

    maxiter: int | None = None
    callback: Callable[["IterView"], Any] | None = field(default=None, compare=False)

    metrics: ClassVar[tuple[str, ...]] = ()
    problem_types: ClassVar[tuple[type, ...]] = ()
    backends: ClassVar[tuple[str, ...]] = ("numpy",)

    def __post_init__(self):
        if self.maxiter is not None and (isinstance(self.maxiter, bool) or not isinstance(
                self.maxiter, (int, np.integer)) or self.maxiter < 0):
            raise ValueError(f"maxiter must be a non-negative integer or None, got {self.maxiter!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable, got {type(self.callback).__name__}")

    # -- protocol ------------------------------------------------------------------------
    def validate(self, problem: Any) -> None:
        """Raise ``TypeError`` unless ``problem`` is one of ``problem_types``."""
        if self.problem_types and not isinstance(problem, self.problem_types):
            names = ", ".join(t.__name__ for t in self.problem_types)
            raise TypeError(
                f"{type(self).__name__} solves {names} problems, got {type(problem).__name__}"
            )

    def setup(self, problem: Any, ctx: Context) -> Any:
        """Configuration derived from ``self`` and ``problem`` for one solve (default None).

        Runs before ``init`` on a cold start and before ``resume`` on a warm one; the
        result is available to ``init``/``step``/``check`` as ``ctx.setup``.
        """
        return None

    def init(self, problem: Any, x0: Any, ctx: Context) -> State:  # pragma: no cover
        raise NotImplementedError

    def resume(self, problem: Any, state: State, ctx: Context) -> State:
        """Prepare a warm-start ``state`` for this solver's configuration (default: as is).

        Called after ``setup`` with a state whose fingerprint matched ``problem``.
        Solvers whose iteration data depend on the configuration (a CG recurrence on the
        old preconditioner, say) refresh them here.
        """
        return state

    def step(self, problem: Any, state: State, ctx: Context) -> State:  # pragma: no cover
        raise NotImplementedError

    def check(self, problem: Any, state: State, ctx: Context) -> Stop | None:  # pragma: no cover
        """Return None to continue or a :class:`Stop`."""
        raise NotImplementedError

    def tolerance(self, problem: Any, state: State) -> dict[str, float]:
        """Upper bounds on ``problem.certificate(x)`` keys that CONVERGED promises.

        Every solver of the library declares one; an empty dict would mean its
        CONVERGED is unverified, which the contract tests refuse.
        """
        return {}

    def on_uncertified(self, problem: Any, state: State, ctx: Context,
                       failed: dict[str, tuple[float, float]]) -> Stop | None:
        """The internal estimate said "converged" but the certificate did not.

        ``failed`` maps each certificate key that missed its bound to
        ``(measured, bound)``. Return None to keep iterating (after repairing the
        state, e.g. replacing a drifted recursive residual by the true one), or a
        :class:`Stop`. The default stops with ``Status.STAGNATION`` and the measured gap.
        """
        return Stop(Status.STAGNATION, uncertified_message(failed))

    def max_iterations(self, problem: Any) -> int | None:
        """The iteration limit for ``problem`` (``maxiter``, or a problem-dependent default)."""
        return self.maxiter

    def finalize(self, problem: Any, state: State, ctx: Context) -> Any:
        """The answer to return as ``Result.x`` (default: ``state.x``)."""
        return state.x

    def witness(self, problem: Any, state: State, ctx: Context) -> dict[str, Any]:
        """Proof objects for the certificate beyond the answer itself (default: none).

        Passed as keyword arguments to ``problem.certificate(x, **witness)``; the problem
        verifies them from scratch (e.g. a dual point, checked for dual feasibility), so a
        witness can only tighten a bound that holds, never make a false one pass.
        """
        return {}

    def replace(self, **changes: Any) -> "Solver":
        """A copy with some fields changed (the dataclass is frozen)."""
        import dataclasses

        return dataclasses.replace(self, **changes)


def uncertified_message(failed: Mapping[str, tuple[float, float]]) -> str:
    """Words for a certificate that missed the declared tolerance."""
    parts = ", ".join(f"{k} = {v:.3e} > {t:.3e}" for k, (v, t) in failed.items())
    return (f"the internal stopping estimate was met but the certificate, recomputed from "
            f"scratch at the returned point, is not: {parts}. The tolerance is probably "
            "below what this problem's conditioning and the floating-point precision "
            "allow; loosen it, rescale the problem, or use a more accurate method.")


def fingerprint(problem: Any) -> tuple:
    """A cheap identity of ``problem`` recorded in every state (warm starts check it).

    ``problem.fingerprint()`` when the problem defines it (type, shapes, dtype and its
    operator or oracles *as objects*), else the problem's type and the problem itself.
    Objects are compared by identity (:func:`same_fingerprint`) and kept alive by the
    state, so a freed problem's memory address reused by a new one cannot pass for it.
    """
    fp = getattr(problem, "fingerprint", None)
    if callable(fp):
        return (type(problem).__qualname__,) + tuple(fp())
    return (type(problem).__qualname__, problem)


_PLAIN = (str, int, float, bool, type(None))


def same_fingerprint(a: tuple, b: tuple) -> bool:
    """Plain entries (str, numbers, None) compared by value, everything else by identity."""
    if len(a) != len(b):
        return False
    return all((u == v) if isinstance(u, _PLAIN) and isinstance(v, _PLAIN) else (u is v)
               for u, v in zip(a, b))


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

    @property
    def nit(self) -> int:
        """scipy's name for :attr:`n_iter`."""
        return self.n_iter

    @property
    def fun(self) -> float:
        """The objective at ``x`` (minimization results; scipy's ``OptimizeResult.fun``).

        The certificate's ``f`` (recomputed at ``x``) when there is one, else the state's.
        Raises AttributeError for results without an objective (a linear solve).
        """
        if "f" in self.certificate:
            return float(self.certificate["f"])
        f = getattr(self.state, "f", None)
        if f is None:
            raise AttributeError(f"this {type(self.state).__name__} result has no objective "
                                 "value 'fun' (only minimization results have one)")
        return to_float(f)

    @property
    def jac(self) -> Any:
        """The gradient at ``x`` (minimization results; scipy's ``OptimizeResult.jac``),
        in the array library of ``x``. Raises AttributeError for results without one."""
        g = getattr(self.state, "g", None)
        if g is None:
            raise AttributeError(f"this {type(self.state).__name__} result has no gradient "
                                 "'jac' (only minimization results have one)")
        return g

    def __repr__(self) -> str:
        """One line: status, iterations, time, certificate, the recorded metrics (names
        and length, not the arrays) and the answer's type and shape."""
        cert = ", ".join(f"{k}={v:.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool)
                         else f"{k}={v!r}" for k, v in self.certificate.items())
        points = max((len(v) for v in self.history.values()), default=0)
        shape = tuple(getattr(self.x, "shape", ()))
        lib = type(self.x).__name__
        dtype = getattr(self.x, "dtype", "")
        return (f"Result({self.status.name}, n_iter={self.n_iter}, "
                f"time={self.stats.get('wall_time', float('nan')):.3g}s, certificate={{{cert}}}, "
                f"history=[{', '.join(self.history)}] x {points}, x={lib}{shape} {dtype})")

    def adjoint_report(self) -> dict[str, Any]:
        """What the backward pass of ``solve(..., adjoint="implicit")`` did: the adjoint
        solver, its iterations, status, relative residual, tolerance, time and whether the
        gradient is exact. Empty until backward ran; raises ValueError for a solve without
        ``adjoint="implicit"``."""
        if "adjoint" not in self.stats:
            raise ValueError('this result was not computed with adjoint="implicit"')
        return dict(self.stats["adjoint"])

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


class _Progress:
    """A tqdm bar of the way to the tolerance: the leading metric's progress in log scale
    from its starting value to the declared bound (``solver.tolerance``) as a percentage,
    or an iteration counter when the metric has no declared bound. Never ``maxiter``,
    which is a cap, not a forecast."""

    def __init__(self, solver: Solver, problem: Any, state: State):
        from tqdm.auto import tqdm

        self.name = solver.metrics[0] if solver.metrics else None
        self.start = self._value(state)
        self.target = None
        try:
            bound = solver.tolerance(problem, state).get(self.name)
        except Exception:  # noqa: BLE001 - a bar must never break a solve
            bound = None
        if bound is not None and self.start is not None and self.start > float(bound) > 0:
            self.target = float(bound)
        self.k0 = state.k
        desc = type(solver).__name__
        if self.target is not None:
            self.bar = tqdm(total=100, desc=desc, unit="%", leave=False,
                            bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}{postfix}]")
        else:
            self.bar = tqdm(total=None, desc=desc, unit="it", leave=False)

    def _value(self, state: State) -> float | None:
        if self.name is None or self.name not in state.metrics:
            return None
        v = to_float(state.metrics[self.name])
        return v if math.isfinite(v) and v > 0 else None

    def update(self, state: State) -> None:
        v = self._value(state)
        post = {"it": state.k - self.k0}
        if v is not None:
            post[self.name] = f"{v:.3e}"
        if self.target is not None:
            frac = 0.0 if v is None else math.log(self.start / v) / math.log(self.start / self.target)
            self.bar.n = 100.0 * min(max(frac, 0.0), 1.0)
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        else:
            self.bar.update(1)
            self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _as_stop(ret: Any, solver: Solver) -> Stop | None:
    if ret is None or isinstance(ret, Stop):
        return ret
    raise TypeError(
        f"{type(solver).__name__}.check must return a neurosolve.core.Stop or None, got "
        f"{type(ret).__name__}")


#: how often in one solve a claimed convergence may be refuted by the certificate before
#: the solve ends with STAGNATION (each refutation costs one certificate evaluation)
MAX_REFUTED_CLAIMS = 8


class _Gate:
    """Verifies a CONVERGED claim against the certificate at the point to be returned."""

    def __init__(self, solver: Solver, problem: Any, ctx: Context):
        self.solver, self.problem, self.ctx = solver, problem, ctx
        self.refuted = 0
        self.answer: tuple[Any, dict] | None = None  # (x, certificate) of a verified claim

    def __call__(self, stop: Stop | None, state: State) -> Stop | None:
        if stop is None or stop.status is not Status.CONVERGED:
            return stop
        solver, problem = self.solver, self.problem
        bounds = solver.tolerance(problem, state)
        x = solver.finalize(problem, state, self.ctx)
        cert = problem.certificate(x, **solver.witness(problem, state, self.ctx))
        failed = {}
        for key, bound in bounds.items():
            if key not in cert:
                raise KeyError(
                    f"{type(solver).__name__}.tolerance names {key!r}, which "
                    f"{type(problem).__name__}.certificate does not compute (it has "
                    f"{sorted(cert)})")
            value = to_float(cert[key])
            if not value <= bound:  # NaN fails too
                failed[key] = (value, float(bound))
        if not failed:
            self.answer = (x, cert)
            return stop
        self.refuted += 1
        self.ctx.count("refuted_convergence_claims")
        if self.refuted > MAX_REFUTED_CLAIMS:
            return Stop(Status.STAGNATION, uncertified_message(failed),
                        (f"The internal estimate claimed convergence {self.refuted} times "
                         "and the certificate refuted it each time.",))
        return solver.on_uncertified(problem, state, self.ctx, failed)


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
    adjoint: Any = None,
) -> Result:
    """Solve ``problem`` with ``solver`` and return a :class:`Result`.

    Parameters
    ----------
    problem : Problem
        A validated problem instance (e.g. :class:`neurosolve.problems.LinearSystem`).
    solver : Solver, optional
        Configuration of the method; ``None`` picks
        :func:`neurosolve.solvers.default_solver` of the problem.
    x0 : array, optional
        Starting point, in the same array library as the problem's data.
    backend : {"auto", "numpy", "numba", "torch"}
        Which kernels run. ``auto``: torch inputs use torch; numpy inputs use numba
        kernels where the solver has them, numpy otherwise. ``stats["backend"]`` says
        what ran.
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
        A state to resume from (``result.state`` of an earlier solve of the *same*
        problem): warm start. The solver's current configuration applies (a tighter
        ``rtol``, a new ``M``); a state from another problem raises ``ValueError``.
    adjoint : {None, "implicit", "unrolled"} or neurosolve.adjoint.Implicit
        How gradients flow through the solve (torch problems). ``None`` (default): the
        iterations run under ``torch.no_grad()`` and ``x`` carries no graph.
        ``"implicit"``: ``x`` is attached to the autograd graph of the problem's tensors
        by the implicit function theorem; ``backward`` solves one adjoint system with a
        solver of the same family (see :mod:`neurosolve.adjoint`). ``"unrolled"``: the
        iterations run with autograd recording, so ``x`` carries the graph of every
        iteration (memory grows with the iteration count; a reference and the way to
        train what changes the iterates, such as a preconditioner).

    Returns
    -------
    Result
        ``status`` is CONVERGED only if ``problem.certificate(result.x)``, recomputed
        from scratch, meets ``solver.tolerance(problem, state)``.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]]); b = np.array([1.0, 2.0])
    >>> res = ns.solve(ns.problems.LinearSystem(A, b), ns.solvers.CG(rtol=1e-12))
    >>> res.status.name, np.allclose(A @ res.x, b)
    ('CONVERGED', True)
    """
    if solver is None:
        from neurosolve.solvers import default_solver

        solver = default_solver(problem)
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a neurosolve Solver instance, got {type(solver).__name__}")
    attach = _adjoint_attacher(adjoint, problem, solver)
    with _grad_mode(adjoint):
        result = _solve(problem, solver, x0, backend=backend, callback=callback,
                        progress=progress, check_every=check_every, record_every=record_every,
                        throw=throw, init=init)
    return result if attach is None else attach(result)


#: turns the ``adjoint=`` argument of :func:`solve` into a function ``Result -> Result``;
#: installed by :mod:`neurosolve.adjoint` (which builds on this module, so the core does not
#: import it)
_ADJOINT_RESOLVER: Callable[[Any, Any, "Solver"], Callable[[Result], Result]] | None = None


def register_adjoint_resolver(resolver: Callable) -> None:
    """Install the function that resolves ``solve(..., adjoint=...)`` (used by
    :mod:`neurosolve.adjoint` at import)."""
    global _ADJOINT_RESOLVER
    _ADJOINT_RESOLVER = resolver


def _adjoint_attacher(adjoint: Any, problem: Any, solver: "Solver"):
    if adjoint is None or (isinstance(adjoint, str) and adjoint == "unrolled"):
        return None
    if _ADJOINT_RESOLVER is None:  # pragma: no cover - neurosolve/__init__ installs it
        raise RuntimeError("import neurosolve.adjoint before solve(..., adjoint=...)")
    # validates the argument and the problem before any work
    return _ADJOINT_RESOLVER(adjoint, problem, solver)


def _grad_mode(adjoint: Any):
    """``no_grad`` around the iterations unless ``adjoint="unrolled"``: an implicit or no
    adjoint must not record a graph of every iteration."""
    import contextlib
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return contextlib.nullcontext()
    if isinstance(adjoint, str) and adjoint == "unrolled":
        return torch.enable_grad()
    return torch.no_grad()


def _solve(problem, solver, x0, *, backend, callback, progress, check_every, record_every,
           throw, init) -> Result:
    from neurosolve.backends import resolve_backend

    for name, val in (("check_every", check_every), ("record_every", record_every)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    solver.validate(problem)
    fp = fingerprint(problem)
    if init is not None:
        if not isinstance(init, State):
            raise TypeError(f"init must be the state of an earlier result (result.state), got "
                            f"{type(init).__name__}")
        if init.fingerprint is not None and not same_fingerprint(init.fingerprint, fp):
            raise ValueError(
                "init is the state of a solve of a different problem (its fingerprint "
                f"{_short(init.fingerprint)} does not match this problem's {_short(fp)}); "
                "warm start only from result.state of the same problem, or pass x0= instead")

    t_start = time.perf_counter()
    be = resolve_backend(backend, solver, problem, x0)
    ctx = Context(be)
    ctx.setup = solver.setup(problem, ctx)
    if init is not None:
        start_k = init.k
        # resume a copy: the earlier Result keeps the state it returned
        state = solver.resume(problem, _copy_state(init), ctx)
    else:
        state = solver.init(problem, x0, ctx)
        start_k = 0
    state.fingerprint = fp
    t_setup = time.perf_counter() - t_start

    callbacks = [c for c in (solver.callback, callback) if c is not None]
    history = _History(solver.metrics)
    history.record(state.k, state.metrics)
    maxiter = solver.max_iterations(problem)
    gate = _Gate(solver, problem, ctx)

    def check() -> Stop | None:
        return gate(_as_stop(solver.check(problem, state, ctx), solver), state)

    bar = _Progress(solver, problem, state) if progress else None

    stop: Stop | None = None
    if any(bool(cb(IterView(state.k, state.x, state.metrics, state))) for cb in callbacks):
        stop = Stop(Status.STOPPED)
    if stop is None:
        stop = check()
    try:
        while stop is None:
            if maxiter is not None and state.k - start_k >= maxiter:
                stop = Stop(Status.MAX_ITER)
                break
            state = solver.step(problem, state, ctx)
            k = state.k
            recorded = (k - start_k) % record_every == 0
            if recorded:
                history.record(k, state.metrics)
            if callbacks:
                view = IterView(k, state.x, state.metrics, state)
                if any(bool(cb(view)) for cb in callbacks):
                    stop = Stop(Status.STOPPED)
            if stop is None and ((k - start_k) % check_every == 0):
                stop = check()
            if stop is None and check_every > 1 and maxiter is not None \
                    and state.k - start_k >= maxiter:
                # one last check so a converged final iterate is not reported as MAX_ITER
                stop = check()
            if not recorded and stop is not None:
                history.record(k, state.metrics)
            if bar is not None:
                bar.update(state)
    finally:
        if bar is not None:
            bar.close()

    if stop.status is Status.CONVERGED and gate.answer is not None:
        x, certificate = gate.answer
    else:
        x = solver.finalize(problem, state, ctx)
        certificate = problem.certificate(x, **solver.witness(problem, state, ctx))
    t_end = time.perf_counter()
    stats = {
        "wall_time": t_end - t_start,
        "setup_time": t_setup,
        "backend": be.name,
        **ctx.counters,
    }
    result = Result(
        x=x,
        status=stop.status,
        message=stop.text,
        n_iter=state.k - start_k,
        history=history.finalize(record_every),
        certificate=certificate,
        stats=stats,
        state=state,
    )
    if throw and not result.success:
        raise SolveError(result)
    return result


def _copy_state(state: State) -> State:
    import copy

    # the fingerprint's objects (the problem, its operator) are shared, never copied
    memo = {id(v): v for v in (state.fingerprint or ()) if not isinstance(v, _PLAIN)}
    try:
        return copy.deepcopy(state, memo)
    except Exception:  # pragma: no cover - a state holding something uncopyable
        return copy.copy(state)


def _short(fp: tuple) -> str:
    text = repr(tuple(v if isinstance(v, _PLAIN) else f"<{type(v).__name__} at {id(v):#x}>"
                      for v in fp))
    return text if len(text) <= 120 else text[:117] + "..."


def isfinite_scalar(v: Any) -> bool:
    """True when a scalar (Python, numpy, or 0-d torch tensor) is finite."""
    return math.isfinite(to_float(v))
