"""Bilevel test problems: the LV-HBA paper's toys and machine-learning problems.

=======================  ==============================================================
function                 problem
=======================  ==============================================================
:func:`toy_a`            LV-HBA's toy with a merely convex lower level (sign-corrected)
:func:`toy_b`            the BiC-GAFFA synthetic problem (sign-corrected); ``P=3`` is
                         the non-convex variant, refused by :class:`Bilevel`
:func:`toy_d`            LV-HBA's equality-constrained toy (from AiPOD), seeded matrices
:func:`coupled_qp`       a small QP bilevel with constraints ``A y <= b + B x``
:func:`svm_hyperparameter`  per-sample weights of a soft-margin SVM (LV-HBA's SVM task)
:func:`coupled_svm`      the "coupled" SVM of BLOCC: ``xi_i <= c_i`` couples the levels
:func:`hyper_cleaning`   data hyper-cleaning with flipped labels (SVM or softmax form)
=======================  ==============================================================

Each function returns a :class:`~neurosolve.problems.Bilevel` with a ``meta`` dict:
closed-form solutions where known (``x_star``, ``y_star``, ``lam_star``, ``F_star``),
recommended LV-HBA settings (``solver_kwargs``), and for the learning problems the data
splits and an ``accuracy(x, y, split)`` function. Data come from scikit-learn's bundled
sets (``breast_cancer``, ``digits``); nothing is downloaded.

The toys fix two defects of the reference code (spec section 5): the coupled constraint
is ``g = -(1^T x + 1^T y) <= 0`` (lower-level multiplier +1), not ``1^T x + 1^T y``
with an unsigned multiplier; and the SVM weight ``c`` really is an upper-level variable
that moves.

References
----------
.. [1] W. Yao, C. Yu, S. Zeng, J. Zhang, ICLR 2024, arXiv:2401.16164 (toys, SVM tasks).
.. [2] W. Yao, H. Yin, S. Zeng, J. Zhang, "Overcoming Lower-Level Constraints in Bilevel
   Optimization: A Novel Approach with Regularized Gap Functions" (BiC-GAFFA),
   arXiv:2406.01992 (toy B).
.. [3] Q. Xiao, H. Shen, W. Yin, T. Chen, "Alternating Projected SGD for Equality-
   constrained Bilevel Optimization", AISTATS 2023 (toy D).
.. [4] L. Jiang, Q. Xiao, V. M. Tenorio, F. Real-Rojas, A. G. Marques, T. Chen, "A
   Primal-Dual-Assisted Penalty Approach to Bilevel Optimization with Coupled
   Constraints" (BLOCC), NeurIPS 2024, arXiv:2406.10148 (coupled SVM).
.. [5] L. Franceschi, M. Donini, P. Frasconi, M. Pontil, "Forward and Reverse Gradient-
   Based Hyperparameter Optimization", ICML 2017 (data hyper-cleaning).
"""

from __future__ import annotations

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.backends.ops import ops_of
from neurosolve.problems import sets
from neurosolve.problems.bilevel import AffineFunction, Bilevel, KronIdentity, QuadraticFunction

__all__ = ["toy_a", "toy_b", "toy_d", "coupled_qp", "svm_hyperparameter", "coupled_svm",
           "hyper_cleaning", "load_dataset"]


def _convert(prob: Bilevel, library: str) -> Bilevel:
    if library == "numpy":
        return prob
    if library != "torch":
        raise ValueError(f"library must be 'numpy' or 'torch', got {library!r}")
    return prob.to(library="torch")


