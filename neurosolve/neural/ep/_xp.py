"""Tiny array helpers with one meaning on numpy arrays and torch tensors (real or complex)."""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.backends import is_torch

__all__ = ["lib", "exp", "where", "real", "zeros_like", "concat", "as_dtype", "mm",
           "mm_t", "sumsq", "isfinite_all", "to_numpy", "complex_dtype", "is_complex", "randn"]


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


def to_numpy(a):
    if is_torch(a):
        return a.detach().cpu().numpy()
    return np.asarray(a)


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
