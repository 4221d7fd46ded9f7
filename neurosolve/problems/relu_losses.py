"""Losses of the convex ReLU programs: values, gradients, conjugates and proximal maps.

Conventions (``w`` is the loss weight: 1 for ``reduction="sum"``, ``1/n`` for "mean";
labels of the classification losses are +-1):

========== ================================== ==========================================
loss       per-sample value                   robust (worst case over the ball)
========== ================================== ==========================================
squared    ``w/2 (z - y)^2``                  ``w/2 (|z - y| + eps ||b||_q)^2``
logistic   ``w log(1 + exp(-y z))``           ``w log(1 + exp(-y z + eps ||b||_q))``
hinge      ``w max(0, 1 - y z)``              ``w max(0, 1 - y z + eps ||b||_q)``
========== ================================== ==========================================

Here ``b`` is the gradient of the network output with respect to the (non-bias) input on
the perturbation ball, which is constant there under the robust cone constraints, and
``q`` is the dual norm of the attack norm (``q = 1`` for l_inf attacks, ``q = 2`` for l_2).

Every function works on numpy arrays and on torch tensors (through :func:`lib`).

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, arXiv:2201.01965, sections 3 (ADMM) and 4 (convex
   adversarial training); Y. Bai et al., "Practical Convex Formulation of Robust
   One-hidden-layer Neural Network Training", ACC 2022, arXiv:2105.12237.
.. [2] N. Parikh, S. Boyd, "Proximal Algorithms", Found. Trends Optim. 1(3), 2014.
"""

from __future__ import annotations

import numpy as np

from neurosolve.backends.ops import ops_of

__all__ = [
    "LOSSES",
    "loss_value",
    "loss_grad",
    "loss_hess_diag",
    "loss_conjugate_neg",
    "dual_domain",
    "best_dual_scale",
    "prox_loss",
    "robust_loss_value",
    "prox_robust_loss",
    "l1_ball_multiplier",
    "project_robust_cone",
]

LOSSES = ("squared", "logistic", "hinge")


# ---------------------------------------------------------------------------------------
# plain losses
# ---------------------------------------------------------------------------------------
def loss_value(loss: str, z, y, w: float = 1.0):
    """Total loss ``sum_k phi(z_k, y_k)`` (a 0-d array/tensor)."""
    L = ops_of(z)
    if loss == "squared":
        r = z - y
        return 0.5 * w * (r * r).sum()
    if loss == "logistic":
        return w * L.softplus(-y * z).sum()
    if loss == "hinge":
        return w * (1.0 - y * z).clip(min=0).sum()
    raise ValueError(f"unknown loss {loss!r}")


def loss_grad(loss: str, z, y, w: float = 1.0):
    """Gradient (a subgradient for the hinge) of the total loss with respect to ``z``."""
    L = ops_of(z)
    if loss == "squared":
        return w * (z - y)
    if loss == "logistic":
        return -w * y * L.sigmoid(-y * z)
    if loss == "hinge":
        return -w * y * (y * z < 1.0)
    raise ValueError(f"unknown loss {loss!r}")


def loss_hess_diag(loss: str, z, y, w: float = 1.0):
    """Second derivative of each sample's loss with respect to ``z`` (squared and
    logistic; the hinge has none)."""
    L = ops_of(z)
    if loss == "squared":
        return w + 0.0 * z
    if loss == "logistic":
        sg = L.sigmoid(-y * z)
        return w * sg * (1.0 - sg)
    raise ValueError(f"loss {loss!r} has no second derivative (use 'squared' or 'logistic')")


