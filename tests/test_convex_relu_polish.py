"""Solution polishing of the convex ReLU program, and the NNLS its certificates rest on.

Oracles: Clarabel's optimum of the same program (through cvxpy) and scipy's bounded-variable
least squares.
"""

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import ConvexReLU
from neurosolve.problems.convex_relu import verified_nnls
from neurosolve.solvers import ADMM
from neurosolve.solvers.relu_polish import polish

# the cone projection on which scipy 1.17.1's nnls reported residual 0 for a solution whose
# residual is 0.30 (the minimum is 0.033): block 25 of the benchmark instance n=1000, d=20,
# P=16 (benchmarks/bench_convex_relu.py::instance), at a polished point
_U25 = [0.0023850972979299694, 0.013367856546370589, -0.00032705393154074423,
        0.006844035887530582, 0.005803601520706104, 0.001216572944531224, 0.007361569588402516,
        0.0005675120860849009, -0.00202140070821844, 0.008619397239302516,
        -0.0016416251860746007, 0.012319298674842086, 0.015663377173215334,
        -0.004926263887762284, -0.012842622074248931, -0.004770267812949799,
        0.007649602533270373, 0.0032237064775742694, -0.0004315571426423368,
        0.0028252387895599407]


def _bench_block():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 20)) / np.sqrt(20)
    rng.standard_normal(1000)  # the labels' noise draw of the benchmark instance
    G = rng.standard_normal((20, 16))
    D = (X @ G >= 0).astype(float)
    _, idx = np.unique(D, axis=1, return_index=True)
    D = D[:, idx]
    return (X * (2.0 * D[:, 25 % 16:25 % 16 + 1] - 1.0)).T


