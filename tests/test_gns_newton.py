"""GNS Newton: the tests of specs/gns_newton.md section 8, backends, statuses, bad input.

Oracles nobody here wrote: scikit-learn's LogisticRegression (newton-cholesky), scipy's
trust-exact, numpy's linear solves, closed-form minimizers (quadratics, Rosenbrock,
equations with f* = 0, the shifted log-sum-exp with x* = 0).
"""

import math

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.core import Status
from neurosolve.problems import Minimize
from neurosolve.problems import smooth_gallery as gal
from neurosolve.solvers import GNSNewton
from neurosolve.solvers import hessian_approx as ha


@pytest.fixture(autouse=True)
def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1):
        yield


def _quadratic(d=50, cond=3.3e2, seed=0):
    rng = np.random.default_rng(seed)
    Qo, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Q = (Qo * np.logspace(0, np.log10(cond), d)) @ Qo.T
    Q = 0.5 * (Q + Q.T)
    c = rng.standard_normal(d)
    return gal.quadratic(Q, c), np.linalg.solve(Q, c)


def _trace_checks(res, psd=True):
    """Lemma 1 and the step-length bound at every accepted step, from the history.

    The decrease is ``f_k - f_{k+1}`` except where that difference is rounding noise (the
    rounding guard then used the trapezoid estimate, recorded in ``decrease``). The step
    bound ``||x_{k+1} - x_k|| <= gamma_k`` needs a PSD H (``psd=False`` skips it).
    """
    h = res.history
    tags = [o for (_, _, _, o) in res.state.search_log if o.startswith("accept")]
    assert len(tags) == res.n_iter
    for k in range(res.n_iter):
        bound = h["grad_norm"][k + 1] ** 2 / (8 * h["lam"][k + 1])
        fdec = h["f"][k] - h["f"][k + 1]
        if tags[k] == "accept-ratio":
            # the model-ratio test (default accept="lemma1-or-ratio"): Lemma 1 failed, f fell
            assert h["lemma1"][k + 1] == 0.0 and bound > h["decrease"][k + 1] > 0
            assert h["f"][k + 1] <= h["f"][k]
            if psd:
                assert h["step_norm"][k + 1] <= h["gamma"][k + 1] * (1 + 1e-12)
            continue
        assert h["lemma1"][k + 1] == 1.0
        if tags[k] == "accept":
            assert fdec >= bound * (1 - 1e-12)
            assert h["decrease"][k + 1] == fdec
        else:
            assert abs(fdec) <= 1e-13 * max(1.0, abs(h["f"][k]))
            assert h["decrease"][k + 1] >= bound * (1 - 1e-12)
        assert h["f"][k + 1] <= h["f"][k] + 1e-13 * max(1.0, abs(h["f"][k]))
        if psd:
            assert h["step_norm"][k + 1] <= h["gamma"][k + 1] * (1 + 1e-12)


# -- 2. quadratic ---------------------------------------------------------------------------
def test_quadratic_solution_and_gamma0_range():
    prob, xstar = _quadratic()
    iters = {}
    for g0 in (1e-3, 1.0, 1e3, 1e6):
        res = ns.solve(prob, GNSNewton(gamma0=g0, gtol=1e-10), backend="numpy")
        assert res.success, res.message
        assert np.linalg.norm(res.x - xstar) <= 1e-8
        _trace_checks(res)
        iters[g0] = res.n_iter
    assert max(iters[1e-3], iters[1.0], iters[1e3]) <= 25
    assert iters[1e6] <= 5  # Newton-like
    # 10. a bad gamma0 changes K only by O(log(gamma ratio))
    bad = ns.solve(prob, GNSNewton(gamma0=1e-6, gtol=1e-10), backend="numpy")
    assert bad.success and bad.n_iter <= iters[1.0] + math.log2(1e6) + 2


# -- 3 & 10. Lemma 1, step bound and search accounting on a non-convex problem ---------------
def test_lemma1_step_bound_and_search_accounting_rosenbrock():
    for x0 in ([-2.0, 2.0], [-1.2, 1.0]):
        prob = gal.rosenbrock(2, x0=np.array(x0))
        res = ns.solve(prob, GNSNewton.paper(gtol=1e-10), backend="numpy")
        assert res.success and np.allclose(res.x, 1.0, atol=1e-8)
        assert res.n_iter <= 60
        _trace_checks(res, psd=False)
        assert np.all(np.diff(res.history["f"]) <= 0)  # monotone
        K = res.n_iter
        gmin = np.min(res.history["gamma"][1:])
        total = res.stats["factorizations"]
        assert total == np.sum(res.history["trials"])
        assert total <= 2 * K + math.log2(1.0 / gmin) + 2
        assert len(res.state.search_log) == total


# -- 4. logistic regression vs scikit-learn --------------------------------------------------
def test_logistic_regression_equals_sklearn():
    sk = pytest.importorskip("sklearn.linear_model")
    A, y = gal.synthetic_classification(600, 15, seed=4, cond=30.0)
    m, mu = A.shape[0], 1e-2
    clf = sk.LogisticRegression(C=1.0 / (mu * m), fit_intercept=False, tol=1e-12,
                                solver="newton-cholesky", max_iter=200).fit(A, y)
    xstar = clf.coef_.ravel()
    prob = gal.logistic(A, y, mu)
    res = ns.solve(prob, GNSNewton(gtol=1e-10))
    assert res.success and res.n_iter <= 15
    assert np.linalg.norm(res.x - xstar) <= 1e-6
    assert res.certificate["f"] - prob.fun(xstar) <= 1e-12
    _trace_checks(res)
    fisher = ns.solve(prob, GNSNewton(hessian="fisher", gtol=1e-8))
    assert fisher.success and fisher.n_iter <= 400
    assert np.linalg.norm(fisher.x - xstar) <= 1e-5


