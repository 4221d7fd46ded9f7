"""Shared pieces of the preconditioners: the base class and matrix extraction."""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.operators import LinearOperator, MatrixOperator

__all__ = ["Preconditioner", "as_csr"]


class Preconditioner(LinearOperator):
    """Base class: a linear SPD operator approximating ``A^{-1}``.

    Attributes
    ----------
    setup_time : float
        Seconds spent building the preconditioner.
    """

    is_linear = True
    is_spd = True
    array_library = "numpy"
    device = "cpu"
    setup_time: float = 0.0

    def as_scipy(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` with the same action."""
        from scipy.sparse.linalg import LinearOperator as SciOp

        return SciOp(self.shape, matvec=self.matvec, rmatvec=self.matvec, dtype=np.float64)

    def _check(self, r):
        r = np.asarray(r)
        if r.shape != (self.shape[0],):
            raise ValueError(f"the preconditioner expects a vector of length {self.shape[0]}, "
                             f"got shape {r.shape}")
        return r


def as_csr(A: Any, name: str = "A"):
    """A square float64 CSR matrix (sorted indices) from a system, operator or matrix.

    Accepts a :class:`~neurosolve.problems.LinearSystem` (its ``A``), a Poisson stencil
    operator (its grid's matrix), a :class:`~neurosolve.operators.MatrixOperator`, a scipy
    sparse matrix, a dense numpy array or a torch tensor.
    """
    import scipy.sparse as sp

    from neurosolve.problems.linear import LinearSystem

    if isinstance(A, LinearSystem):
        A = A.A
    if hasattr(A, "grid") and isinstance(A, LinearOperator) and not isinstance(A, MatrixOperator):
        A = A.grid.matrix()
    if isinstance(A, MatrixOperator):
        A = A.matrix
    if is_torch(A):
        from neurosolve.operators import _torch_sparse_to_scipy

        A = _torch_sparse_to_scipy(A) if A.layout != __import__("torch").strided \
            else A.detach().cpu().numpy()
    if isinstance(A, np.ndarray):
        if A.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got shape {A.shape}")
        A = sp.csr_matrix(A)
    if not sp.issparse(A):
        raise TypeError(f"{name} must be a LinearSystem, a matrix or a Poisson operator, "
                        f"got {type(A).__name__}")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square, got shape {A.shape}")
    A = sp.csr_matrix(A, dtype=np.float64)
    if not A.has_sorted_indices:
        A = A.copy()
        A.sort_indices()
    return A
