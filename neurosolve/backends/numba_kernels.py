"""numba kernels for the Krylov family: fused vector updates.

CSR products stay with scipy's compiled kernel: a numba CSR loop measured about 2x slower
than ``scipy.sparse`` on a 256^2 Laplacian (serial, 2-core machine), and a ``prange``
version lost badly to thread start-up. The fused updates below save passes over memory
(``cg_update`` is about 3x faster than the three numpy expressions it replaces).

Each kernel has a numpy reference it is tested against (tests/test_backends.py).
Compiled lazily on first call and cached on disk (``cache=True``).

Every kernel checks that its operands have one length (a user's matvec returning a shorter
vector must raise, not read past the end of an array), and fastmath is limited to
reassociation and contraction: the "no NaN / no inf" assumptions of full fastmath would
let the compiler drop the very values the solvers test for.
"""

from __future__ import annotations

from numba import njit

_FAST = {"reassoc", "contract"}

__all__ = ["axpy_dot", "cg_update", "xpby", "dot"]


@njit(cache=True, fastmath=_FAST)
def axpy_dot(alpha, x, y):
    """y += alpha * x in place; returns y . y (the squared norm of the update)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError("axpy_dot: x and y have different lengths")
    s = 0.0
    for i in range(y.shape[0]):
        v = y[i] + alpha * x[i]
        y[i] = v
        s += v * v
    return s


@njit(cache=True, fastmath=_FAST)
def cg_update(alpha, p, q, x, r):
    """x += alpha p ; r -= alpha q ; returns r . r (one pass over memory)."""
    n = x.shape[0]
    if p.shape[0] != n or q.shape[0] != n or r.shape[0] != n:
        raise ValueError("cg_update: p, q, x and r must have one length")
    s = 0.0
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        v = r[i] - alpha * q[i]
        r[i] = v
        s += v * v
    return s


@njit(cache=True, fastmath=_FAST)
def xpby(x, beta, p):
    """p = x + beta * p in place."""
    if x.shape[0] != p.shape[0]:
        raise ValueError("xpby: x and p have different lengths")
    for i in range(p.shape[0]):
        p[i] = x[i] + beta * p[i]
    return p


@njit(cache=True, fastmath=_FAST)
def dot(a, b):
    """a . b for real vectors."""
    if a.shape[0] != b.shape[0]:
        raise ValueError("dot: a and b have different lengths")
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s