def test_breast_cancer_logistic_matches_scipy_trust_exact():
    from scipy.optimize import minimize

    A, y = gal.breast_cancer()
    prob = gal.logistic(A, y, 1e-2)
    o = prob.oracles()
    ref = minimize(o["fun_and_grad"], np.zeros(A.shape[1]), jac=True, hess=o["hess"],
                   method="trust-exact", options={"gtol": 1e-12})
    res = ns.solve(prob, GNSNewton(gtol=1e-10))
    assert res.success and np.linalg.norm(res.x - ref.x) <= 1e-8
    assert res.n_iter <= 2 * ref.nit  # spec 8.12: within 2x of trust-exact


# -- 5. local rates --------------------------------------------------------------------------
def test_local_rate_quadratic_with_exact_linear_with_fisher():
    A, y = gal.synthetic_classification(400, 10, seed=5)
    prob = gal.logistic(A, y, 1e-2)
    exact = ns.solve(prob, GNSNewton(gtol=1e-12))
    assert exact.success
    g = exact.history["grad_norm"]
    tail = g[-4:]
    ratios = tail[1:] / tail[:-1]
    assert ratios[-1] < 1e-2  # superlinear: the last ratio collapses
    assert np.all(tail[1:] <= 20.0 * tail[:-1] ** 2 + 1e-12)  # ||g+|| <= C ||g||^2 (+ rounding)
    gam = exact.history["gamma"][-4:]
    assert np.all(np.diff(gam) > 0)  # gamma keeps doubling in the tail
    fisher = ns.solve(prob, GNSNewton(hessian="fisher", gtol=1e-10))
    gf = fisher.history["grad_norm"]
    r = gf[len(gf) // 2 + 1:] / gf[len(gf) // 2:-1]
    med = np.median(r)
    assert 0.05 < med < 1.0  # linear: a steady ratio, not collapsing to 0
    assert fisher.n_iter > 2 * exact.n_iter


# -- 6. log-sum-exp ---------------------------------------------------------------------------
def test_logsumexp_exact_and_weighted_gauss_newton():
    prob = gal.lse_instance(100, 200, 0.1, seed=1)
    assert np.linalg.norm(prob.grad(np.zeros(100))) < 1e-12  # the shift construction
    ex = ns.solve(prob, GNSNewton(ftol=1e-8, gtol=0.0))
    wgn = ns.solve(prob, GNSNewton(hessian="weighted-gauss-newton", ftol=1e-8, gtol=0.0))
    assert ex.success and wgn.success
    assert ex.certificate["f_gap"] < 1e-8 and wgn.certificate["f_gap"] < 1e-8
    assert wgn.n_iter > ex.n_iter
    _trace_checks(ex)
    _trace_checks(wgn)


# -- 7. equations with the rank-one Fisher term ------------------------------------------------
def test_equations_fisher_term_sherman_morrison():
    rng = np.random.default_rng(0)
    A = rng.uniform(-1, 1, (100, 200))
    b = A @ rng.uniform(-1, 1, 200)
    prob = gal.equations(A, b, 4.0)
    res = ns.solve(prob, GNSNewton(hessian="fisher-term", ftol=1e-10, gtol=0.0))
    assert res.success and res.certificate["f"] < 1e-10 and res.n_iter <= 30
    # the Sherman-Morrison solve equals the dense Cholesky solve. (With the experiment's
    # metric A^T A + 1e-8 I, condition ~1e12, neither solve is accurate to 1e-10, so the
    # comparison uses the same rank-one term with the better-conditioned A^T A + I.)
    x = prob.x0 + 0.1
    model = ha.FisherTerm().evaluate(prob, x, prob.oracles())
    assert model.solve_method == "sherman-morrison"
    metric = ha.Metric(A.T @ A + np.eye(200), 200)
    sm = ha.LowRankModel(model.V, None, metric)
    dense = ha.DenseModel(model.V @ model.V.T, metric)
    r = rng.standard_normal(200)
    for lam in (1.0, 10.0, 100.0):
        a, bb = sm.solve(lam, r), dense.solve(lam, r)
        assert np.linalg.norm(a - bb) <= 1e-10 * np.linalg.norm(bb)


# -- 8. non-convex ----------------------------------------------------------------------------
def test_rosenbrock_equations_and_chebyshev():
    for h in ("exact", "gauss-newton"):
        res = ns.solve(gal.rosenbrock_equations(5.0), GNSNewton(hessian=h, ftol=1e-8, gtol=0.0))
        assert res.success and res.n_iter <= 60, (h, res.n_iter)
        _trace_checks(res, psd=h != "exact")
    cheb = ns.solve(gal.chebyshev(200, 4.0), GNSNewton(hessian="gauss-newton", ftol=1e-8, gtol=0.0))
    assert cheb.success and cheb.n_iter <= 30
    _trace_checks(cheb)


def test_nd_rosenbrock_indefinite_hessian_does_not_crash():
    prob = gal.rosenbrock(10)  # classic start (-1.2, 1, ...)
    res = ns.solve(prob, GNSNewton(gtol=1e-9), backend="numpy")
    assert res.success
    assert res.certificate["grad_norm"] <= 1e-9
    assert np.linalg.eigvalsh(prob.hess(res.x)).min() > 0  # a local minimizer
    outcomes = {o for (_, _, _, o) in res.state.search_log}
    assert "not_pd" in outcomes  # indefinite H + lambda I was met and rejected
    _trace_checks(res, psd=False)


# -- 9. invariances -----------------------------------------------------------------------------
def test_scaling_invariance_identical_iterates():
    A, y = gal.synthetic_classification(300, 8, seed=6)
    base = gal.logistic(A, y, 1e-2)
    o = base.oracles()

    def run(c):
        xs = []
        p = Minimize(lambda x: c * o["fun"](x), lambda x: c * o["grad"](x), np.zeros(8),
                     hess=lambda x: c * o["hess"](x))
        ns.solve(p, GNSNewton(gtol=1e-10 * c, maxiter=12), backend="numpy",
                 callback=lambda v: xs.append(v.x.copy()))
        return np.array(xs)

    ref = run(1.0)
    assert np.array_equal(run(4.0), ref)  # c = 4: every operation scales exactly
    other = run(3.7)
    assert other.shape == ref.shape and np.max(np.abs(other - ref)) <= 1e-12


def test_affine_invariance_with_metric():
    rng = np.random.default_rng(7)
    prob, _ = _quadratic(d=8, cond=50.0, seed=3)
    S = rng.standard_normal((8, 8)) + 3 * np.eye(8)
    o = prob.oracles()
    Q = prob.hess(None)
    c = -o["grad"](np.zeros(8))
    py = Minimize(lambda yv: o["fun"](S @ yv), lambda yv: S.T @ o["grad"](S @ yv),
                  np.linalg.solve(S, np.ones(8)), hess=lambda yv: S.T @ Q @ S, B=S.T @ S)
    px = Minimize(o["fun"], o["grad"], np.ones(8), hess=lambda x: Q)
    xs, ys = [], []
    ns.solve(px, GNSNewton(gtol=1e-11), backend="numpy", callback=lambda v: xs.append(v.x.copy()))
    ns.solve(py, GNSNewton(gtol=1e-11), backend="numpy", callback=lambda v: ys.append(v.x.copy()))
    assert len(xs) == len(ys)
    for x, yv in zip(xs, ys):
        assert np.linalg.norm(S @ yv - x) <= 1e-8 * max(1.0, np.linalg.norm(x))
    assert np.allclose(xs[-1], np.linalg.solve(Q, c), atol=1e-9)


# -- 11. H = 0: normalized gradient ---------------------------------------------------------------
def test_normalized_gradient_variant():
    A, y = gal.synthetic_classification(200, 6, seed=8, cond=100.0)
    prob = gal.logistic(A, y, 1e-3)
    res = ns.solve(prob, GNSNewton.normalized_gradient(gtol=1e-6, maxiter=20000))
    assert res.success
    h = res.history
    # each step is -gamma_k g / ||g||: its length equals gamma_k exactly
    assert np.allclose(h["step_norm"][1:], h["gamma"][1:], rtol=1e-12)
    # and the direction is the normalized negative gradient
    xs = []
    prob2 = gal.logistic(A, y, 1e-3)
    ns.solve(prob2, GNSNewton.normalized_gradient(maxiter=3),
             callback=lambda v: xs.append(v.x.copy()))
    g0 = prob2.grad(xs[0])
    d = xs[1] - xs[0]
    assert np.allclose(d / np.linalg.norm(d), -g0 / np.linalg.norm(g0), atol=1e-12)
    newton = ns.solve(prob, GNSNewton(gtol=1e-6))
    assert res.n_iter > 3 * newton.n_iter


# -- Variant A ------------------------------------------------------------------------------------
def test_variant_a_lipschitz_rule_satisfies_lemma1():
    A, y = gal.synthetic_classification(300, 6, seed=9)
    prob = gal.logistic(A, y, 1e-2)
    m = A.shape[0]
    # the logistic loss has |l'''| <= 1/(6 sqrt 3): L2 <= that * mean ||a_i||^3
    L2 = np.mean(np.linalg.norm(A, axis=1) ** 3) / (6 * np.sqrt(3))
    res = ns.solve(prob, GNSNewton(rule="lipschitz", L=L2, gtol=1e-8, maxiter=500))
    assert res.success
    assert np.all(res.history["lemma1"][1:] == 1.0)
    assert np.all(res.history["trials"][1:] == 1)
    lam = res.history["lam"][1:]
    gn = res.history["grad_norm"][:-1]
    assert np.allclose(lam, np.sqrt(L2 * gn / 2), rtol=1e-12)
    _trace_checks(res)
    const = ns.solve(prob, GNSNewton(rule="constant", gamma0=0.5, gtol=1e-8, maxiter=500))
    assert const.success and np.allclose(const.history["gamma"][1:], 0.5)
    assert m == 300


# -- backends ----------------------------------------------------------------------------------
def _run_lib(make, library, backend, solver):
    prob = make(library)
    return ns.solve(prob, solver, backend=backend)


@pytest.mark.parametrize("case", ["logistic", "lse", "quadratic"])
def test_backends_same_accept_reject_sequence(case):
    pytest.importorskip("torch")
    if case == "logistic":
        A, y = gal.synthetic_classification(300, 12, seed=10, cond=100.0)

        def make(lib):
            return gal.logistic(A, y, 1e-3, library=lib)

        solver = GNSNewton(gtol=1e-10)
    elif case == "lse":
        def make(lib):
            return gal.lse_instance(40, 80, 0.2, seed=2, library=lib)

        solver = GNSNewton(ftol=1e-9, gtol=0.0)
    else:
        rng = np.random.default_rng(0)
        Qo, _ = np.linalg.qr(rng.standard_normal((20, 20)))
        Q = (Qo * np.logspace(0, 2, 20)) @ Qo.T
        Q = 0.5 * (Q + Q.T)
        c = rng.standard_normal(20)

        def make(lib):
            return gal.quadratic(Q, c, library=lib)

        solver = GNSNewton(gtol=1e-10, gamma0=1e-2)
    runs = {be: _run_lib(make, "torch" if be == "torch" else "numpy", be, solver)
            for be in ("numpy", "numba", "torch")}
    seqs = {be: [o for (_, _, _, o) in r.state.search_log] for be, r in runs.items()}
    assert seqs["numpy"] == seqs["numba"] == seqs["torch"]
    assert len(set(seqs["numpy"])) >= 1
    xs = {be: (r.x.numpy() if hasattr(r.x, "numpy") else r.x) for be, r in runs.items()}
    assert np.allclose(xs["numba"], xs["numpy"], atol=1e-10)
    assert np.allclose(xs["torch"], xs["numpy"], atol=1e-10)
    assert runs["torch"].stats["backend"] == "torch"
    assert runs["numba"].stats["backend"] == "numba"
    import torch

    assert isinstance(runs["torch"].x, torch.Tensor) and runs["torch"].x.dtype == torch.float64


# -- statuses and bad input ------------------------------------------------------------------------
def test_solver_rejects_bad_configuration():
    with pytest.raises(ValueError, match="gamma0 must be a finite positive"):
        GNSNewton(gamma0=0.0)
    with pytest.raises(ValueError, match="rule must be one of"):
        GNSNewton(rule="bogus")
    with pytest.raises(ValueError, match="needs a positive constant L"):
        GNSNewton(rule="lipschitz")
    with pytest.raises(ValueError, match="unknown Hessian approximation 'bogus'"):
        GNSNewton(hessian="bogus")
    with pytest.raises(ValueError, match="decrease must be in"):
        GNSNewton(decrease=1.5)
    with pytest.raises(ValueError, match="gamma_min .* must be below gamma_max"):
        GNSNewton(gamma_min=1.0, gamma_max=0.5)
    with pytest.raises(TypeError, match="GNSNewton solves Minimize problems"):
        ns.solve(ns.problems.LinearSystem(np.eye(2), np.ones(2)), GNSNewton())
    prob = gal.rosenbrock(2)
    with pytest.raises(ValueError, match="ftol needs the optimal value"):
        ns.solve(Minimize(prob.fun, prob.grad, prob.x0), GNSNewton(ftol=1e-3))


def test_nonfinite_start_and_shape_mismatch():
    p = Minimize(lambda x: float(np.sum(np.log(x))) if np.all(x > 0) else np.nan,
                 lambda x: 1.0 / x, np.ones(3))
    res = ns.solve(p, GNSNewton(), np.array([-1.0, 1.0, 1.0]))
    assert res.status is Status.NONFINITE and "f(x0) = nan is not finite" in res.message
    with pytest.raises(ValueError, match=r"x0 has shape \(2,\); the problem has dimension 3"):
        ns.solve(p, GNSNewton(), np.ones(2))
    q = Minimize(lambda x: 0.5 * x @ x, lambda x: x, np.ones(3), hess=lambda x: np.eye(2))
    with pytest.raises(ValueError,
                       match=r"hess returned a matrix of shape \(2, 2\); expected \(3, 3\)"):
        ns.solve(q, GNSNewton())
    with pytest.raises(ValueError, match="non-symmetric matrix"):
        ns.solve(Minimize(lambda x: 0.5 * x @ x, lambda x: x, np.ones(2),
                          hess=lambda x: np.array([[1.0, 1.0], [0.0, 1.0]])), GNSNewton())
    with pytest.raises(ValueError, match=r"diagonal of shape \(2,\); expected \(3,\)"):
        ns.solve(q, GNSNewton(hessian=ha.UserHessian(lambda x: np.ones(2))))
    with pytest.raises(ValueError, match="needs the 'residual' oracle"):
        ns.solve(q, GNSNewton(hessian="gauss-newton"))


def test_non_psd_approximation_is_detected():
    q = Minimize(lambda x: 0.5 * x @ x, lambda x: x.copy(), np.ones(2))
    # a negative diagonal entry: caught before any factorization
    with pytest.raises(ValueError, match="declared positive semi-definite but its diagonal"):
        ns.solve(q, GNSNewton(hessian=lambda x: np.array([[-1.0, 0.0], [0.0, 1.0]])))
    with pytest.raises(ValueError, match="declared PSD but its diagonal has a negative entry"):
        ns.solve(q, GNSNewton(hessian=lambda x: np.array([1.0, -1.0])))
    with pytest.raises(ValueError, match="negative entry"):
        ns.solve(q, GNSNewton(hessian=ha.LowRankPlusDiagonal(
            lambda x: (np.ones((2, 1)), np.array([1.0, -2.0])))))
    # indefinite with a positive diagonal: the failed factorization reports it
    res = ns.solve(q, GNSNewton(gamma0=1e3, hessian=lambda x: np.array([[1.0, 2.0], [2.0, 1.0]])))
    assert res.status is Status.BREAKDOWN and "not PSD" in res.message
    # the same matrix declared indefinite is handled by rejections (lambda grows until PD)
    ok = ns.solve(q, GNSNewton(gamma0=1e3, gtol=1e-8, hessian=ha.UserHessian(
        lambda x: np.array([[1.0, 2.0], [2.0, 1.0]]), psd=False)))
    assert ok.success


def test_search_failure_reports_stagnation_and_nan_hessian():
    # a gradient inconsistent with f: no step can pass the Lemma-1 test
    p = Minimize(lambda x: float(x @ x), lambda x: -x, np.ones(2), hess=lambda x: np.eye(2))
    res = ns.solve(p, GNSNewton(max_trials=10))
    assert res.status is Status.STAGNATION and "gamma search failed" in res.message
    assert np.array_equal(res.x, np.ones(2))  # did not move
    assert len(res.history["grad_norm"]) == res.n_iter + 1
    nanh = Minimize(lambda x: 0.5 * x @ x, lambda x: x.copy(), np.ones(2),
                    hess=lambda x: np.full((2, 2), np.nan))
    res = ns.solve(nanh, GNSNewton())
    assert res.status is Status.NONFINITE and "NaN or inf" in res.message


def test_result_contract_history_callback_warm_start():
    A, y = gal.synthetic_classification(200, 5, seed=11)
    prob = gal.logistic(A, y, 1e-2)
    calls = []
    res = ns.solve(prob, GNSNewton(gtol=1e-10), callback=lambda v: calls.append(v.k))
    assert res.success and len(calls) == res.n_iter + 1 and calls[0] == 0
    for name in GNSNewton.metrics:
        assert len(res.history[name]) == res.n_iter + 1, name
    assert res.stats["nhev"] == res.n_iter
    assert res.stats["factorizations"] == int(res.history["trials"].sum())
    warm = ns.solve(prob, GNSNewton(gtol=1e-10), res.x)
    assert warm.success and warm.n_iter <= res.n_iter
    assert res.certificate["grad_norm"] <= 1e-10


# -- baselines ---------------------------------------------------------------------------------
def test_baselines_reach_the_same_minimizer():
    from neurosolve.solvers.newton_baselines import (CubicNewton, GradientMethod,
                                                     SuperUniversalNewton)

    A, y = gal.synthetic_classification(300, 8, seed=12)
    prob = gal.logistic(A, y, 1e-2)
    ref = ns.solve(prob, GNSNewton(gtol=1e-11)).x
    for solver in (SuperUniversalNewton(gtol=1e-9), CubicNewton(gtol=1e-9),
                   GradientMethod(gtol=1e-8, maxiter=20000)):
        res = ns.solve(prob, solver)
        assert res.success, (type(solver).__name__, res.message)
        # mu-strong convexity: ||x - x*|| <= ||grad f(x)|| / mu
        assert np.linalg.norm(res.x - ref) <= solver.gtol / 1e-2 + 1e-9
    rosen = gal.rosenbrock(2, x0=np.array([-2.0, 2.0]))
    for solver in (SuperUniversalNewton(alpha=1.0, gtol=1e-9), CubicNewton(gtol=1e-9)):
        res = ns.solve(rosen, solver)
        assert res.success and np.allclose(res.x, 1.0, atol=1e-7)
    with pytest.raises(ValueError, match="alpha must be in"):
        SuperUniversalNewton(alpha=2.0)


# -- convenience functions ---------------------------------------------------------------------
def test_minimize_and_compat_minimize():
    from scipy.optimize import rosen, rosen_der, rosen_hess

    from neurosolve import compat

    res = ns.minimize(rosen, np.array([-1.2, 1.0]), rosen_der, rosen_hess, gtol=1e-10)
    assert isinstance(res, ns.Result) and res.success and np.allclose(res.x, 1.0)
    both = ns.minimize(lambda x: (rosen(x), rosen_der(x)), np.array([-1.2, 1.0]), True,
                       rosen_hess, gtol=1e-10)
    assert both.n_iter == res.n_iter
    for method in ("super-newton", "cubic-newton"):
        r = ns.minimize(rosen, np.array([-1.2, 1.0]), rosen_der, rosen_hess, method=method,
                        gtol=1e-8, alpha=1.0) if method == "super-newton" else \
            ns.minimize(rosen, np.array([-1.2, 1.0]), rosen_der, rosen_hess, method=method,
                        gtol=1e-8)
        assert r.success and np.allclose(r.x, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="method must be one of"):
        ns.minimize(rosen, np.zeros(2), rosen_der, method="bfgs")
    seen = []
    out = compat.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der, hess=rosen_hess,
                          tol=1e-10, callback=lambda xk: seen.append(xk.copy()))
    assert out.success and out.status == 0 and out.nit == len(seen) == res.n_iter
    assert np.allclose(out.x, 1.0) and out.nhev == out.nit and out.nfactorizations >= out.nit
    assert abs(out.fun) < 1e-18 and np.linalg.norm(out.jac) <= 1e-10

    def stop(intermediate_result):
        if intermediate_result.fun < 1.0:
            raise StopIteration

    early = compat.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der, hess=rosen_hess,
                            callback=stop)
    assert early.status == 99 and not early.success and early.fun < 1.0
    lim = compat.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der, hess=rosen_hess,
                          options={"maxiter": 3})
    assert lim.status == 1 and lim.nit == 3
    # extra args, scipy style
    a = compat.minimize(lambda x, s: s * rosen(x), np.array([-1.2, 1.0]), args=(2.0,),
                        jac=lambda x, s: s * rosen_der(x), hess=lambda x, s: s * rosen_hess(x),
                        tol=1e-9)
    assert a.success


