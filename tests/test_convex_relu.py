"""Convex two-layer ReLU training: problem, kernels, patterns, ADMM/SCP/cvxpy agreement.

Oracles: cvxpy + Clarabel (the programs themselves), scikit-learn (Lasso, logistic
regression for SCP), scipy (NNLS inside the certificates is ours; the optimum values are
cvxpy's), closed forms (pattern counts of hyperplane arrangements).
"""

import math
import warnings

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.backends import relu_kernels as K
from neurosolve.problems import ConvexReLU
from neurosolve.problems import relu_patterns as RP
from neurosolve.solvers.relu_linsys import CGUStep, CholeskyUStep, UStepSystem, WoodburyUStep

cp = pytest.importorskip("cvxpy")


def _data(n=80, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sign(X[:, 0] * X[:, 1] + 0.3 * X[:, 2] + 0.1 * rng.standard_normal(n))
    return X, y


_CVX_CACHE = {}


def _cvx(prob, key):
    if key not in _CVX_CACHE:
        _CVX_CACHE[key] = ns.solve(prob, ns.solvers.CvxpyReLU())
    return _CVX_CACHE[key]


def _admm(prob, key, **kw):
    key = ("admm", key)
    if key not in _CVX_CACHE:
        _CVX_CACHE[key] = ns.solve(prob, ns.solvers.ADMM(**kw))
    return _CVX_CACHE[key]


# --------------------------------------------------------------------------------------
# kernels against their numpy references
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 3])
def test_numba_kernels_match_numpy(rng, c):
    n, P = 37, 5
    XU = rng.standard_normal((n, 2 * P * c))
    D = (rng.random((n, P)) < 0.5).astype(float)
    E = 2 * D - 1
    np.testing.assert_allclose(K.masked_output(XU, D, c), K.masked_output_ref(XU, D, c),
                               rtol=1e-13, atol=1e-13)
    W = rng.standard_normal((n, 2 * P * c))
    Wn_ref, EabsW_ref, sums_ref = K.cone_update_ref(XU, E, W.copy(), 1.6, c)
    W2 = W.copy()
    EabsW, FU, sums = K.cone_update(XU, E, W2, 1.6, c)
    np.testing.assert_allclose(FU, K.masked_output_ref(XU, D, c), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(W2, Wn_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(EabsW, EabsW_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sums, sums_ref, rtol=1e-12)
    A = rng.standard_normal((6, 2 * P * c))
    A[:, 0] = 0.0
    kappa = 1.7
    np.testing.assert_allclose(K.group_soft_threshold(A, kappa), K.group_soft_threshold_ref(A, kappa),
                               rtol=1e-13, atol=1e-14)
    # the prox of kappa ||.||_2 per column: closed form check on one column
    a = A[:, 1]
    nr = np.linalg.norm(a)
    np.testing.assert_allclose(K.group_soft_threshold(A, kappa)[:, 1], max(0, 1 - kappa / nr) * a)


# --------------------------------------------------------------------------------------
# patterns
# --------------------------------------------------------------------------------------
def test_pattern_sampling_dedup_and_seed():
    X, y = _data(50, 3)
    p1 = ConvexReLU(X, y, 0.1, patterns=30, seed=3)
    p2 = ConvexReLU(X, y, 0.1, patterns=30, seed=3)
    np.testing.assert_array_equal(p1.D, p2.D)
    keys = {p1.D[:, j].tobytes() for j in range(p1.P)}
    assert len(keys) == p1.P == 30  # distinct, exactly P after redraws
    assert p1.D.sum(0).min() > 0  # no all-zero pattern
    np.testing.assert_array_equal(RP.pattern_matrix(p1.Xt, p1.directions), p1.D)
    # duplicates in an explicit matrix are removed
    Dm = np.concatenate([p1.D[:, :4], p1.D[:, :4]], axis=1)
    assert ConvexReLU(X, y, 0.1, patterns=Dm).P == 4


def test_exhaustive_enumeration_counts_cells():
    # n points in general position in R^2 plus bias: the central arrangement in R^3 of n
    # planes has 2 * sum_{k<3} C(n-1, k) cells (Cover/Zaslavsky); one is all-zero (dropped)
    rng = np.random.default_rng(1)
    n = 12
    X = np.c_[rng.standard_normal((n, 2)), np.ones(n)]
    D = RP.enumerate_patterns(X)
    expected = 2 * sum(math.comb(n - 1, k) for k in range(3)) - 1
    assert D.shape[1] == expected
    Dr, _ = RP.dedup_patterns(RP.pattern_matrix(X, rng.standard_normal((3, 20000))))
    enum_keys = {D[:, j].tobytes() for j in range(D.shape[1])}
    assert all(Dr[:, j].tobytes() in enum_keys for j in range(Dr.shape[1]))


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
def test_bad_inputs():
    X, y = _data(20, 3)
    with pytest.raises(ValueError, match="same number of samples"):
        ConvexReLU(X, y[:-1], 0.1)
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        ConvexReLU(Xn, y, 0.1)
    Xi = X.copy()
    Xi[0, 0] = np.inf
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        ConvexReLU(Xi, y, 0.1)
    yn = y.copy()
    yn[3] = np.nan
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        ConvexReLU(X, yn, 0.1)
    for loss in ("logistic", "hinge"):
        with pytest.raises(ValueError, match="needs binary labels"):
            ConvexReLU(X, np.arange(20) % 3, 0.1, loss=loss)
    for beta in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="beta must be a finite number > 0"):
            ConvexReLU(X, y, beta)
    with pytest.raises(ValueError, match="loss must be one of"):
        ConvexReLU(X, y, 0.1, loss="l1")
    with pytest.raises(ValueError, match="pattern matrix must contain only 0 and 1"):
        ConvexReLU(X, y, 0.1, patterns=np.full((20, 3), 0.5))
    with pytest.raises(ValueError, match="epsilon must be"):
        ConvexReLU(X, y, 0.1, epsilon=-0.1)
    with pytest.raises(ValueError, match="needs network"):
        ConvexReLU(X, y, 0.1, patterns="from_network")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="mix array libraries"):
        ConvexReLU(torch.as_tensor(X), y, 0.1)
    # {0, 1} labels are read as {-1, +1}
    p = ConvexReLU(X, (y > 0).astype(int), 0.1, loss="logistic")
    assert set(np.unique(p.Y_np)) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="u_step must be"):
        ns.solvers.ADMM(u_step="lu")
    with pytest.raises(TypeError, match="solves ConvexReLU"):
        ns.solve(ns.problems.LinearSystem(np.eye(2), np.ones(2)), ns.solvers.ADMM())


