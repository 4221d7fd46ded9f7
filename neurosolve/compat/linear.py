"""``neurosolve.compat.cg``: scipy's ``(x, info)`` return convention."""

from __future__ import annotations

from typing import Any, Callable

from neurosolve.core import Status

__all__ = ["cg"]


def cg(A: Any, b: Any, x0: Any = None, *, rtol: float = 1e-5, atol: float = 0.0,
       maxiter: int | None = None, M: Any = None, callback: Callable | None = None):
    """Drop-in for :func:`scipy.sparse.linalg.cg`: returns ``(x, info)``.

    ``info`` is 0 on (certified) convergence only; the iteration count when the limit
    was reached, and at least 1 (``maxiter=0`` on an unsolved system gives 1, where scipy
    would say 0, i.e. success, for ``x0`` unchanged); -1 for breakdown, stagnation or
    non-finite values (scipy's convention). ``callback(xk)`` is
    called once per iteration with the current iterate, as in scipy.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve import compat
    >>> x, info = compat.cg(np.diag([1.0, 2.0]), np.array([1.0, 2.0]))
    >>> info
    0
    """
    from neurosolve.convenience import cg as _cg

    cb = None
    if callback is not None:
        def cb(view):
            if view.k > 0:
                callback(view.x)

    res = _cg(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=cb)
    if res.status is Status.CONVERGED:
        info = 0
    elif res.status is Status.MAX_ITER:
        info = max(res.n_iter, 1)
    else:
        info = -1
    return res.x, info
