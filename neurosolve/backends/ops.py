"""A small set of array operations with the same meaning on numpy and torch.

Solvers call these through ``ctx.xp`` so one loop runs on numpy arrays, CPU tensors and
CUDA tensors. Reductions return 0-d arrays/tensors (no host sync on CUDA); convert
with :func:`neurosolve.core.to_float` only where a decision needs the value.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["NumpyOps", "NumbaOps", "TorchOps", "ops_for", "to_numpy", "ops_of", "is_torch",
           "lib", "exp", "where", "real", "is_complex", "zeros_like", "concat", "as_dtype", "mm",
           "mm_t", "sumsq", "isfinite_all", "complex_dtype", "randn"]


class NumpyOps:
    """Array operations on numpy arrays."""

    name = "numpy"
    library = "numpy"

    @staticmethod
    def asarray(x, dtype=None, like=None):
        return np.asarray(x, dtype=dtype if dtype is not None else (like.dtype if like is not None else None))

    @staticmethod
    def zeros_like(x):
        return np.zeros_like(x)

    @staticmethod
    def zeros(n, like):
        return np.zeros(n, dtype=like.dtype)

    @staticmethod
    def copy(x):
        return np.array(x, copy=True)

    @staticmethod
    def dot(a, b):
        """Real inner product (``vdot`` for complex: conjugates ``a``)."""
        return np.vdot(a, b)

    @staticmethod
    def norm(a):
        return np.linalg.norm(a)

    @staticmethod
    def sqrt(a):
        return np.sqrt(a)

    @staticmethod
    def abs(a):
        return np.abs(a)

    @staticmethod
    def isfinite(a) -> bool:
        return bool(np.all(np.isfinite(a)))

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)

    @staticmethod
    def from_numpy(a, like=None):
        return np.asarray(a)

    @staticmethod
    def sum(a):
        return np.sum(a)

    # -- dense linear algebra (Newton-type solvers, small systems) --------------------------
    @staticmethod
    def cholesky(M):
        """Lower Cholesky factor, or None when ``M`` is not (numerically) positive definite."""
        from scipy.linalg import LinAlgError, cho_factor

        if not np.all(np.isfinite(M)):
            return None
        try:
            return cho_factor(M, lower=True, overwrite_a=True, check_finite=False)
        except (LinAlgError, ValueError):
            return None

    @staticmethod
    def cho_solve(factor, b):
        from scipy.linalg import cho_solve

        return cho_solve(factor, b, check_finite=False)

    @staticmethod
    def add_diag(M, v):
        """``M + diag(v)`` as a new array (``v`` scalar or vector)."""
        out = np.array(M, copy=True, order="F")
        idx = np.arange(out.shape[0])
        out[idx, idx] += v
        return out

    @staticmethod
    def outer(u, v):
        return np.outer(u, v)

    @staticmethod
    def diagonal(M):
        return np.diagonal(M)

    @staticmethod
    def asymmetry(M) -> float:
        n = float(np.linalg.norm(M))
        return float(np.linalg.norm(M - M.conj().T)) / n if n > 0 else 0.0

    @staticmethod
    def eye(n, like):
        return np.eye(n, dtype=like.dtype)

    @staticmethod
    def min(a) -> float:
        return float(np.min(a)) if a.size else 0.0

    # -- elementwise and reductions (losses, proximal maps, the smooth gallery) -------------
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    sign = staticmethod(np.sign)
    where = staticmethod(np.where)
    diag = staticmethod(np.diag)

    @staticmethod
    def sigmoid(a):
        """``1 / (1 + exp(-a))`` without overflow (the tanh form)."""
        return 0.5 * (1.0 + np.tanh(0.5 * a))

    @staticmethod
    def softplus(a):
        """``log(1 + exp(a))`` without overflow."""
        return np.logaddexp(0.0, a)

    @staticmethod
    def logsumexp_rows(S):
        mx = S.max(axis=1, keepdims=True)
        return (mx + np.log(np.exp(S - mx).sum(axis=1, keepdims=True)))[:, 0]

    @staticmethod
    def softmax_rows(S):
        E = np.exp(S - S.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)

    @staticmethod
    def full_like(a, v):
        return np.full_like(a, v)

    @staticmethod
    def sort_desc(a, axis):
        return -np.sort(-a, axis=axis)

    @staticmethod
    def cumsum(a, axis):
        return np.cumsum(a, axis=axis)

    @staticmethod
    def arange_like(m, like):
        """``1, 2, ..., m`` in ``like``'s dtype."""
        return np.arange(1, m + 1, dtype=like.dtype)

    @staticmethod
    def take_along(a, idx, axis):
        return np.take_along_axis(a, idx, axis=axis)

    @staticmethod
    def amax(a, axis):
        return a.max(axis=axis)


