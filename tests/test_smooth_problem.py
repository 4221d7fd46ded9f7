"""Minimize, the smooth gallery, Hessian approximations and the numba kernels.

Oracles: scipy's finite differences (``approx_fprime``), numpy references of the numba
kernels, closed forms.
"""

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from neurosolve.problems import Minimize
from neurosolve.problems import smooth_gallery as gal
from neurosolve.solvers import hessian_approx as ha


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small dense products: one BLAS thread (oversubscribed threads are 10x slower here)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1):
        yield


def _problems():
    rng = np.random.default_rng(0)
    A, y = gal.synthetic_classification(60, 5, seed=1, cond=10.0)
    X, lab = rng.standard_normal((40, 4)), rng.integers(0, 3, size=40)
    Q = rng.standard_normal((6, 6))
    Q = Q @ Q.T + np.eye(6)
    Ae = rng.uniform(-1, 1, (4, 6))
    return {
        "logistic": gal.logistic(A, y, 0.1, x0=rng.standard_normal(5)),
        "softmax": gal.softmax(X, lab, 3, 0.1, x0=0.3 * rng.standard_normal(12)),
        "logsumexp": gal.logsumexp(rng.uniform(-1, 1, (30, 6)), rng.uniform(-1, 1, 30), 0.5,
                                   x0=rng.standard_normal(6)),
        "quadratic": gal.quadratic(Q, rng.standard_normal(6), x0=rng.standard_normal(6)),
        "least_squares": gal.least_squares(Ae, rng.standard_normal(4), 0.3,
                                           x0=rng.standard_normal(6)),
        "equations": gal.equations(Ae, rng.standard_normal(4), 4.0, x0=rng.standard_normal(6)),
        "rosenbrock": gal.rosenbrock(5, x0=rng.standard_normal(5)),
        "rosenbrock_eq": gal.rosenbrock_equations(5.0),
        "chebyshev": gal.chebyshev(6, 4.0, seed=2),
    }


PROBLEMS = _problems()


def _fd_jac(fn, x, eps=1e-6):
    cols = [(fn(x + eps * e) - fn(x - eps * e)) / (2 * eps) for e in np.eye(len(x))]
    return np.array(cols).T


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_gradient_and_hessian_match_finite_differences(name):
    p = PROBLEMS[name]
    x = p.x0 + 0.1
    g = p.grad(x)
    g_fd = approx_fprime(x, p.fun, 1e-7)
    assert np.allclose(g, g_fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(g).max()))
    H = p.hess(x)
    H_fd = _fd_jac(p.grad, x)
    assert np.allclose(H, H_fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(H).max()))
    v = np.random.default_rng(3).standard_normal(p.n)
    assert np.allclose(p.oracles()["hessp"](x, v), H @ v, rtol=1e-10, atol=1e-10)
    f, g2 = p.oracles()["fun_and_grad"](x)
    assert np.isclose(f, p.fun(x)) and np.allclose(g2, g)


@pytest.mark.parametrize("name", ["logistic", "softmax", "logsumexp"])
def test_numba_oracles_equal_numpy_reference(name):
    p = PROBLEMS[name]
    x = p.x0 + 0.05
    ref, nb = p.oracles("numpy"), p.oracles("numba")
    f1, g1 = ref["fun_and_grad"](x)
    f2, g2 = nb["fun_and_grad"](x)
    assert abs(f1 - f2) <= 1e-12 * max(1.0, abs(f1))
    assert np.allclose(g1, g2, rtol=1e-12, atol=1e-14)
    assert np.isclose(nb["fun"](x), f1, rtol=1e-12)
    assert np.allclose(nb["hess"](x), ref["hess"](x), rtol=1e-12, atol=1e-14)


def test_numba_kernels_against_numpy_formulas(rng):
    from scipy.special import expit, logsumexp

    from neurosolve.backends import smooth_kernels as K

    z = rng.standard_normal(200) * 30  # large margins exercise the stable branches
    y = np.sign(rng.standard_normal(200))
    s, r = K.logistic_terms(z, y)
    assert np.isclose(s, np.logaddexp(0, -y * z).sum(), rtol=1e-13)
    assert np.allclose(r, -y * expit(-y * z), rtol=1e-13, atol=1e-300)
    w = K.logistic_weights(z, y)
    assert np.allclose(w, expit(y * z) * expit(-y * z), rtol=1e-10, atol=1e-300)
    A = rng.standard_normal((50, 7))
    yy = np.sign(rng.standard_normal(50))
    x = rng.standard_normal(7)
    tot, g = K.logistic_value_grad(A, yy, x)
    assert np.isclose(tot, np.logaddexp(0, -yy * (A @ x)).sum(), rtol=1e-13)
    assert np.allclose(g, A.T @ (-yy * expit(-yy * (A @ x))), rtol=1e-12)
    S = rng.standard_normal((30, 4)) * 10
    lab = rng.integers(0, 4, 30)
    tot, R = K.softmax_terms(S, lab)
    P = np.exp(S - logsumexp(S, axis=1, keepdims=True))
    Y = np.eye(4)[lab]
    assert np.isclose(tot, (logsumexp(S, axis=1) - S[np.arange(30), lab]).sum(), rtol=1e-13)
    assert np.allclose(R, P - Y, atol=1e-14)
    b = rng.standard_normal(30)
    zz = rng.standard_normal(30) * 5
    f, pi = K.lse_terms(zz, b, 0.3)
    assert np.isclose(f, 0.3 * logsumexp((zz - b) / 0.3), rtol=1e-13)
    assert np.allclose(pi, np.exp((zz - b) / 0.3 - logsumexp((zz - b) / 0.3)), atol=1e-15)


