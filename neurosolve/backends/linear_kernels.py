"""The Krylov family's kernels, chosen once per solve by :func:`select`.

``select(backend)`` returns a :class:`LinearKernels` table: the same functions with the
same signatures for every backend, so a solver's ``step`` never branches on it.

- ``"numpy"``: the reference, plain numpy; imports no numba.
- ``"numba"``: fused loops from :mod:`neurosolve.backends.numba_kernels` and the stencil
  kernel of :mod:`neurosolve.backends.stencil_kernels` (compiled on first use).
- ``"torch"``: tensor expressions (any device); metrics stay on the device.

Every numba and torch entry is tested against the numpy reference (tests/test_backends.py).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

__all__ = ["LinearKernels", "select", "stencil_matvec_numpy"]


class LinearKernels(NamedTuple):
    """Kernels of the CG family.

    Attributes
    ----------
    name : str
        The backend these kernels belong to (what ``stats["backend"]`` reports).
    dot : callable
        ``dot(a, b) -> scalar``.
    norm : callable
        ``norm(a) -> scalar``.
    xpby : callable
        ``xpby(z, beta, p) -> z + beta p`` (may overwrite ``p``).
    cg_update : callable
        ``cg_update(alpha, p, q, x, r) -> (x + alpha p, r - alpha q, ||r - alpha q||^2)``
        (may update ``x`` and ``r`` in place).
    stencil_matvec : callable
        ``stencil_matvec(d, cx, cy, cz, x3, y3)`` writes ``A x`` of a 5/7-point cell stencil
        into ``y3`` (numpy arrays of one 3-D shape).
    """

    name: str
    dot: Callable[[Any, Any], Any]
    norm: Callable[[Any], Any]
    xpby: Callable[[Any, float, Any], Any]
    cg_update: Callable[..., tuple]
    stencil_matvec: Callable[..., None]


def _np_dot(a, b):
    return np.vdot(a, b)


def _np_norm(a):
    return np.linalg.norm(a)


def _np_xpby(z, beta, p):
    return z + beta * p


def _np_cg_update(alpha, p, q, x, r):
    x = x + alpha * p
    r = r - alpha * q
    return x, r, np.vdot(r, r).real


def stencil_matvec_numpy(d, cx, cy, cz, x, y):
    """Reference ``y = A x`` for the stencil ``(d, cx, cy, cz)`` (see stencil_kernels)."""
    np.multiply(d, x, out=y)
    for axis, c in ((0, cx), (1, cy), (2, cz)):
        n = x.shape[axis]
        if n < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        lo, hi = tuple(lo), tuple(hi)
        y[lo] -= c[lo] * x[hi]
        y[hi] -= c[lo] * x[lo]


def _numba_dot(a, b):
    from neurosolve.backends import numba_kernels as nk

    if a.dtype == np.float64 and b.dtype == np.float64 and a.ndim == 1 and b.ndim == 1:
        return np.float64(nk.dot(a, b))  # a numpy scalar: x / 0 is inf, as on numpy
    return np.vdot(a, b)


def _numba_norm(a):
    from neurosolve.backends import numba_kernels as nk

    if a.dtype == np.float64 and a.ndim == 1:
        return np.sqrt(nk.dot(a, a))
    return np.linalg.norm(a)


def _numba_xpby(z, beta, p):
    from neurosolve.backends import numba_kernels as nk

    if z.dtype == np.float64 and p.dtype == np.float64:
        return nk.xpby(z, float(beta), p)
    return z + beta * p


def _numba_cg_update(alpha, p, q, x, r):
    from neurosolve.backends import numba_kernels as nk

    if x.dtype == np.float64 and r.dtype == np.float64 and p.dtype == np.float64 \
            and q.dtype == np.float64:
        rr = nk.cg_update(float(alpha), p, q, x, r)
        return x, r, np.float64(rr)
    return _np_cg_update(alpha, p, q, x, r)


def _numba_stencil(d, cx, cy, cz, x, y):
    from neurosolve.backends.stencil_kernels import stencil_matvec

    stencil_matvec(d, cx, cy, cz, x, y)


def _torch_dot(a, b):
    import torch

    return torch.vdot(a.reshape(-1), b.reshape(-1))


def _torch_norm(a):
    import torch

    return torch.linalg.vector_norm(a)


def _torch_cg_update(alpha, p, q, x, r):
    x = x + alpha * p
    r = r - alpha * q
    return x, r, _torch_dot(r, r)


def _no_stencil(*args):  # pragma: no cover - the torch operator has its own matvec
    raise TypeError("the torch backend applies stencils through PoissonOperator's tensor path")


_TABLES = {
    "numpy": LinearKernels("numpy", _np_dot, _np_norm, _np_xpby, _np_cg_update,
                           stencil_matvec_numpy),
    "numba": LinearKernels("numba", _numba_dot, _numba_norm, _numba_xpby, _numba_cg_update,
                           _numba_stencil),
    "torch": LinearKernels("torch", _torch_dot, _torch_norm, _np_xpby, _torch_cg_update,
                           _no_stencil),
}


def select(backend: str) -> LinearKernels:
    """The kernel table for ``backend`` ("numpy", "numba" or "torch").

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.backends.linear_kernels import select
    >>> k = select("numpy")
    >>> x, r, rr = k.cg_update(0.5, np.ones(3), np.ones(3), np.zeros(3), np.ones(3))
    >>> float(rr)
    0.75
    """
    try:
        return _TABLES[backend]
    except KeyError:
        raise ValueError(f"backend must be 'numpy', 'numba' or 'torch', got {backend!r}") from None
