"""Convex ReLU training: robust (adversarial) programs, global optimality, SGD/Adam peers.

Oracles: cvxpy + Clarabel (the robust program), a torch PGD attack with restarts (the
certified worst-case loss must bound what it finds), Adam on the non-convex objective
(never below the convex optimum with the same patterns), exhaustive pattern enumeration.
"""

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import ConvexReLU

cp = pytest.importorskip("cvxpy")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _disk(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 2))
    y = np.sign(X[:, 0] ** 2 + X[:, 1] ** 2 - 0.5)
    return X, y


@pytest.mark.parametrize("loss,norm", [("hinge", "inf"), ("logistic", 2), ("squared", "inf")])
def test_pgd_never_beats_certified_worst_case(loss, norm):
    from neurosolve.neural.pgd import pgd_attack
    from neurosolve.problems import relu_losses as RL

    X, y = _disk()
    eps = 0.03
    prob = ConvexReLU(X, y, beta=0.05, loss=loss, patterns=20, seed=0, epsilon=eps,
                      attack_norm=norm)
    res = ns.solve(prob, ns.solvers.CvxpyReLU())
    assert res.status is ns.Status.CONVERGED
    net = prob.network(res)
    v, w = prob._vw(res.x)
    z = prob.convex_output(res.x)[:, 0]
    bn = prob._bnorm(v, w)[:, 0]
    # certified per-sample worst-case loss (closed form)
    cert = np.array([float(RL.robust_loss_value(loss, z[k:k + 1], y[k:k + 1], bn[k:k + 1], eps))
                     for k in range(len(y))])
    yt = torch.as_tensor(y)

    def per_sample(out, yy):
        if loss == "hinge":
            return torch.clamp(1 - yy * out, min=0)
        if loss == "logistic":
            return torch.nn.functional.softplus(-yy * out)
        return 0.5 * (out - yy) ** 2

    _, worst = pgd_attack(net.to_torch(), X, yt, eps, norm=norm, loss=per_sample,
                          restarts=10, steps=40, seed=1)
    assert (worst.numpy() - cert).max() <= 1e-6
    # accuracies: certified <= PGD-robust <= clean
    if loss != "squared":
        clean = float(np.mean(y * net(X) > 1e-9))
        _, worst_margin = pgd_attack(net.to_torch(), X, yt, eps, norm=norm, restarts=10, steps=40)
        robust = float(np.mean(-worst_margin.numpy() > 1e-9))
        certified = prob.certified_accuracy(res.x, tol=1e-9)
        assert certified <= robust + 1e-12 <= clean + 2e-12
        assert certified > 0.5


@pytest.mark.parametrize("q", [1, 2])
def test_robust_kernels_match_numpy_and_cvxpy(q):
    from neurosolve.backends import relu_kernels as K
    from neurosolve.problems import relu_losses as RL

    rng = np.random.default_rng(q)
    S0, R0 = rng.standard_normal((9, 5)), rng.standard_normal((4, 5))
    R0[-1] = 0.0
    S, R = K.robust_cone_project(S0, R0, 0.2, q)
    S_ref, R_ref = RL.project_robust_cone(S0, R0, 0.2, q, iters=60)
    np.testing.assert_allclose(S, S_ref, atol=1e-12)
    np.testing.assert_allclose(R, R_ref, atol=1e-12)
    for g in range(2):  # the projection itself, by cvxpy
        s, r = cp.Variable(9), cp.Variable(4)
        cp.Problem(cp.Minimize(cp.sum_squares(s - S0[:, g]) + cp.sum_squares(r - R0[:, g])),
                   [s >= 0.2 * cp.norm(r, q)]).solve()
        np.testing.assert_allclose(S[:, g], s.value, atol=1e-5)
        np.testing.assert_allclose(R[:, g], r.value, atol=1e-5)
    for code, loss in enumerate(["squared", "logistic", "hinge"]):
        z0, B0 = 2 * rng.standard_normal(7), rng.standard_normal((7, 3))
        y = np.sign(rng.standard_normal(7))
        z, B = K.robust_loss_prox(code, z0, B0, y, 0.3, q, 0.7, 1.3)
        z_ref, B_ref = RL.prox_robust_loss(loss, z0, B0, y, 0.3, q, 0.7, 1.3, iters=60)
        np.testing.assert_allclose(z, z_ref, atol=1e-12)
        np.testing.assert_allclose(B, B_ref, atol=1e-12)
        # optimality of the prox for one sample, by cvxpy
        zz, bb = cp.Variable(), cp.Variable(3)
        nb = cp.norm(bb, q)
        if loss == "squared":
            t = cp.Variable()
            f, cons = 0.5 * 0.7 * cp.square(t), [t >= cp.abs(zz - y[0]) + 0.3 * nb]
        elif loss == "logistic":
            f, cons = 0.7 * cp.logistic(-y[0] * zz + 0.3 * nb), []
        else:
            f, cons = 0.7 * cp.pos(1 - y[0] * zz + 0.3 * nb), []
        cp.Problem(cp.Minimize(f + 0.65 * (cp.square(zz - z0[0]) + cp.sum_squares(bb - B0[0]))),
                   cons).solve()
        np.testing.assert_allclose(z[0], zz.value, atol=1e-4)
        np.testing.assert_allclose(B[0], bb.value, atol=1e-4)


