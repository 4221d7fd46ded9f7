"""Conjugate gradients: plain, preconditioned, and flexible (nonlinear preconditioner)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple

import numpy as np

from neurosolve.backends.linear_kernels import LinearKernels, select
from neurosolve.core import Solver, State, Status, Stop, to_float
from neurosolve.operators import FunctionOperator, MatrixOperator, aslinearoperator, checked
from neurosolve.problems.linear import LinearSystem
from neurosolve.solvers.conjugate_directions import StallWatch, flexible_step

__all__ = ["CG", "CGState", "CGSetup", "spd_solve"]


@dataclass(eq=False)
class CGState(State):
    """Iteration data of CG, PCG and the flexible method (no configuration).

    Attributes
    ----------
    r : array
        The residual the iteration carries (recursive, or true after a replacement).
    rnorm : scalar
        ``||r||`` (0-d array/tensor: synced only when checked).
    p, rho : array, scalar
        PCG: the last search direction and ``r^T M r`` (None after a restart).
    den : scalar
        The last curvature ``p^T A p`` (breakdown test).
    kept : deque
        Flexible method: the kept ``(d, A d, d^T A d)`` triples.
    breakdown : bool
        A direction with (near) zero curvature was met.
    since_recompute : int
        Flexible method: steps since the residual was last recomputed.
    replacements : int
        Residual replacements made after the certificate refuted a convergence claim.
    replaced_at : float
        The true relative residual at the last replacement (to detect that replacing no
        longer helps).
    stall : list
        Recent relative residuals for the stall detector of the flexible method.
    """

    r: Any = None
    rnorm: Any = None
    p: Any = None
    rho: Any = None
    den: Any = None
    kept: deque = field(default_factory=deque)
    breakdown: bool = False
    since_recompute: int = 0
    replacements: int = 0
    replaced_at: float = float("inf")
    stall: list = field(default_factory=list)
    r0norm: float = 0.0


class CGSetup(NamedTuple):
    """Configuration of one CG solve, derived by :meth:`CG.setup` (cold and warm starts).

    Attributes
    ----------
    kernels : LinearKernels
        The backend's kernel table.
    mv : callable
        ``x -> A x`` (validated if user-supplied).
    Mmv : callable or None
        ``r -> M r`` (validated if user-supplied); None without a preconditioner.
    flexible : bool
        Whether the flexible conjugate-direction method runs.
    bnorm : float
        ``||b||``.
    anorm : float
        A cheap bound of ``||A||`` for breakdown tests.
    """

    kernels: LinearKernels
    mv: Callable
    Mmv: Callable | None
    flexible: bool
    bnorm: float
    anorm: float


@dataclass(frozen=True, kw_only=True)
class CG(Solver):
    """Conjugate gradients for SPD (or compatible singular SPSD) linear systems.

    With ``M=None`` this is CG; with a linear SPD ``M`` it is PCG, iterate for iterate the
    same as :func:`scipy.sparse.linalg.cg`. With a nonlinear ``M`` (a callable, a neural
    network adapter) or ``flexible=True`` it is the flexible, truncated
    conjugate-direction method: each direction ``M(r/||r||)`` is A-orthogonalized against
    the last ``truncate`` directions and followed by an exact A-norm line search (see
    :mod:`neurosolve.solvers.conjugate_directions`). A nonlinear ``M`` is never fed into
    the PCG recurrence.

    Parameters
    ----------
    rtol, atol : float
        Stopping rule: ``||r_k|| < max(rtol * ||b||, atol)`` (scipy's rule; with
        ``rtol_reference="r0"`` the reference is ``||b - A x0||`` instead), where ``r_k``
        is the recurrence residual (the true one when ``recompute_every=1``). CONVERGED is
        returned only if the *true* residual ``b - A x`` of the returned ``x`` meets the
        same bound: when the recurrence residual has drifted (high condition numbers), the
        residual is replaced by the true one, the recurrence restarts and the iteration
        continues; STAGNATION when replacing stops helping. ``0 <= rtol < 1``.
    maxiter : int, optional
        Iteration limit; default ``10 n``.
    M : operator, optional
        Preconditioner approximating ``A^{-1}``: any input of
        :func:`~neurosolve.operators.aslinearoperator`.
    flexible : bool, optional
        Force (True) or forbid (False) the flexible method; default: flexible exactly
        when ``M`` is nonlinear.
    truncate : int or None
        Flexible method: directions kept for A-orthogonalization (None keeps all).
    normalize : bool
        Flexible method: feed ``M`` the unit-norm residual (a no-op for linear ``M``).
    recompute_every : int
        Flexible method: recompute the true residual ``b - A x`` every this many steps
        (0 never; 1 reproduces the DCDM reference, at one extra SpMV per step).
    guard : float
        Flexible method: when a direction's A-norm error reduction is below ``guard``
        times the steepest-descent step's, minimize over both (one more SpMV). 0 = off.
    breakdown_tol : float
        Curvature ``d^T A d <= breakdown_tol ||d||^2 ||A||`` counts as breakdown.
    rtol_reference : {"b", "r0"}
        What ``rtol`` is relative to.

    stall_window : int or None
        Flexible method: STAGNATION when the relative residual fell less than
        ``1 / stall_factor`` over this many iterations (None: never). Default 50.
    stall_factor : float
        See ``stall_window``.

    Notes
    -----
    Metrics: ``residual_norm`` (the recurrence residual) and ``relative_residual``.
    Status: CONVERGED (certified), MAX_ITER, BREAKDOWN (non-positive curvature: A or M not
    SPD), NONFINITE (NaN from A or M), INFEASIBLE (b incompatible with a singular A),
    STAGNATION (flexible method without progress; or a tolerance below what the true
    residual can reach). A warm start (``init=result.state``) recomputes the true residual
    and restarts the recurrence, so a new ``rtol`` or ``M`` applies.

    References
    ----------
    .. [1] M. R. Hestenes, E. Stiefel, "Methods of conjugate gradients for solving linear
       systems", J. Res. Nat. Bur. Standards 49(6), 1952.
    .. [2] A. Kaneda et al., "A Deep Conjugate Direction Method for Iteratively Solving
       Linear Systems", ICML 2023, arXiv:2205.10763.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from neurosolve.problems import poisson
    >>> prob = poisson.box((32, 32)).system(poisson.rhs_blobs((32, 32), seed=0))
    >>> res = ns.solve(prob, ns.solvers.CG(rtol=1e-8))
    >>> res.success, res.certificate["relative_residual"] < 1e-8
    (True, True)
    """

    rtol: float = 1e-5
    atol: float = 0.0
    M: Any = None
    flexible: bool | None = None
    truncate: int | None = 2
    normalize: bool = True
    recompute_every: int = 0
    guard: float = 0.0
    breakdown_tol: float = 1e-14
    rtol_reference: str = "b"
    stall_window: int | None = 50
    stall_factor: float = 0.5

    metrics: ClassVar[tuple[str, ...]] = ("relative_residual", "residual_norm")
    problem_types: ClassVar[tuple[type, ...]] = (LinearSystem,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.rtol >= 1:
            raise ValueError(f"rtol must be below 1 (a relative tolerance), got {self.rtol!r}")
        if self.truncate is not None and (not isinstance(self.truncate, (int, np.integer))
                                          or self.truncate < 0):
            raise ValueError(f"truncate must be a non-negative integer or None, got {self.truncate!r}")
        if self.rtol_reference not in ("b", "r0"):
            raise ValueError(f"rtol_reference must be 'b' or 'r0', got {self.rtol_reference!r}")
        if not isinstance(self.recompute_every, (int, np.integer)) or self.recompute_every < 0:
            raise ValueError(f"recompute_every must be a non-negative integer, got {self.recompute_every!r}")
        if self.stall_window is not None and (isinstance(self.stall_window, bool) or not isinstance(
                self.stall_window, (int, np.integer)) or self.stall_window < 1):
            raise ValueError(f"stall_window must be a positive integer or None, got "
                             f"{self.stall_window!r}")
        if not isinstance(self.stall_factor, (int, float)) or not 0 < self.stall_factor < 1:
            raise ValueError(f"stall_factor must be in (0, 1), got {self.stall_factor!r}")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 10 * problem.n

    # -- setup ---------------------------------------------------------------------------
    def _preconditioner(self, problem):
        """The preconditioner operator (None without one); validated against the system."""
        if self.M is None:
            return None
        Mop = aslinearoperator(self.M)
        if Mop.shape is not None and tuple(Mop.shape) != (problem.n, problem.n):
            raise ValueError(f"M has shape {Mop.shape}; expected ({problem.n}, {problem.n})")
        if Mop.array_library is not None and Mop.array_library != problem.array_library:
            raise TypeError(
                f"M works on {Mop.array_library} arrays but the system is {problem.array_library}"
            )
        if isinstance(Mop, MatrixOperator) and Mop.asymmetry() > 1e-10:
            raise ValueError(
                f"M must be symmetric positive definite for PCG; this matrix is not symmetric "
                f"(||M - M^T|| / ||M|| = {Mop.asymmetry():.2e})"
            )
        return Mop

    def setup(self, problem: LinearSystem, ctx) -> CGSetup:
        kernels = select(ctx.backend.name)
        Mop = self._preconditioner(problem)
        flexible = self.flexible if self.flexible is not None else (Mop is not None and not Mop.is_linear)
        if Mop is not None and not Mop.is_linear and self.flexible is False:
            raise ValueError(
                "M is nonlinear (a callable or network); PCG needs a linear M. Use flexible=True "
                "or declare the callable linear with aslinearoperator(f, linear=True)"
            )
        mv = problem.A.bind(kernels)
        if isinstance(problem.A, FunctionOperator):
            mv = checked(mv, "A", problem.n, problem.b)
        Mmv = None
        if Mop is not None:
            Mmv = Mop.bind(kernels)
            if not isinstance(Mop, MatrixOperator):
                # NaN from M is reported as a status (or a fallback step), not raised
                Mmv = checked(Mmv, "M", problem.n, problem.b, finite=False)
        bnorm = to_float(kernels.norm(problem.b))
        return CGSetup(kernels=kernels, mv=mv, Mmv=Mmv, flexible=bool(flexible), bnorm=bnorm,
                       anorm=_norm_estimate(problem) if flexible else 1.0)

    def _tol(self, problem, state, ctx) -> float:
        """The absolute bound on ``||r||`` (same reference as ``tolerance``)."""
        ref = ctx.setup.bnorm if self.rtol_reference == "b" else state.r0norm
        return max(self.atol, self.rtol * ref)

    # -- protocol ------------------------------------------------------------------------
    def init(self, problem: LinearSystem, x0, ctx) -> CGState:
        xp, su = ctx.xp, ctx.setup
        b = problem.b
        if x0 is None:
            x = xp.zeros_like(b)
            r = xp.copy(b)
        else:
            if tuple(x0.shape) != tuple(b.shape):
                raise ValueError(f"x0 has shape {tuple(x0.shape)}; expected {tuple(b.shape)}")
            x = xp.copy(x0)
            if x.dtype != b.dtype:
                x = xp.asarray(x, like=b)
            r = b - su.mv(x)
            ctx.count("matvecs")
        state = CGState(x=x, k=0, r=r, rnorm=su.kernels.norm(r))
        state.r0norm = to_float(state.rnorm)  # the reference of rtol_reference="r0"
        state.metrics = self._metrics(state, ctx)
        state.stall = [to_float(state.metrics["relative_residual"])]
        return state

    def resume(self, problem, state, ctx) -> CGState:
        """Recompute the true residual and restart the recurrence under the new setup."""
        self._replace_residual(problem, state, ctx)
        return state

    def _replace_residual(self, problem, state, ctx) -> None:
        su = ctx.setup
        state.r = problem.b - su.mv(state.x)
        ctx.count("matvecs")
        state.rnorm = su.kernels.norm(state.r)
        state.p = state.rho = state.den = None
        state.kept = deque()
        state.since_recompute = 0
        state.breakdown = False
        state.metrics = self._metrics(state, ctx)
        state.stall = [to_float(state.metrics["relative_residual"])]

    def _metrics(self, state, ctx):
        rn, bn = state.rnorm, ctx.setup.bnorm
        return {"relative_residual": rn / bn if bn > 0 else rn, "residual_norm": rn}

    def step(self, problem, state, ctx) -> CGState:
        if ctx.setup.flexible:
            flexible_step(self, problem, state, ctx, self._direction_map(state, ctx))
        else:
            self._pcg_step(state, ctx)
        state.k += 1
        state.metrics = self._metrics(state, ctx)
        return state

    def _direction_map(self, state, ctx):
        """The map ``r -> direction`` of the flexible method (None: the residual)."""
        return ctx.setup.Mmv

    def _pcg_step(self, state, ctx):
        su = ctx.setup
        kern = su.kernels
        r = state.r
        if su.Mmv is not None:
            z = su.Mmv(r)
            ctx.count("preconditioner_calls")
        else:
            z = r
        rho = kern.dot(r, z)
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 curvature: check reports it
            if state.p is None:
                p = ctx.xp.copy(z)  # never an alias of r: the numba update writes in place
            else:
                p = kern.xpby(z, rho / state.rho, state.p)
            q = su.mv(p)
            ctx.count("matvecs")
            den = kern.dot(p, q)
            state.x, state.r, rr = kern.cg_update(rho / den, p, q, state.x, r)
        state.rnorm = ctx.xp.sqrt(rr)
        state.p, state.rho, state.den = p, rho, den

    def check(self, problem, state, ctx):
        if state.k == 0:
            floor = self._incompatibility(problem, state, ctx)
            if floor is not None:
                return Stop(Status.INFEASIBLE, floor)
        if state.breakdown:
            return Stop(Status.BREAKDOWN, (
                "the search direction has (near) zero curvature d^T A d even after falling "
                "back to the residual: A may be singular with an incompatible b, or not SPD"))
        if not ctx.setup.flexible and state.den is not None:
            den, rho = to_float(state.den), to_float(state.rho)
            if rho > 0 and den <= 0:  # before the residual: 0 curvature makes it inf
                return Stop(Status.BREAKDOWN, (
                    f"non-positive curvature at iteration {state.k} (p^T A p = {den:.3e}, "
                    f"r^T M r = {rho:.3e}): A is not symmetric positive definite"))
        rn = to_float(state.rnorm)
        if not np.isfinite(rn):
            who = "the preconditioner M" if ctx.setup.Mmv is not None else "the operator A"
            return Stop(Status.NONFINITE, (
                f"the residual became {rn} at iteration {state.k}; {who} produced a non-finite "
                "value. Check it on the current residual."))
        if rn < self._tol(problem, state, ctx) or rn == 0.0:
            return Stop(Status.CONVERGED)
        if not ctx.setup.flexible and state.den is not None:
            den, rho = to_float(state.den), to_float(state.rho)
            if not (np.isfinite(den) and np.isfinite(rho)):
                return Stop(Status.NONFINITE, "a NaN appeared in the CG scalars (check A and M)")
            if den <= 0 or rho <= 0:
                return Stop(Status.BREAKDOWN, (
                    f"non-positive curvature at iteration {state.k} (p^T A p = {den:.3e}, "
                    f"r^T M r = {rho:.3e}): A or M is not symmetric positive definite"))
        if ctx.setup.flexible:
            return self._stall(state, ctx)
        return None

    def _stall(self, state, ctx):
        """Flexible method: STAGNATION when the residual stopped falling."""
        if self.stall_window is None:
            return None
        watch = StallWatch(self.stall_window, self.stall_factor)
        if watch.update(state.stall, float(to_float(state.metrics["relative_residual"]))):
            return Stop(Status.STAGNATION, watch.message(state.k, "the preconditioner M"))
        return None

    def _incompatibility(self, problem, state, ctx) -> str | None:
        if problem.nullspace is None or problem.b_incompatibility <= 0:
            return None
        bnorm = ctx.setup.bnorm
        floor = problem.b_incompatibility * bnorm
        if floor >= self._tol(problem, state, ctx) and floor > 1e-12 * bnorm:
            return (f"b is incompatible with the singular A: its null-space component is "
                    f"{problem.b_incompatibility:.2e} of ||b||, above the tolerance, so the "
                    "residual cannot reach it. Project b onto the range "
                    "(LinearSystem(..., project_b=True)) or fix the right-hand side.")
        return None

    def tolerance(self, problem, state) -> dict[str, float]:
        """``relative_residual`` (true, over ``||b||``) below the stopping rule's bound."""
        bnorm = _bnorm(problem)
        ref = bnorm if self.rtol_reference == "b" else getattr(state, "r0norm", bnorm)
        tol = max(self.atol, self.rtol * ref)
        return {"relative_residual": tol / bnorm if bnorm > 0 else tol}

    def on_uncertified(self, problem, state, ctx, failed):
        """Residual replacement: the recursive residual drifted; continue from the true one.

        Gives STAGNATION once a replacement no longer lowers the true residual by 2x
        relative to the previous one (the floor of this problem in this precision).
        """
        true_rel = failed["relative_residual"][0]
        if state.replacements and true_rel > 0.5 * state.replaced_at:
            return Stop(Status.STAGNATION, (
                f"the true relative residual stays at {true_rel:.3e} above the requested "
                f"{failed['relative_residual'][1]:.3e} after {state.replacements} residual "
                "replacement(s): the recursive residual drifts (ill-conditioned A or an "
                "inexact operator/preconditioner), and this is the floor at this precision. "
                "Loosen rtol, rescale A, or use a better preconditioner."))
        state.replacements += 1
        state.replaced_at = true_rel
        ctx.count("residual_replacements")
        self._replace_residual(problem, state, ctx)
        return None

    def finalize(self, problem, state, ctx):
        # a copy: the numba kernels update state.x in place if the state is resumed
        if problem.nullspace is not None:
            return problem.nullspace.project(state.x)
        return ctx.xp.copy(state.x)