# --------------------------------------------------------------------------------------
# u-step linear systems
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("robust", [False, True])
def test_ustep_solvers_agree(rng, robust):
    n, d, P, c = 30, 4, 5, 2
    X = rng.standard_normal((n, d))
    D = (rng.random((n, P)) < 0.5).astype(float)
    kw = dict(aF=0.7, rho1=0.3, rho2=2.0)
    if robust:
        kw.update(sc=np.r_[rng.random(d - 1), 0.0], aH=0.4)
    S = UStepSystem(X, D, c, **kw)
    R = rng.standard_normal((d, 2 * P, c))
    U_ch = CholeskyUStep(S).solve(R)
    U_cg = CGUStep(S, rtol=1e-15, maxiter=2000).solve(R)
    # the dense matrix equals the matrix-free operator
    A = CholeskyUStep(S).matrix()
    np.testing.assert_allclose(A @ U_ch.reshape(-1, c), R.reshape(-1, c), atol=1e-10)
    np.testing.assert_allclose(S.matvec(U_ch), R, atol=1e-10)
    np.testing.assert_allclose(U_cg, U_ch, atol=1e-10)
    if not robust:
        np.testing.assert_allclose(WoodburyUStep(S).solve(R), U_ch, atol=1e-10)


def test_admm_trajectories_agree_across_usteps():
    X, y = _data(60, 4)
    prob = ConvexReLU(X, y, beta=0.5, patterns=10, seed=0)
    xs = {}
    for u_step in ("cholesky", "woodbury", "cg"):
        res = ns.solve(prob, ns.solvers.ADMM(maxiter=150, rtol=0.0, u_step=u_step))
        xs[u_step] = res.x
        assert res.stats["u_step"] == u_step
    np.testing.assert_allclose(xs["woodbury"], xs["cholesky"], atol=1e-8)
    np.testing.assert_allclose(xs["cg"], xs["cholesky"], atol=1e-8)