# --------------------------------------------------------------------------------------
# toys A and B
# --------------------------------------------------------------------------------------
def _toy_f_quadratic(n):
    # f(x, y) = 1/2 ||y1||^2 - x^T y1 + 1^T y2 over blocks (x, y1, y2)
    Mf = np.array([[0.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    cf = np.concatenate([np.zeros(2 * n), np.ones(n)])
    return QuadraticFunction(KronIdentity(Mf, n), cf)


def _toy_f_callable(n):
    def f(x, y):
        y1, y2 = y[:n], y[n:]
        return 0.5 * (y1 * y1).sum() - (x * y1).sum() + y2.sum()
    return f


def toy_a(n: int = 10, *, array_form: bool = True, library: str = "numpy", x0=None, y0=None) -> Bilevel:
    """LV-HBA's toy with a convex, not strongly convex, lower level (sign-corrected).

    ``x in R^n``, ``y = (y1, y2) in R^{2n}``::

        F = 1/2 ||x - y2||^2 + 1/2 ||y1 - 1||^2
        f = 1/2 ||y1||^2 - x^T y1 + 1^T y2          (linear in y2)
        g = -(1^T x + 1^T y1 + 1^T y2) <= 0          (C: a half-space)

    The lower level has the solution set ``y1 = x + 1``, ``sum(y2) = -2 sum(x) - n`` with
    multiplier 1; the bilevel solution is ``x* = -0.3``, ``y1* = 0.7``, ``y2* = -0.4``,
    ``F* = 0.05 n``. Since ``grad F(x*, y*) != 0``, LV-HBA's answer carries an
    ``O(1/c_k)`` penalty bias.

    Parameters
    ----------
    n : int
    array_form : bool
        Quadratics with :class:`KronIdentity` Hessians (fused numba kernel, exact QP
        certificate); False gives plain callables differentiated by autograd.
    library : {"numpy", "torch"}
    x0, y0 : arrays, optional
        Start (default 0, as in the spec's calibration).
    """
    x0 = np.zeros(n) if x0 is None else np.asarray(x0, dtype=float)
    y0 = np.zeros(2 * n) if y0 is None else np.asarray(y0, dtype=float)
    if array_form:
        MF = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
        cF = np.concatenate([np.zeros(n), -np.ones(n), np.zeros(n)])
        F = QuadraticFunction(KronIdentity(MF, n), cF, const=0.5 * n)
        f = _toy_f_quadratic(n)
        g = AffineFunction(-np.ones((1, 3 * n)), np.zeros(1))
    else:
        def F(x, y):
            y1, y2 = y[:n], y[n:]
            return 0.5 * ((x - y2) ** 2).sum() + 0.5 * ((y1 - 1.0) ** 2).sum()
        f = _toy_f_callable(n)

        def g(x, y):
            return -(x.sum() + y.sum()).reshape(1)
    prob = Bilevel(F, f, g, x0=x0, y0=y0, name=f"toy_a(n={n})")
    prob.meta = {
        "x_star": np.full(n, -0.3),
        "y_star": np.concatenate([np.full(n, 0.7), np.full(n, -0.4)]),
        "lam_star": 1.0,
        "F_star": 0.05 * n,
        "solver_kwargs": dict(alpha=1e-3, beta=1e-3, eta=1e-3, gamma1=10.0, gamma2=1.0, c0=1.0, p=0.3, r=10.0),
    }
    return _convert(prob, library)


def toy_b(n: int = 10, *, P: int = 1, array_form: bool = True, library: str = "numpy",
          x0=None, y0=None) -> Bilevel:
    """The BiC-GAFFA synthetic problem (sign-corrected).

    ``x in R^n``, ``y = (y1, y2) in R^{2n}``::

        F = (y1 - 2)^T (x - 1) + ||y2 + 3||^2
        f = 1/2 ||y1||^2 - x^T y1 + 1^T y2
        g = -(h(x) + 1^T y1 + 1^T y2) <= 0,   h(x) = 1^T x (P = 1) or sum_i x_i^3 (P = 3)

    Solution ``x* = 1``, ``y1* = 2``, ``y2* = -3``, ``F* = 0``, multiplier 1, and
    ``grad F(x*, y*) = 0`` (no penalty bias). ``P = 3`` makes ``C`` non-convex:
    :class:`Bilevel` refuses it (:class:`~neurosolve.problems.sets.NonConvexSetError`).
    Default start ``x0 = 0``, ``y0 = 1`` (the spec's calibration).
    """
    if P not in (1, 3):
        raise ValueError(f"P must be 1 or 3, got {P!r}")
    x0 = np.zeros(n) if x0 is None else np.asarray(x0, dtype=float)
    y0 = np.ones(2 * n) if y0 is None else np.asarray(y0, dtype=float)
    if array_form and P == 1:
        MF = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
        cF = np.concatenate([np.full(n, -2.0), np.full(n, -1.0), np.full(n, 6.0)])
        F = QuadraticFunction(KronIdentity(MF, n), cF, const=11.0 * n)
        f = _toy_f_quadratic(n)
        g = AffineFunction(-np.ones((1, 3 * n)), np.zeros(1))
    else:
        def F(x, y):
            y1, y2 = y[:n], y[n:]
            return ((y1 - 2.0) * (x - 1.0)).sum() + ((y2 + 3.0) ** 2).sum()
        f = _toy_f_callable(n)

        def g(x, y):
            hx = x.sum() if P == 1 else (x ** 3).sum()
            return -(hx + y.sum()).reshape(1)
    prob = Bilevel(F, f, g, x0=x0, y0=y0, name=f"toy_b(n={n}, P={P})")
    prob.meta = {
        "x_star": np.ones(n),
        "y_star": np.concatenate([np.full(n, 2.0), np.full(n, -3.0)]),
        "lam_star": 1.0,
        "F_star": 0.0,
        "solver_kwargs": dict(alpha=1e-3, beta=1e-3, eta=1e-3, gamma1=1.0, gamma2=1.0, c0=1.0, p=0.3, r=10.0),
    }
    return _convert(prob, library)


# --------------------------------------------------------------------------------------
# toy D
# --------------------------------------------------------------------------------------
def toy_d(n: int = 100, n_eq: int = 90, n_ul: int = 45, *, seed: int = 0, library: str = "numpy",
          start_seed: int | None = None, whiten: bool = True) -> Bilevel:
    """LV-HBA's strongly convex toy with equality constraints (from AiPOD), seeded data.

    ``x, y in R^n``::

        F = sin(c^T x + d^T y) + log(||x + y||^2 + 1)
        f = 1/2 ||x - y||^2
        h = A y + H x = 0      (n_eq equations, A of full row rank)
        X = {x : B x = 0}      (B has n_ul random rows)

    ``C = {(x, y) : H x + A y = 0, B x = 0}`` is affine (pseudo-inverse projection). The
    lower-level solution is ``y*(x) = (I - A^+ A) x - A^+ H x`` (``meta["y_star"](x)``);
    ``x*`` has no closed form. A, B, H, c, d are uniform on [0, 1) from ``seed`` (the
    reference code ships them as .npy files). The start is a random point of ``C``.

    ``whiten=True`` states the same constraint as ``T (A y + H x) = 0`` with
    ``T = (A A^T)^{-1/2}``, so ``T A`` has orthonormal rows: the feasible sets and the
    lower-level solutions are unchanged, but the multiplier dynamics of LV-HBA (a gradient
    descent-ascent whose stable step is about ``1 / ||A||^2``) are well conditioned. With
    raw uniform matrices ``||A||^2`` is about ``n_eq * n / 4``, and ``eta = 0.1`` (the
    reference setting, which instead projects ``theta`` onto ``{A theta = -H x}``)
    diverges. The reference code's approach is not available here because ``Y`` cannot
    depend on ``x``.
    """
    if not (0 < n_eq < n and 0 <= n_ul < n):
        raise ValueError(f"need 0 < n_eq < n and 0 <= n_ul < n, got n={n}, n_eq={n_eq}, n_ul={n_ul}")
    rng = np.random.default_rng(seed)
    A = rng.random((n_eq, n))
    B = rng.random((n_ul, n))
    H = rng.random((n_eq, n))
    cvec = rng.random(n)
    dvec = rng.random(n)

    def F(x, y):
        xp = ops_of(x)
        cv, dv = (x.new_tensor(cvec), x.new_tensor(dvec)) if is_torch(x) else (cvec, dvec)
        s = x + y
        return xp.sin(cv @ x + dv @ y) + xp.log((s * s).sum() + 1.0)

    def grad_F(x, y):
        xp = ops_of(x)
        cv, dv = (x.new_tensor(cvec), x.new_tensor(dvec)) if is_torch(x) else (cvec, dvec)
        s = x + y
        co = xp.cos(cv @ x + dv @ y)
        t = 2.0 * s / ((s * s).sum() + 1.0)
        return co * cv + t, co * dv + t

    Q = np.block([[np.eye(n), -np.eye(n)], [-np.eye(n), np.eye(n)]])
    f = QuadraticFunction(Q)
    Ah, Hh = A, H
    if whiten:
        ev, V = np.linalg.eigh(A @ A.T)
        T = (V / np.sqrt(ev)) @ V.T
        Ah, Hh = T @ A, T @ H
    h = AffineFunction(np.hstack([Hh, Ah]), np.zeros(n_eq))
    Ceq = np.vstack([np.hstack([H, A]), np.hstack([B, np.zeros((n_ul, n))])])
    C = sets.Affine(Ceq, np.zeros(n_eq + n_ul))
    X = sets.Affine(B, np.zeros(n_ul)) if n_ul else None
    srng = np.random.default_rng(seed + 1 if start_seed is None else start_seed)
    w0 = C.project(srng.standard_normal(2 * n))
    Ap = np.linalg.pinv(A)
    Pnull = np.eye(n) - Ap @ A

    def y_star(x):
        xn = x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)
        return Pnull @ xn - Ap @ (H @ xn)

    prob = Bilevel(F, f, None, h, x0=w0[:n], y0=w0[n:], X=X, C=C, grad_F=grad_F,
                   name=f"toy_d(n={n}, seed={seed})")
    prob.meta = {
        "y_star": y_star,
        "matrices": dict(A=A, B=B, H=H, c=cvec, d=dvec),
        # c0 = 1000: the lower-level error is penalty-bias limited (about 0.2 at c0 = 1 after
        # 3000 iterations; 2e-4 at c0 = 1000 after 5000, tests/test_lvhba_convergence.py)
        "solver_kwargs": dict(alpha=0.02, beta=1e-3, eta=0.1, gamma1=1.0, gamma2=1.0, c0=1000.0, p=0.3, r=None),
    }
    return _convert(prob, library)


# --------------------------------------------------------------------------------------
# small coupled QP (brute-force cross-check)
# --------------------------------------------------------------------------------------
def coupled_qp(n: int = 2, m: int = 3, k: int = 3, *, seed: int = 0, library: str = "numpy") -> Bilevel:
    """A small bilevel QP whose lower-level constraints couple both levels.

    ::

        F = 1/2 ||x - x_t||^2 + 1/2 ||y - y_t||^2
        f = 1/2 ||y||^2 - x^T S y                 (strongly convex in y; S is m x n)
        g = A y - B x - b <= 0                     (k constraints)

    With seeded ``A``, ``B``, ``b > 0`` (so ``(0, 0)`` is strictly feasible) and targets
    that make some constraints active. Small enough for the brute-force reference.
    """
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((m, n))
    A = rng.standard_normal((k, m))
    Bm = rng.standard_normal((k, n))
    b = 0.5 + rng.random(k)
    x_t = 2.0 * rng.standard_normal(n)
    y_t = 2.0 * rng.standard_normal(m)
    N = n + m
    Q = np.zeros((N, N))
    Q[n:, n:] = np.eye(m)
    Q[:n, n:] = -S.T
    Q[n:, :n] = -S
    f = QuadraticFunction(Q)
    QF = np.eye(N)
    cF = -np.concatenate([x_t, y_t])
    F = QuadraticFunction(QF, cF, const=0.5 * (x_t @ x_t + y_t @ y_t))
    g = AffineFunction(np.hstack([-Bm, A]), b)
    prob = Bilevel(F, f, g, x0=np.zeros(n), y0=np.zeros(m), name=f"coupled_qp(n={n}, m={m}, k={k})")
    prob.meta = {"matrices": dict(S=S, A=A, B=Bm, b=b, x_t=x_t, y_t=y_t),
                 # brute force x* = (1.4722, 0.0971) for seed 0; 6000 iterations of these
                 # settings land within 5e-3 (relative) of it
                 "solver_kwargs": dict(alpha=0.1, beta=0.1, eta=0.1, gamma1=1.0, gamma2=1.0,
                                       c0=3.0, p=0.45, r=100.0)}
    return _convert(prob, library)


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def load_dataset(name: str = "breast_cancer", *, n_train: int | None = None, n_val: int | None = None,
                 corruption: float = 0.0, seed: int = 0, binary: bool | None = None) -> dict:
    """A shuffled, standardized train/validation/test split of a scikit-learn bundled set.

    Training labels are flipped with probability ``corruption`` (binary: sign flip;
    multi-class: a uniformly chosen different class). Validation and test labels are
    clean. Features are standardized with the training statistics.

    Returns
    -------
    dict
        ``Z_train, l_train (noisy), l_train_clean, Z_val, l_val, Z_test, l_test,
        flipped (bool mask), classes, name``; binary labels are -1/+1, multi-class 0..K-1.
    """
    from sklearn.datasets import load_breast_cancer, load_digits

    if not (0.0 <= corruption < 1.0):
        raise ValueError(f"corruption must be in [0, 1), got {corruption!r}")
    if name == "breast_cancer":
        Z, lab = load_breast_cancer(return_X_y=True)
        defaults = (300, 120)
        binary = True if binary is None else binary
    elif name == "digits":
        Z, lab = load_digits(return_X_y=True)
        defaults = (800, 300)
        binary = False if binary is None else binary
        if binary:
            lab = (lab % 2)  # even vs odd
    else:
        raise ValueError(f"unknown dataset {name!r}; bundled: 'breast_cancer', 'digits'")
    n_train = defaults[0] if n_train is None else n_train
    n_val = defaults[1] if n_val is None else n_val
    if n_train + n_val >= Z.shape[0]:
        raise ValueError(f"n_train + n_val = {n_train + n_val} leaves no test data ({Z.shape[0]} samples)")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(Z.shape[0])
    Z, lab = Z[perm].astype(float), lab[perm]
    tr, va, te = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None)
    mu = Z[tr].mean(0)
    sd = Z[tr].std(0)
    sd[sd == 0] = 1.0
    Z = (Z - mu) / sd
    classes = np.unique(lab)
    if binary:
        lab = np.where(lab == classes[-1], 1.0, -1.0)
    else:
        lab = lab.astype(np.int64)
    clean = lab[tr].copy()
    noisy = clean.copy()
    flip = rng.random(n_train) < corruption
    if binary:
        noisy[flip] = -noisy[flip]
    else:
        K = len(classes)
        shift = rng.integers(1, K, size=n_train)
        noisy[flip] = (noisy[flip] + shift[flip]) % K
    return dict(Z_train=Z[tr], l_train=noisy, l_train_clean=clean, Z_val=Z[va], l_val=lab[va],
                Z_test=Z[te], l_test=lab[te], flipped=flip, classes=classes, binary=binary, name=name)


def _binary_accuracy(Z, l, w, b) -> float:
    return float(np.mean(np.sign(Z @ w + b) == l))


# --------------------------------------------------------------------------------------
# SVM problems
# --------------------------------------------------------------------------------------
def _leaky(t, xp, slope=0.01):
    return xp.where(t > 0, t, slope * t)


def _svm_upper_smooth01(Zv, lv):
    """F = sum_j LeakyReLU(2 sigmoid(-5 l_j (w^T z_j + b) / ||w||) - 1) and its gradient."""

    def parts(y, d):
        w, b = y[:d], y[d]
        xp = ops_of(y)
        Zt, lt = (y.new_tensor(Zv), y.new_tensor(lv)) if is_torch(y) else (Zv, lv)
        nw = xp.sqrt((w * w).sum())
        u = lt * (Zt @ w + b)
        s = 1.0 / (1.0 + xp.exp(5.0 * u / nw))        # sigmoid(-5 u / ||w||)
        t = 2.0 * s - 1.0
        val = _leaky(t, xp).sum()
        dt = xp.where(t > 0, 1.0 + 0.0 * t, 0.01 + 0.0 * t)
        # d t / d u = 2 s' * (-5/||w||),  s' = s (1 - s)
        dfdu = dt * 2.0 * s * (1.0 - s) * (-5.0 / nw)  # dF/du_j at fixed ||w||
        gw = Zt.T @ (dfdu * lt)
        gb = (dfdu * lt).sum()
        # ||w|| dependence: u / ||w||: d/dw (u/||w||) adds -u w / ||w||^3 * (...)
        dfd_unorm = dt * 2.0 * s * (1.0 - s) * (-5.0)  # dF / d(u/||w||)
        gw = gw - ((dfd_unorm * u).sum() / nw ** 3) * w
        return val, gw, gb
    return parts


def _svm_data_problem(D, *, kind: str, library: str, c_init=None, seed: int = 0,
                      scale_constraints: bool = False):
    Z, l = D["Z_train"], D["l_train"]
    Ntr, d = Z.shape
    Zv, lv = D["Z_val"], D["l_val"]
    ny = d + 1 + Ntr
    rng = np.random.default_rng(seed + 1000)
    upper = _svm_upper_smooth01(Zv, lv) if kind == "weights" else _svm_upper_exp(Zv, lv)

    # margin constraints 1 - xi_i - l_i (w^T z_i + b) <= 0, affine in y, free of x (kind weights)
    Am = np.zeros((Ntr, Ntr + ny))
    Am[:, Ntr:Ntr + d] = -l[:, None] * Z
    Am[:, Ntr + d] = -l
    Am[np.arange(Ntr), Ntr + d + 1 + np.arange(Ntr)] = -1.0
    bm = -np.ones(Ntr)
    if kind == "weights":
        A, b = Am, bm
        if scale_constraints:
            # same feasible set, rows divided by ||J_y g||_2 (multipliers scale up by it):
            # LV-HBA's theta/lambda descent-ascent needs eta ||J_y g||^2 << 1/gamma
            sc = np.linalg.norm(A[:, Ntr:], 2)
            A, b = A / sc, b / sc
    else:  # coupled: also xi_i - c_i <= 0
        Ac = np.zeros((Ntr, Ntr + ny))
        Ac[np.arange(Ntr), Ntr + d + 1 + np.arange(Ntr)] = 1.0
        Ac[np.arange(Ntr), np.arange(Ntr)] = -1.0
        A, b = np.vstack([Am, Ac]), np.concatenate([bm, np.zeros(Ntr)])
    g = AffineFunction(A, b)

    def F(x, y):
        return upper(y, d)[0]

    def grad_F(x, y):
        _, gw, gb = upper(y, d)
        xp = ops_of(y)
        gy = xp.zeros_like(y)
        gy[:d] = gw
        gy[d] = gb
        gx = xp.zeros_like(x)
        return gx, gy

    if kind == "weights":
        def f(x, y):
            xp = ops_of(y)
            w, xi = y[:d], y[d + 1:]
            return 0.5 * (w * w).sum() + 0.5 * (xp.exp(x) * xi * xi).sum()

        def grad_f(x, y):
            xp = ops_of(y)
            w, xi = y[:d], y[d + 1:]
            e = xp.exp(x)
            gx = 0.5 * e * xi * xi
            gy = xp.zeros_like(y)
            gy[:d] = w
            gy[d + 1:] = e * xi
            return gx, gy
        x0 = rng.uniform(-6.0, -5.0, Ntr) if c_init is None else np.asarray(c_init, float)
    else:
        def f(x, y):
            w = y[:d]
            return 0.5 * (w * w).sum() + 0.5 * (x * x).sum()

        def grad_f(x, y):
            xp = ops_of(y)
            gy = xp.zeros_like(y)
            gy[:d] = y[:d]
            return x * 1.0, gy
        x0 = rng.uniform(1.0, 5.0, Ntr) if c_init is None else np.asarray(c_init, float)
    y0 = np.concatenate([np.ones(d), [0.0], np.ones(Ntr)])
    # project the start onto C (the reference code does this before its first iteration)
    C = sets.Polyhedron(A, b, tol=1e-9)
    w0 = C.project(np.concatenate([x0, y0]))
    x0, y0 = w0[:Ntr], w0[Ntr:]

    def lower_solver(x):
        import cvxpy as cp

        xn = x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)
        wv, bv, xiv = cp.Variable(d), cp.Variable(), cp.Variable(Ntr)
        cons = [1 - xiv - cp.multiply(l, Z @ wv + bv) <= 0]
        if kind == "weights":
            obj = 0.5 * cp.sum_squares(wv) + 0.5 * cp.sum(cp.multiply(np.exp(xn), cp.square(xiv)))
        else:
            cons.append(xiv <= xn)
            obj = 0.5 * cp.sum_squares(wv)
        cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL")
        ys = np.concatenate([wv.value, [bv.value], xiv.value])
        if is_torch(x):
            return x.new_tensor(ys)
        return ys

    def accuracy(x, y, split: str = "test") -> float:
        yn = y.detach().cpu().numpy() if is_torch(y) else np.asarray(y)
        Zs, ls = D[f"Z_{split}"], D[f"l_{split}"]
        return _binary_accuracy(Zs, ls, yn[:d], yn[d])

    prob = Bilevel(F, f, g, x0=x0, y0=y0, C=C, grad_F=grad_F, grad_f=grad_f,
                   lower_solver=lower_solver,
                   name=f"{'svm' if kind == 'weights' else 'coupled_svm'}({D['name']})")
    prob.meta = {"data": D, "accuracy": accuracy, "d": d, "n_train": Ntr}
    if kind == "weights":
        prob.meta["reduced"] = lambda: _svm_reduced(Z, l, upper, d, x0, y0)
    return _convert(prob, library)