def test_verified_nnls_reports_the_residual_of_its_answer():
    from scipy.optimize import lsq_linear

    A, b = _bench_block(), np.asarray(_U25)
    x, r = verified_nnls(A, b, maxiter=50 * 1000)
    assert x.min() >= 0
    assert r == pytest.approx(np.linalg.norm(A @ x - b), abs=1e-14)
    best = np.linalg.norm(A @ lsq_linear(A, b, bounds=(0, np.inf), method="bvls").x - b)
    assert best - 1e-12 <= r <= best + 1e-9  # the minimum, not a misreported 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verified_nnls_matches_bvls_on_random_problems(seed):
    from scipy.optimize import lsq_linear

    rng = np.random.default_rng(seed)
    A, b = rng.standard_normal((6, 40)), rng.standard_normal(6)
    x, r = verified_nnls(A, b)
    ref = lsq_linear(A, b, bounds=(0, np.inf), method="bvls").x
    assert r == pytest.approx(np.linalg.norm(A @ ref - b), rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_verified_nnls_on_wide_matrices_is_the_full_minimum(seed):
    """Wide matrices go through the working set; its answer must be the minimum over all
    columns (scipy's NNLS on the whole matrix as the oracle), on random matrices and on
    pattern-cone blocks ``(2 D_i - I) X`` like those of the certificate."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(seed)
    m, N = (20, 1000) if seed % 2 else (8, 300)
    X = rng.standard_normal((N, m))
    E = np.where(X @ rng.standard_normal(m) >= 0, 1.0, -1.0)
    for A in (rng.standard_normal((m, N)), (X * E[:, None]).T):
        for b in (rng.standard_normal(m), -A[:, :3].sum(1) + 0.1 * rng.standard_normal(m)):
            x, r = verified_nnls(A, b)
            assert x.min() >= 0 and np.count_nonzero(x) <= m + 1
            assert r == pytest.approx(np.linalg.norm(A @ x - b), abs=1e-13)
            ref = np.linalg.norm(A @ nnls(A, b, maxiter=50 * N)[0] - b)
            assert r <= ref + 1e-10 * np.linalg.norm(b)
            # a support guess: this answer's own, a nearby problem's, a wrong one
            near = verified_nnls(A, b + 0.05 * rng.standard_normal(m))[0]
            for start in (np.flatnonzero(x), np.flatnonzero(near),
                          rng.choice(N, size=m, replace=False), []):
                xh, rh = verified_nnls(A, b, start=start)
                assert xh.min() >= 0
                assert rh == pytest.approx(np.linalg.norm(A @ xh - b), abs=1e-13)
                assert rh <= ref + 1e-10 * np.linalg.norm(b)


def test_verified_nnls_with_the_right_support_needs_no_nnls(monkeypatch):
    """Given the support of the answer, the working set checks it and stops: no NNLS runs."""
    import neurosolve.problems.convex_relu as C

    rng = np.random.default_rng(4)
    A, b = rng.standard_normal((10, 500)), rng.standard_normal(10)
    x, r = verified_nnls(A, b)
    calls = []
    real = C._checked_nnls
    monkeypatch.setattr(C, "_checked_nnls", lambda *a: calls.append(1) or real(*a))
    xh, rh = verified_nnls(A, b, start=np.flatnonzero(x))
    assert not calls and rh == pytest.approx(r, rel=1e-10, abs=1e-13)
    verified_nnls(A, b, start=[0, 1])  # a wrong guess falls back to the working set
    assert calls


def _program(loss, n=150, d=4, P=10, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    t = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(n)
    y = t if loss == "squared" else np.sign(t)
    return ConvexReLU(X, y, beta=2e-3 * n, loss=loss, patterns=P, bias=True, seed=seed)


@pytest.fixture(scope="module")
def clarabel():
    pytest.importorskip("cvxpy")
    cache = {}

    def optimum(loss):
        if loss not in cache:
            prob = _program(loss)
            res = ns.solve(prob, ns.solvers.CvxpyReLU())
            cache[loss] = (prob, res.certificate["objective"])
        return cache[loss]

    return optimum


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_polish_from_a_loose_admm_point_reaches_clarabels_optimum(clarabel, loss):
    prob, p_star = clarabel(loss)
    loose = ns.solve(prob, ADMM(rtol=1e-3, polish=False, maxiter=40_000))
    err_loose = (prob.objective(loose.x) - p_star) / abs(p_star)
    W = np.asarray(loose.state.W).reshape(prob.n, 2, prob.P, prob.c)
    mult = -loose.state.sys.rho2 * np.minimum(W, 0.0)
    xp = None
    for _ in range(6):  # a few more ADMM iterations until the active set is identified
        xp = polish(prob, np.asarray(loose.x), mult)
        # (a hinge guess can end at a KKT point of the kept blocks only: ADMM, like
        # this loop, keeps a candidate only when the certificate confirms it)
        if xp is not None and prob.certificate(prob.project_feasible(xp))["relative_gap"] <= 1e-8:
            break
        # (a tighter rtol: at 1e-3 the resumed state would stop at once)
        loose = ns.solve(prob, ADMM(rtol=1e-9, polish=False, maxiter=2000), init=loose.state)
        W = np.asarray(loose.state.W).reshape(prob.n, 2, prob.P, prob.c)
        mult = -loose.state.sys.rho2 * np.minimum(W, 0.0)
    assert xp is not None
    xf = prob.project_feasible(xp)
    cert = prob.certificate(xf)
    err = (cert["objective"] - p_star) / abs(p_star)
    assert cert["relative_cone_violation"] <= 1e-12
    # feasible, so not below the optimum by more than Clarabel's own inaccuracy (its
    # default tolerances are about 1e-8); certified, so within 1e-8 of it
    assert -1e-7 <= err <= 1e-8, (err, err_loose)
    assert cert["relative_gap"] <= 1e-8


@pytest.mark.parametrize("loss", ["squared", "hinge"])
def test_polish_of_clarabels_point_is_a_fixed_point(clarabel, loss):
    prob, p_star = clarabel(loss)
    x = np.asarray(ns.solve(prob, ns.solvers.CvxpyReLU()).x)
    xp = polish(prob, x)
    assert xp is not None
    assert -1e-7 <= (prob.objective(xp) - p_star) / abs(p_star) <= 1e-8
    assert prob.cone_violation(xp)[1] <= 1e-12


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_admm_with_polish_is_certified_and_exact(clarabel, loss):
    prob, p_star = clarabel(loss)
    # (early, frequent attempts: allowed to fail more often than the hinge default of 4)
    res = ns.solve(prob, ADMM(rtol=1e-6, maxiter=60_000, polish_every=100, polish_tries=50))
    assert res.status is ns.Status.CONVERGED, res.message
    assert res.stats["polished"] is True
    c = res.certificate
    assert c["relative_gap"] <= 1e-6 and c["relative_cone_violation"] <= 1e-6
    assert abs(c["objective"] - p_star) / abs(p_star) <= 1e-7


def test_a_wrong_polished_point_is_not_accepted(clarabel, monkeypatch):
    """CONVERGED rests on the certificate, not on the polish: a polish that proposes a
    feasible but poor point (half the answer) is discarded and ADMM finishes the job."""
    import neurosolve.solvers.relu_polish as RPm

    prob, p_star = clarabel("squared")
    calls = []

    def bad_polish(problem, x, multipliers=None, **kw):
        calls.append(1)
        return 0.5 * np.asarray(x)

    monkeypatch.setattr(RPm, "polish", bad_polish)
    res = ns.solve(prob, ADMM(rtol=1e-3, maxiter=60_000, polish_every=50))
    assert calls, "the polish was never tried"
    assert res.status is ns.Status.CONVERGED
    assert res.stats["polished"] is False
    err = (res.certificate["objective"] - p_star) / abs(p_star)
    assert -1e-7 <= err <= 1e-3 + 1e-7


def test_hinge_certificate_resolves_the_kink(clarabel):
    # at Clarabel's hinge answer the loss subgradient (s = 1 below the margin 1, 0 above)
    # bounds nothing useful; the kink multipliers chosen by least squares make the
    # certificate's own dual point tight, and it still never exceeds the optimum
    prob, p_star = clarabel("hinge")
    x = np.asarray(ns.solve(prob, ns.solvers.CvxpyReLU()).x)
    z = prob.convex_output(x)
    lam = prob._hinge_kink_multipliers(x, z)
    assert lam is not None
    s = -prob.Y_np * lam / prob.w
    assert s.min() >= -1e-12 and s.max() <= 1 + 1e-12
    assert np.any((s > 1e-3) & (s < 1 - 1e-3))  # fractional at the kink
    bound = prob.dual_bound(x)[0]
    assert bound <= p_star + 1e-7 * abs(p_star)
    assert (p_star - bound) / abs(p_star) <= 1e-5
    # at a point with no margin at 1 (a tiny scaled copy) the plain subgradient is used
    assert prob._hinge_kink_multipliers(0.5 * x, prob.convex_output(0.5 * x)) is None


def test_hinge_subgradient_alone_is_loose_at_the_optimum(clarabel, monkeypatch):
    prob, p_star = clarabel("hinge")
    x = np.asarray(ns.solve(prob, ns.solvers.CvxpyReLU()).x)
    monkeypatch.setattr(prob, "_hinge_kink_multipliers", lambda *a, **k: None)
    assert (p_star - prob.dual_bound(x)[0]) / abs(p_star) > 0.1


def test_polish_rejects_what_it_cannot_do():
    prob = _program("squared")
    robust = ConvexReLU(prob.Xt_np[:, :-1], prob.Y_np[:, 0], beta=0.3, patterns=6,
                        epsilon=0.01)
    with pytest.raises(ValueError, match="epsilon"):
        polish(robust, np.zeros(robust.x_shape))
    with pytest.raises(ValueError, match="polish_every"):
        ADMM(polish_every=0)
    with pytest.raises(ValueError, match="polish_tries"):
        ADMM(polish_tries=-1)
    assert not np.any(polish(prob, np.zeros(prob.x_shape)))  # no block to keep
    # a restricted problem with more free coordinates than max_dim is not attempted
    x = np.asarray(ns.solve(prob, ADMM(rtol=1e-3, polish=False)).x)
    assert polish(prob, x) is not None
    assert polish(prob, x, max_dim=1) is None


def test_polishing_stops_after_polish_tries_failures(monkeypatch):
    import neurosolve.solvers.relu_polish as RPm

    prob = _program("squared")
    calls = []
    monkeypatch.setattr(RPm, "polish", lambda *a, **k: calls.append(1))  # always fails
    res = ns.solve(prob, ADMM(rtol=1e-12, maxiter=3000, polish_every=100, polish_tries=2))
    assert len(calls) == 2 and res.stats["polish_attempts"] == 2


def test_dual_bound_with_fewer_samples_than_features():
    """The first cone projection guesses its support from the rows where x's block is zero;
    with n < d there are fewer rows than the guess size. The bound must still be valid:
    below the objective of any point, here at a nonzero x and at a second call (warm)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 6)), rng.standard_normal(3)
    prob = ConvexReLU(X, y, beta=0.1, patterns=4, bias=False, standardize=False, seed=1)
    x = prob.project_feasible(0.1 * rng.standard_normal(prob.x_shape))  # feasible: f(x) >= p*
    for _ in range(2):
        dual, t = prob.dual_bound(x)
        assert np.isfinite(dual) and 0 <= t <= 1
        assert dual <= prob.objective(x) + 1e-12