def test_logistic_matches_sklearn_objective_scaling():
    A, y = gal.breast_cancer()
    p = gal.logistic(A, y, 1e-2)
    x = np.linspace(-0.1, 0.1, A.shape[1])
    m = A.shape[0]
    loss = np.logaddexp(0, -y * (A @ x)).mean() + 0.5e-2 * x @ x
    assert np.isclose(p.fun(x), loss)
    # {0, 1} labels are mapped to {-1, 1}
    p01 = gal.logistic(A, (y + 1) / 2, 1e-2)
    assert np.isclose(p01.fun(x), loss)
    assert m == 569


def test_composite_structure_and_approximations_are_psd():
    for name in ("equations", "rosenbrock_eq", "chebyshev", "least_squares"):
        p = PROBLEMS[name]
        x = p.x0 + 0.2
        o = p.oracles()
        for approx in (ha.GaussNewton(), ha.FisherTerm()):
            model = approx.evaluate(p, x, o)
            V = np.eye(p.n)
            H = np.column_stack([model.matvec(e) for e in V])
            assert np.allclose(H, H.T, atol=1e-10)
            assert np.linalg.eigvalsh(H).min() >= -1e-9 * max(1.0, np.abs(H).max())
    # Gauss-Newton + Fisher term = exact Hessian minus ||u||^{p-2} sum u_i grad^2 u_i
    p = PROBLEMS["chebyshev"]
    x = p.x0 + 0.2
    o = p.oracles()
    H = p.hess(x)
    Hgn = ha.GaussNewton().evaluate(p, x, o).H
    u = o["residual"](x)
    nu = np.linalg.norm(u)
    d = p.n
    curv = np.zeros((d, d))
    idx = np.arange(1, d)
    curv[idx - 1, idx - 1] = -4.0 * u[1:]
    assert np.allclose(H - Hgn, nu ** 2 * curv, atol=1e-10)


@pytest.mark.parametrize("name", ["logistic", "softmax"])
def test_fisher_and_diagonal_approximations(name):
    p = PROBLEMS[name]
    x = p.x0
    o = p.oracles()
    G = o["sample_grads"](x)
    m = G.shape[0]
    mu = o["fisher_reg"]
    # rows are per-sample gradients: their mean + mu x is the gradient
    assert np.allclose(G.mean(axis=0) + mu * x, p.grad(x), atol=1e-12)
    model = ha.EmpiricalFisher().evaluate(p, x, o)
    assert np.allclose(model.H, G.T @ G / m + mu * np.eye(p.n))
    assert np.linalg.eigvalsh(model.H).min() > 0
    D = ha.Diagonal().evaluate(p, x, o).D
    assert np.allclose(D, np.diag(p.hess(x)), rtol=1e-12)
    # the Woodbury form of the same Fisher gives the same solve
    wb = ha.EmpiricalFisher(woodbury=True).evaluate(p, x, o)
    r = np.random.default_rng(0).standard_normal(p.n)
    assert np.allclose(wb.solve(0.3, r), model.solve(0.3, r), rtol=1e-9)


def test_hutchinson_diagonal_is_unbiased_on_diagonal_matrix():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    p = gal.quadratic(np.diag(d), np.ones(4))
    D = ha.Diagonal(source="hutchinson", probes=3).evaluate(p, p.x0, p.oracles()).D
    assert np.allclose(D, d)  # z * (D z) = D exactly for Rademacher z


