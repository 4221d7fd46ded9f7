"""A gallery of smooth minimization problems with analytic oracles.

Every function returns a :class:`~neurosolve.problems.Minimize` with the gradient, the
exact Hessian and the structure its Hessian approximations need:

================================  ==========================================  =================
problem                           f(x)                                        approximations
================================  ==========================================  =================
:func:`logistic`                  mean log(1 + exp(-y a^T x)) + mu/2 ||x||^2  fisher, diag
:func:`softmax`                   mean cross-entropy of softmax(X W) + mu/2   fisher, diag
:func:`logsumexp`                 mu log sum exp((Ax - b)/mu)                  weighted-gauss-newton
:func:`quadratic`                 x^T Q x / 2 - c^T x                         exact
:func:`least_squares`             ||Ax - b||^2 / 2 + mu/2 ||x||^2             gauss-newton
:func:`equations`                 ||Ax - b||^p / p                            fisher-term, gauss-newton
:func:`rosenbrock`                sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2   exact (indefinite)
:func:`rosenbrock_equations`      ||(1 - x1, 10(x2 - x1^2))||^p / p           gauss-newton, fisher-term
:func:`chebyshev`                 ||u||^p / p, Chebyshev-Rosenbrock chain     gauss-newton
:func:`composite`                 ||u(x)||^p / p for any residual u           gauss-newton, fisher-term
================================  ==========================================  =================

Data-driven problems (logistic, softmax, log-sum-exp) carry numba kernels used by
``backend="numba"`` (the default for numpy inputs); ``library="torch"`` builds the same
problem on float64 torch tensors with the same formulas. Data: :func:`breast_cancer`,
:func:`digits` (scikit-learn's bundled sets, no download), :func:`synthetic_classification`,
:func:`lse_instance`.

References
----------
.. [1] A. Semenov, M. Jaggi, N. Doikov, "Gradient-Normalized Smoothness for Optimization
   with Approximate Hessians", arXiv:2506.13710, 2025 (the log-sum-exp, equations,
   Rosenbrock and Chebyshev problems follow its experiments).
.. [2] N. Doikov, "Minimizing quasi-self-concordant functions by gradient regularization
   of Newton method", arXiv:2308.14742 (logistic and softmax regression).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.backends.ops import ops_for, to_numpy
from neurosolve.problems.smooth import Minimize

__all__ = [
    "logistic",
    "softmax",
    "logsumexp",
    "quadratic",
    "least_squares",
    "equations",
    "rosenbrock",
    "rosenbrock_equations",
    "chebyshev",
    "composite",
    "breast_cancer",
    "digits",
    "synthetic_classification",
    "lse_instance",
]


# ---------------------------------------------------------------------------------------
# array-library helpers (numpy or torch, same formulas)
# ---------------------------------------------------------------------------------------
def _to_lib(a, library, dtype=None):
    if a is None:
        return None
    if library == "torch":
        import torch

        if isinstance(a, torch.Tensor):
            return a.to(dtype=dtype or torch.float64)
        return torch.as_tensor(np.asarray(a), dtype=dtype or torch.float64)
    return to_numpy(a, dtype or float)


def _same_device(a, ref, library):
    """Move ``a`` (already converted) to ``ref``'s device (torch; no-op for numpy)."""
    if library == "torch" and a is not None and a.device != ref.device:
        return a.to(ref.device)
    return a


def _check_library(library):
    if library not in ("numpy", "torch"):
        raise ValueError(f"library must be 'numpy' or 'torch', got {library!r}")


class _LastPoint:
    """Cache of values computed at the last point (shared by hess / hessp / diag)."""

    def __init__(self, fn):
        self.fn = fn
        self.x = None
        self.val = None

    def __call__(self, x):
        if self.x is not None and self.x.shape == x.shape and bool((self.x == x).all()):
            return self.val
        self.val = self.fn(x)
        self.x = x.clone() if hasattr(x, "clone") else np.array(x, copy=True)
        return self.val


