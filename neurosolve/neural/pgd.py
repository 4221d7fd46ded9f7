"""Projected gradient descent (PGD) attacks on torch models, for robust accuracy.

``pgd_attack`` maximizes a per-sample loss over the l_inf or l_2 ball of radius ``eps``
around each input with signed (l_inf) or normalized (l_2) gradient ascent steps, several
random restarts, and keeps, per sample, the worst point found.

References
----------
.. [1] A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu, "Towards Deep Learning
   Models Resistant to Adversarial Attacks", ICLR 2018.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["pgd_attack", "robust_accuracy", "margin_loss"]


def margin_loss(out, y):
    """``-y f(x)`` per sample (binary +-1 labels; larger is worse for the model)."""
    return -y * out


def pgd_attack(model, X, y, eps: float, *, norm="inf", steps: int = 50, restarts: int = 10,
               step_size: float | None = None, loss: Callable | None = None, seed: int = 0,
               feature_mask=None):
    """Worst-case inputs within ``||delta|| <= eps`` found by PGD with random restarts.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (n, d) inputs to (n,) outputs.
    X, y : arrays (numpy or torch)
        Inputs and targets (+-1 labels for the default margin loss).
    eps : float
        Radius of the ball.
    norm : {"inf", 2}
    steps, restarts : int
        Ascent steps per restart; restarts (the first starts at delta = 0, the others at
        a uniformly random point of the l_inf ball / a random point of the l_2 ball).
    step_size : float, optional
        Default ``2.5 eps / steps``.
    loss : callable, optional
        ``loss(outputs, y) -> (n,)`` per-sample loss to maximize (default: margin).
    feature_mask : array of bool, optional
        Features that may be perturbed (default all).

    Returns
    -------
    X_adv : torch.Tensor, worst : torch.Tensor
        The worst inputs found and their per-sample loss values.
    """
    import torch

    if norm not in ("inf", 2):
        raise ValueError(f"norm must be 'inf' or 2, got {norm!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    p = next(model.parameters())
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X, dtype=p.dtype,
                        device=p.device)
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=p.dtype,
                        device=p.device)
    loss = loss or margin_loss
    a = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    mask = torch.ones_like(X[0]) if feature_mask is None else torch.as_tensor(
        np.asarray(feature_mask, dtype=float), dtype=p.dtype, device=p.device)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        best = loss(model(X), y).clone()
    best_X = X.clone()
    for r in range(restarts):
        if r == 0 or eps == 0:
            delta = torch.zeros_like(X)
        elif norm == "inf":
            delta = (torch.rand(X.shape, generator=g, dtype=p.dtype) * 2 - 1).to(p.device) * eps
        else:
            z = torch.randn(X.shape, generator=g, dtype=p.dtype).to(p.device) * mask
            rad = torch.rand(X.shape[0], 1, generator=g, dtype=p.dtype).to(p.device)
            delta = z / z.norm(dim=1, keepdim=True).clamp_min(1e-30) * eps * rad
        delta = delta * mask
        for _ in range(steps + 1):
            delta.requires_grad_(True)
            val = loss(model(X + delta), y)
            with torch.no_grad():
                better = val > best
                best = torch.where(better, val, best)
                best_X[better] = (X + delta)[better]
            if _ == steps or eps == 0:
                break
            (grad,) = torch.autograd.grad(val.sum(), delta)
            with torch.no_grad():
                grad = grad * mask
                if norm == "inf":
                    delta = (delta + a * grad.sign()).clamp(-eps, eps)
                else:
                    gn = grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
                    delta = delta + a * grad / gn
                    dn = delta.norm(dim=1, keepdim=True)
                    delta = delta * torch.clamp(eps / dn.clamp_min(1e-30), max=1.0)
                delta = delta * mask
    return best_X.detach(), best.detach()


def robust_accuracy(model, X, y, eps: float, *, margin: float = 0.0, **kw) -> float:
    """Fraction of samples with ``y f(x') > margin`` at the PGD worst case ``x'``
    (binary +-1 labels)."""
    import torch

    _, worst = pgd_attack(model, X, y, eps, **kw)
    # worst = max over the attack of -y f(x'), so y f(x') = -worst
    return float(torch.mean((-worst > margin).to(torch.float64)))