def test_minimize_with_torch_autograd():
    torch = pytest.importorskip("torch")
    x0 = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    res = ns.minimize(lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2, x0, gtol=1e-10)
    assert res.success and isinstance(res.x, torch.Tensor)
    assert torch.allclose(res.x, torch.ones(2, dtype=torch.float64))
    mf = ns.minimize(lambda x: ((x - 2.0) ** 4).sum() + (x ** 2).sum(),
                     torch.zeros(5, dtype=torch.float64), hess="hessp", gtol=1e-9)
    assert mf.success and mf.stats.get("hessp_calls", 0) > 0


@pytest.mark.cuda
def test_cuda_float64_reproduces_cpu_trace():
    torch = pytest.importorskip("torch")
    A, y = gal.synthetic_classification(2000, 40, seed=13, cond=100.0)
    cpu = ns.solve(gal.logistic(A, y, 1e-3), GNSNewton(gtol=1e-10), backend="numpy")
    At = torch.as_tensor(A, device="cuda")
    yt = torch.as_tensor(y, device="cuda")
    gpu = ns.solve(gal.logistic(At, yt, 1e-3, library="torch"), GNSNewton(gtol=1e-10))
    assert gpu.x.device.type == "cuda" and gpu.stats["backend"] == "torch"
    assert [o for *_, o in gpu.state.search_log] == [o for *_, o in cpu.state.search_log]
    assert np.allclose(gpu.x.cpu().numpy(), cpu.x, atol=1e-10)
    lse_cpu = ns.solve(gal.lse_instance(60, 120, 0.2), GNSNewton(ftol=1e-9, gtol=0.0))
    p = gal.lse_instance(60, 120, 0.2, library="torch")
    d = p.data
    pg = gal.logsumexp(d["A"].cuda(), d["b"].cuda(), d["mu"],
                       x0=torch.ones(60, dtype=torch.float64), B="gram", library="torch",
                       f_star=p.f_star)
    lse_gpu = ns.solve(pg, GNSNewton(ftol=1e-9, gtol=0.0))
    assert [o for *_, o in lse_gpu.state.search_log] == [o for *_, o in lse_cpu.state.search_log]


