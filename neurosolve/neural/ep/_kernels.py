"""Numba kernels for the exact (block) homeostatic loss of dense layer pairs.

For a layer pair with blocks ``M = H'_{ba}`` (shape ``(nb, na)``) and ``Mt = H'_{ab}``
(shape ``(na, nb)``) the asymmetry is ``||M - Mt^T||_F^2`` and its gradients are
``+-(2/n) (M - Mt^T)`` (transposed for ``Mt``). Computing ``M - Mt^T`` with numpy walks one
operand against its memory order; for matrices beyond the cache that costs more than the
arithmetic. The kernel below does value and both gradients in one pass over cache-sized
tiles. Reference: :func:`pair_asymmetry_numpy`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["pair_asymmetry", "pair_asymmetry_numpy"]

_TILE = 64


@njit(cache=True)
def _pair_asymmetry(M, Mt, scale, gM, gMt):
    a, b = M.shape
    s = 0.0
    for i0 in range(0, a, _TILE):
        i1 = min(i0 + _TILE, a)
        for j0 in range(0, b, _TILE):
            j1 = min(j0 + _TILE, b)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    d = M[i, j] - Mt[j, i]
                    s += d * d
                    gM[i, j] = scale * d
                    gMt[j, i] = -scale * d
    return s


def pair_asymmetry(M: np.ndarray, Mt: np.ndarray, scale: float):
    """``(||M - Mt^T||_F^2, scale (M - Mt^T), -scale (M - Mt^T)^T)`` for real float arrays."""
    gM = np.empty(M.shape, dtype=M.dtype)
    gMt = np.empty(Mt.shape, dtype=Mt.dtype)
    s = _pair_asymmetry(M, Mt, M.dtype.type(scale), gM, gMt)
    return float(s), gM, gMt


def pair_asymmetry_numpy(M: np.ndarray, Mt: np.ndarray, scale: float):
    """Plain numpy reference of :func:`pair_asymmetry`."""
    D = M - Mt.T
    return float(np.sum(D * D)), scale * D, -scale * D.T
