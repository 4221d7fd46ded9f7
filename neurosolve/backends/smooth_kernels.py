"""numba kernels for the smooth-minimization gallery (logistic, softmax, log-sum-exp).

Each kernel fuses the element-wise part of an oracle into one pass (no temporaries); the
matrix products stay in BLAS. Every kernel has a numpy reference in
:mod:`neurosolve.problems.smooth_gallery` and is tested against it
(``tests/test_smooth_kernels.py``). Compiled on first call, cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "logistic_terms",
    "logistic_weights",
    "logistic_value_grad",
    "softmax_terms",
    "lse_terms",
]


@njit(cache=True, inline="always")
def _softplus_neg(t):
    """log(1 + exp(-t)), stable for both signs of t."""
    if t > 0:
        return np.log1p(np.exp(-t))
    return -t + np.log1p(np.exp(t))


@njit(cache=True, inline="always")
def _sigmoid(t):
    if t >= 0:
        return 1.0 / (1.0 + np.exp(-t))
    e = np.exp(t)
    return e / (1.0 + e)


@njit(cache=True)
def logistic_terms(z, y):
    """For margins ``z = A x`` and labels ``y`` in {-1, 1}: ``(sum_i log(1 + exp(-y_i z_i)), r)``.

    ``r_i = -y_i sigmoid(-y_i z_i)`` is the derivative of the i-th loss in ``z_i`` (the
    data gradient is ``A^T r``).
    """
    m = z.shape[0]
    r = np.empty(m)
    s = 0.0
    for i in range(m):
        t = y[i] * z[i]
        s += _softplus_neg(t)
        r[i] = -y[i] * _sigmoid(-t)
    return s, r


@njit(cache=True)
def logistic_weights(z, y):
    """Hessian weights ``sigmoid(t) sigmoid(-t)``, ``t = y_i z_i`` (the Hessian is ``A^T W A``)."""
    m = z.shape[0]
    w = np.empty(m)
    for i in range(m):
        e = np.exp(-abs(y[i] * z[i]))  # sigma(t) sigma(-t) = e / (1 + e)^2, no cancellation
        w[i] = e / ((1.0 + e) * (1.0 + e))
    return w


@njit(cache=True)
def logistic_value_grad(A, y, x):
    """One pass over the rows of ``A`` (C order): ``(sum_i loss_i, sum_i r_i a_i)``.

    Fuses ``z = A x``, the losses and ``A^T r`` so ``A`` is read once per evaluation
    (serial: a parallel version did not pay on the 2-core target, see docs/gns_newton.md).
    """
    m, d = A.shape
    g = np.zeros(d)
    total = 0.0
    for i in range(m):
        zi = 0.0
        for j in range(d):
            zi += A[i, j] * x[j]
        t = y[i] * zi
        total += _softplus_neg(t)
        ri = -y[i] * _sigmoid(-t)
        for j in range(d):
            g[j] += ri * A[i, j]
    return total, g


@njit(cache=True)
def softmax_terms(S, labels):
    """Row-wise softmax cross-entropy of scores ``S`` (m, K): ``(sum_i loss_i, P - Y)``."""
    m, K = S.shape
    R = np.empty((m, K))
    total = 0.0
    for i in range(m):
        mx = S[i, 0]
        for k in range(1, K):
            if S[i, k] > mx:
                mx = S[i, k]
        se = 0.0
        for k in range(K):
            e = np.exp(S[i, k] - mx)
            R[i, k] = e
            se += e
        total += mx + np.log(se) - S[i, labels[i]]
        for k in range(K):
            R[i, k] /= se
        R[i, labels[i]] -= 1.0
    return total, R


@njit(cache=True)
def lse_terms(z, b, mu):
    """``(mu log sum_i exp((z_i - b_i)/mu), pi)`` with ``pi`` the softmax weights."""
    m = z.shape[0]
    mx = -np.inf
    for i in range(m):
        v = (z[i] - b[i]) / mu
        if v > mx:
            mx = v
    pi = np.empty(m)
    se = 0.0
    for i in range(m):
        e = np.exp((z[i] - b[i]) / mu - mx)
        pi[i] = e
        se += e
    for i in range(m):
        pi[i] /= se
    return mu * (mx + np.log(se)), pi