class NumbaOps(NumpyOps):
    """numpy operations with numba reductions for real float64 vectors.

    ``np.vdot`` goes through a threaded BLAS that, on a loaded 2-core machine, was measured
    at 23 ms for a 32k-entry dot product against 10 us for the serial numba loop; the
    numba backend therefore does its own reductions.
    """

    name = "numba"

    @staticmethod
    def dot(a, b):
        if (a.dtype == np.float64 and b.dtype == np.float64 and a.ndim == 1 and b.ndim == 1):
            from neurosolve.backends.numba_kernels import dot

            return dot(a, b)
        return np.vdot(a, b)

    @staticmethod
    def norm(a):
        if a.dtype == np.float64 and a.ndim == 1:
            from neurosolve.backends.numba_kernels import dot

            return np.sqrt(dot(a, a))
        return np.linalg.norm(a)


class TorchOps:
    """Array operations on torch tensors (any device)."""

    name = "torch"
    library = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def asarray(self, x, dtype=None, like=None):
        t = self.torch
        if like is not None:
            return t.as_tensor(x, dtype=dtype or like.dtype, device=like.device)
        return t.as_tensor(x, dtype=dtype)

    def zeros_like(self, x):
        return self.torch.zeros_like(x)

    def zeros(self, n, like):
        return self.torch.zeros(n, dtype=like.dtype, device=like.device)

    def copy(self, x):
        return x.clone()

    def dot(self, a, b):
        return self.torch.vdot(a.reshape(-1), b.reshape(-1))

    def norm(self, a):
        return self.torch.linalg.vector_norm(a)

    def sqrt(self, a):
        return self.torch.sqrt(a) if isinstance(a, self.torch.Tensor) else np.sqrt(a)

    def abs(self, a):
        return self.torch.abs(a) if isinstance(a, self.torch.Tensor) else abs(a)

    def isfinite(self, a) -> bool:
        return bool(self.torch.isfinite(a).all())

    def to_numpy(self, a):
        return a.detach().cpu().numpy()

    def from_numpy(self, a, like=None):
        if like is not None:
            return self.torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)
        return self.torch.as_tensor(np.asarray(a))

    def sum(self, a):
        return a.sum()

    # -- dense linear algebra (Newton-type solvers, small systems) --------------------------
    def cholesky(self, M):
        t = self.torch
        L, info = t.linalg.cholesky_ex(M)
        if int(info) != 0 or not bool(t.isfinite(L).all()):
            return None
        return L

    def cho_solve(self, L, b):
        return self.torch.cholesky_solve(b.reshape(-1, 1), L).reshape(-1)

    def add_diag(self, M, v):
        out = M.clone()
        out.diagonal().add_(v)
        return out

    def outer(self, u, v):
        return self.torch.outer(u, v)

    def diagonal(self, M):
        return self.torch.diagonal(M)

    def asymmetry(self, M) -> float:
        t = self.torch
        n = float(t.linalg.matrix_norm(M))
        return float(t.linalg.matrix_norm(M - M.conj().T)) / n if n > 0 else 0.0

    def eye(self, n, like):
        return self.torch.eye(n, dtype=like.dtype, device=like.device)

    def min(self, a) -> float:
        return float(a.min()) if a.numel() else 0.0

    # -- elementwise and reductions (losses, proximal maps, the smooth gallery) -------------
    def exp(self, a):
        return self.torch.exp(a)

    def log(self, a):
        return self.torch.log(a)

    def log1p(self, a):
        return self.torch.log1p(a)

    def sin(self, a):
        return self.torch.sin(a)

    def cos(self, a):
        return self.torch.cos(a)

    def sign(self, a):
        return self.torch.sign(a)

    def diag(self, v):
        return self.torch.diag(v)

    def where(self, c, a, b):
        """``torch.where`` that also takes Python scalars for ``a`` or ``b``."""
        t = self.torch
        like = a if isinstance(a, t.Tensor) else b if isinstance(b, t.Tensor) else c
        a = a if isinstance(a, t.Tensor) else t.as_tensor(a, dtype=like.dtype, device=like.device)
        b = b if isinstance(b, t.Tensor) else t.as_tensor(b, dtype=like.dtype, device=like.device)
        return t.where(c, a, b)

    def sigmoid(self, a):
        return self.torch.sigmoid(a)

    def softplus(self, a):
        return self.torch.nn.functional.softplus(a)

    def logsumexp_rows(self, S):
        return self.torch.logsumexp(S, dim=1)

    def softmax_rows(self, S):
        return self.torch.softmax(S, dim=1)

    def full_like(self, a, v):
        return self.torch.full_like(a, v)

    def sort_desc(self, a, axis):
        return self.torch.sort(a, dim=axis, descending=True).values

    def cumsum(self, a, axis):
        return self.torch.cumsum(a, dim=axis)

    def arange_like(self, m, like):
        return self.torch.arange(1, m + 1, dtype=like.dtype, device=like.device)

    def take_along(self, a, idx, axis):
        return self.torch.take_along_dim(a, idx, dim=axis)

    def amax(self, a, axis):
        return a.amax(dim=axis)


