"""The array forms of bilevel problems: quadratic objectives, affine constraints and the
``kron(M, I)`` Hessian type.

A :class:`~neurosolve.problems.bilevel.Bilevel` problem whose ``F``/``f`` are
:class:`QuadraticFunction` and whose ``g``/``h`` are :class:`AffineFunction` needs no
autograd, has an exact lower-level solver (a QP, :mod:`neurosolve.problems.lower_level`),
and with :class:`KronIdentity` Hessians runs on LV-HBA's fused numba kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.backends.ops import to_numpy

__all__ = ["KronIdentity", "QuadraticFunction", "AffineFunction"]


def _numpy(a) -> np.ndarray:
    return to_numpy(a, float)


# --------------------------------------------------------------------------------------
class KronIdentity:
    """The matrix ``kron(M, I_size)``: a ``B x B`` grid of blocks, each ``M[b, c] * I``.

    Variables made of ``B`` equal-length blocks (``x``, ``y1``, ``y2`` in the LV-HBA toys)
    whose Hessians couple block ``b`` and block ``c`` entry by entry have this form;
    products cost ``O(nnz(M) * size)``, linear in the problem size.

    Parameters
    ----------
    M : array of shape (B, B)
    size : int
    """

    def __init__(self, M: Any, size: int):
        M = np.asarray(M.detach().cpu().numpy() if is_torch(M) else M, dtype=float)
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"KronIdentity M must be square, got shape {M.shape}")
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"KronIdentity size must be a positive integer, got {size!r}")
        self.M = M
        self.size = int(size)
        self.shape = (M.shape[0] * self.size, M.shape[0] * self.size)
        nz = np.nonzero(M)
        self.terms = (nz[0].astype(np.int64), nz[1].astype(np.int64), M[nz].astype(float))
        self._torch: dict = {}

    def matvec(self, w):
        B, s = self.M.shape[0], self.size
        if is_torch(w):
            key = (str(w.device), w.dtype)
            if key not in self._torch:
                import torch

                self._torch[key] = torch.as_tensor(self.M, dtype=w.dtype, device=w.device)
            return (self._torch[key] @ w.reshape(B, s)).reshape(-1)
        return (self.M @ w.reshape(B, s)).reshape(-1)

    def toarray(self) -> np.ndarray:
        return np.kron(self.M, np.eye(self.size))

    def tosparse(self):
        import scipy.sparse as sp

        return sp.kron(sp.csr_matrix(self.M), sp.identity(self.size), format="csr")

    def is_symmetric(self) -> bool:
        return bool(np.allclose(self.M, self.M.T, rtol=0, atol=1e-14 * (1 + np.abs(self.M).max())))

    def __repr__(self):
        return f"KronIdentity(M={self.M.shape}, size={self.size})"


def _matrix_kind(Q: Any) -> str:
    if isinstance(Q, KronIdentity):
        return "kron"
    if is_torch(Q):
        return "torch_sparse" if Q.layout != __import__("torch").strided else "torch_dense"
    if hasattr(Q, "tocsr"):
        return "sparse"
    return "dense"


def _to_library(Q: Any, library: str, dtype=None, device="cpu"):
    """Convert a matrix (dense/sparse/Kron/torch) to ``library``; Kron stays Kron."""
    kind = _matrix_kind(Q)
    if kind == "kron":
        return Q
    if library == "numpy":
        if kind.startswith("torch"):
            if kind == "torch_sparse":
                from neurosolve.operators import _torch_sparse_to_scipy

                return _torch_sparse_to_scipy(Q.cpu())
            return Q.detach().cpu().numpy()
        if kind == "sparse":
            return Q.tocsr()
        return np.asarray(Q, dtype=float)
    import torch

    dt = dtype or torch.float64
    if kind.startswith("torch"):
        return Q.to(dtype=dt, device=device)
    if kind == "sparse":
        from neurosolve.operators import scipy_to_torch_csr

        return scipy_to_torch_csr(Q, dtype=dt, device=device)
    return torch.as_tensor(np.asarray(Q, dtype=float), dtype=dt, device=device)


def _mv(Q: Any, w):
    if isinstance(Q, KronIdentity):
        return Q.matvec(w)
    return Q @ w


class QuadraticFunction:
    """``phi(x, y) = 1/2 w^T Q w + c^T w + const`` with ``w = (x, y)`` concatenated.

    Parameters
    ----------
    Q : array (N, N), scipy sparse matrix, :class:`KronIdentity` or torch tensor
        Symmetric (checked).
    c : array of shape (N,), optional
    const : float
    """

    def __init__(self, Q: Any, c: Any = None, const: float = 0.0):
        kind = _matrix_kind(Q)
        if kind not in ("kron",) and len(getattr(Q, "shape", ())) != 2:
            raise ValueError(f"Q must be a 2-D matrix, got {type(Q).__name__}")
        N = Q.shape[0]
        if Q.shape[1] != N:
            raise ValueError(f"Q must be square, got shape {tuple(Q.shape)}")
        self.Q = Q
        self.N = int(N)
        if c is None:
            c = np.zeros(N)
        self.c = c
        if tuple(c.shape) != (N,):
            raise ValueError(f"c has shape {tuple(c.shape)}; expected ({N},)")
        self.const = float(const)
        self._check_symmetric()

    def _check_symmetric(self):
        Q = self.Q
        kind = _matrix_kind(Q)
        if kind == "kron":
            ok = Q.is_symmetric()
        elif kind == "sparse":
            D = (Q - Q.T)
            ok = (abs(D).max() if D.nnz else 0.0) <= 1e-12 * (1 + abs(Q).max())
        elif kind == "dense":
            A = np.asarray(Q, dtype=float)
            ok = np.allclose(A, A.T, rtol=0, atol=1e-12 * (1 + np.abs(A).max()))
        elif kind == "torch_dense":
            ok = bool(((Q - Q.T).abs().max() <= 1e-12 * (1 + Q.abs().max())).item())
        else:
            ok = True
        if not ok:
            raise ValueError("QuadraticFunction: Q must be symmetric (use (Q + Q.T) / 2)")

    def to(self, library: str, dtype=None, device="cpu") -> "QuadraticFunction":
        Q = _to_library(self.Q, library, dtype, device)
        c = _vec_to(self.c, library, dtype, device)
        out = QuadraticFunction.__new__(QuadraticFunction)
        out.Q, out.c, out.const, out.N = Q, c, self.const, self.N
        return out

    def grad(self, w):
        return _mv(self.Q, w) + self.c

    def value_grad(self, w):
        Qw = _mv(self.Q, w)
        g = Qw + self.c
        v = 0.5 * (w @ Qw) + self.c @ w + self.const
        return v, g


class AffineFunction:
    """``psi(x, y) = A w - b`` with ``w = (x, y)``: affine coupled constraints.

    Parameters
    ----------
    A : array (l, N), scipy sparse or torch tensor
    b : array (l,), optional (default 0)
    """

    def __init__(self, A: Any, b: Any = None):
        if len(getattr(A, "shape", ())) != 2:
            A = np.atleast_2d(np.asarray(A, dtype=float))
        self.A = A
        self.l, self.N = int(A.shape[0]), int(A.shape[1])
        if b is None:
            b = np.zeros(self.l)
        self.b = b
        if tuple(b.shape) != (self.l,):
            raise ValueError(f"b has shape {tuple(b.shape)}; expected ({self.l},)")
        self.At = None

    def to(self, library: str, dtype=None, device="cpu") -> "AffineFunction":
        out = AffineFunction.__new__(AffineFunction)
        out.A = _to_library(self.A, library, dtype, device)
        out.b = _vec_to(self.b, library, dtype, device)
        out.l, out.N = self.l, self.N
        kind = _matrix_kind(out.A)
        if kind == "torch_sparse":
            import scipy.sparse as sp

            At = sp.csr_matrix(_to_library(out.A, "numpy").T)
            out.At = _to_library(At, "torch", dtype, device)
        elif kind == "sparse":
            out.At = out.A.T.tocsr()
        elif kind == "dense":
            out.At = np.ascontiguousarray(out.A.T)
        else:
            out.At = out.A.T.contiguous()
        return out

    def value(self, w):
        return _mv(self.A, w) - self.b

    def vjp(self, lam):
        At = self.At if self.At is not None else self.A.T
        return At @ lam

    def dense_numpy(self) -> np.ndarray:
        A = self.A
        if is_torch(A):
            A = A.to_dense().detach().cpu().numpy() if A.layout != __import__("torch").strided \
                else A.detach().cpu().numpy()
        elif hasattr(A, "toarray"):
            A = A.toarray()
        return np.asarray(A, dtype=float)

    def b_numpy(self) -> np.ndarray:
        return _numpy(self.b)


def _vec_to(v, library, dtype=None, device="cpu"):
    if library == "numpy":
        return _numpy(v)
    import torch

    if is_torch(v):
        return v.to(dtype=dtype or v.dtype, device=device)
    return torch.as_tensor(np.asarray(v, dtype=float), dtype=dtype or torch.float64, device=device)