# --------------------------------------------------------------------------------------
# agreement with cvxpy / Clarabel
# --------------------------------------------------------------------------------------
def _active(x, tol=1e-3):
    v, w = np.asarray(x[0]), np.asarray(x[1])
    nv, nw = np.linalg.norm(v, axis=-1), np.linalg.norm(w, axis=-1)
    top = max(nv.max(), nw.max())
    return (nv > tol * top), (nw > tol * top)


def test_admm_matches_clarabel_squared():
    X, y = _data(150, 6)
    prob = ConvexReLU(X, y, beta=2.0, patterns=12, seed=0)
    rc = _cvx(prob, "sq")
    assert rc.status is ns.Status.CONVERGED
    ra = _admm(prob, "sq", rtol=1e-5)
    assert ra.status is ns.Status.CONVERGED, ra.message
    pc, pa = rc.certificate["objective"], ra.certificate["objective"]
    assert abs(pa - pc) / pc <= 1e-4
    assert ra.certificate["relative_cone_violation"] <= 1e-4
    # the duality-gap certificate is tight at the interior-point solution and a valid
    # (positive up to the cone violation) bound at the ADMM one
    assert abs(rc.certificate["relative_gap"]) <= 1e-6
    assert ra.certificate["relative_gap"] >= -1e-4
    av, aw = _active(ra.x)
    cv, cw = _active(rc.x)
    np.testing.assert_array_equal(av, cv)
    np.testing.assert_array_equal(aw, cw)


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_admm_matches_clarabel_classification(loss):
    X, y = _data(100, 5, seed=2)
    prob = ConvexReLU(X, y, beta=1.0, loss=loss, patterns=10, seed=1)
    rc = _cvx(prob, loss)
    ra = ns.solve(prob, ns.solvers.ADMM(rtol=1e-5))
    pc, pa = rc.certificate["objective"], ra.certificate["objective"]
    assert ra.status is ns.Status.CONVERGED, ra.message
    assert abs(pa - pc) / pc <= 1e-3
    assert ra.certificate["relative_cone_violation"] <= 1e-3


def test_rbcd_logistic_close_to_clarabel():
    X, y = _data(100, 5, seed=2)
    prob = ConvexReLU(X, y, beta=1.0, loss="logistic", patterns=10, seed=1)
    rc = _cvx(prob, "logistic")
    ra = ns.solve(prob, ns.solvers.ADMM(u_step="rbcd", rtol=1e-4, maxiter=150))
    pc = rc.certificate["objective"]
    assert abs(ra.certificate["objective"] - pc) / pc <= 5e-3
    assert ra.stats["rbcd_blocks"] > 0


def test_multiclass_one_vs_all_matches_clarabel():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((60, 3))
    labels = np.argmax(X @ rng.standard_normal((3, 3)), axis=1)
    prob = ConvexReLU(X, labels, beta=1.0, loss="squared", patterns=6, one_vs_all=True)
    assert prob.c == 3 and prob.x_shape == (2, prob.P, 4, 3)
    rc = ns.solve(prob, ns.solvers.CvxpyReLU())
    ra = ns.solve(prob, ns.solvers.ADMM(rtol=1e-6))
    pc = rc.certificate["objective"]
    assert abs(ra.certificate["objective"] - pc) / pc <= 1e-4
    net = prob.network(ra)
    assert set(np.unique(net.predict(X))) <= set(labels)
    assert net.task == "multiclass"


# --------------------------------------------------------------------------------------
# certificates and the recovered network
# --------------------------------------------------------------------------------------
def test_recovered_network_reproduces_convex_solution():
    torch = pytest.importorskip("torch")
    X, y = _data(150, 6)
    prob = ConvexReLU(X, y, beta=2.0, patterns=12, seed=0)
    rc = _cvx(prob, "sq")
    net = prob.network(rc)
    conv = prob.convex_output(rc.x)[:, 0]
    np.testing.assert_allclose(net(X), conv, atol=1e-6)
    cert = rc.certificate
    assert abs(cert["nc_objective"] - cert["objective"]) <= 1e-6 * cert["objective"]
    mod = net.to_torch()
    out = mod(torch.as_tensor(X)).detach().numpy()
    np.testing.assert_allclose(out, net(X), atol=1e-12)
    # ADMM: predictions and objective carry over up to the cone violation
    ra = _admm(prob, "sq", rtol=1e-5)
    c2 = ra.certificate
    assert abs(c2["nc_objective"] - c2["objective"]) <= 1e-3 * c2["objective"]