# -- neurosolve's defaults (ratio test, step-length and eigenvalue jumps) ---------------------------
def test_paper_configuration_and_new_options():
    p = GNSNewton.paper(gtol=1e-9)
    assert (p.gamma0, p.accept, p.shrink_to_step, p.eig_shift) == (1.0, "lemma1", False, False)
    with pytest.raises(ValueError, match="accept must be one of"):
        GNSNewton(accept="ratio")
    with pytest.raises(ValueError, match="eta must be in"):
        GNSNewton(eta=1.5)
    # the paper's test only: every accepted step satisfies Lemma 1
    prob = gal.rosenbrock(2, x0=np.array([-1.2, 1.0]))
    res = ns.solve(prob, p, backend="numpy")
    assert res.success and np.all(res.history["lemma1"][1:] == 1.0)
    assert not any(o == "accept-ratio" for *_, o in res.state.search_log)


def test_default_ratio_test_beats_paper_on_ill_conditioned_least_squares():
    from neurosolve.problems import mgh_gallery as mgh

    prob = mgh.mgh("osborne1")  # Hessian eigenvalues 4e-5 ... 1e5 at the minimizer
    paper = ns.solve(prob, GNSNewton.paper(gtol=1e-8, maxiter=5000), backend="numpy")
    ours = ns.solve(prob, GNSNewton(gtol=1e-8), backend="numpy")
    assert ours.success and ours.certificate["grad_norm"] <= 1e-8
    assert abs(ours.certificate["f"] - 5.46489e-5) <= 1e-10
    assert paper.n_iter > 10 * ours.n_iter  # Lemma 1 alone keeps lambda >~ L ||d||
    tags = {o for *_, o in ours.state.search_log}
    assert "accept-ratio" in tags
    _trace_checks(ours, psd=False)