def test_woodbury_and_sherman_morrison_equal_dense_cholesky(rng):
    n, m = 40, 3
    V = rng.standard_normal((n, m))
    Bm = rng.standard_normal((n, n))
    Bm = Bm @ Bm.T + n * np.eye(n)
    for B in (None, rng.uniform(0.5, 2.0, n), Bm):
        metric = ha.Metric(B, n)
        Bd = np.eye(n) if B is None else (np.diag(B) if np.ndim(B) == 1 else B)
        r = rng.standard_normal(n)
        for Vk in (V, V[:, :1]):
            lr = ha.LowRankModel(Vk, None, metric)
            dense = ha.DenseModel(Vk @ Vk.T, metric)
            for lam in (1e-3, 1.0, 1e3):
                ref = np.linalg.solve(Vk @ Vk.T + lam * Bd, r)
                assert np.linalg.norm(lr.solve(lam, r) - ref) <= 1e-10 * np.linalg.norm(ref)
                assert np.linalg.norm(dense.solve(lam, r) - ref) <= 1e-10 * np.linalg.norm(ref)
        if B is None or np.ndim(B) == 1:
            D = rng.uniform(0.1, 1.0, n)
            lr = ha.LowRankModel(V, D, metric)
            ref = np.linalg.solve(V @ V.T + np.diag(D) + 0.7 * Bd, r)
            assert np.allclose(lr.solve(0.7, r), ref, rtol=1e-10)
    with pytest.raises(ValueError, match="identity or diagonal metric"):
        ha.LowRankModel(V, np.ones(n), ha.Metric(Bm, n))


def test_cg_operator_model_solves_shifted_system(rng):
    n = 30
    Q = rng.standard_normal((n, n))
    Q = Q @ Q.T
    metric = ha.Metric(None, n)
    model = ha.OperatorModel(lambda v: Q @ v, n, metric, rtol=1e-12)
    r = rng.standard_normal(n)
    assert np.allclose(model.solve(0.5, r), np.linalg.solve(Q + 0.5 * np.eye(n), r), rtol=1e-8)


def test_metric_norms_and_validation(rng):
    n = 5
    Bm = rng.standard_normal((n, n))
    Bm = Bm @ Bm.T + np.eye(n)
    m = ha.Metric(Bm, n)
    g = rng.standard_normal(n)
    assert np.isclose(m.dual_norm(g), np.sqrt(g @ np.linalg.solve(Bm, g)))
    assert np.isclose(m.norm(g), np.sqrt(g @ Bm @ g))
    with pytest.raises(ValueError, match="B must be None, a length-5 diagonal or a 5x5"):
        ha.Metric(np.eye(4), n)
    with pytest.raises(ValueError, match="not symmetric"):
        ha.Metric(np.triu(Bm), n)
    with pytest.raises(ValueError, match="Cholesky factorization failed"):
        ha.Metric(-np.eye(n), n)
    with pytest.raises(ValueError, match="strictly positive"):
        ha.Metric(np.array([1.0, 0.0, 1.0, 1.0, 1.0]), n)
    with pytest.raises(ValueError, match="length 5"):
        ha.Metric(np.ones(3), n)
    with pytest.raises(ValueError, match="NaN or inf"):
        ha.Metric(np.full(n, np.nan), n)


# -- Minimize: bad input ---------------------------------------------------------------------
def _quad():
    return (lambda x: 0.5 * x @ x), (lambda x: x)


def test_minimize_rejects_bad_input():
    f, g = _quad()
    with pytest.raises(ValueError, match="x0 is required"):
        Minimize(f, g)
    with pytest.raises(ValueError, match="x0 must be a 1-D vector"):
        Minimize(f, g, np.zeros((2, 2)))
    with pytest.raises(TypeError, match="fun must be callable"):
        Minimize(3.0, g, np.zeros(2))
    with pytest.raises(TypeError, match="grad is required for a numpy fun"):
        Minimize(f, None, np.zeros(2))
    with pytest.raises(ValueError, match="x0 contains NaN"):
        Minimize(f, g, np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"f\(x0\) = nan is not finite"):
        Minimize(lambda x: np.nan, g, np.zeros(2))
    with pytest.raises(ValueError, match="gradient at x0 has non-finite entries"):
        Minimize(f, lambda x: np.array([np.inf, 0.0]), np.zeros(2))
    with pytest.raises(ValueError, match=r"grad returned shape \(3,\) at x0; expected \(2,\)"):
        Minimize(f, lambda x: np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="B must be None"):
        Minimize(f, g, np.zeros(2), B=np.eye(3))
    with pytest.raises(TypeError, match="torch tensor but the problem's data is numpy"):
        import torch

        Minimize(f, g, np.zeros(2), B=torch.eye(2))
    with pytest.raises(ValueError, match="unknown structure oracle"):
        Minimize(f, g, np.zeros(2), structure={"bogus": f})
    with pytest.raises(TypeError, match="sample_losses needs a torch x0"):
        Minimize(f, g, np.zeros(2), sample_losses=f)