def _svm_reduced(Z, l, upper, d, x0, y0):
    """The same SVM bilevel problem with ``xi`` eliminated, for implicit differentiation.

    For fixed ``(w, b)`` the optimal slack is ``xi_i = max(0, 1 - l_i (w^T z_i + b))``, so
    the lower level equals the unconstrained, piecewise-quadratic
    ``1/2 ||w||^2 + 1/2 sum_i exp(c_i) max(0, 1 - l_i (w^T z_i + b))^2`` over ``(w, b)``.
    Returns torch functions ``(F, f)`` of ``(c, (w, b))`` and the start.
    """
    import torch

    Zt = torch.as_tensor(Z, dtype=torch.float64)
    lt = torch.as_tensor(l, dtype=torch.float64)

    def f(x, y):
        w, b = y[:d], y[d]
        hinge = torch.clamp(1.0 - lt * (Zt @ w + b), min=0.0)
        return 0.5 * (w * w).sum() + 0.5 * (torch.exp(x) * hinge * hinge).sum()

    def F(x, y):
        return upper(y, d)[0]

    return F, f, torch.as_tensor(x0, dtype=torch.float64), torch.as_tensor(y0[: d + 1], dtype=torch.float64)


def _svm_upper_exp(Zv, lv):
    """F = sum_j exp(1 - l_j (w^T z_j + b) / ||w||) (the BLOCC coupled-SVM upper level)."""

    def parts(y, d):
        w, b = y[:d], y[d]
        xp = ops_of(y)
        Zt, lt = (y.new_tensor(Zv), y.new_tensor(lv)) if is_torch(y) else (Zv, lv)
        nw = xp.sqrt((w * w).sum())
        u = lt * (Zt @ w + b)
        e = xp.exp(1.0 - u / nw)
        val = e.sum()
        gw = Zt.T @ (-e * lt / nw) + ((e * u).sum() / nw ** 3) * w
        gb = (-e * lt / nw).sum()
        return val, gw, gb
    return parts