def test_eig_shift_and_step_jump_save_trials():
    from neurosolve.problems import mgh_gallery as mgh

    # chebyquad from 10 x0: indefinite Hessians; halving lambda's way up from gamma0 = 1e6
    # exhausts the 40 trials, the eigenvalue shift reaches a PD H + lambda I at once
    prob = mgh.mgh("chebyquad", scale=10)
    slow = ns.solve(prob, GNSNewton(gtol=1e-8, eig_shift=False), backend="numpy")
    fast = ns.solve(prob, GNSNewton(gtol=1e-8), backend="numpy")
    assert fast.success and not slow.success
    # a quadratic from gamma0 = 1e6: the Newton step is accepted at once
    qp, xstar = _quadratic()
    res = ns.solve(qp, GNSNewton(gtol=1e-10), backend="numpy")
    assert res.success and res.n_iter <= 2 and res.stats["factorizations"] <= 3
    # a rejected Newton-like step jumps to its own length, not gamma / 2
    rosen = gal.rosenbrock(2, x0=np.array([-1.2, 1.0]))
    jump = ns.solve(rosen, GNSNewton(gtol=1e-9), backend="numpy")
    halve = ns.solve(rosen, GNSNewton(gtol=1e-9, shrink_to_step=False), backend="numpy")
    assert jump.success and halve.success
    assert jump.stats["factorizations"] < 0.75 * halve.stats["factorizations"]  # 33 vs 60