def test_beta_max_prunes_everything():
    X, y = _data(40, 3)
    prob = ConvexReLU(X, y, beta=1.0, patterns=6)
    bmax = prob.beta_max()
    above = ConvexReLU(X, y, beta=1.05 * bmax, patterns=6)
    below = ConvexReLU(X, y, beta=0.8 * bmax, patterns=6)
    r_above = ns.solve(above, ns.solvers.CvxpyReLU())
    r_below = ns.solve(below, ns.solvers.CvxpyReLU())
    assert np.abs(np.asarray(r_above.x)).max() < 1e-6
    assert np.abs(np.asarray(r_below.x)).max() > 1e-3


def test_objective_invariant_to_sample_permutation():
    X, y = _data(60, 3)
    prob = ConvexReLU(X, y, beta=0.5, patterns=8, seed=0)
    perm = np.random.default_rng(0).permutation(60)
    prob_p = ConvexReLU(X[perm], y[perm], beta=0.5, patterns=prob.D[perm])
    r = ns.solve(prob, ns.solvers.CvxpyReLU())
    r_p = ns.solve(prob_p, ns.solvers.CvxpyReLU())
    assert abs(r.certificate["objective"] - r_p.certificate["objective"]) <= 1e-6 * r.certificate["objective"]


@pytest.fixture
def one_torch_thread():
    # torch's intra-op threads spin badly on a loaded 2-core machine; tiny problems
    # run an order of magnitude faster on one thread
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_backends_agree(backend, one_torch_thread):
    X, y = _data(80, 4)
    prob = ConvexReLU(backend.asarray(X), backend.asarray(y), beta=0.5, patterns=8, seed=0)
    res = ns.solve(prob, ns.solvers.ADMM(maxiter=300, rtol=0.0, u_step="cholesky"),
                   backend=backend.name)
    ref = ns.solve(ConvexReLU(X, y, beta=0.5, patterns=8, seed=0),
                   ns.solvers.ADMM(maxiter=300, rtol=0.0, u_step="cholesky"), backend="numpy")
    assert res.stats["backend"] == backend.name
    assert type(res.x) is type(backend.asarray(np.zeros(1)))
    np.testing.assert_allclose(backend.to_numpy(res.x), ref.x, atol=1e-8)
    assert abs(res.certificate["objective"] - ref.certificate["objective"]) <= 1e-8 * ref.certificate["objective"]


def test_solve_protocol_history_callback_progress():
    X, y = _data(60, 3)
    prob = ConvexReLU(X, y, beta=0.5, patterns=6)
    calls = []
    res = ns.solve(prob, ns.solvers.ADMM(maxiter=40, rtol=0.0), callback=lambda it: calls.append(it.k),
                   progress=True)
    assert res.status is ns.Status.MAX_ITER and res.n_iter == 40
    assert len(res.history["objective"]) == res.n_iter + 1 == len(calls)
    assert res.stats["factorizations"] >= 1
    # warm start continues from the state
    res2 = ns.solve(prob, ns.solvers.ADMM(maxiter=20, rtol=0.0), init=res.state)
    assert res2.n_iter == 20
    stop = ns.solve(prob, ns.solvers.ADMM(maxiter=40), callback=lambda it: it.k >= 5)
    assert stop.status is ns.Status.STOPPED and stop.n_iter == 5


