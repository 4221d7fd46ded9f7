"""The fixed metric ``B`` of a smooth minimization problem (primal and dual norms).

It belongs to the problem (:class:`neurosolve.problems.Minimize` measures its gradient
norm in it); the Newton-type solvers use it for their regularization ``lambda B``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.backends.ops import ops_for

__all__ = ["Metric"]


class Metric:
    """The fixed metric ``B`` (primal norm ``sqrt(<Bh,h>)``, dual ``sqrt(<g,B^{-1}g>)``).

    Parameters
    ----------
    B : None, 1-D array or 2-D array
        None: the identity. A 1-D array of positive numbers: ``Diag(B)``. A 2-D symmetric
        positive definite matrix (factored once by Cholesky).
    n : int
        The dimension.
    library : {"numpy", "torch"}
    like : tensor, optional
        For torch: the dtype and device ``B`` is moved to.

    Raises
    ------
    ValueError
        Wrong shape, non-finite entries, a non-positive diagonal, a non-symmetric or not
        positive definite matrix.
    TypeError
        ``B`` from another array library than the problem.
    """

    def __init__(self, B: Any, n: int, library: str = "numpy", like: Any = None):
        self.n = int(n)
        self.library = library
        self.la = ops_for(library)
        self.factor = None
        if B is None:
            self.kind = "identity"
            self.B = None
            return
        if library == "torch":
            import torch

            if not is_torch(B):
                B = torch.as_tensor(np.asarray(B, dtype=float), dtype=torch.float64)
            if like is not None:
                B = B.to(dtype=like.dtype, device=like.device)
        elif library == "numpy":
            if is_torch(B):
                raise TypeError("B is a torch tensor but the problem's data is numpy; convert B")
            B = np.asarray(B, dtype=float)
        if not self.la.isfinite(B):
            raise ValueError("B contains NaN or inf entries")
        if B.ndim == 1:
            if tuple(B.shape) != (self.n,):
                raise ValueError(f"B (a diagonal) must have length {self.n}, "
                                 f"got shape {tuple(B.shape)}")
            if self.la.min(B) <= 0:
                raise ValueError("B (a diagonal) must have strictly positive entries")
            self.kind = "diagonal"
            self.B = B
            return
        if B.ndim != 2 or tuple(B.shape) != (self.n, self.n):
            raise ValueError(f"B must be None, a length-{self.n} diagonal or a {self.n}x{self.n} "
                             f"matrix, got shape {tuple(B.shape)}")
        if self.la.asymmetry(B) > 1e-10:
            raise ValueError("B must be symmetric positive definite; it is not symmetric")
        fac = self.la.cholesky(B.copy() if library == "numpy" else B)
        if fac is None:
            raise ValueError("B must be symmetric positive definite; "
                             "its Cholesky factorization failed")
        self.kind = "dense"
        self.B = B
        self.factor = fac

    def to_library(self, library: str, like=None) -> "Metric":
        """The same metric on another array library (used by ``Minimize.to``)."""
        if self.B is None:
            return Metric(None, self.n, library)
        B = self.B
        if library == "torch":
            import torch

            B = torch.as_tensor(np.asarray(B) if not is_torch(B) else B,
                                dtype=like.dtype if like is not None else torch.float64,
                                device=like.device if like is not None else "cpu")
        else:
            B = B.detach().cpu().numpy() if is_torch(B) else np.asarray(B)
        return Metric(B, self.n, library)

    def matvec(self, h):
        """``B h``."""
        if self.kind == "identity":
            return h
        if self.kind == "diagonal":
            return self.B * h
        return self.B @ h

    def inv(self, g):
        """``B^{-1} g``."""
        if self.kind == "identity":
            return g
        if self.kind == "diagonal":
            return g / self.B
        return self.la.cho_solve(self.factor, g)

    def dual_norm(self, g):
        """``||g||_* = sqrt(<g, B^{-1} g>)`` (a 0-d array / tensor)."""
        if self.kind == "identity":
            return (g * g).sum() ** 0.5
        return (g * self.inv(g)).sum() ** 0.5

    def norm(self, h):
        """``||h|| = sqrt(<B h, h>)``."""
        if self.kind == "identity":
            return (h * h).sum() ** 0.5
        return (h * self.matvec(h)).sum() ** 0.5

    def shifted(self, H, lam):
        """``H + lam B`` as a new dense matrix."""
        if self.kind == "identity":
            return self.la.add_diag(H, lam)
        if self.kind == "diagonal":
            return self.la.add_diag(H, lam * self.B)
        out = H + lam * self.B
        if self.library == "numpy":
            out = np.asfortranarray(out)
        return out

    def bounds(self) -> tuple[float, float]:
        """``(lambda_min(B), ||B||_F)``, computed once (an eigenvalue solve for a dense B)."""
        if getattr(self, "_bounds", None) is None:
            if self.kind == "identity":
                self._bounds = (1.0, float(self.n) ** 0.5)
            elif self.kind == "diagonal":
                self._bounds = (self.la.min(self.B), float((self.B * self.B).sum() ** 0.5))
            else:
                Bn = self.B.detach().cpu().numpy() if is_torch(self.B) else np.asarray(self.B)
                self._bounds = (float(np.linalg.eigvalsh(Bn)[0]), float(np.linalg.norm(Bn)))
        return self._bounds

    def diag_vector(self, like):
        """B's diagonal as a vector (identity / diagonal metrics only)."""
        if self.kind == "identity":
            return None
        return self.B


# ---------------------------------------------------------------------------------------
# models: H at one point, able to solve (H + lam B) d = r for several lam
# ---------------------------------------------------------------------------------------
