"""solve(ConvexReLU, adjoint="implicit"): gradients of the convex ReLU solution, its optimal
value and the fitted network's outputs with respect to the data, patterns held fixed.

Oracles: torch.autograd.gradcheck (finite differences of whole solves), central finite
differences of the optimal value, and the envelope theorem's closed form for the squared
loss (d p*/d y = -w (z* - y)).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import neurosolve as ns  # noqa: E402
from neurosolve.adjoint import ImplicitDiffError  # noqa: E402
from neurosolve.problems import ConvexReLU  # noqa: E402

ADMM = ns.solvers.ADMM


def _data(n=16, d=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, torch.sin(X[:, 0]) + X[:, 0] * X[:, 1]


def _locked(X, y, P=5, **kw):
    """The pattern matrix of a sampled program, to hold fixed while the data move."""
    return ConvexReLU(X.detach(), y.detach(), beta=0.3, patterns=P, seed=0, **kw).D_np


def _solve_x(X, y, D, loss="squared", rtol=1e-7):
    prob = ConvexReLU(X, y, beta=0.3, patterns=D, loss=loss)
    return ns.solve(prob, ADMM(rtol=rtol), adjoint="implicit").x


def test_gradcheck_solution_wrt_X_and_y():
    X, y = _data()
    D = _locked(X, y)
    Xr, yr = X.clone().requires_grad_(), y.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _solve_x(a, b, D), (Xr, yr), eps=1e-6,
                                    atol=1e-5, fast_mode=True)


def test_gradcheck_two_outputs():
    X, _ = _data(seed=1)
    Y = torch.stack([torch.sin(X[:, 0]), X[:, 0] * X[:, 1]], 1)
    D = _locked(X, Y[:, 0])
    Xr, Yr = X.clone().requires_grad_(), Y.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _solve_x(a, b, D), (Xr, Yr), eps=1e-6,
                                    atol=1e-5, fast_mode=True)


def test_gradcheck_logistic_wrt_X():
    X, _ = _data(seed=1)
    labels = torch.sign(X[:, 0] * X[:, 1])
    D = _locked(X, labels, loss="logistic")
    Xr = X.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: _solve_x(a, labels, D, "logistic", 1e-4), (Xr,),
                                    eps=1e-6, atol=1e-5, fast_mode=True)


def test_optimal_value_gradient_matches_envelope_and_finite_differences():
    X, y = _data(n=30, d=3, seed=0)
    Xr, yr = X.clone().requires_grad_(), y.clone().requires_grad_()
    prob = ConvexReLU(Xr, yr, beta=0.5, patterns=6, seed=0)
    res = ns.solve(prob, ADMM(rtol=1e-6), adjoint="implicit")
    assert res.success
    value = prob.value(res.x)
    assert value.detach().item() == pytest.approx(res.certificate["objective"], rel=1e-12)
    value.backward()
    # envelope theorem: only the loss depends on y directly
    z = prob.outputs(res.x).detach()
    np.testing.assert_allclose(yr.grad.numpy(), -(z - y).numpy(), rtol=1e-7, atol=1e-9)
    # finite differences of the optimal value in X, through fresh solves on fixed patterns
    D = prob.D_np

    def p_star(Xa):
        p = ConvexReLU(Xa, y, beta=0.5, patterns=D)
        r = ns.solve(p, ADMM(rtol=1e-6), adjoint="implicit")  # polished to a KKT root
        return p.value(r.x).detach().item()

    e = 1e-5
    for (i, j) in [(0, 0), (7, 2), (19, 1)]:
        dX = torch.zeros_like(X)
        dX[i, j] = e
        fd = (p_star(X + dX) - p_star(X - dX)) / (2 * e)
        assert Xr.grad[i, j].item() == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_polish_reports_and_keeps_a_certified_answer():
    X, y = _data(n=30, d=3, seed=0)
    prob = ConvexReLU(X.clone().requires_grad_(), y, beta=0.5, patterns=6, seed=0)
    plain = ns.solve(prob, ADMM(rtol=1e-6))
    res = ns.solve(prob, ADMM(rtol=1e-6), adjoint="implicit")
    pol = res.stats["adjoint"]["polish"]
    assert pol["kkt_residual"] < 1e-12 and pol["objective_after"] <= pol["objective_before"]
    assert res.certificate["objective"] <= plain.certificate["objective"] + 1e-12
    assert res.certificate["cone_violation"] < 1e-12
    assert res.certificate["relative_gap"] <= plain.certificate["relative_gap"] + 1e-12
    np.testing.assert_allclose(res.x.detach().numpy(), plain.x.numpy(), atol=1e-4)


def test_network_outputs_on_new_data_are_differentiable_and_match_the_network():
    X, y = _data(n=30, d=3, seed=0)
    Xr = X.clone().requires_grad_()
    prob = ConvexReLU(Xr, y, beta=0.5, patterns=6, seed=0)
    res = ns.solve(prob, ADMM(rtol=1e-6), adjoint="implicit")
    Xnew = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = prob.outputs(res.x, Xnew)
    net = prob.network(res.x.detach().numpy())
    np.testing.assert_allclose(out.detach().numpy(), np.ravel(net(Xnew.numpy())), rtol=1e-10,
                               atol=1e-12)
    (gX,) = torch.autograd.grad(out.sum(), Xr)
    assert torch.isfinite(gX).all() and float(gX.abs().max()) > 0
    # and on the training data the D-form equals the ReLU network where constraints hold
    np.testing.assert_allclose(prob.outputs(res.x).detach().numpy(), np.ravel(net(X.numpy())),
                               atol=1e-9)


def test_refusals():
    X, y = _data()
    Xr = X.clone().requires_grad_()
    with pytest.raises(TypeError, match="torch"):
        ns.solve(ConvexReLU(X.numpy(), y.numpy(), beta=0.3, patterns=4), adjoint="implicit")
    labels = torch.sign(X[:, 0])
    with pytest.raises(NotImplementedError, match="hinge"):
        ns.solve(ConvexReLU(Xr, labels, beta=0.3, patterns=4, loss="hinge"), adjoint="implicit")
    with pytest.raises(NotImplementedError, match="epsilon"):
        ns.solve(ConvexReLU(Xr, y, beta=0.3, patterns=4, epsilon=0.01), adjoint="implicit")
    with pytest.raises(ValueError, match="labels"):
        ns.solve(ConvexReLU(Xr, labels.clone().requires_grad_(), beta=0.3, patterns=4,
                            loss="logistic"), adjoint="implicit")
    big = ConvexReLU(Xr, y, beta=1.0, patterns=4, seed=0)
    huge = ConvexReLU(Xr, y, beta=2.0 * big.beta_max(), patterns=4, seed=0)
    with pytest.raises(ImplicitDiffError, match="zero"):
        ns.solve(huge, adjoint="implicit")


def test_backward_after_max_iter_raises():
    X, y = _data()
    prob = ConvexReLU(X.clone().requires_grad_(), y, beta=0.3, patterns=5, seed=0)
    try:
        res = ns.solve(prob, ADMM(rtol=1e-12, maxiter=3), adjoint="implicit")
    except ImplicitDiffError as exc:  # refused at polish time: fine, says the status
        assert "MAX_ITER" in str(exc)
        return
    assert res.status is ns.Status.MAX_ITER
    with pytest.raises(ImplicitDiffError, match="MAX_ITER"):
        prob.value(res.x).backward()
