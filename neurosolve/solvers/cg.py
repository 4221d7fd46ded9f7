"""Conjugate gradients: plain, preconditioned, and flexible (nonlinear preconditioner)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neurosolve.core import Solver, State, Status, to_float
from neurosolve.operators import MatrixOperator, aslinearoperator
from neurosolve.problems.linear import LinearSystem
from neurosolve.solvers.conjugate_directions import flexible_init, flexible_step

__all__ = ["CG"]


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
        is the recurrence residual (the true one when ``recompute_every=1``).
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

    Notes
    -----
    Metrics: ``residual_norm`` (the recurrence residual) and ``relative_residual``.
    Status: CONVERGED, MAX_ITER, BREAKDOWN (non-positive curvature: A or M not SPD),
    NONFINITE (NaN from A or M), INFEASIBLE (b incompatible with a singular A).

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

    metrics: ClassVar[tuple[str, ...]] = ("relative_residual", "residual_norm")
    problem_types: ClassVar[tuple[type, ...]] = (LinearSystem,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.truncate is not None and (not isinstance(self.truncate, (int, np.integer))
                                          or self.truncate < 0):
            raise ValueError(f"truncate must be a non-negative integer or None, got {self.truncate!r}")
        if self.rtol_reference not in ("b", "r0"):
            raise ValueError(f"rtol_reference must be 'b' or 'r0', got {self.rtol_reference!r}")
        if not isinstance(self.recompute_every, (int, np.integer)) or self.recompute_every < 0:
            raise ValueError(f"recompute_every must be a non-negative integer, got {self.recompute_every!r}")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 10 * problem.n

    # -- protocol ------------------------------------------------------------------------
    def _preconditioner(self, problem, ctx):
        if self.M is None:
            return None, None
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
        return Mop, Mop.kernel(ctx.backend)

    def init(self, problem: LinearSystem, x0, ctx) -> State:
        xp = ctx.xp
        b = problem.b
        Mop, Mmv = self._preconditioner(problem, ctx)
        flexible = self.flexible if self.flexible is not None else (Mop is not None and not Mop.is_linear)
        if Mop is not None and not Mop.is_linear and self.flexible is False:
            raise ValueError(
                "M is nonlinear (a callable or network); PCG needs a linear M. Use flexible=True "
                "or declare the callable linear with aslinearoperator(f, linear=True)"
            )
        mv = problem.A.kernel(ctx.backend)
        if x0 is None:
            x = xp.zeros_like(b)
            r = xp.copy(b)
        else:
            if tuple(x0.shape) != tuple(b.shape):
                raise ValueError(f"x0 has shape {tuple(x0.shape)}; expected {tuple(b.shape)}")
            x = xp.copy(x0)
            if x.dtype != b.dtype:
                x = xp.asarray(x, like=b)
            r = b - mv(x)
            ctx.count("matvecs")
        bnorm = xp.norm(b)
        rnorm = xp.norm(r)
        ref = bnorm if self.rtol_reference == "b" else rnorm
        state = State(x=x, k=0, r=r, rnorm=rnorm, mv=mv, Mmv=Mmv, flexible=flexible,
                      bnorm=to_float(bnorm), tol=max(self.atol, self.rtol * to_float(ref)),
                      p=None, rho_prev=None, rho=None, den=None, breakdown=False,
                      since_recompute=0, message=None)
        state.metrics = self._metrics(state)
        if flexible:
            flexible_init(state, self.truncate)
            state.anorm = _norm_estimate(problem)
        if problem.nullspace is not None and problem.b_incompatibility > 0:
            floor = problem.b_incompatibility * state.bnorm
            if floor >= state.tol and floor > 1e-12 * state.bnorm:
                state.message = (
                    f"b is incompatible with the singular A: its null-space component is "
                    f"{problem.b_incompatibility:.2e} of ||b||, above the tolerance, so the "
                    "residual cannot reach it. Project b onto the range "
                    "(LinearSystem(..., project_b=True)) or fix the right-hand side."
                )
        return state

    def _metrics(self, state):
        rn = state.rnorm
        return {"relative_residual": rn / state.bnorm if state.bnorm > 0 else rn,
                "residual_norm": rn}

    def step(self, problem, state, ctx) -> State:
        if state.flexible:
            flexible_step(self, problem, state, ctx)
        else:
            self._pcg_step(state, ctx)
        state.k += 1
        state.metrics = self._metrics(state)
        return state

    def _pcg_step(self, state, ctx):
        xp = ctx.xp
        r = state.r
        if state.Mmv is not None:
            z = state.Mmv(r)
            ctx.count("preconditioner_calls")
        else:
            z = r
        rho = xp.dot(r, z)
        if state.p is None:
            p = xp.copy(z)
        else:
            beta = rho / state.rho_prev
            if ctx.backend.use_numba:
                from neurosolve.backends.numba_kernels import xpby

                p = xpby(z, float(beta), state.p)
            else:
                p = z + beta * state.p
        q = state.mv(p)
        ctx.count("matvecs")
        den = xp.dot(p, q)
        alpha = rho / den
        if ctx.backend.use_numba:
            from neurosolve.backends.numba_kernels import cg_update

            rr = cg_update(float(alpha), p, q, state.x, r)
            state.rnorm = np.sqrt(rr)
        else:
            state.x = state.x + alpha * p
            state.r = r - alpha * q
            state.rnorm = xp.norm(state.r)
        state.p, state.rho_prev, state.rho, state.den = p, rho, rho, den

    def check(self, problem, state, ctx):
        if state.message is not None and state.k == 0:
            return Status.INFEASIBLE, state.message
        if state.breakdown:
            return Status.BREAKDOWN, (
                "the search direction has (near) zero curvature d^T A d even after falling "
                "back to the residual: A may be singular with an incompatible b, or not SPD"
            )
        rn = to_float(state.rnorm)
        if not np.isfinite(rn):
            who = "the preconditioner M" if state.Mmv is not None else "the operator A"
            return Status.NONFINITE, (
                f"the residual became {rn} at iteration {state.k}; {who} produced a non-finite "
                "value. Check it on the current residual."
            )
        if rn < state.tol or rn == 0.0:
            return Status.CONVERGED
        if not state.flexible and state.den is not None:
            den, rho = to_float(state.den), to_float(state.rho)
            if not (np.isfinite(den) and np.isfinite(rho)):
                return Status.NONFINITE, "a NaN appeared in the CG scalars (check A and M)"
            if den <= 0 or rho <= 0:
                return Status.BREAKDOWN, (
                    f"non-positive curvature at iteration {state.k} (p^T A p = {den:.3e}, "
                    f"r^T M r = {rho:.3e}): A or M is not symmetric positive definite"
                )
        return None

    def finalize(self, problem, state, ctx):
        # a copy: the numba kernels update state.x in place if the state is resumed
        if problem.nullspace is not None:
            return problem.nullspace.project(state.x)
        return ctx.xp.copy(state.x)


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
