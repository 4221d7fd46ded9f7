"""Diagnostics: error-vector alignment, Jacobian symmetry, weight angle, spectral radius.

Everything here except :func:`dense_jacobian` (and what uses it) is matrix-free. The dense
Jacobian exists for small networks only (``n <= max_n``), as in the reference code, which
builds it only below 1000 units.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from neurosolve.backends import ops as xp
from neurosolve.neural.ep.networks import DenseNetwork, LayeredNetwork

__all__ = [
    "layer_cosines",
    "dense_jacobian",
    "jac_sym",
    "asymmetry_ratio",
    "weight_angle",
    "spectral_radius",
]


def layer_cosines(net: LayeredNetwork, a, b) -> dict[str, float]:
    """Mean over samples of the cosine between two error vectors, per layer and overall.

    Parameters
    ----------
    a, b : arrays (batch, n)
        Flat error vectors (e.g. an estimator's ``delta`` and ``delta_BP``).

    Returns
    -------
    dict
        ``{layer: mean cos, ..., "all": mean cos of the whole vectors}``. Samples where
        either vector is exactly zero in a layer are skipped (NaN if all are).
    """
    A = xp.to_numpy(a).real.astype(float)
    Bm = xp.to_numpy(b).real.astype(float)
    out = {}
    for name in list(net.layout.names) + ["all"]:
        sl = net.layout.slice(name) if name != "all" else slice(None)
        x, y = A[:, sl], Bm[:, sl]
        nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
        ok = (nx > 0) & (ny > 0)
        if not ok.any():
            out[name] = float("nan")
            continue
        cos = np.sum(x[ok] * y[ok], axis=1) / (nx[ok] * ny[ok])
        out[name] = float(np.mean(cos))
    return out


def dense_jacobian(net: LayeredNetwork, params: dict | None = None, r=None, *,
                   max_n: int = 4000) -> np.ndarray:
    """The state Jacobian ``H'(r) = dH/dr`` as a dense ``(n, n)`` numpy array.

    For a :class:`DenseNetwork` it is assembled from the weight blocks (``r`` ignored);
    otherwise ``r`` (one sample, flat ``(n,)`` or ``(1, n)``) is required and the columns
    come from JVPs. Diagnostics and tests only.
    """
    params = net.params if params is None else params
    n = net.n_state
    if n > max_n:
        raise ValueError(f"the network has {n} state units (> max_n={max_n}); the dense "
                         "Jacobian is for small diagnostics only")
    lay = net.layout
    if isinstance(net, DenseNetwork):
        Hp = np.zeros((n, n))
        for c in net.internal:
            W = xp.to_numpy(params[c.weight]).real
            W = W.T if c.transpose else W
            Hp[lay.slice(c.post), lay.slice(c.pre)] += W
        return Hp
    if r is None:
        raise ValueError("r (a single flat state) is required for state-dependent Jacobians")
    import torch

    r = r.reshape(1, -1)
    R = r.expand(n, n).clone()
    eye = torch.eye(n, dtype=r.dtype, device=r.device)
    cols = net.jvp(params, lay.split(R), lay.split(eye))
    M = lay.join(cols, like=eye)  # row j = H' e_j
    return M.T.detach().cpu().numpy()


def jac_sym(Hp: np.ndarray) -> float:
    """``s / (s + a)`` with ``J = H' - I``, ``s = ||(J+J^T)/2||_F``, ``a = ||(J-J^T)/2||_F``.

    1 for a symmetric Jacobian; the reference code's ``jac_sym`` metric.
    """
    J = Hp - np.eye(Hp.shape[0])
    s = np.linalg.norm((J + J.T) / 2)
    a = np.linalg.norm((J - J.T) / 2)
    return float(s / (s + a))


def asymmetry_ratio(Hp: np.ndarray) -> float:
    """``||H' - H'^T||_F / ||H' + H'^T||_F`` (0 symmetric, 1 for independent blocks)."""
    den = np.linalg.norm(Hp + Hp.T)
    return float(np.linalg.norm(Hp - Hp.T) / den) if den > 0 else float("nan")


def weight_angle(net: LayeredNetwork, params: dict | None = None) -> float:
    """Angle in degrees between the concatenated forward kernels and the transposed
    feedback kernels of all reciprocal pairs (NaN without reciprocal pairs)."""
    params = net.params if params is None else params
    pairs = net.reciprocal_pairs()
    if not pairs:
        return float("nan")
    f = np.concatenate([xp.to_numpy(params[w]).ravel() for w, _ in pairs])
    # dense feedback acts as B (compare with W^T); conv feedback acts as a VJP of the same
    # kernel shape (compare with W itself)
    b = np.concatenate([(xp.to_numpy(params[bn]).T if np.ndim(params[bn]) == 2
                         else xp.to_numpy(params[bn])).ravel() for _, bn in pairs])
    cos = float(f @ b / (np.linalg.norm(f) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def spectral_radius(net: LayeredNetwork, free, *, iters: int = 40, seed: int = 0):
    """Per-sample estimate of the spectral radius of ``H' D`` at the free fixed point.

    ``H' D`` is the Jacobian of the undamped relaxation map; the fixed point is stable
    (and EP's linear responses exist) while it is below 1. Power iteration with JVPs:
    the estimate is the geometric-mean growth over the last half of ``iters`` steps
    (robust to complex dominant pairs). Returns a numpy array ``(batch,)``.
    """
    D = net.activation.deriv(free.u)
    lay, params, rd = net.layout, free.params, free.rd
    rng = np.random.default_rng(seed)
    v = xp.randn(rng, tuple(free.u.shape), free.u)
    logs = []

    def norms(a):
        return np.linalg.norm(xp.to_numpy(a), axis=1)

    nv = norms(v)
    v = v / xp.as_dtype(_xp_arr(nv, v), v)[:, None]
    for k in range(iters):
        w = lay.join(net.jvp(params, rd, lay.split(D * v)), like=v)
        nw = norms(w)
        if k >= iters // 2:
            logs.append(np.log(np.maximum(nw, 1e-300)))
        v = w / xp.as_dtype(_xp_arr(np.maximum(nw, 1e-300), w), w)[:, None]
    return np.exp(np.mean(logs, axis=0))


def _xp_arr(a: np.ndarray, like: Any):
    if xp.lib(like) == "torch":
        import torch

        return torch.as_tensor(a, device=like.device)
    return a
