"""numba kernels for the CSR preconditioners: IC(0) factorization, triangular solves, SSOR.

All take CSR arrays with sorted column indices. Each kernel is tested against a dense
numpy/scipy reference (tests/test_preconditioners.py).
"""

from __future__ import annotations

import math

from numba import njit

__all__ = ["ic0_factor", "ic0_apply", "ssor_apply"]


@njit(cache=True)
def ic0_factor(indptr, indices, data, zero_tol):
    """In-place IC(0) of a lower-triangular CSR pattern (diagonal last in every row).

    On entry ``data`` holds ``tril(A)``; on exit the factor ``L`` with ``L L^T = A`` on
    the pattern. A pivot ``s`` with ``|s| <= zero_tol * a_ii`` is treated as the zero pivot
    of a singular (Neumann) component and replaced by ``a_ii``.

    Returns ``(bad_row, bad_pivot, n_replaced)``; ``bad_row = -1`` on success, otherwise the
    row whose pivot is negative.
    """
    n = indptr.shape[0] - 1
    replaced = 0
    for i in range(n):
        rs = indptr[i]
        re = indptr[i + 1]
        for p in range(rs, re - 1):
            k = indices[p]
            s = data[p]
            a = rs
            q = indptr[k]
            qe = indptr[k + 1] - 1
            while a < p and q < qe:
                ca = indices[a]
                cb = indices[q]
                if ca == cb:
                    s -= data[a] * data[q]
                    a += 1
                    q += 1
                elif ca < cb:
                    a += 1
                else:
                    q += 1
            data[p] = s / data[qe]
        aii = data[re - 1]
        s = aii
        for p in range(rs, re - 1):
            s -= data[p] * data[p]
        if s <= zero_tol * aii:
            if s >= -zero_tol * aii and aii > 0.0:
                s = aii
                replaced += 1
            else:
                return i, s, replaced
        data[re - 1] = math.sqrt(s)
    return -1, 0.0, replaced


@njit(cache=True)
def ic0_apply(indptr, indices, data, r, z):
    """``z = (L L^T)^{-1} r``: forward solve with ``L`` (CSR), backward with ``L^T``."""
    n = indptr.shape[0] - 1
    for i in range(n):
        s = r[i]
        re = indptr[i + 1] - 1
        for p in range(indptr[i], re):
            s -= data[p] * z[indices[p]]
        z[i] = s / data[re]
    for i in range(n - 1, -1, -1):
        re = indptr[i + 1] - 1
        zi = z[i] / data[re]
        z[i] = zi
        for p in range(indptr[i], re):
            z[indices[p]] -= data[p] * zi
    return z


@njit(cache=True)
def ssor_apply(indptr, indices, data, inv_d, omega, r, z):
    """``z = omega (2 - omega) (D + omega U)^{-1} D (D + omega L)^{-1} r`` (SSOR)."""
    n = indptr.shape[0] - 1
    for i in range(n):
        s = r[i]
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j >= i:
                break
            s -= omega * data[p] * z[j]
        z[i] = s * inv_d[i]
    for i in range(n - 1, -1, -1):
        s = 0.0
        for p in range(indptr[i + 1] - 1, indptr[i] - 1, -1):
            j = indices[p]
            if j <= i:
                break
            s += data[p] * z[j]
        z[i] -= omega * s * inv_d[i]
    c = omega * (2.0 - omega)
    for i in range(n):
        z[i] *= c
    return z