def svm_hyperparameter(data: str = "breast_cancer", *, n_train: int | None = None, n_val: int | None = None,
                       corruption: float = 0.0, seed: int = 0, library: str = "numpy") -> Bilevel:
    """Per-sample weights of a soft-margin SVM (the LV-HBA paper's SVM task).

    Upper variable ``c in R^{N_tr}``; lower variable ``y = (w, b, xi)``::

        f = 1/2 ||w||^2 + 1/2 sum_i exp(c_i) xi_i^2
        g_i = 1 - xi_i - l_i (w^T z_i + b) <= 0            (polyhedral C, QP projection)
        F = sum_j LeakyReLU(2 sigmoid(-5 l_j (w^T z_j + b) / ||w||) - 1)   (validation)

    The constraints do not involve ``c``: the coupling is through ``f``. Start: ``c_i ~
    U(-6, -5)``, ``w = 1``, ``b = 0``, ``xi = 1``, projected onto C. ``meta["accuracy"]``
    gives the accuracy of ``sign(w^T z + b)`` on a split. Unlike the reference code
    (spec section 5.3), ``c`` is updated.
    """
    D = load_dataset(data, n_train=n_train, n_val=n_val, corruption=corruption, seed=seed, binary=True)
    prob = _svm_data_problem(D, kind="weights", library=library, seed=seed)
    prob.meta["solver_kwargs"] = dict(alpha=0.01, beta=0.1, eta=0.01, gamma1=10.0, gamma2=10.0,
                                      c0=1.0, p=0.3, r=None)
    return prob


