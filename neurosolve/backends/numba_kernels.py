"""numba kernels for the Krylov family: CSR products and fused vector updates.

Each kernel has a numpy reference it is tested against (tests/test_backends.py).
Compiled lazily on first call and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["csr_matvec", "csr_matvec_into", "axpy_dot", "cg_update", "xpby"]


@njit(cache=True, parallel=True, fastmath=False)
def csr_matvec_into(indptr, indices, data, x, out):
    """out = A @ x for CSR (indptr, indices, data); parallel over rows."""
    n = indptr.shape[0] - 1
    for i in prange(n):
        s = 0.0
        for jj in range(indptr[i], indptr[i + 1]):
            s += data[jj] * x[indices[jj]]
        out[i] = s
    return out


def csr_matvec(indptr, indices, data, x):
    """A @ x for CSR arrays (allocates the output)."""
    out = np.empty(indptr.shape[0] - 1, dtype=np.result_type(data.dtype, x.dtype))
    return csr_matvec_into(indptr, indices, data, x, out)


@njit(cache=True)
def axpy_dot(alpha, x, y):
    """y += alpha * x in place; returns y . y (the squared norm of the update)."""
    s = 0.0
    for i in range(y.shape[0]):
        v = y[i] + alpha * x[i]
        y[i] = v
        s += v * v
    return s


@njit(cache=True)
def cg_update(alpha, p, q, x, r):
    """x += alpha p ; r -= alpha q ; returns r . r (one pass over memory)."""
    s = 0.0
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        v = r[i] - alpha * q[i]
        r[i] = v
        s += v * v
    return s


@njit(cache=True)
def xpby(x, beta, p):
    """p = x + beta * p in place."""
    for i in range(p.shape[0]):
        p[i] = x[i] + beta * p[i]
    return p


@njit(cache=True)
def dot(a, b):
    """a . b for real vectors."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s