def test_symmetry_probe_catches_small_and_low_rank_asymmetry():
    """The probe estimate of ||H - H^T|| / ||H|| (two thin products, no transpose copy)
    still rejects a large Hessian whose asymmetry is one off-diagonal pair (rank two) of
    relative size 1e-6, accepts a symmetric one with rounding-level asymmetry, and is
    deterministic."""
    from neurosolve.backends.ops import NumpyOps

    la = NumpyOps()
    rng = np.random.default_rng(1)
    n = 400
    A = rng.standard_normal((n, n))
    H = A @ A.T / n + np.eye(n)
    Hs = 0.5 * (H + H.T)
    assert ha.asymmetry_estimate(Hs, la) < 1e-14
    assert ha._check_dense(Hs, n, "hess", True, la) is Hs
    Ha = Hs.copy()
    Ha[7, 300] += 1e-5 * np.linalg.norm(Hs)
    exact = la.asymmetry(Ha)
    est = ha.asymmetry_estimate(Ha, la)
    assert est == ha.asymmetry_estimate(Ha, la)  # fixed-seed probes
    assert 0.05 * exact < est < 20 * exact
    with pytest.raises(ValueError, match="non-symmetric matrix"):
        ha._check_dense(Ha, n, "hess", True, la)
    p = Minimize(lambda x: 0.5 * x @ Hs @ x, lambda x: Hs @ x, np.ones(n), hess=lambda x: Ha)
    with pytest.raises(ValueError, match=r"hess returned a non-symmetric matrix"):
        ns.solve(p, GNSNewton())
    Hn = Hs.copy()
    Hn[3, 3] = np.nan
    assert ha._check_dense(Hn, n, "hess", True, la) is Hn  # left to the finiteness check


def _numpy_logistic(m=2000, d=60, mu=1e-4, seed=0):
    """Logistic regression on make_classification-like data (numpy only): correlated
    Gaussian features, labels from a noisy linear model, user-style oracles."""
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = rng.standard_normal((m, d)) * np.logspace(0, -2, d) @ Q.T
    y = np.where(A @ rng.standard_normal(d) + 0.3 * rng.standard_normal(m) > 0, 1.0, -1.0)
    counts = {"hvp": 0}

    def fg(x):
        t = y * (A @ x)
        return (np.logaddexp(0, -t).sum() / m + 0.5 * mu * x @ x,
                A.T @ (-y * expit(-t)) / m + mu * x)

    def hessp(x, v):
        counts["hvp"] += 1
        t = A @ x
        return A.T @ (expit(t) * expit(-t) * (A @ v)) / m + mu * v

    return fg, hessp, np.zeros(d), counts


