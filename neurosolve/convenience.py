"""Short scipy-shaped entry points that build a problem and call :func:`neurosolve.solve`."""

from __future__ import annotations

from typing import Any, Callable

from neurosolve.core import Result, solve

__all__ = ["cg"]


def cg(A: Any, b: Any, x0: Any = None, *, rtol: float = 1e-5, atol: float = 0.0,
       maxiter: int | None = None, M: Any = None, callback: Callable | None = None,
       backend: str = "auto", progress: bool = False, **options: Any) -> Result:
    """Solve ``A x = b`` for SPD ``A`` by (preconditioned) conjugate gradients.

    Keywords follow :func:`scipy.sparse.linalg.cg`; a nonlinear ``M`` selects the
    flexible method. ``callback(view)`` receives an :class:`neurosolve.IterView`.
    Extra ``options`` go to :class:`neurosolve.solvers.CG` (e.g. ``truncate``).

    Returns
    -------
    Result

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> res = ns.cg(np.array([[2.0, 0.0], [0.0, 4.0]]), np.array([2.0, 4.0]), rtol=1e-10)
    >>> res.x
    array([1., 1.])
    """
    from neurosolve.problems.linear import LinearSystem
    from neurosolve.solvers.cg import CG

    problem = LinearSystem(A, b)
    solver = CG(rtol=rtol, atol=atol, maxiter=maxiter, M=M, **options)
    return solve(problem, solver, x0, backend=backend, callback=callback, progress=progress)
