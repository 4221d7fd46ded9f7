"""``neurosolve.compat.cg``: :func:`scipy.sparse.linalg.cg`, signature and ``(x, info)``."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from neurosolve.core import Status

__all__ = ["cg"]


def _vector(v: Any, name: str):
    """scipy's shapes: ``(N,)`` or ``(N, 1)`` numpy vectors become ``(N,)``."""
    if v is None or hasattr(v, "detach"):  # torch: neurosolve's own checks
        return v
    v = np.asarray(v)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v.reshape(-1)
    if v.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {v.shape}")
    return v


def cg(A: Any, b: Any, x0: Any = None, *, rtol: float = 1e-5, atol: float = 0.0,
       maxiter: int | None = None, M: Any = None, callback: Callable | None = None):
    """Drop-in for :func:`scipy.sparse.linalg.cg`: same signature, returns ``(x, info)``.

    Same stopping rule as scipy, ``||r_k|| < max(rtol ||b||, atol)`` on the recurrence
    residual, and the same iterates (PCG with a linear ``M``); on top, ``info == 0`` only
    when the *true* residual of the returned ``x`` meets the rule too (see
    :class:`neurosolve.solvers.CG`). ``A`` and ``M``: anything scipy accepts (arrays,
    sparse matrices, ``LinearOperator`` such as pyamg's ``ml.aspreconditioner()``), and
    more (torch tensors; a nonlinear callable ``M`` selects the flexible method). ``b`` and
    ``x0`` may be ``(N,)`` or ``(N, 1)``; ``x0="Mb"`` starts from ``M b`` as in scipy.

    Returns
    -------
    x : array, shape (N,)
    info : int
        ``0``: converged. ``> 0``: not converged, the number of iterations taken (the
        iteration limit, or fewer when the true residual stopped improving), at least 1:
        ``maxiter=0`` on an unsolved system gives 1 where scipy would say 0 (success) for an
        unchanged ``x0``. ``-1``: breakdown (non-positive curvature: ``A`` or ``M`` not SPD),
        non-finite values (NaN or inf in ``b`` or ``x0`` give ``x0``, or zeros, back with a
        ``RuntimeWarning``), or an incompatible right-hand side of a singular system.
        Shape mismatches raise ``ValueError``, as in scipy.

    Notes
    -----
    ``callback(xk)`` is called after every iteration with the current iterate, as in scipy.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve import compat
    >>> x, info = compat.cg(np.diag([1.0, 2.0]), np.array([1.0, 2.0]))
    >>> info
    0
    """
    from neurosolve.convenience import cg as _cg

    b = _vector(b, "b")
    if isinstance(x0, str):
        if x0 != "Mb":
            raise ValueError(f"x0 must be an array, None or 'Mb', got {x0!r}")
        if M is None:
            x0 = np.array(b, dtype=np.float64, copy=True)
        else:
            from scipy.sparse.linalg import aslinearoperator

            x0 = np.asarray(aslinearoperator(M).matvec(b)).reshape(-1)
    x0 = _vector(x0, "x0")
    if isinstance(b, np.ndarray) and x0 is not None and isinstance(x0, np.ndarray) \
            and x0.shape != b.shape:
        raise ValueError(f"x0 has shape {x0.shape} but b has shape {b.shape}; they must match")
    for name, v in (("b", b), ("x0", x0)):
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.number) \
                and not np.all(np.isfinite(v)):
            warnings.warn(f"{name} contains NaN or inf entries; cg returns info=-1",
                          RuntimeWarning, stacklevel=2)
            start = np.zeros(b.shape, dtype=np.result_type(b.dtype, np.float64)) \
                if x0 is None else np.array(x0, copy=True)
            return start, -1

    cb = None
    if callback is not None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")

        def cb(view):
            if view.k > 0:
                callback(view.x)

    res = _cg(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=cb)
    if res.status is Status.CONVERGED:
        info = 0
    elif res.status in (Status.MAX_ITER, Status.STAGNATION):
        info = max(res.n_iter, 1)
    else:
        info = -1
    return res.x, info