def test_inexact_hessp_same_minimizer_fewer_products():
    """The default matrix-free path (truncated CG with forcing term min(0.5, ||g||^(1/3))) reaches the
    minimizer of the exact path (CG to 1e-10 every solve) to 1e-8 in gradient norm, with
    the final gradient recomputed, and needs far fewer Hessian-vector products."""
    fg, hessp, x0, counts = _numpy_logistic()
    ex = ns.minimize(fg, x0, jac=True, hessp=hessp, hessian="hessp-exact", gtol=1e-10)
    n_exact = counts["hvp"]
    counts["hvp"] = 0
    inx = ns.minimize(fg, x0, jac=True, hessp=hessp, gtol=1e-10)
    n_inexact = counts["hvp"]
    assert ex.success and inx.success
    assert np.linalg.norm(fg(inx.x)[1]) <= 1e-10 and np.linalg.norm(fg(ex.x)[1]) <= 1e-10
    # strong convexity (mu = 1e-4): ||x - x*|| <= ||g|| / mu, and the gradients agree
    assert np.linalg.norm(fg(inx.x)[1] - fg(ex.x)[1]) <= 1e-8
    assert np.linalg.norm(inx.x - ex.x) <= 2e-10 / 1e-4
    assert inx.stats["hessp_calls"] == n_inexact
    assert n_inexact < 0.5 * n_exact, (n_inexact, n_exact)
    # linear forcing: in between
    counts["hvp"] = 0
    lin = ns.minimize(fg, x0, jac=True, hessp=hessp, gtol=1e-10,
                      hessian=ha.Exact(matrix_free=True, forcing="linear"))
    assert lin.success and np.linalg.norm(fg(lin.x)[1]) <= 1e-10
    assert counts["hvp"] < n_exact


def test_inexact_steps_never_loosen_the_certificate():
    """CONVERGED only when the gradient recomputed at the answer meets gtol: with a wrong
    Hessian-vector product (twice the true Hessian) the inexact steps contract ||g|| only
    by about 1/2 per iteration, so a few iterations end in MAX_ITER, however small the CG
    residuals were; given enough iterations the status is CONVERGED and ||g|| <= gtol."""
    rng = np.random.default_rng(3)
    M = rng.standard_normal((40, 40))
    Qm = M @ M.T / 40 + np.eye(40)
    b = rng.standard_normal(40)
    g0 = float(np.linalg.norm(b))

    def fg(x):
        return 0.5 * x @ Qm @ x - b @ x, Qm @ x - b

    def hessp_wrong(x, v):
        return 2.0 * (Qm @ v)

    short = ns.minimize(fg, np.zeros(40), jac=True, hessp=hessp_wrong, gtol=1e-8, maxiter=5)
    gshort = float(np.linalg.norm(fg(short.x)[1]))
    assert short.status is Status.MAX_ITER and gshort > 1e-8
    assert abs(short.certificate["grad_norm"] - gshort) <= 1e-12 * g0
    for gtol in (1e-4, 1e-8, 1e-11):
        res = ns.minimize(fg, np.zeros(40), jac=True, hessp=hessp_wrong, gtol=gtol, maxiter=200)
        assert res.status is Status.CONVERGED
        assert np.linalg.norm(fg(res.x)[1]) <= gtol
        assert res.certificate["grad_norm"] <= gtol


def test_truncated_cg_model_pieces():
    """The inexact solve meets its forcing term, keeps the Galerkin property <s, d> = 0
    (so the ratio test's model decrease stays exact), returns None on non-positive
    curvature at the first CG step and the last iterate (a descent direction) later."""
    from neurosolve.problems.metric import Metric

    rng = np.random.default_rng(0)
    n = 60
    M = rng.standard_normal((n, n))
    H = M @ M.T / n + 0.1 * np.eye(n)
    g = rng.standard_normal(n)
    metric = Metric(None, n)
    op = ha.OperatorModel(lambda v: H @ v, n, metric, forcing="sqrt")
    lam = 1e-3
    d = op.solve(lam, -g)
    s = -g - (H @ d + lam * d)
    assert np.linalg.norm(s) <= op.forcing_term(np.linalg.norm(g)) * np.linalg.norm(g) + 1e-14
    assert op.forcing_term(np.linalg.norm(g)) == 0.5  # ||g|| > 1/4: the cap
    assert 0 < op.last_cg_iterations < n
    assert abs(op.last_rd) <= 1e-10 * np.linalg.norm(g) * np.linalg.norm(d)
    pred = op.predicted_decrease(lam, g, d)
    assert pred == pytest.approx(-g @ d - 0.5 * d @ H @ d, rel=1e-10)
    assert op.forcing_term(1e-6) == pytest.approx(1e-3)
    assert ha.OperatorModel(lambda v: H @ v, n, metric, forcing="linear").forcing_term(1e-6) \
        == pytest.approx(1e-6)
    assert ha.OperatorModel(lambda v: H @ v, n, metric, forcing="cbrt").forcing_term(1e-6) \
        == pytest.approx(1e-2)
    # indefinite: negative curvature along -g at once -> failed solve (the trial is rejected)
    assert ha.OperatorModel(lambda v: -v, n, metric, forcing="sqrt").solve(lam, -g) is None
    # curvature positive along g, negative in the next Krylov direction -> the first iterate
    Hind = np.diag(np.r_[1.0, -10.0 * np.ones(n - 1)])
    gi = np.r_[10.0, 0.1 * np.ones(n - 1)]
    di = ha.OperatorModel(lambda v: Hind @ v, n, metric, forcing="sqrt").solve(0.0, -gi)
    assert di is not None and gi @ di < 0
    with pytest.raises(ValueError, match="forcing must be one of"):
        ha.Exact(forcing="quadratic")