def _validate_matrix(A, name, ndim=2):
    if A.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(A.shape)}")
    fin = bool(np.all(np.isfinite(np.asarray(A)))) if isinstance(A, np.ndarray) else \
        bool(A.isfinite().all())
    if not fin:
        raise ValueError(f"{name} contains NaN or inf entries")


def _x0(x0, n, library, default=0.0, like=None):
    if x0 is None:
        x0 = np.full(n, default, dtype=float)
    x0 = _to_lib(x0, library)
    if library == "torch" and like is not None:
        x0 = x0.to(dtype=like.dtype, device=like.device)
    if tuple(x0.shape) != (n,):
        raise ValueError(f"x0 must have shape ({n},), got {tuple(x0.shape)}")
    return x0


# ---------------------------------------------------------------------------------------
# logistic regression
# ---------------------------------------------------------------------------------------
def logistic(A: Any, y: Any, mu: float = 1e-2, *, x0: Any = None, library: str = "numpy",
             B: Any = None, f_star: float | None = None, name: str = "logistic") -> Minimize:
    """L2-regularized logistic regression, no intercept.

    ``f(x) = (1/m) sum_i log(1 + exp(-y_i a_i^T x)) + (mu/2) ||x||^2`` with labels
    ``y_i`` in {-1, +1} ({0, 1} is mapped to {-1, +1}). This is scikit-learn's
    ``LogisticRegression(C=1/(mu m), fit_intercept=False)`` objective divided by ``C m``.

    Oracles: gradient ``A^T r / m + mu x``; Hessian ``A^T Diag(w) A / m + mu I`` with
    ``w = sigma(t) sigma(-t)``, ``t = y * (A x)``; per-sample gradients (empirical Fisher
    ``G^T G / m + mu I``); the Hessian's diagonal. ``backend="numba"`` uses a fused
    one-pass value-and-gradient kernel.

    Parameters
    ----------
    A : (m, d) array
        Features (one sample per row).
    y : (m,) array
        Labels in {-1, 1} or {0, 1}.
    mu : float
        Ridge parameter, ``>= 0`` (``> 0`` guarantees a unique minimizer).
    x0 : (d,) array, optional
        Start (default zeros).
    library : {"numpy", "torch"}
    """
    _check_library(library)
    A = _to_lib(A, library)
    y = _same_device(_to_lib(y, library), A, library)
    _validate_matrix(A, "A")
    if y.ndim != 1 or int(y.shape[0]) != int(A.shape[0]):
        raise ValueError(f"y must have shape ({A.shape[0]},), got {tuple(y.shape)}")
    yv = np.asarray(y if library == "numpy" else y.cpu().numpy())
    labels = set(np.unique(yv).tolist())
    if labels <= {0.0, 1.0}:
        y = 2 * y - 1
    elif not labels <= {-1.0, 1.0}:
        raise ValueError(f"y must hold labels in {{-1, 1}} or {{0, 1}}, got {sorted(labels)[:5]}")
    if not (isinstance(mu, (int, float)) and mu >= 0):
        raise ValueError(f"mu must be a non-negative number, got {mu!r}")
    mu = float(mu)
    m, d = int(A.shape[0]), int(A.shape[1])
    ops = ops_for(library)

    def fun(x):
        t = y * (A @ x)
        return ops.softplus(-t).sum() / m + 0.5 * mu * (x * x).sum()

    def fun_and_grad(x):
        t = y * (A @ x)
        r = -y * ops.sigmoid(-t)
        return ops.softplus(-t).sum() / m + 0.5 * mu * (x * x).sum(), A.T @ r / m + mu * x

    def _w(x):
        t = y * (A @ x)
        return ops.sigmoid(t) * ops.sigmoid(-t)

    weights = _LastPoint(_w)

    def hess(x):
        w = weights(x)
        As = A * (w ** 0.5)[:, None]
        H = As.T @ As / m
        return _add_ridge(H, mu)

    def hessp(x, v):
        return A.T @ (weights(x) * (A @ v)) / m + mu * v

    A2 = _LazySquare(A)

    def hess_diag(x):
        return A2().T @ weights(x) / m + mu

    def sample_grads(x):
        t = y * (A @ x)
        return A * (-y * ops.sigmoid(-t))[:, None]

    kernels = {}
    if library == "numpy":
        kernels["numba"] = _logistic_numba(A, y, mu, m)
    return Minimize(fun, None, _x0(x0, d, library, like=A), fun_and_grad=fun_and_grad, hess=hess,
                    hessp=hessp, sample_grads=sample_grads, fisher_reg=mu, B=B, f_star=f_star,
                    structure={"hess_diag": hess_diag}, kernels=kernels, name=name,
                    data={"A": A, "y": y, "mu": mu})