def test_robust_cones_exclude_bias_and_epsilon_zero_is_plain():
    X, y = _disk(40)
    plain = ConvexReLU(X, y, beta=0.1, loss="hinge", patterns=8, seed=0)
    tiny = ConvexReLU(X, y, beta=0.1, loss="hinge", patterns=8, seed=0, epsilon=1e-9)
    np.testing.assert_array_equal(tiny.sc_np[-1], 0.0)  # the bias is never perturbed
    p0 = ns.solve(plain, ns.solvers.CvxpyReLU()).certificate["objective"]
    p1 = ns.solve(tiny, ns.solvers.CvxpyReLU()).certificate["objective"]
    assert abs(p0 - p1) <= 1e-5 * p0


def test_robust_admm_close_to_clarabel():
    X, y = _disk(40)
    prob = ConvexReLU(X, y, beta=0.5, loss="squared", patterns=8, seed=0, epsilon=0.03)
    rc = ns.solve(prob, ns.solvers.CvxpyReLU())
    ra = ns.solve(prob, ns.solvers.ADMM(rtol=1e-5, maxiter=1000))
    pc = rc.certificate["objective"]
    assert abs(ra.certificate["objective"] - pc) / pc <= 2e-3
    assert ra.certificate["relative_cone_violation"] <= 1e-3


def test_epsilon_too_large_is_reported_infeasible():
    X, y = _disk(30)
    base = ConvexReLU(X, y, beta=0.1, loss="hinge", patterns=10, seed=0)
    D = base.D_np[:, base.D_np.min(0) < 1]  # no all-ones pattern (a robust bias-only neuron)
    prob = ConvexReLU(X, y, beta=0.1, loss="hinge", patterns=D, epsilon=5.0)
    rc = ns.solve(prob, ns.solvers.CvxpyReLU())
    assert rc.status is ns.Status.INFEASIBLE
    assert "epsilon" in rc.message
    ra = ns.solve(prob, ns.solvers.ADMM(maxiter=3000))
    assert ra.status is ns.Status.INFEASIBLE
    assert "Reduce epsilon" in ra.message


# --------------------------------------------------------------------------------------
# global optimality
# --------------------------------------------------------------------------------------
def test_adam_never_beats_convex_optimum_with_its_patterns():
    from neurosolve.neural.relu_network import train_nonconvex

    X, y = _disk(50, seed=3)
    base = ConvexReLU(X, y, beta=0.2, loss="squared", patterns=4)
    for seed in range(2):
        net = train_nonconvex(base, width=8, epochs=300, lr=0.02, seed=seed)
        nc = base.nc_objective(net)
        prob = ConvexReLU(X, y, beta=0.2, loss="squared", patterns="from_network", network=net)
        pc = ns.solve(prob, ns.solvers.CvxpyReLU()).certificate["objective"]
        assert pc <= nc + 1e-6 * nc
        # the same network given as a torch module yields the same patterns
        prob_t = ConvexReLU(X, y, beta=0.2, patterns="from_network", network=net.to_torch())
        np.testing.assert_array_equal(prob_t.D_np, prob.D_np)


def test_exact_program_is_global_optimum_small_d():
    from neurosolve.neural.relu_network import train_nonconvex

    rng = np.random.default_rng(7)
    X = rng.standard_normal((14, 1))
    y = np.sin(2 * X[:, 0])
    prob = ConvexReLU(X, y, beta=0.05, patterns="all")
    res = ns.solve(prob, ns.solvers.CvxpyReLU())
    p_star = res.certificate["objective"]
    net_cvx = prob.network(res)
    chk = prob.optimality_check(net_cvx, patterns="all")
    assert chk["exact"] and chk["ratio"] <= 1 + 1e-4
    assert abs(chk["gap"]) <= 1e-5 * p_star
    for seed in range(3):
        net = train_nonconvex(prob, width=12, epochs=600, lr=0.02, seed=seed)
        nc = prob.nc_objective(net)
        assert nc >= p_star - 1e-6 * p_star
        # the check certifies the bound p* >= lower_bound from any network
        assert prob.optimality_check(net, patterns="all")["lower_bound"] <= p_star + 1e-8


def test_network_io_and_prediction():
    X, y = _disk(40)
    prob = ConvexReLU(X, (y > 0).astype(int), beta=0.1, loss="logistic", patterns=8)
    res = ns.solve(prob, ns.solvers.CvxpyReLU())
    net = prob.network(res)
    assert set(np.unique(net.predict(X))) <= {-1.0, 1.0}
    W, b = net.raw_first_layer()
    manual = np.maximum(X @ W.T + b, 0) @ net.alpha[:, 0]
    np.testing.assert_allclose(manual, net(X), atol=1e-10)
    mod = net.to_torch(dtype=torch.float32)
    np.testing.assert_allclose(mod(torch.as_tensor(X, dtype=torch.float32)).detach().numpy(),
                               net(X), rtol=1e-4, atol=1e-4)