_NUMPY_OPS = NumpyOps()
_NUMBA_OPS = NumbaOps()
_TORCH_OPS: Any = None


def ops_for(library: str, kernels: str | None = None):
    """The ops object for ``"numpy"`` or ``"torch"`` data (torch imported on first use).

    ``kernels="numba"`` gives numpy operations with numba reductions.
    """
    global _TORCH_OPS
    if library == "numpy":
        return _NUMBA_OPS if kernels == "numba" else _NUMPY_OPS
    if library == "torch":
        if _TORCH_OPS is None:
            _TORCH_OPS = TorchOps()
        return _TORCH_OPS
    raise ValueError(f"unknown array library {library!r}")


# -- library-generic helpers (one home for conversions; families append below) -----------

def to_numpy(a: Any, dtype: Any = None) -> np.ndarray:
    """``a`` as a numpy array: the one place where data is converted to numpy.

    Torch tensors (any device) are detached and copied to the host; numpy arrays,
    scalars and sequences go through ``np.asarray``; scipy sparse matrices are returned
    unchanged (never densified). ``dtype`` (e.g. ``float``) converts dense results.
    """
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
        return a if dtype is None else a.astype(dtype, copy=False)
    mod = type(a).__module__ or ""
    if mod.startswith("scipy.sparse"):
        return a
    return np.asarray(a, dtype=dtype)