def _weighted_gram(A, w, scale):
    """``scale * A^T Diag(w) A`` for w >= 0 by one BLAS syrk (half the flops of a gemm)."""
    from scipy.linalg.blas import dsyrk

    As = A * np.sqrt(w)[:, None]
    U = dsyrk(scale, As.T, trans=0, lower=0)  # upper triangle of scale * As^T As
    H = np.triu(U) + np.triu(U, 1).T
    return H


def _add_ridge(H, mu):
    if mu:
        idx = np.arange(H.shape[0])
        if isinstance(H, np.ndarray):
            H[idx, idx] += mu
        else:
            H.diagonal().add_(mu)
    return H


class _LazySquare:
    def __init__(self, A):
        self.A = A
        self.sq = None

    def __call__(self):
        if self.sq is None:
            self.sq = self.A * self.A
        return self.sq


def _logistic_numba(A, y, mu, m):
    from neurosolve.backends import smooth_kernels as K

    A = np.ascontiguousarray(A)
    y = np.ascontiguousarray(y, dtype=float)

    def fun_and_grad(x):
        x = np.ascontiguousarray(x)
        s, g = K.logistic_value_grad(A, y, x)
        return s / m + 0.5 * mu * float(x @ x), g / m + mu * x

    def fun(x):
        s, _ = K.logistic_terms(A @ x, y)
        return s / m + 0.5 * mu * float(x @ x)

    weights = _LastPoint(lambda x: K.logistic_weights(A @ x, y))

    def hess(x):
        return _add_ridge(_weighted_gram(A, weights(x), 1.0 / m), mu)

    def hessp(x, v):
        return A.T @ (weights(x) * (A @ v)) / m + mu * v

    return {"fun": fun, "fun_and_grad": fun_and_grad, "grad": lambda x: fun_and_grad(x)[1],
            "hess": hess, "hessp": hessp}


