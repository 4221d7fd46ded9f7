"""Symmetric successive over-relaxation (SSOR) preconditioner."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from neurosolve.solvers.preconditioners.base import Preconditioner, as_csr

__all__ = ["SSOR"]


class SSOR(Preconditioner):
    """``M = (D + w L) D^{-1} (D + w U) / (w (2 - w))`` with ``A = L + D + U``.

    Applying ``M^{-1}`` is one forward and one backward Gauss-Seidel-type sweep (numba).
    SPD for SPD ``A`` and ``0 < omega < 2``; ``omega = 1`` is symmetric Gauss-Seidel.
    Empty rows are identity rows (scaled by ``w (2 - w)``).

    Parameters
    ----------
    A : LinearSystem, matrix or Poisson operator
    omega : float in (0, 2)

    Raises
    ------
    ValueError
        ``omega`` outside (0, 2), or a non-positive diagonal in a nonempty row.

    References
    ----------
    .. [1] Y. Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., SIAM, 2003,
       section 10.2 (SSOR preconditioning).
    """

    def __init__(self, A: Any, omega: float = 1.0):
        t0 = time.perf_counter()
        if not (isinstance(omega, (int, float, np.floating)) and 0.0 < omega < 2.0):
            raise ValueError(f"omega must be in (0, 2) for an SPD SSOR preconditioner, got {omega!r}")
        A = as_csr(A)
        d = np.asarray(A.diagonal())
        empty = np.diff(A.indptr) == 0
        bad = (d <= 0) & ~empty
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"A has diagonal {d[i]:.3g} at row {i}, which is not empty; SSOR "
                             "needs a positive diagonal (A must be SPD)")
        inv = np.ones_like(d)
        np.divide(1.0, d, out=inv, where=d > 0)
        self.A = A
        self.inv_diag = inv
        self.omega = float(omega)
        self.shape = A.shape
        self.dtype = np.dtype(np.float64)
        self.setup_time = time.perf_counter() - t0

    def matvec(self, r):
        from neurosolve.backends.factor_kernels import ssor_apply

        r = np.ascontiguousarray(self._check(r), dtype=np.float64)
        z = np.empty_like(r)
        A = self.A
        return ssor_apply(A.indptr, A.indices, A.data, self.inv_diag, self.omega, r, z)