def test_inexact_hessp_nonconvex_rosenbrock():
    """Truncated CG on an indefinite exact Hessian (Rosenbrock from the standard start)
    still reaches the minimizer, like the dense path."""
    from scipy.optimize import rosen, rosen_der, rosen_hess_prod

    x0 = np.array([-1.2, 1.0, -1.2, 1.0, -1.2, 1.0])
    res = ns.minimize(rosen, x0, rosen_der, hessp=rosen_hess_prod, gtol=1e-9)
    assert res.success and np.allclose(res.x, 1.0, atol=1e-7)
    assert np.linalg.norm(rosen_der(res.x)) <= 1e-9


def test_hess_and_hessp_given_picks_matrix_free_from_n_200():
    """With the user's hess and hessp both given, the exact Hessian goes matrix-free
    (inexact CG) from n = 200 and stays dense below it, or when hessp is only the
    product Minimize derives from hess, or with hessp_from_n=None."""
    rng = np.random.default_rng(2)
    for n, matrix_free in ((250, True), (50, False)):
        M = rng.standard_normal((n, n))
        Q = M @ M.T / n + np.eye(n)
        b = rng.standard_normal(n)

        def fg(x):
            return 0.5 * x @ Q @ x - b @ x, Q @ x - b

        both = ns.minimize(fg, np.zeros(n), jac=True, hess=lambda x: Q, hessp=lambda x, v: Q @ v)
        assert both.success and np.linalg.norm(Q @ both.x - b) <= 1e-8
        assert (both.stats.get("hessp_calls", 0) > 0) is matrix_free
        dense = ns.minimize(fg, np.zeros(n), jac=True, hess=lambda x: Q)
        assert dense.success and dense.stats.get("hessp_calls", 0) == 0
        forced = ns.minimize(fg, np.zeros(n), jac=True, hess=lambda x: Q,
                             hessp=lambda x, v: Q @ v, hessian=ha.Exact(hessp_from_n=None))
        assert forced.success and forced.stats.get("hessp_calls", 0) == 0


def test_dense_hess_only_uses_truncated_cg_from_n_200():
    """Given only a dense hess, GNS at n >= hessp_from_n (200) solves by truncated CG on
    H @ v (H evaluated once per iteration): zero Cholesky factorizations, ||g|| <= 1e-8
    recomputed at the answer, the minimizer of the Cholesky path. Below 200 the default
    factors; Exact(dense_solve=...) forces either path."""
    from scipy.special import expit

    rng = np.random.default_rng(5)
    m, d, mu = 600, 220, 1e-3
    A = rng.standard_normal((m, d)) * np.logspace(0, -1.5, d)
    y = np.where(A @ rng.standard_normal(d) + 0.3 * rng.standard_normal(m) > 0, 1.0, -1.0)

    def fg(x):
        t = y * (A @ x)
        return (np.logaddexp(0, -t).sum() / m + 0.5 * mu * x @ x,
                A.T @ (-y * expit(-t)) / m + mu * x)

    def hess(x):
        s = expit(A @ x)
        return (A * (s * (1 - s))[:, None]).T @ A / m + mu * np.eye(d)

    x0 = np.zeros(d)
    cg = ns.minimize(fg, x0, jac=True, hess=hess, gtol=1e-8)
    chol = ns.minimize(fg, x0, jac=True, hess=hess, gtol=1e-8,
                       hessian=ha.Exact(dense_solve="cholesky"))
    assert cg.success and chol.success
    assert cg.stats.get("cholesky", 0) == 0 and cg.stats["hess_matvecs"] > 0
    assert cg.stats["nhev"] == cg.n_iter and cg.stats.get("hessp_calls", 0) == 0
    assert chol.stats["cholesky"] >= chol.n_iter and chol.stats.get("hess_matvecs", 0) == 0
    assert np.linalg.norm(fg(cg.x)[1]) <= 1e-8 and cg.certificate["grad_norm"] <= 1e-8
    # strong convexity: ||x - x*|| <= ||g|| / mu
    assert np.linalg.norm(cg.x - chol.x) <= 2e-8 / mu
    # below hessp_from_n the default factors; dense_solve="cg" forces CG there too
    small = ns.minimize(fg, x0, jac=True, hess=hess, gtol=1e-8,
                        hessian=ha.Exact(hessp_from_n=300))
    assert small.success and small.stats["cholesky"] > 0
    assert small.stats.get("hess_matvecs", 0) == 0
    with pytest.raises(ValueError, match="dense_solve must be one of"):
        ha.Exact(dense_solve="lu")
    with pytest.raises(ValueError, match="dense_forcing must be one of"):
        ha.Exact(dense_forcing="quadratic")


def test_dense_cg_forced_on_indefinite_rosenbrock():
    """dense_solve="cg" on a small indefinite exact Hessian (Rosenbrock, n = 6): truncated
    CG with the eigenvalue shift after a failed first CG step, same minimizer, no
    factorization."""
    from scipy.optimize import rosen, rosen_der, rosen_hess

    x0 = np.array([-1.2, 1.0, -1.2, 1.0, -1.2, 1.0])
    res = ns.minimize(rosen, x0, rosen_der, hess=rosen_hess, gtol=1e-9,
                      hessian=ha.Exact(dense_solve="cg"))
    assert res.success and np.allclose(res.x, 1.0, atol=1e-7)
    assert np.linalg.norm(rosen_der(res.x)) <= 1e-9
    assert res.stats.get("cholesky", 0) == 0 and res.stats["hess_matvecs"] > 0