def coupled_svm(data: str = "breast_cancer", *, n_train: int | None = None, n_val: int | None = None,
                corruption: float = 0.0, seed: int = 0, library: str = "numpy") -> Bilevel:
    """The "coupled" SVM of BLOCC/SFLCB: the slack bound ``xi_i <= c_i`` couples the levels.

    ::

        f = 1/2 ||w||^2 + 1/2 ||c||^2
        g = [1 - xi_i - l_i (w^T z_i + b);  xi_i - c_i] <= 0
        F = sum_j exp(1 - l_j (w^T z_j + b) / ||w||)        (validation)

    Start ``c_i ~ U(1, 5)``, ``w = 1``, ``b = 0``, ``xi = 1``, projected onto C. The
    lower-level solution set is not a singleton (``xi`` is free below ``c``).
    """
    D = load_dataset(data, n_train=n_train, n_val=n_val, corruption=corruption, seed=seed, binary=True)
    prob = _svm_data_problem(D, kind="coupled", library=library, seed=seed)
    prob.meta["solver_kwargs"] = dict(alpha=0.01, beta=0.1, eta=0.01, gamma1=10.0, gamma2=10.0,
                                      c0=1.0, p=0.3, r=None)
    return prob


# --------------------------------------------------------------------------------------
# hyper-cleaning
# --------------------------------------------------------------------------------------
def _softmax_clean_problem(D, *, mu: float, library: str):
    Z, lab = D["Z_train"], D["l_train"]
    Ntr, d = Z.shape
    K = len(D["classes"]) if not D["binary"] else 2
    Zv, lv = D["Z_val"], D["l_val"]
    if D["binary"]:
        lab = ((lab + 1) / 2).astype(np.int64)
        lv = ((lv + 1) / 2).astype(np.int64)
    Zb = np.hstack([Z, np.ones((Ntr, 1))])
    Zvb = np.hstack([Zv, np.ones((Zv.shape[0], 1))])
    Y1 = np.eye(K)[lab]
    Yv = np.eye(K)[lv]
    m = K * (d + 1)

    def _ce(Zm, Ym, Wm, xp):
        S = Zm @ Wm                                  # (N, K)
        mx = xp.amax(S, 1)[:, None]
        E = xp.exp(S - mx)
        den = E.sum(1)[:, None]
        P = E / den
        ce = -(Ym * (S - mx - xp.log(den))).sum(1)
        return ce, P

    def _t(a, like):
        return like.new_tensor(a) if is_torch(like) else a

    def F(x, y):
        xp = ops_of(y)
        ce, _ = _ce(_t(Zvb, y), _t(Yv, y), y.reshape(d + 1, K), xp)
        return ce.mean()

    def grad_F(x, y):
        xp = ops_of(y)
        Wm = y.reshape(d + 1, K)
        _, P = _ce(_t(Zvb, y), _t(Yv, y), Wm, xp)
        G = _t(Zvb, y).T @ (P - _t(Yv, y)) / Zvb.shape[0]
        gx = xp.zeros_like(x)
        return gx, G.reshape(-1)

    def f(x, y):
        xp = ops_of(y)
        ce, _ = _ce(_t(Zb, y), _t(Y1, y), y.reshape(d + 1, K), xp)
        s = 1.0 / (1.0 + xp.exp(-x))
        return (s * ce).sum() / Ntr + 0.5 * mu * (y * y).sum()

    def grad_f(x, y):
        xp = ops_of(y)
        Wm = y.reshape(d + 1, K)
        Zt, Yt = _t(Zb, y), _t(Y1, y)
        ce, P = _ce(Zt, Yt, Wm, xp)
        s = 1.0 / (1.0 + xp.exp(-x))
        gx = s * (1.0 - s) * ce / Ntr
        G = Zt.T @ ((P - Yt) * (s / Ntr)[:, None]) + mu * Wm
        return gx, G.reshape(-1)

    def accuracy(x, y, split: str = "test") -> float:
        yn = y.detach().cpu().numpy() if is_torch(y) else np.asarray(y)
        Wm = yn.reshape(d + 1, K)
        Zs = np.hstack([D[f"Z_{split}"], np.ones((D[f"Z_{split}"].shape[0], 1))])
        ls = D[f"l_{split}"]
        if D["binary"]:
            ls = ((ls + 1) / 2).astype(np.int64)
        return float(np.mean(np.argmax(Zs @ Wm, 1) == ls))

    def lower_solver(x):
        from scipy.optimize import minimize

        xn = x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)
        res = minimize(lambda yy: (f(xn, yy), grad_f(xn, yy)[1]), np.zeros(m), jac=True,
                       method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15})
        return x.new_tensor(res.x) if is_torch(x) else res.x

    x0 = np.zeros(Ntr)
    y0 = np.zeros(m)
    prob = Bilevel(F, f, None, x0=x0, y0=y0, grad_F=grad_F, grad_f=grad_f, lower_solver=lower_solver,
                   name=f"hyper_cleaning_softmax({D['name']})")
    prob.meta = {"data": D, "accuracy": accuracy, "d": d, "K": K, "n_train": Ntr, "mu": mu,
                 "torch_functions": (F, f)}
    return _convert(prob, library)


