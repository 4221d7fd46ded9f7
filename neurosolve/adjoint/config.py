"""The configuration of an implicit adjoint and its error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from neurosolve.core import SolveError, Solver

__all__ = ["Implicit", "ImplicitDiffError", "DOUBLE_BACKWARD_MESSAGE"]

DOUBLE_BACKWARD_MESSAGE = (
    'second derivatives through adjoint="implicit" are not supported (the adjoint solve is '
    'not itself differentiated); use adjoint="unrolled" or compute the needed '
    "Hessian-vector products outside the solve.")


@dataclass(frozen=True)
class Implicit:
    """How the backward pass of ``solve(..., adjoint=...)`` solves its adjoint system.

    ``adjoint="implicit"`` is ``adjoint=Implicit()``.

    Parameters
    ----------
    solver : Solver, optional
        The solver of the adjoint system. Default: the forward solver's family and
        configuration (the same CG/PCG/DCDM with the same preconditioner for a linear
        system, CG on Hessian-vector products for a minimization, the same fixed-point
        method and damping for a fixed point).
    rtol : float, optional
        Relative tolerance of the adjoint solve, measured against the cotangent's norm.
        Default: the forward solver's relative tolerance, floored at 50 machine epsilons
        of the dtype. The gradient error is about the condition number times the sum of
        the forward and adjoint relative residuals, so a tighter adjoint cannot undo an
        inaccurate forward solve.
    max_iter : int, optional
        Iteration cap of the adjoint solve. Default: 3 times the forward iteration count,
        at least 50.
    on_unconverged : {"raise", "warn"}
        What ``backward`` does when the forward solve did not converge, or the adjoint
        solve does not: raise :class:`ImplicitDiffError` (default) or warn and return
        the gradient anyway.
    warm_start : bool
        Start each adjoint solve from the previous one's solution (per ``Implicit``
        object: pass the same object to every ``solve`` of a training loop whose
        parameters and loss drift slowly). Default False: start from zero, since the
        forward's ``x0`` is no guess for a system with right-hand side ``g`` instead of
        ``b``. The cache is dropped on a change of shape, dtype or device, is never
        differentiated, and only the CG family, CG on Hessian-vector products and
        fixed-point adjoints use it (the dense convex ReLU adjoint and
        :func:`~neurosolve.adjoint.attach`'s Krylov solves start from zero).

    Examples
    --------
    >>> import torch, neurosolve as ns
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    >>> res = ns.solve(ns.problems.LinearSystem(A, b), ns.solvers.CG(rtol=1e-12),
    ...                adjoint=ns.adjoint.Implicit(rtol=1e-12))
    >>> res.x.sum().backward()
    >>> torch.allclose(b.grad, torch.linalg.solve(A, torch.ones(2, dtype=torch.float64)))
    True
    """

    solver: Any = None
    rtol: float | None = None
    max_iter: int | None = None
    on_unconverged: str = "raise"
    warm_start: bool = False
    #: the previous adjoint solution (unit cotangent) when ``warm_start``; not part of the
    #: configuration's identity
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.solver is not None and not isinstance(self.solver, Solver):
            raise TypeError(f"Implicit(solver=...) must be a neurosolve Solver, got "
                            f"{type(self.solver).__name__}")
        if self.rtol is not None and not (isinstance(self.rtol, (int, float))
                                          and 0 < float(self.rtol) < 1):
            raise ValueError(f"Implicit(rtol=...) must be a float in (0, 1), got {self.rtol!r}")
        if self.max_iter is not None and (isinstance(self.max_iter, bool)
                                          or not isinstance(self.max_iter, int)
                                          or self.max_iter < 1):
            raise ValueError(f"Implicit(max_iter=...) must be a positive integer, got "
                             f"{self.max_iter!r}")
        if not isinstance(self.warm_start, bool):
            raise TypeError(f"Implicit(warm_start=...) must be True or False, got "
                            f"{self.warm_start!r}")
        if self.on_unconverged not in ("raise", "warn"):
            raise ValueError(f'Implicit(on_unconverged=...) must be "raise" or "warn", got '
                             f"{self.on_unconverged!r}")


class ImplicitDiffError(SolveError):
    """``backward`` through ``adjoint="implicit"`` refused: the forward solve did not
    converge (its answer is not the root the gradient formula assumes), or the adjoint
    solve did not. ``report`` holds the measured numbers; ``result`` the forward result."""

    def __init__(self, message: str, report: dict | None = None, result: Any = None):
        self.report = dict(report or {})
        self.result = result
        RuntimeError.__init__(self, message)