def test_gallery_rejects_bad_input():
    A, y = gal.synthetic_classification(20, 3)
    with pytest.raises(ValueError, match=r"y must have shape \(20,\)"):
        gal.logistic(A, y[:5])
    with pytest.raises(ValueError, match="labels in"):
        gal.logistic(A, y * 3)
    with pytest.raises(ValueError, match="A contains NaN"):
        gal.logistic(np.full((3, 2), np.nan), np.ones(3))
    with pytest.raises(ValueError, match="mu must be a non-negative"):
        gal.logistic(A, y, -1.0)
    with pytest.raises(ValueError, match="labels must lie in"):
        gal.softmax(A, np.full(20, 5), 3)
    with pytest.raises(ValueError, match="mu must be a positive"):
        gal.logsumexp(A, np.zeros(20), 0.0)
    with pytest.raises(ValueError, match="Q must be symmetric"):
        gal.quadratic(np.triu(np.ones((3, 3))), np.ones(3))
    with pytest.raises(ValueError, match="p must be a number >= 2"):
        gal.equations(A, np.zeros(20), 1.5)
    with pytest.raises(ValueError, match="library must be"):
        gal.rosenbrock(2, library="jax")
    with pytest.raises(ValueError, match=r"x0 must have shape \(3,\)"):
        gal.logistic(A, y, x0=np.zeros(4))


def test_certificate_recomputes_gradient_norms():
    Bd = np.array([1.0, 4.0])
    p = Minimize(lambda x: 0.5 * x @ x, lambda x: x.copy(), np.zeros(2), B=Bd, f_star=0.0)
    cert = p.certificate(np.array([3.0, 4.0]))
    assert cert["f"] == 12.5 and cert["f_gap"] == 12.5
    assert np.isclose(cert["grad_norm"], np.sqrt(9 + 16 / 4))
    assert cert["grad_norm_2"] == 5.0 and cert["grad_norm_inf"] == 4.0


# -- torch: autograd oracles -----------------------------------------------------------------
def test_torch_autograd_oracles_match_analytic():
    torch = pytest.importorskip("torch")
    A, y = gal.synthetic_classification(40, 4, seed=3)
    ref = gal.logistic(A, y, 0.05)
    At, yt = torch.as_tensor(A), torch.as_tensor(y)

    def sample_losses(x):
        return torch.nn.functional.softplus(-yt * (At @ x))

    def fun(x):
        return sample_losses(x).mean() + 0.025 * (x * x).sum()

    x0 = torch.linspace(-0.3, 0.4, 4, dtype=torch.float64)
    p = Minimize(fun, x0=x0, sample_losses=sample_losses, fisher_reg=0.05)
    o = p.oracles("torch")
    xn = x0.numpy()
    f, g = o["fun_and_grad"](x0)
    assert np.isclose(float(f), ref.fun(xn)) and np.allclose(g.numpy(), ref.grad(xn))
    assert np.allclose(o["hess"](x0).numpy(), ref.hess(xn))
    v = torch.ones(4, dtype=torch.float64)
    assert np.allclose(o["hessp"](x0, v).numpy(), ref.hess(xn) @ np.ones(4))
    assert np.allclose(o["sample_grads"](x0).numpy(), ref.oracles()["sample_grads"](xn))
    assert p.array_library == "torch" and p.device == "cpu"


def test_torch_composite_gauss_newton_products_match_dense():
    torch = pytest.importorskip("torch")

    def residual(x):
        return torch.stack([1 - x[0], 10 * (x[1] - x[0] ** 2), x[2] * x[0]])

    x0 = torch.tensor([-1.0, 2.0, 0.5], dtype=torch.float64)
    p = Minimize.composite(residual, None, x0, p=3.0)
    o = p.oracles("torch")
    dense = ha.GaussNewton().evaluate(p, x0, o)
    free = ha.GaussNewton(matrix_free=True).evaluate(p, x0, o)
    for e in torch.eye(3, dtype=torch.float64):
        assert torch.allclose(free.matvec(e), dense.H @ e)
    # the exact Hessian (autograd) minus Gauss-Newton is the residual-curvature term
    H = o["hess"](x0)
    assert torch.allclose(H, H.T)


def test_hutchinson_diagonal_is_unbiased_on_a_non_diagonal_matrix():
    """Off-diagonal entries make each estimate noisy (none is exact); the mean over 400
    independent probe streams is diag(H) within 4 standard errors."""
    r = np.random.default_rng(5)
    G = r.standard_normal((6, 6))
    H = G @ G.T + np.eye(6)
    p = gal.quadratic(H, np.ones(6))
    est = np.array([ha.Diagonal(source="hutchinson", probes=4, seed=s).evaluate(p, p.x0, p.oracles()).D
                    for s in range(400)])
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
    assert np.all(np.abs(mean - np.diag(H)) <= 4 * se + 1e-12)
    assert np.all(se > 0) and not np.allclose(est[0], np.diag(H))