def hyper_cleaning(data: str = "breast_cancer", *, corruption: float = 0.4, formulation: str = "svm",
                   n_train: int | None = None, n_val: int | None = None, seed: int = 0, mu: float = 1e-2,
                   library: str = "numpy") -> Bilevel:
    """Data hyper-cleaning: learn per-sample weights that undo flipped training labels.

    The training labels are corrupted with probability ``corruption``; validation and test
    labels are clean.

    ``formulation="svm"`` (binary only): the LV-HBA paper's cleaning task, i.e.
    :func:`svm_hyperparameter` on the corrupted labels (weights ``exp(c_i)`` on the slack
    penalties, polyhedral coupled constraints), with the margin rows divided by
    ``||J_y g||_2`` (the same feasible set; it keeps LV-HBA's ``theta``/``lambda``
    descent-ascent stable, ``eta ||J_y g||^2 << 1 / gamma``). ``meta["solver_kwargs"]``
    (``alpha = eta = 0.1``, ``alpha_x = 100``, ``c0 = 100``) were chosen on the validation
    split over 10 seeds (issue 18; docs/lvhba.md): with the reference code's settings the
    weights barely move, since the ``x`` gradient is of the order of ``exp(c_i)``.

    ``formulation="softmax"``: the classic formulation of Franceschi et al. (also
    multi-class, e.g. ``data="digits"``); no lower-level constraints, so LV-HBA reduces to
    its Moreau-envelope special case::

        f = (1/N) sum_i sigmoid(c_i) CE(W^T [z_i; 1], l_i) + mu/2 ||W||^2   (strongly convex)
        F = mean_j CE(W^T [z_j; 1], l_j)                                    (validation)

    ``meta["data"]["flipped"]`` marks the corrupted samples.
    """
    if formulation == "svm":
        D = load_dataset(data, n_train=n_train, n_val=n_val, corruption=corruption, seed=seed, binary=True)
        # Scaled margin rows and a separate, large x step (issue 18; notes in docs/lvhba.md):
        # with the reference code's settings the weights exp(c) ~ 5e-3 barely move (the x
        # gradient is O(exp(c))), the theta/lambda descent-ascent is unstable beyond ~300
        # iterations (eta ||J_y g||^2 ~ 40 >> 1/gamma) and y fits the validation set
        # instead of the lower level (c_k too small). Chosen on the validation split.
        prob = _svm_data_problem(D, kind="weights", library=library, seed=seed, scale_constraints=True)
        prob.meta["solver_kwargs"] = dict(alpha=0.1, alpha_x=100.0, beta=0.1, eta=0.1, gamma1=10.0,
                                          gamma2=10.0, c0=100.0, p=0.3, r=None)
    elif formulation == "softmax":
        D = load_dataset(data, n_train=n_train, n_val=n_val, corruption=corruption, seed=seed)
        prob = _softmax_clean_problem(D, mu=mu, library=library)
        prob.meta["solver_kwargs"] = dict(alpha=1.0, beta=1.0, eta=1.0, gamma1=10.0, gamma2=1.0,
                                          c0=1.0, p=0.3, r=None)
    else:
        raise ValueError(f"formulation must be 'svm' or 'softmax', got {formulation!r}")
    prob.name = f"hyper_cleaning_{formulation}({data}, corruption={corruption})"
    return prob