# --------------------------------------------------------------------------------------
# SCP
# --------------------------------------------------------------------------------------
def test_scp_matches_sklearn_lasso():
    sk = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 3))
    y = np.abs(X[:, 0]) - 0.5 * X[:, 1] + 0.1 * rng.standard_normal(120)
    beta = 2.0
    prob = ConvexReLU(X, y, beta=beta, patterns=60, seed=0)
    res = ns.solve(prob, ns.solvers.SCP(rtol=1e-10))
    # optimal for its fixed features; CONVERGED only if also certified for the program
    if res.success:
        assert res.certificate["relative_gap"] <= 1e-4
    else:
        assert res.status is ns.Status.STAGNATION and "restriction" in res.message
    H = prob.directions / np.linalg.norm(prob.directions, axis=0)
    Phi = np.maximum(prob.Xt_np @ H, 0)
    las = sk.Lasso(alpha=beta / len(y), fit_intercept=False, tol=1e-12, max_iter=100000).fit(Phi, y)
    a = las.coef_
    obj_sk = 0.5 * np.sum((Phi @ a - y) ** 2) + beta * np.abs(a).sum()
    assert abs(res.certificate["objective"] - obj_sk) <= 1e-7 * obj_sk
    # SCP's answer is feasible for the sampled program: no cone violation, NC = convex
    assert res.certificate["cone_violation"] <= 1e-10
    assert abs(res.certificate["nc_objective"] - res.certificate["objective"]) <= 1e-8 * obj_sk


def test_scp_logistic_matches_sklearn():
    sk = pytest.importorskip("sklearn.linear_model")
    X, y = _data(100, 3, seed=5)
    beta = 1.0
    prob = ConvexReLU(X, y, beta=beta, loss="logistic", patterns=40, seed=0)
    res = ns.solve(prob, ns.solvers.SCP(rtol=1e-9))
    H = prob.directions / np.linalg.norm(prob.directions, axis=0)
    Phi = np.maximum(prob.Xt_np @ H, 0)
    with warnings.catch_warnings():  # sklearn >= 1.8 deprecates penalty= in favour of l1_ratio
        warnings.simplefilter("ignore")
        lr = sk.LogisticRegression(penalty="l1", C=1.0 / beta, fit_intercept=False,
                                   solver="liblinear", tol=1e-10, max_iter=100000).fit(Phi, y)
    a = lr.coef_.ravel()
    obj_sk = np.sum(np.logaddexp(0, -y * (Phi @ a))) + beta * np.abs(a).sum()
    assert res.certificate["objective"] <= obj_sk * (1 + 1e-6)
    assert abs(res.certificate["objective"] - obj_sk) <= 1e-4 * obj_sk
    with pytest.raises(ValueError, match="hinge"):
        ns.solve(ConvexReLU(X, y, beta=1.0, loss="hinge", patterns=5), ns.solvers.SCP())


@pytest.mark.cuda
def test_cuda_matches_cpu():
    torch = pytest.importorskip("torch")
    X, y = _data(200, 5)
    ref = ns.solve(ConvexReLU(X, y, beta=0.5, patterns=8, seed=0),
                   ns.solvers.ADMM(maxiter=200, rtol=0.0, u_step="cholesky"))
    for u_step in ("cholesky", "woodbury", "cg"):
        prob = ConvexReLU(torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda"),
                          beta=0.5, patterns=8, seed=0)
        res = ns.solve(prob, ns.solvers.ADMM(maxiter=200, rtol=0.0, u_step=u_step))
        assert res.x.device.type == "cuda" and res.stats["backend"] == "torch"
        np.testing.assert_allclose(res.x.cpu().numpy(), ref.x, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dual_objective_is_a_lower_bound_at_non_optimal_points(seed):
    """Weak duality, checked where it can fail: at early ADMM iterates and at a scaled-down
    answer, ``dual_objective(x) <= p*`` with p* from Clarabel (through cvxpy)."""
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((80, 4))
    y = np.maximum(X @ rng.standard_normal(4), 0) + 0.1 * rng.standard_normal(80)
    p = ConvexReLU(X, y, 1e-2, patterns=10, seed=seed)
    p_star = ns.solve(p, ns.solvers.CvxpyReLU()).certificate["objective"]
    points = [ns.solve(p, ns.solvers.ADMM(maxiter=it)).x for it in (5, 50, 500)]
    points.append(0.5 * points[-1])
    for x in points:
        c = p.certificate(x)
        assert c["objective"] > p_star + 1e-6          # the point is not optimal
        assert c["dual_objective"] <= p_star + 1e-9    # and the bound still holds