# ---------------------------------------------------------------------------------------
# softmax (multinomial) regression
# ---------------------------------------------------------------------------------------
def softmax(X: Any, labels: Any, n_classes: int | None = None, mu: float = 1e-2, *,
            x0: Any = None, library: str = "numpy", B: Any = None,
            name: str = "softmax") -> Minimize:
    """L2-regularized multinomial logistic (softmax) regression, no intercept.

    ``f(W) = (1/m) sum_i [logsumexp(X_i W) - (X_i W)_{y_i}] + (mu/2) ||W||_F^2`` with
    ``W`` of shape (d, K) stored row-major as ``x = W.ravel()`` (length ``d K``). The
    exact Hessian ``(1/m) sum_i (Diag(p_i) - p_i p_i^T) kron x_i x_i^T + mu I`` is built
    from K(K+1)/2 blocks; the empirical Fisher from the per-sample gradients
    ``x_i kron (p_i - e_{y_i})``.

    Parameters
    ----------
    X : (m, d) array
    labels : (m,) integer array in [0, K)
    n_classes : int, optional
        K (default: max label + 1).
    mu : float
        Ridge, ``> 0`` recommended (the softmax parametrization is otherwise singular).
    """
    _check_library(library)
    X = _to_lib(X, library)
    _validate_matrix(X, "X")
    lab = np.asarray(labels.cpu().numpy() if hasattr(labels, "cpu") else labels)
    if lab.ndim != 1 or lab.shape[0] != X.shape[0]:
        raise ValueError(f"labels must have shape ({X.shape[0]},), got {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(lab == np.round(lab)):
            raise ValueError("labels must be integers")
        lab = lab.astype(np.int64)
    K = int(n_classes) if n_classes is not None else int(lab.max()) + 1
    if lab.min() < 0 or lab.max() >= K:
        raise ValueError(f"labels must lie in [0, {K})")
    if not (isinstance(mu, (int, float)) and mu >= 0):
        raise ValueError(f"mu must be a non-negative number, got {mu!r}")
    mu = float(mu)
    m, d = int(X.shape[0]), int(X.shape[1])
    n = d * K
    ops = ops_for(library)
    Y = np.zeros((m, K))
    Y[np.arange(m), lab] = 1.0
    Y = _same_device(_to_lib(Y, library), X, library)

    def fun(x):
        S = X @ x.reshape(d, K)
        return (ops.logsumexp_rows(S).sum() - (S * Y).sum()) / m + 0.5 * mu * (x * x).sum()

    def fun_and_grad(x):
        S = X @ x.reshape(d, K)
        P = ops.softmax_rows(S)
        f = (ops.logsumexp_rows(S).sum() - (S * Y).sum()) / m + 0.5 * mu * (x * x).sum()
        G = X.T @ (P - Y) / m
        return f, G.reshape(-1) + mu * x

    probs = _LastPoint(lambda x: ops.softmax_rows(X @ x.reshape(d, K)))

    def hess(x):
        return _softmax_hess(X, probs(x), mu, ops, library)

    def hessp(x, v):
        P = probs(x)
        V = v.reshape(d, K)
        Z = X @ V                                   # (m, K)
        PZ = P * Z
        M = PZ - P * PZ.sum(1)[:, None]
        return (X.T @ M / m).reshape(-1) + mu * v

    def sample_grads(x):
        P = probs(x)
        R = P - Y
        return (X[:, :, None] * R[:, None, :]).reshape(m, n)

    def hess_diag(x):
        P = probs(x)
        W = P - P * P                               # (m, K)
        return ((X * X).T @ W / m).reshape(-1) + mu

    kernels = {}
    if library == "numpy":
        from neurosolve.backends import smooth_kernels as Kn

        Xc = np.ascontiguousarray(X)
        labc = np.ascontiguousarray(lab, dtype=np.int64)

        def fg_numba(x):
            total, R = Kn.softmax_terms(Xc @ x.reshape(d, K), labc)
            return total / m + 0.5 * mu * float(x @ x), (Xc.T @ R / m).reshape(-1) + mu * x

        kernels["numba"] = {"fun_and_grad": fg_numba, "fun": lambda x: fg_numba(x)[0],
                            "grad": lambda x: fg_numba(x)[1]}
    return Minimize(fun, None, _x0(x0, n, library, like=X), fun_and_grad=fun_and_grad, hess=hess,
                    hessp=hessp, sample_grads=sample_grads, fisher_reg=mu, B=B,
                    structure={"hess_diag": hess_diag}, kernels=kernels, name=name,
                    data={"X": X, "labels": lab, "n_classes": K, "mu": mu})


def _softmax_hess(X, P, mu, ops, library):
    m, d = int(X.shape[0]), int(X.shape[1])
    K = int(P.shape[1])
    H = ops.zeros((d, K, d, K), X)
    for k in range(K):
        for c in range(k, K):
            w = -P[:, k] * P[:, c]
            if c == k:
                w = w + P[:, k]
            blk = (X * w[:, None]).T @ X / m
            H[:, k, :, c] = blk
            if c != k:
                H[:, c, :, k] = blk.T
    H = H.reshape(d * K, d * K)
    return _add_ridge(H, mu)


# ---------------------------------------------------------------------------------------
# log-sum-exp
# ---------------------------------------------------------------------------------------
def logsumexp(A: Any, b: Any, mu: float = 1.0, *, x0: Any = None, B: Any = "gram",
              library: str = "numpy", f_star: float | None = None,
              name: str = "logsumexp") -> Minimize:
    """``f(x) = mu log sum_i exp((a_i^T x - b_i) / mu)`` ("soft max" of linear functions).

    Gradient ``A^T pi`` with ``pi = softmax((Ax - b)/mu)``; Hessian
    ``(A^T Diag(pi) A - (A^T pi)(A^T pi)^T) / mu``; the weighted Gauss-Newton approximation
    drops the rank-one term (``weighted_gn = A^T Diag(pi) A / mu``, ``H >= grad^2 f``).

    Parameters
    ----------
    A : (m, n) array
    b : (m,) array
    mu : float
        Smoothing, ``> 0``.
    B : "gram", None or array
        The metric: ``"gram"`` uses ``A^T A`` (+ 1e-10 of its trace / n for safety), as in
        the paper's experiment; None the identity.
    """
    _check_library(library)
    A = _to_lib(A, library)
    b = _same_device(_to_lib(b, library), A, library)
    _validate_matrix(A, "A")
    m, n = int(A.shape[0]), int(A.shape[1])
    if b.ndim != 1 or int(b.shape[0]) != m:
        raise ValueError(f"b must have shape ({m},), got {tuple(b.shape)}")
    if not (isinstance(mu, (int, float)) and mu > 0):
        raise ValueError(f"mu must be a positive number, got {mu!r}")
    mu = float(mu)
    ops = ops_for(library)
    if isinstance(B, str):
        if B != "gram":
            raise ValueError(f"B must be 'gram', None or an array, got {B!r}")
        G = A.T @ A
        B = _add_ridge(G, 1e-10 * float((G.diagonal()).sum()) / n)

    def terms(x):
        z = (A @ x - b) / mu
        if library == "numpy":
            mx = z.max()
            e = np.exp(z - mx)
            se = e.sum()
            return mu * (mx + np.log(se)), e / se
        return mu * __import__("torch").logsumexp(z, 0), __import__("torch").softmax(z, 0)

    def fun_and_grad(x):
        f, pi = terms(x)
        return f, A.T @ pi

    pis = _LastPoint(lambda x: terms(x)[1])

    def weighted_gn(x):
        pi = pis(x)
        Ap = A * (pi ** 0.5)[:, None]
        return Ap.T @ Ap / mu

    def hess(x):
        pi = pis(x)
        g = A.T @ pi
        return weighted_gn(x) - ops.outer(g, g) / mu

    def hessp(x, v):
        pi = pis(x)
        Av = A @ v
        return (A.T @ (pi * Av) - (A.T @ pi) * (pi * Av).sum()) / mu

    kernels = {}
    if library == "numpy":
        from neurosolve.backends import smooth_kernels as Kn

        Ac = np.ascontiguousarray(A)
        bc = np.ascontiguousarray(b)

        def fg_numba(x):
            f, pi = Kn.lse_terms(Ac @ x, bc, mu)
            return f, Ac.T @ pi

        kernels["numba"] = {"fun_and_grad": fg_numba, "fun": lambda x: fg_numba(x)[0],
                            "grad": lambda x: fg_numba(x)[1]}
    return Minimize(lambda x: terms(x)[0], None, _x0(x0, n, library, 1.0, like=A),
                    fun_and_grad=fun_and_grad, hess=hess, hessp=hessp, B=B, f_star=f_star,
                    structure={"weighted_gn": weighted_gn}, kernels=kernels, name=name,
                    data={"A": A, "b": b, "mu": mu})


def lse_instance(n: int = 200, m: int = 400, mu: float = 0.1, seed: int = 3124, *,
                 library: str = "numpy", B: Any = "gram") -> Minimize:
    """The paper's log-sum-exp instance: uniform[-1, 1] data shifted so that ``x* = 0``.

    ``A`` (m, n) and ``b`` (m,) are drawn uniform on [-1, 1]; then every row is shifted by
    the gradient at 0, ``a_i <- a_i - A^T pi(0)``, which makes ``grad f(0) = 0`` (``pi(0)``
    is unchanged), so ``f* = f(0) = mu log sum exp(-b / mu)``. Start ``x0 = 1``.
    """
    rng = np.random.default_rng(seed)
    A = rng.uniform(-1.0, 1.0, size=(m, n))
    b = rng.uniform(-1.0, 1.0, size=m)
    z = -b / mu
    pi = np.exp(z - z.max())
    pi /= pi.sum()
    A = A - (A.T @ pi)[None, :]
    f_star = mu * (z.max() + np.log(np.exp(z - z.max()).sum()))
    return logsumexp(A, b, mu, x0=np.ones(n), B=B, library=library, f_star=float(f_star),
                     name=f"logsumexp-{n}x{m}")


# ---------------------------------------------------------------------------------------
# quadratics and least squares
# ---------------------------------------------------------------------------------------
def quadratic(Q: Any, c: Any, *, x0: Any = None, library: str = "numpy", B: Any = None,
              name: str = "quadratic") -> Minimize:
    """``f(x) = x^T Q x / 2 - c^T x`` with symmetric ``Q`` (PSD for a minimizer)."""
    _check_library(library)
    Q = _to_lib(Q, library)
    c = _same_device(_to_lib(c, library), Q, library)
    _validate_matrix(Q, "Q")
    n = int(Q.shape[0])
    if tuple(Q.shape) != (n, n):
        raise ValueError(f"Q must be square, got shape {tuple(Q.shape)}")
    if tuple(c.shape) != (n,):
        raise ValueError(f"c must have shape ({n},), got {tuple(c.shape)}")
    Qn = np.asarray(Q if library == "numpy" else Q.cpu().numpy())
    if np.linalg.norm(Qn - Qn.T) > 1e-12 * max(np.linalg.norm(Qn), 1e-300):
        raise ValueError("Q must be symmetric")

    def fun_and_grad(x):
        Qx = Q @ x
        return 0.5 * (x * Qx).sum() - (c * x).sum(), Qx - c

    return Minimize(lambda x: fun_and_grad(x)[0], None, _x0(x0, n, library, like=Q),
                    fun_and_grad=fun_and_grad, hess=lambda x: Q, hessp=lambda x, v: Q @ v,
                    B=B, name=name, structure={"hess_diag": lambda x: Q.diagonal()})


def least_squares(A: Any, b: Any, mu: float = 0.0, *, x0: Any = None, library: str = "numpy",
                  B: Any = None, name: str = "least_squares") -> Minimize:
    """``f(x) = ||Ax - b||^2 / 2 + (mu/2) ||x||^2`` as the composite ``||u||^2/2``,
    ``u = [Ax - b; sqrt(mu) x]``; Gauss-Newton equals the exact Hessian here."""
    _check_library(library)
    A = _to_lib(A, library)
    b = _to_lib(b, library)
    _validate_matrix(A, "A")
    m, n = int(A.shape[0]), int(A.shape[1])
    if tuple(b.shape) != (m,):
        raise ValueError(f"b must have shape ({m},), got {tuple(b.shape)}")
    if not (isinstance(mu, (int, float)) and mu >= 0):
        raise ValueError(f"mu must be a non-negative number, got {mu!r}")
    s = float(mu) ** 0.5
    ops = ops_for(library)
    eye = ops.eye(n, A)
    J = _cat_rows(A, s * eye, library) if mu else A

    def residual(x):
        r = A @ x - b
        return _cat_rows(r, s * x, library) if mu else r

    return composite(residual, lambda x: J, _x0(x0, n, library), p=2.0,
                     residual_hess=lambda x, w: ops.zeros((n, n), x), B=B, name=name)


def _cat_rows(a, b, library):
    if library == "numpy":
        return np.concatenate([a, b], axis=0)
    return __import__("torch").cat([a, b], dim=0)


def equations(A: Any, b: Any, p: float = 4.0, *, x0: Any = None, B: Any = "gram",
              library: str = "numpy", name: str = "equations") -> Minimize:
    """``f(x) = ||Ax - b||^p / p`` (``p >= 2``), minimum 0 for a consistent system.

    The paper's experiment uses ``A`` 100 x 200, ``x0 = 1``, metric
    ``B = A^T A + 1e-8 I`` (``B="gram"``) and the rank-one Fisher term solved by
    Sherman-Morrison.
    """
    _check_library(library)
    A = _to_lib(A, library)
    b = _to_lib(b, library)
    _validate_matrix(A, "A")
    m, n = int(A.shape[0]), int(A.shape[1])
    if tuple(b.shape) != (m,):
        raise ValueError(f"b must have shape ({m},), got {tuple(b.shape)}")
    if isinstance(B, str):
        if B != "gram":
            raise ValueError(f"B must be 'gram', None or an array, got {B!r}")
        B = _add_ridge(A.T @ A, 1e-8)
    ops = ops_for(library)
    return composite(lambda x: A @ x - b, lambda x: A, _x0(x0, n, library, 1.0), p=p,
                     residual_hess=lambda x, w: ops.zeros((n, n), x), B=B, f_star=0.0, name=name)


# ---------------------------------------------------------------------------------------
# non-convex test functions
# ---------------------------------------------------------------------------------------
def rosenbrock(d: int = 2, *, x0: Any = None, library: str = "numpy",
               name: str | None = None) -> Minimize:
    """``f(x) = sum_{i<d} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`` (scipy's ``rosen``).

    Non-convex; the exact Hessian is indefinite away from the valley. Default start
    (-1.2, 1, -1.2, 1, ...). Minimum 0 at ``x = 1`` (for 4 <= d <= 30 the classic start may
    lead to another local minimizer).
    """
    _check_library(library)
    if not isinstance(d, int) or d < 2:
        raise ValueError(f"d must be an integer >= 2, got {d!r}")
    if x0 is None:
        x0 = np.tile([-1.2, 1.0], (d + 1) // 2)[:d]
    ops = ops_for(library)

    def fun_and_grad(x):
        a, bb = x[:-1], x[1:]
        t = bb - a * a
        f = (100.0 * t * t + (1 - a) ** 2).sum()
        g = ops.zeros(d, x)
        g[:-1] = -400.0 * a * t - 2.0 * (1 - a)
        g[1:] = g[1:] + 200.0 * t
        return f, g

    def hess(x):
        H = ops.zeros((d, d), x)
        a, bb = x[:-1], x[1:]
        idx = np.arange(d - 1)
        diag = ops.zeros(d, x)
        diag[:-1] = 1200.0 * a * a - 400.0 * bb + 2.0
        diag[1:] = diag[1:] + 200.0
        H[np.arange(d), np.arange(d)] = diag
        H[idx, idx + 1] = -400.0 * a
        H[idx + 1, idx] = -400.0 * a
        return H

    return Minimize(lambda x: fun_and_grad(x)[0], None, _x0(x0, d, library),
                    fun_and_grad=fun_and_grad, hess=hess, f_star=0.0,
                    name=name or f"rosenbrock-{d}")


def rosenbrock_equations(p: float = 5.0, *, x0: Any = None, library: str = "numpy") -> Minimize:
    """Rosenbrock as equations: ``u = (1 - x1, 10 (x2 - x1^2))``, ``f = ||u||^p / p``.

    Default start (-2, 2); minimum 0 at (1, 1).
    """
    _check_library(library)
    ops = ops_for(library)

    def residual(x):
        u = ops.zeros(2, x)
        u[0] = 1 - x[0]
        u[1] = 10.0 * (x[1] - x[0] ** 2)
        return u

    def jac(x):
        J = ops.zeros((2, 2), x)
        J[0, 0] = -1.0
        J[1, 0] = -20.0 * x[0]
        J[1, 1] = 10.0
        return J

    def residual_hess(x, w):
        H = ops.zeros((2, 2), x)
        H[0, 0] = -20.0 * w[1]
        return H

    return composite(residual, jac, _x0(x0 if x0 is not None else [-2.0, 2.0], 2, library), p=p,
                     residual_hess=residual_hess, f_star=0.0, name=f"rosenbrock-equations-p{p:g}")


def chebyshev(d: int = 200, p: float = 4.0, *, x0: Any = None, seed: int = 3124,
              library: str = "numpy") -> Minimize:
    """Nesterov's Chebyshev-Rosenbrock chain as ``f = ||u||^p / p``.

    ``u_1 = (1 - x_1)/2``, ``u_i = x_i - 2 x_{i-1}^2 + 1`` (i >= 2); minimum 0 at ``x = 1``,
    degenerate there. Default start uniform [0, 1]^d with the paper notebook's seed 3124
    (other seeds can stall near f ~ 1e-7, where J is numerically singular).
    """
    _check_library(library)
    if not isinstance(d, int) or d < 2:
        raise ValueError(f"d must be an integer >= 2, got {d!r}")
    if x0 is None:
        x0 = np.random.default_rng(seed).uniform(0.0, 1.0, size=d)
    ops = ops_for(library)
    idx = np.arange(1, d)

    def residual(x):
        u = ops.zeros(d, x)
        u[0] = (1 - x[0]) / 2
        u[1:] = x[1:] - 2.0 * x[:-1] ** 2 + 1.0
        return u

    def jac(x):
        J = ops.zeros((d, d), x)
        J[0, 0] = -0.5
        J[idx, idx] = 1.0
        J[idx, idx - 1] = -4.0 * x[:-1]
        return J

    def residual_hess(x, w):
        H = ops.zeros((d, d), x)
        H[idx - 1, idx - 1] = -4.0 * w[1:]
        return H

    return composite(residual, jac, _x0(x0, d, library), p=p, residual_hess=residual_hess,
                     f_star=0.0, name=f"chebyshev-{d}")


def composite(residual, jac, x0, *, p: float = 2.0, residual_hess=None, **kwargs) -> Minimize:
    """``f = ||u(x)||^p / p`` for any residual: see :meth:`Minimize.composite`."""
    return Minimize.composite(residual, jac, x0, p=p, residual_hess=residual_hess, **kwargs)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def synthetic_classification(m: int = 1000, d: int = 20, *, seed: int = 0, flip: float = 0.1,
                             cond: float = 1.0):
    """Seeded non-separable binary data: ``(A, y)``, y in {-1, 1}.

    Features are Gaussian with covariance ``Q Diag(s^2) Q^T / d`` (``Q`` a random
    rotation, ``s`` log-spaced from 1 to ``1/sqrt(cond)``, so the Gram matrix has condition
    number about ``cond``); labels come from a random linear model with a fraction
    ``flip`` flipped (so the data are not separable).
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, d)) / np.sqrt(d)
    if cond != 1.0:
        if not cond >= 1.0:
            raise ValueError(f"cond must be >= 1, got {cond!r}")
        s = np.logspace(0.0, -0.5 * np.log10(cond), d)
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        A = (A * s) @ Q.T
    w = rng.standard_normal(d)
    w /= np.sqrt(np.mean((A @ w) ** 2))
    y = np.sign(A @ w + 1e-12)
    y[y == 0] = 1.0
    flips = rng.random(m) < flip
    y[flips] = -y[flips]
    return A, y


def _sklearn():
    try:
        import sklearn.datasets as ds
    except ImportError as exc:  # pragma: no cover
        raise ImportError("this data set ships with scikit-learn: "
                          "pip install scikit-learn") from exc
    return ds


def breast_cancer(standardize: bool = True):
    """scikit-learn's breast-cancer set (569 x 30, bundled, no download): ``(A, y)``,
    y in {-1, 1}, features standardized to zero mean and unit variance."""
    A, y = _sklearn().load_breast_cancer(return_X_y=True)
    if standardize:
        A = (A - A.mean(axis=0)) / A.std(axis=0)
    return A.astype(float), 2.0 * y - 1.0


def digits(scale: bool = True):
    """scikit-learn's 8x8 digits (1797 x 64, 10 classes): ``(X, labels)``, pixels / 16."""
    X, lab = _sklearn().load_digits(return_X_y=True)
    X = X.astype(float)
    if scale:
        X = X / 16.0
    return X, lab.astype(np.int64)