def spd_solve(matvec: Callable, b, *, rtol: float, maxiter: int, M: Callable | None = None,
              x0=None, backend: str = "auto"):
    """Solve ``matvec(x) = b`` for a symmetric positive definite operator given as a
    callable on flat vectors, by :class:`CG` (PCG with a linear SPD ``M``).

    The helper the library's inner solves use (implicit hypergradients, the matrix-free
    u-step of convex ReLU ADMM), so that neurosolve has one CG loop, with its certificate.

    Parameters
    ----------
    matvec : callable
        ``x -> A x`` on 1-D arrays (numpy or torch, like ``b``).
    b : (n,) array
    rtol, maxiter : float, int
        Stop at ``||b - A x|| <= rtol ||b||`` (the true residual) or after ``maxiter``.
    M : callable, optional
        A linear SPD preconditioner ``r -> M r``.
    x0 : (n,) array, optional
        Warm start.
    backend : str
        As for :func:`neurosolve.solve`.

    Returns
    -------
    (x, n_iter, relative_residual, status)

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> x, k, rr, status = spd_solve(lambda v: A @ v, np.array([1.0, 2.0]), rtol=1e-12,
    ...                              maxiter=10)
    >>> bool(np.allclose(A @ x, [1.0, 2.0])), status.name
    (True, 'CONVERGED')
    """
    from neurosolve.core import solve

    n = int(b.shape[0])
    A = aslinearoperator(matvec, linear=True, spd=True, shape=(n, n))
    Mop = None if M is None else aslinearoperator(M, linear=True, spd=True, shape=(n, n))
    res = solve(LinearSystem(A, b), CG(M=Mop, rtol=rtol, maxiter=maxiter), x0,
                backend=backend)
    return res.x, res.n_iter, res.certificate["relative_residual"], res.status


def _bnorm(problem) -> float:
    from neurosolve.backends.ops import to_numpy

    return float(np.linalg.norm(to_numpy(problem.b)))


def _norm_estimate(problem) -> float:
    """A cheap upper bound of ||A|| (max absolute row sum) for breakdown tests; 1 if unknown."""
    A = problem.A
    if isinstance(A, MatrixOperator):
        M = A.matrix
        try:
            if A.array_library == "torch":
                if A.is_sparse:
                    from neurosolve.operators import _torch_sparse_to_scipy

                    M = _torch_sparse_to_scipy(M)
                else:
                    M = M.detach().cpu().numpy()
            return float(np.max(np.abs(M).sum(axis=1))) or 1.0
        except Exception:  # pragma: no cover - exotic matrix types
            return 1.0
    return 1.0