def is_torch(obj: Any) -> bool:
    """True for a torch tensor, without importing torch if it is not loaded yet."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def ops_of(a: Any):
    """The ops object for the array library of ``a`` (torch tensors -> TorchOps, else numpy)."""
    return ops_for("torch" if is_torch(a) else "numpy")


# -- functions that dispatch on their argument (numpy arrays or torch tensors, real or
#    complex): the vocabulary of the equilibrium-propagation networks ---------------------

def lib(a: Any) -> str:
    return "torch" if is_torch(a) else "numpy"


def exp(a):
    if is_torch(a):
        import torch

        return torch.exp(a)
    return np.exp(a)


def where(c, a, b):
    if is_torch(c):
        import torch

        return torch.where(c, a, b)
    return np.where(c, a, b)


def real(a):
    if is_torch(a):
        return a.real if a.is_complex() else a
    return np.real(a)


def is_complex(a) -> bool:
    if is_torch(a):
        return a.is_complex()
    return np.iscomplexobj(a)


def zeros_like(a):
    if is_torch(a):
        import torch

        return torch.zeros_like(a)
    return np.zeros_like(a)


def concat(parts, axis=-1):
    if is_torch(parts[0]):
        import torch

        return torch.cat(parts, dim=axis)
    return np.concatenate(parts, axis=axis)


def as_dtype(a, like):
    """``a`` converted to the dtype of ``like`` when they differ (torch needs matching dtypes)."""
    if is_torch(a):
        return a if a.dtype == like.dtype else a.to(like.dtype)
    return a


def _complex_real_mm(r, M):
    """``r @ M`` for complex ``r`` and real ``M``: one real product on stacked (re, im) rows.

    Half the arithmetic of a complex-by-complex product and no complex copy of ``M``.
    """
    B = r.shape[0]
    if is_torch(r):
        import torch

        out = torch.cat([r.real, r.imag], dim=0) @ M
        return torch.complex(out[:B], out[B:])
    out = np.concatenate([r.real, r.imag], axis=0) @ M
    res = np.empty((B, out.shape[1]), dtype=r.dtype)
    res.real = out[:B]
    res.imag = out[B:]
    return res


def _is_real(W) -> bool:
    return not (W.is_complex() if is_torch(W) else np.iscomplexobj(W))


def mm(r, W):
    """Batched ``r @ W.T`` (rows of ``r`` times a weight matrix of shape (out, in))."""
    if is_complex(r) and _is_real(W) and r.ndim == 2:
        return _complex_real_mm(r, W.T)
    if is_torch(r):
        return r @ as_dtype(W, r).T
    return r @ W.T


def mm_t(w, W):
    """Batched ``w @ W`` (the transpose action)."""
    if is_complex(w) and _is_real(W) and w.ndim == 2:
        return _complex_real_mm(w, W)
    if is_torch(w):
        return w @ as_dtype(W, w)
    return w @ W


def sumsq(a):
    """Sum of squared moduli."""
    if is_torch(a):
        return (a.abs() ** 2).sum() if a.is_complex() else (a * a).sum()
    return float(np.sum(np.abs(a) ** 2))


def isfinite_all(a) -> bool:
    if is_torch(a):
        import torch

        return bool(torch.isfinite(a).all())
    return bool(np.all(np.isfinite(a)))


def complex_dtype(a):
    """The complex dtype matching ``a``'s real precision."""
    if is_torch(a):
        import torch

        if a.is_complex():
            return a.dtype
        return {torch.float32: torch.complex64, torch.float64: torch.complex128,
                torch.float16: torch.complex64}.get(a.dtype, torch.complex128)
    if np.iscomplexobj(a):
        return a.dtype
    return np.complex64 if a.dtype == np.float32 else np.complex128


def randn(rng: np.random.Generator, shape, like):
    """Standard normal draws from a numpy Generator, in ``like``'s library/dtype/device.

    Drawing from numpy on both backends keeps numpy and torch runs on the same numbers.
    """
    z = rng.standard_normal(shape)
    if is_torch(like):
        import torch

        dt = like.real.dtype if like.is_complex() else like.dtype
        return torch.as_tensor(z, dtype=dt, device=like.device)
    return z.astype(np.real(like).dtype if np.iscomplexobj(like) else like.dtype, copy=False)

