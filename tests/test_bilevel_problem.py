"""Bilevel problem: validation, automatic C, certificates, gallery oracles."""

import numpy as np
import pytest

from neurosolve.problems import Bilevel, bilevel_gallery, sets
from neurosolve.problems.bilevel import AffineFunction, BilevelSolution, KronIdentity, QuadraticFunction


def quad_problem(**kw):
    return Bilevel(F=lambda x, y: 0.5 * ((x - 1) ** 2).sum() + 0.5 * ((y - 1) ** 2).sum(),
                   f=lambda x, y: 0.5 * ((y - x) ** 2).sum(),
                   g=lambda x, y: y - 0.5, x0=np.zeros(2), y0=np.zeros(2), **kw)


# -- bad inputs ----------------------------------------------------------------------------
def test_shape_mismatch_between_functions_and_start():
    with pytest.raises(ValueError, match=r"F\(x0, y0\) raised.*shape \(3,\)"):
        Bilevel(F=lambda x, y: (x @ np.ones(4)) + y.sum(), f=lambda x, y: (y * y).sum(),
                x0=np.zeros(3), y0=np.zeros(2))
    with pytest.raises(ValueError, match="must return a scalar"):
        Bilevel(F=lambda x, y: x + 0.0, f=lambda x, y: (y * y).sum(), x0=np.zeros(3), y0=np.zeros(2))
    with pytest.raises(ValueError, match="grad_f returned a y-gradient of shape"):
        Bilevel(F=lambda x, y: (x * x).sum(), f=lambda x, y: (y * y).sum(),
                grad_f=lambda x, y: (np.zeros(3), np.zeros(5)), x0=np.zeros(3), y0=np.zeros(2))
    with pytest.raises(ValueError, match="must return a 1-D vector"):
        Bilevel(F=lambda x, y: (x * x).sum(), f=lambda x, y: (y * y).sum(),
                g=lambda x, y: np.zeros((2, 2)), x0=np.zeros(3), y0=np.zeros(2))
    with pytest.raises(ValueError, match="n \\+ m = 3 \\+ 2 = 5"):
        Bilevel(F=QuadraticFunction(np.eye(4)), f=lambda x, y: (y * y).sum(), x0=np.zeros(3), y0=np.zeros(2))
    with pytest.raises(ValueError, match="x0 must be 1-D"):
        Bilevel(F=lambda x, y: 0.0, f=lambda x, y: 0.0, x0=np.zeros((2, 2)), y0=np.zeros(2))
    with pytest.raises(TypeError, match="mix array libraries"):
        import torch

        Bilevel(F=lambda x, y: 0.0, f=lambda x, y: 0.0, x0=np.zeros(2), y0=torch.zeros(2))


def test_not_differentiable_without_gradient():
    with pytest.raises(TypeError, match="could not be differentiated by torch autograd.*grad_F"):
        Bilevel(F=lambda x, y: float(np.sum(np.sin(x))), f=lambda x, y: (y * y).sum(),
                x0=np.zeros(2), y0=np.zeros(2))


def test_C_must_be_projectable_convex_and_enforce_g():
    with pytest.raises(TypeError, match="convex set with a projection"):
        quad_problem(C=np.eye(4))
    with pytest.raises(ValueError, match="C does not enforce g"):
        quad_problem(C=sets.Reals(4))
    with pytest.raises(sets.NonConvexSetError, match="not convex"):
        bilevel_gallery.toy_b(n=5, P=3)
    # convex but nonlinear g without C: asks for C
    with pytest.raises(ValueError, match="C is required.*nonlinear"):
        Bilevel(F=lambda x, y: (x * x).sum(), f=lambda x, y: (y * y).sum(),
                g=lambda x, y: ((x * x).sum() + (y * y).sum() - 1.0).reshape(1),
                x0=np.zeros(2), y0=np.zeros(2))


def test_C_is_built_from_affine_constraints():
    p1 = Bilevel(F=lambda x, y: (x * x).sum(), f=lambda x, y: ((y - x) ** 2).sum(),
                 g=lambda x, y: (y - 0.5 * x - 0.5), x0=np.zeros(1), y0=np.zeros(1))
    assert isinstance(p1.C, sets.HalfSpace)           # one affine row: closed form
    assert np.allclose(p1.C.a, [-0.5, 1.0]) and np.isclose(p1.C.b, 0.5)
    p = quad_problem()
    assert isinstance(p.C, sets.Polyhedron)           # two rows
    p2 = Bilevel(F=lambda x, y: (x * x).sum(), f=lambda x, y: (y * y).sum(),
                 g=AffineFunction(np.array([[1.0, 1.0, 1.0]]), np.array([1.0])),
                 x0=np.zeros(1), y0=np.zeros(2), Y=sets.Box(-1.0, 1.0, dim=2))
    assert isinstance(p2.C, sets.Polyhedron)
    w = p2.C.project(np.array([3.0, 3.0, 3.0]))
    assert w.sum() <= 1 + 1e-9 and np.all(w[1:] <= 1 + 1e-12)


