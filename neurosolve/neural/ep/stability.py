"""A contraction penalty that keeps the free fixed point stable during training.

The fixed point ``u* = H(phi(u*))`` is stable, and the linear responses that every
estimator needs exist, while the spectral radius of ``A = H'(r*) D`` (``D = diag
phi'(u*)``) stays below 1. Training moves units into high-gain regions and grows weights,
which can push it past 1 (spec section 8.6: the fixed point then loses stability and the
state jumps to another branch, for BP and EP alike). This module penalizes the gain of
``A`` along its dominant direction, per sample, matrix-free:

    v_b  <- power iteration on A_b^2 (``2 iters`` JVPs from a random start, held fixed)
    g_b  =  ||A_b^2 v_b||^(1/2)  (~ spectral radius)
    P    =  1/2 mean_b max(0, g_b - target)^2

Two steps of ``A`` per power iteration because a layered network's Jacobian has
eigenvalues in +- pairs (its layer graph is bipartite for the MLP), which stalls plain
power iteration on ``A``. The gradient is taken with respect to the parameters at fixed
states (like the homeostatic loss): ``dg = (<w, dA A v> + <A^T w, dA v>) / (2 g ||w||)``
with ``w = A^2 v`` and ``dA = dH' D``, i.e. two outer products per Jacobian block
(``bilinear_grad``). It is an explicit, documented
stabilizer, not part of the paper's method; the trainer applies it with weight
``TrainConfig.contraction`` to every method (BP and EP) so comparisons stay fair.

References
----------
.. [1] S. Bai, V. Koltun, J. Z. Kolter, "Stabilizing equilibrium models by Jacobian
   regularization", ICML 2021 (the DEQ analogue: a Frobenius-norm Jacobian penalty).
.. [2] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neurosolve.backends import ops as xp

__all__ = ["ContractionResult", "contraction_penalty"]


@dataclass
class ContractionResult:
    """Penalty value, parameter gradient and the per-sample gains ``g_b``."""

    value: float
    grads: dict
    gains: np.ndarray


def contraction_penalty(net, free, *, target: float = 0.9, iters: int = 10, rng: Any = None,
                        params: dict | None = None, v0: Any = None) -> ContractionResult:
    """``1/2 mean_b max(0, ||A_b v_b|| - target)^2`` with ``A = H' D`` at the free state.

    Parameters
    ----------
    net : LayeredNetwork
    free : FreePhase
        The free fixed point (states held fixed).
    target : float
        Gains below this are not penalized.
    iters : int
        Power iterations on ``A^2`` (2 JVPs each) to find the dominant direction.
    rng : numpy Generator or int, optional
    params : dict, optional
    v0 : array (batch, n), optional
        Starting directions (default: Gaussian draws from ``rng``).
    """
    params = free.params if params is None else params
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    lay = net.layout
    rd = free.rd
    D = net.activation.deriv(free.u)
    v = xp.randn(rng, tuple(free.u.shape), free.u) if v0 is None else v0

    def unit(a):
        n = np.linalg.norm(xp.to_numpy(a), axis=1)
        n = np.maximum(n, 1e-300)
        if xp.lib(a) == "torch":
            import torch

            return a / torch.as_tensor(n, dtype=a.dtype, device=a.device)[:, None]
        return a / n[:, None]

    def A(z):
        return lay.join(net.jvp(params, rd, lay.split(D * z)), like=z)

    v = unit(v)
    for _ in range(iters):
        v = unit(A(A(v)))
    Av = A(v)
    w2 = A(Av)
    n2 = np.linalg.norm(xp.to_numpy(w2), axis=1)
    g = np.sqrt(n2)
    excess = np.maximum(g - target, 0.0)
    B = g.shape[0]
    value = 0.5 * float(np.mean(excess ** 2))
    # d g = (<w2, dA (A v)> + <A^T w2, dA v>) / (2 g ||w2||),  dA = dH' D
    coef = excess / np.maximum(2 * g * n2, 1e-300) / B
    if xp.lib(w2) == "torch":
        import torch

        coef_t = torch.as_tensor(coef, dtype=w2.dtype, device=w2.device)[:, None]
    else:
        coef_t = coef[:, None]
    wc = w2 * coef_t
    Atw = D * lay.join(net.vjp(params, rd, lay.split(wc)), like=wc)
    g1 = net.bilinear_grad(params, rd, lay.split(wc), lay.split(D * Av))
    g2 = net.bilinear_grad(params, rd, lay.split(Atw), lay.split(D * v))
    grads = {k: g1[k] + g2[k] for k in g1}
    return ContractionResult(value=value, grads=grads, gains=g)
