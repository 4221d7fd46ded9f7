"""Jacobi (diagonal) preconditioner."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.operators import LinearOperator, MatrixOperator
from neurosolve.solvers.preconditioners.base import Preconditioner, as_csr

__all__ = ["Jacobi"]


class Jacobi(Preconditioner):
    """``M^{-1} = D^{-1}``, the inverse diagonal of ``A``; rows with a zero diagonal and no
    entries (solid/air cells) are identity rows.

    Parameters
    ----------
    A : LinearSystem, operator with ``diagonal()``, matrix, or torch tensor
        Torch inputs (a torch system, a torch stencil operator, a torch matrix) give a torch
        preconditioner on the same device; otherwise numpy.

    Raises
    ------
    ValueError
        A negative diagonal entry, or a zero one in a nonempty row (A is not SPD).

    References
    ----------
    .. [1] Y. Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., SIAM, 2003,
       section 10.2.
    """

    def __init__(self, A: Any):
        from neurosolve.problems.linear import LinearSystem

        t0 = time.perf_counter()
        op = A.A if isinstance(A, LinearSystem) else A
        torch_like = (is_torch(op) or (isinstance(op, LinearOperator) and op.array_library == "torch"))
        if isinstance(op, LinearOperator) and not isinstance(op, MatrixOperator) and hasattr(op, "grid"):
            # a stencil row is empty exactly where its diagonal is 0
            d = np.asarray(op.grid.diagonal())
            nonempty = d != 0
        else:
            M = as_csr(op)
            d = np.asarray(M.diagonal())
            nonempty = np.diff(M.indptr) > 0
        bad = (d < 0) | ((d == 0) & nonempty)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"A has diagonal entry {d[i]:.3g} at row {i} in a nonempty row; "
                             "Jacobi needs a positive diagonal (A must be SPD)")
        inv = np.ones_like(d)
        np.divide(1.0, d, out=inv, where=d > 0)
        self.shape = (d.size, d.size)
        if torch_like:
            import torch

            dev = op.device
            dtype = op.dtype if isinstance(op.dtype, torch.dtype) else torch.float64
            self.array_library = "torch"
            self.device = str(dev)
            self.inv_diag = torch.as_tensor(inv, dtype=dtype, device=dev)
            self.dtype = dtype
        else:
            self.inv_diag = inv
            self.dtype = np.dtype(np.float64)
        self.setup_time = time.perf_counter() - t0

    def matvec(self, r):
        if self.array_library == "torch":
            return r * self.inv_diag
        return self._check(r) * self.inv_diag

    def diagonal(self):
        return self.inv_diag