# -- certificates ------------------------------------------------------------------------------
@pytest.mark.parametrize("toy", ["a", "b"])
def test_certificate_at_known_solution(toy):
    p = bilevel_gallery.toy_a(n=4) if toy == "a" else bilevel_gallery.toy_b(n=4)
    xs, ys = p.meta["x_star"], p.meta["y_star"]
    cert = p.certificate((xs, ys))
    assert abs(cert["ll_gap"]) < 1e-7
    assert cert["constraint_violation"] < 1e-12
    assert abs(cert["upper_objective"] - p.meta["F_star"]) < 1e-12
    # moving y off the lower-level solution set produces a positive gap
    cert2 = p.certificate((xs, ys + 0.1 * np.r_[np.ones(4), -np.ones(4)]))
    assert cert2["ll_gap"] > 1e-3


def test_certificate_stationarity_keys():
    p = bilevel_gallery.toy_b(n=3)
    sol = BilevelSolution(p.meta["x_star"], p.meta["y_star"], np.ones(1), np.ones(1),
                          p.meta["y_star"], 1.0, 1.0, 1e6, 10.0)
    cert = p.certificate(sol)
    assert abs(cert["vgamma_gap"]) < 1e-7
    assert cert["stationarity"] < 1e-5  # grad F(x*, y*) = 0 and f - v_gamma is flat there


def test_kron_identity_matches_dense(rng):
    M = rng.standard_normal((3, 3))
    K = KronIdentity(M + M.T, 5)
    v = rng.standard_normal(15)
    assert np.allclose(K.matvec(v), K.toarray() @ v)
    assert np.allclose(K.tosparse() @ v, K.toarray() @ v)
    with pytest.raises(ValueError, match="symmetric"):
        QuadraticFunction(KronIdentity(M + 3 * np.triu(np.ones((3, 3)), 1), 2))


def test_array_form_equals_callable_form(rng):
    pa = bilevel_gallery.toy_b(n=5)
    pc = bilevel_gallery.toy_b(n=5, array_form=False)
    x, y = rng.standard_normal(5), rng.standard_normal(10)
    lam = np.array([0.7])
    for name in ("F_grad", "f_grad"):
        a = getattr(pa.oracles(), name)(x, y)
        c = getattr(pc.oracles(), name)(x, y)
        for u, v in zip(a, c):
            assert np.allclose(u, v, atol=1e-12)
    for u, v in zip(pa.oracles().cons_vjp(x, y, lam), pc.oracles().cons_vjp(x, y, lam)):
        assert np.allclose(u, v, atol=1e-12)


def fd_check(fun, grad, x, y, h=1e-6, rtol=1e-5):
    gx, gy = grad(x, y)
    for v, g, which in ((x, gx, 0), (y, gy, 1)):
        for _ in range(3):
            d = np.random.default_rng(len(v)).standard_normal(v.shape)
            if which == 0:
                num = (fun(x + h * d, y) - fun(x - h * d, y)) / (2 * h)
            else:
                num = (fun(x, y + h * d) - fun(x, y - h * d)) / (2 * h)
            assert abs(num - g @ d) <= rtol * (1 + abs(num)), (which, num, g @ d)


@pytest.mark.parametrize("maker", ["svm", "coupled", "softmax", "toy_d"])
def test_gallery_gradients_by_finite_differences(maker, rng):
    if maker == "svm":
        p = bilevel_gallery.svm_hyperparameter(n_train=40, n_val=30)
    elif maker == "coupled":
        p = bilevel_gallery.coupled_svm(n_train=40, n_val=30)
    elif maker == "softmax":
        p = bilevel_gallery.hyper_cleaning("digits", formulation="softmax", n_train=60, n_val=30)
    else:
        p = bilevel_gallery.toy_d(n=10, n_eq=8, n_ul=4)
    x = p.x0 + 0.3 * rng.standard_normal(p.n)
    y = p.y0 + 0.3 * rng.standard_normal(p.m)
    fd_check(p.F, p.grad_F, x, y)
    if p.grad_f is not None:
        fd_check(p.f, p.grad_f, x, y)


def test_hyper_cleaning_data_and_lower_solver():
    p = bilevel_gallery.hyper_cleaning("breast_cancer", corruption=0.4, n_train=60, n_val=40, seed=3)
    D = p.meta["data"]
    assert 0.25 < D["flipped"].mean() < 0.55
    assert np.all(D["l_train"][D["flipped"]] == -D["l_train_clean"][D["flipped"]])
    y, v = p.lower_level_value(p.x0)
    assert np.isclose(v, p.f(p.x0, y))
    assert np.max(p.oracles().cons(p.x0, y)) < 1e-6
    with pytest.raises(ValueError, match="formulation"):
        bilevel_gallery.hyper_cleaning(formulation="nope")
    with pytest.raises(ValueError, match="unknown dataset"):
        bilevel_gallery.load_dataset("mnist")