def loss_conjugate_neg(loss: str, lam, y, w: float = 1.0) -> float:
    """``-phi*(lam)`` summed over samples: the dual objective of the loss part.

    ``lam`` is a dual point of the form produced by :func:`loss_grad` (scaled by at most
    one); for logistic and hinge its entries must satisfy ``-y lam / w`` in [0, 1].
    """
    lam = np.asarray(lam, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if loss == "squared":
        return float(-(lam * lam).sum() / (2.0 * w) - (lam * y).sum())
    s = np.clip(-y * lam / w, 0.0, 1.0)
    if loss == "logistic":
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = np.where(s > 0, s * np.log(s), 0.0) + np.where(s < 1, (1 - s) * np.log1p(-s), 0.0)
        return float(-w * ent.sum())
    if loss == "hinge":
        return float(w * s.sum())
    raise ValueError(f"unknown loss {loss!r}")


def dual_domain(loss: str, lam, y, w: float = 1.0) -> np.ndarray:
    """``lam`` moved into the domain of the loss conjugate (numpy): ``-y lam / w`` clipped
    to [0, 1] for logistic and hinge; unchanged for the squared loss."""
    lam = np.asarray(lam, dtype=np.float64)
    if loss == "squared":
        return lam
    y = np.asarray(y, dtype=np.float64)
    return -w * y * np.clip(-y * lam / w, 0.0, 1.0)


def best_dual_scale(loss: str, lam, y, w: float, tmax) -> np.ndarray:
    """Per output column ``o``: the ``t`` in ``[0, tmax[o]]`` maximizing
    ``-phi*(t lam[:, o])`` (concave in t). Closed form for the squared loss
    (``-w lam^T y / ||lam||^2`` clipped) and hinge (``tmax``: increasing in t); a bounded
    scalar search for logistic."""
    from scipy.optimize import minimize_scalar

    lam = np.asarray(lam, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    tmax = np.broadcast_to(np.asarray(tmax, dtype=np.float64), (lam.shape[1],))
    t = np.empty(lam.shape[1])
    for o in range(lam.shape[1]):
        lo, yo, tm = lam[:, o], y[:, o], float(tmax[o])
        if loss == "squared":
            nl = float(lo @ lo)
            t[o] = min(max(-w * float(lo @ yo) / nl, 0.0), tm) if nl > 0 else 0.0
        elif loss == "hinge":
            t[o] = tm
        else:
            def f(tt):
                return -loss_conjugate_neg(loss, tt * lo, yo, w)

            r = minimize_scalar(f, bounds=(0.0, tm), method="bounded",
                                options={"xatol": 1e-12 * max(tm, 1e-300)})
            t[o] = r.x if f(r.x) <= f(tm) else tm
    return t


def prox_loss(loss: str, z0, y, w: float, rho: float, newton_iters: int = 30):
    """``argmin_z phi(z) + rho/2 (z - z0)^2``, elementwise."""
    L = ops_of(z0)
    if loss == "squared":
        return (w * y + rho * z0) / (w + rho)
    m0 = y * z0
    if loss == "hinge":
        step = w / rho
        m = L.where(m0 > 1.0, m0, L.where(m0 < 1.0 - step, m0 + step, L.full_like(m0, 1.0)))
        return y * m
    if loss == "logistic":
        # rho (m - m0) - w sigmoid(-m) = 0, the root lies in [m0, m0 + w/rho]
        lo, hi = m0, m0 + w / rho
        m = m0 + 0.5 * w / rho
        for _ in range(newton_iters):
            sg = L.sigmoid(-m)
            f = rho * (m - m0) - w * sg
            fp = rho + w * sg * (1.0 - sg)
            lo = L.where(f < 0, m, lo)
            hi = L.where(f > 0, m, hi)
            m = m - f / fp
            m = L.where((m <= lo) | (m >= hi), 0.5 * (lo + hi), m)
        return y * m
    raise ValueError(f"unknown loss {loss!r}")


# ---------------------------------------------------------------------------------------
# robust (worst-case) losses
# ---------------------------------------------------------------------------------------
def _norm_q(B, q, axis):
    L = ops_of(B)
    if q == 1:
        return L.abs(B).sum(axis)
    return ((B * B).sum(axis)) ** 0.5


def robust_loss_value(loss: str, z, y, bnorm, eps: float, w: float = 1.0):
    """Worst-case loss ``sum_k phi_eps(z_k, ||b_k||_q)`` given the norms ``bnorm``."""
    L = ops_of(z)
    if loss == "squared":
        h = L.abs(z - y) + eps * bnorm
        return 0.5 * w * (h * h).sum()
    m = -y * z + eps * bnorm
    if loss == "logistic":
        return w * L.softplus(m).sum()
    if loss == "hinge":
        return w * (1.0 + m).clip(min=0).sum()
    raise ValueError(f"unknown loss {loss!r}")


def l1_ball_multiplier(a_sorted, csum, radius):
    """Soft-threshold level ``theta`` with ``sum_j max(|a_j| - theta, 0) = radius``.

    ``a_sorted`` holds ``|a|`` sorted in decreasing order along the last axis and ``csum``
    its cumulative sums; ``radius`` broadcasts against the leading axes. Returns 0 where
    the ball already contains ``a``.
    """
    L = ops_of(a_sorted)
    m = a_sorted.shape[-1]
    j = L.arange_like(m, a_sorted)
    th = (csum - radius[..., None]) / j
    valid = a_sorted > th
    # the largest valid j (valid is a prefix); use th at that index
    cnt = valid.sum(-1, keepdims=True)
    cnt = cnt.clip(min=1) - 1
    theta = L.take_along(th, cnt, axis=-1)[..., 0]
    return theta.clip(min=0)


def _shrink(B0, q, t, L, a_sorted=None, csum=None):
    """prox of ``t ||.||_q`` applied to each row of ``B0`` (t broadcast per row)."""
    if q == 1:
        return L.sign(B0) * (L.abs(B0) - t[:, None]).clip(min=0)
    nr = ((B0 * B0).sum(1)) ** 0.5
    scale = (1.0 - t / L.where(nr > 0, nr, L.full_like(nr, 1.0))).clip(min=0)
    return B0 * scale[:, None]


def prox_robust_loss(loss: str, z0, B0, y, eps: float, q: int, w: float, rho: float,
                     iters: int = 40):
    """Prox of the per-sample worst-case loss ``f(z, b) = phi_eps(z, ||b||_q)``.

    Minimizes ``f(z, b) + rho/2 (|z - z0|^2 + ||b - B0||^2)`` for every sample (rows of
    ``B0``) by bisection on the scalar outer multiplier ``theta`` (the derivative of the
    outer loss): for a fixed ``theta`` the minimizer is a shifted ``z`` and a soft-
    thresholded (``q = 1``) or shrunk (``q = 2``) ``b``, and ``theta`` solves a monotone
    scalar equation.

    Returns ``(z, B)``.
    """
    L = ops_of(z0)

    def at(theta):
        Bt = _shrink(B0, q, theta * eps / rho, L)
        return Bt, _norm_q(Bt, q, 1)

    if loss == "squared":
        e0 = z0 - y
        sgn = L.where(e0 >= 0, L.full_like(e0, 1.0), L.full_like(e0, -1.0))
        ae0 = L.abs(e0)

        def resid(theta):  # theta - w h(theta): increasing
            Bt, nb = at(theta)
            h = (ae0 - theta / rho).clip(min=0) + eps * nb
            return theta - w * h

        lo = 0.0 * ae0
        hi = w * (ae0 + eps * _norm_q(B0, q, 1))
    else:
        m0 = -y * z0

        def resid(theta):
            Bt, nb = at(theta)
            m = m0 - theta / rho + eps * nb
            if loss == "hinge":
                # theta in [0, w]: theta = w where 1 + m(w) >= 0, 0 where 1 + m(0) <= 0
                return L.where(1.0 + m > 0, theta - w, theta)
            return theta - w * L.sigmoid(m)

        lo = 0.0 * m0
        hi = w + 0.0 * m0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        r = resid(mid)
        lo = L.where(r < 0, mid, lo)
        hi = L.where(r < 0, hi, mid)
    theta = 0.5 * (lo + hi)
    Bt, _ = at(theta)
    if loss == "squared":
        z = y + sgn * (ae0 - theta / rho).clip(min=0)
    else:
        z = z0 + y * theta / rho
    return z, Bt


def project_robust_cone(S0, R0, eps: float, q: int, iters: int = 40):
    """Project ``(s_g, r_g)`` onto ``{(s, r): s_k >= eps ||r||_q for all k}``, per column g.

    ``S0`` is ``(n, m)`` and ``R0`` is ``(d, m)``. With ``eps = 0`` this is the projection
    of ``S0`` onto the non-negative orthant (``R0`` is returned unchanged). Otherwise a
    bisection on the common level ``tau`` (``s_k = max(S0_k, tau)`` and ``r`` the
    projection of ``r0`` onto the ball ``{eps ||r||_q <= tau}``) minimizes the distance.

    Returns ``(S, R)``.
    """
    if eps == 0:
        return S0.clip(min=0), R0
    L = ops_of(S0)
    A = L.abs(R0).T  # (m, d)
    if q == 1:
        a_sorted = L.sort_desc(A, axis=1)
        csum = L.cumsum(a_sorted, axis=1)
        rnorm = A.sum(1)
    else:
        rnorm = ((A * A).sum(1)) ** 0.5

    def theta_of(tau):
        radius = tau / eps
        if q == 1:
            return l1_ball_multiplier(a_sorted, csum, radius)
        return (rnorm - radius).clip(min=0)

    lo = 0.0 * rnorm
    hi = eps * rnorm
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        der = (mid[None, :] - S0).clip(min=0).sum(0) - theta_of(mid) / eps
        lo = L.where(der < 0, mid, lo)
        hi = L.where(der < 0, hi, mid)
    tau = 0.5 * (lo + hi)
    feas = eps * rnorm <= -L.amax(-S0, 0)
    S = L.where(S0 > tau[None, :], S0, tau[None, :] + 0.0 * S0)
    th = theta_of(tau)
    if q == 1:
        R = L.sign(R0) * (L.abs(R0) - th[None, :]).clip(min=0)
    else:
        scale = (1.0 - th / L.where(rnorm > 0, rnorm, L.full_like(rnorm, 1.0))).clip(min=0)
        R = R0 * scale[None, :]
    S = L.where(feas[None, :], S0, S)
    R = L.where(feas[None, :], R0, R)
    return S, R
