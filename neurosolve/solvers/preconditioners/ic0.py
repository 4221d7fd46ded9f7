"""Incomplete Cholesky with zero fill, IC(0)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from neurosolve.solvers.preconditioners.base import Preconditioner, as_csr

__all__ = ["IC0"]


class IC0(Preconditioner):
    """Incomplete Cholesky factorization ``A ~ L L^T`` with the sparsity of ``tril(A)``.

    ``M^{-1} r = L^{-T} L^{-1} r`` by a forward and a backward triangular solve (numba,
    sequential). Empty rows (solid/air cells of a Poisson grid) become identity rows.

    Parameters
    ----------
    A : LinearSystem, matrix or Poisson operator
        Symmetric; only its lower triangle is read.
    shift : float
        Factor ``A + shift * diag(A)`` instead of ``A`` (a Manteuffel shift; use a small
        value such as 1e-3 when a pivot breaks down on a matrix that is not an M-matrix).

    Attributes
    ----------
    L : scipy.sparse.csr_matrix
        The factor.
    n_zero_pivots : int
        Pivots that came out zero to rounding (``|pivot| <= 1e-10 a_ii``), which happens at
        the last cell of a singular (pure Neumann) component whose IC(0) is exact, e.g. a
        1-D channel. They are replaced by ``a_ii`` so that M stays SPD.

    Raises
    ------
    ValueError
        A non-positive diagonal in a nonempty row, or a negative pivot (A is not SPD, or
        IC(0) breaks down on it: try ``shift > 0`` or another preconditioner).

    References
    ----------
    .. [1] J. A. Meijerink, H. A. van der Vorst, "An iterative solution method for linear
       systems of which the coefficient matrix is a symmetric M-matrix", Math. Comp. 31
       (137), 1977.
    .. [2] Y. Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., SIAM, 2003,
       section 10.3.

    Examples
    --------
    >>> import neurosolve as ns
    >>> from neurosolve.problems import poisson
    >>> grid = poisson.sphere((24, 24, 24))
    >>> prob = grid.system(poisson.rhs_blobs(grid, seed=0))
    >>> res = ns.solve(prob, ns.solvers.CG(rtol=1e-6, M=ns.solvers.preconditioners.IC0(prob)))
    >>> res.success
    True
    """

    def __init__(self, A: Any, shift: float = 0.0):
        import scipy.sparse as sp

        from neurosolve.backends.factor_kernels import ic0_factor

        t0 = time.perf_counter()
        if not np.isfinite(shift) or shift < 0:
            raise ValueError(f"shift must be a finite non-negative number, got {shift!r}")
        A = as_csr(A)
        n = A.shape[0]
        d = np.asarray(A.diagonal())
        empty = np.diff(A.indptr) == 0
        bad = (d <= 0) & ~empty
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"A has diagonal {d[i]:.3g} at row {i}, which is not empty; IC(0) "
                             "needs a positive diagonal (A must be SPD)")
        L = sp.tril(A, format="csr")
        extra = empty.astype(np.float64) + shift * d
        if extra.any():
            L = (L + sp.diags(extra, format="csr")).tocsr()
        L.sum_duplicates()
        L.sort_indices()
        L.data = np.ascontiguousarray(L.data, dtype=np.float64)
        last = L.indices[L.indptr[1:] - 1]
        if np.any(np.diff(L.indptr) == 0) or np.any(last != np.arange(n)):
            raise ValueError("A is missing a diagonal entry in a nonempty row; IC(0) needs one")
        bad_row, pivot, replaced = ic0_factor(L.indptr, L.indices, L.data, 1e-10)
        if bad_row >= 0:
            raise ValueError(
                f"IC(0) breakdown: the pivot at row {bad_row} is {pivot:.3g} (non-positive). A is "
                "not SPD, or incomplete Cholesky fails on it; try IC0(A, shift=1e-3) or SSOR/AMG"
            )
        self.L = L
        self.n_zero_pivots = int(replaced)
        self.shape = (n, n)
        self.dtype = np.dtype(np.float64)
        self.setup_time = time.perf_counter() - t0

    def matvec(self, r):
        from neurosolve.backends.factor_kernels import ic0_apply

        r = np.ascontiguousarray(self._check(r), dtype=np.float64)
        z = np.empty_like(r)
        return ic0_apply(self.L.indptr, self.L.indices, self.L.data, r, z)
