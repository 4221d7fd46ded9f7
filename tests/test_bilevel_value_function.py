"""The proximal Lagrangian value function: Danskin gradients, sandwich, cvxpy oracle."""

import cvxpy as cp
import numpy as np
import pytest

from neurosolve.problems import Bilevel, bilevel_gallery
from neurosolve.problems.bilevel import AffineFunction, QuadraticFunction
from neurosolve.problems.value_function import proximal_lagrangian

G1, G2 = 2.0, 0.5


def random_qp(seed=0, n=3, m=4, k=3):
    """Convex QP lower level with coupled linear constraints A y <= b + B x."""
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((m, m))
    Qyy = R @ R.T / m + 0.1 * np.eye(m)
    S = rng.standard_normal((m, n))
    N = n + m
    Q = np.zeros((N, N))
    Q[n:, n:] = Qyy
    Q[n:, :n] = S
    Q[:n, n:] = S.T
    Q[:n, :n] = np.eye(n) * (np.abs(S).sum() + 1)  # keeps Q PSD (irrelevant for v_gamma)
    c = rng.standard_normal(N)
    A = rng.standard_normal((k, m))
    B = rng.standard_normal((k, n))
    b = 1.0 + rng.random(k)
    p = Bilevel(F=lambda x, y: (x * x).sum() + (y * y).sum(), f=QuadraticFunction(Q, c),
                g=AffineFunction(np.hstack([-B, A]), b), x0=np.zeros(n), y0=np.zeros(m))
    return p, dict(Q=Q, c=c, A=A, B=B, b=b, n=n, m=m)


def v_cvxpy(d, x, y, z):
    """v_gamma via its dual-free form: min_theta f + ||theta - y||^2/(2 g1)
    + (||pos(z + g2 g)||^2 - ||z||^2)/(2 g2), solved by cvxpy (independent oracle)."""
    n, Q, c = d["n"], d["Q"], d["c"]
    th = cp.Variable(d["m"])
    Qyy = Q[n:, n:]
    f = 0.5 * cp.quad_form(th, Qyy) + (Q[n:, :n] @ x + c[n:]) @ th + 0.5 * x @ Q[:n, :n] @ x + c[:n] @ x
    gval = d["A"] @ th - d["B"] @ x - d["b"]
    obj = f + cp.sum_squares(th - y) / (2 * G1) + (cp.sum_squares(cp.pos(z + G2 * gval)) - z @ z) / (2 * G2)
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver="CLARABEL")
    return prob.value, th.value


def test_value_matches_cvxpy_on_random_qp(rng):
    p, d = random_qp()
    for _ in range(3):
        x, y, z = rng.standard_normal(3), rng.standard_normal(4), np.abs(rng.standard_normal(3))
        v = proximal_lagrangian(p, x, y, z, G1, G2, tol=1e-12)
        ref, th = v_cvxpy(d, x, y, z)
        assert v.converged
        assert abs(v.value - ref) < 1e-6 * (1 + abs(ref))
        assert np.allclose(v.theta, th, atol=1e-5)


@pytest.mark.parametrize("which", ["toy_a", "qp"])
def test_danskin_gradients_match_finite_differences(which, rng):
    if which == "toy_a":
        p = bilevel_gallery.toy_a(n=3)
        n, m, l = 3, 6, 1
    else:
        p, _ = random_qp(seed=1)
        n, m, l = 3, 4, 3
    h = 1e-5
    for _ in range(1):
        x, y, z = rng.standard_normal(n), rng.standard_normal(m), np.abs(rng.standard_normal(l))
        v = proximal_lagrangian(p, x, y, z, G1, G2, tol=1e-11, maxiter=50000)
        for var, grad in (("x", v.grad_x), ("y", v.grad_y), ("z", v.grad_z)):
            d = rng.standard_normal({"x": n, "y": m, "z": l}[var])
            args_p = {"x": x, "y": y, "z": z}
            args_m = dict(args_p)
            args_p[var] = args_p[var] + h * d
            args_m[var] = args_m[var] - h * d
            vp = proximal_lagrangian(p, args_p["x"], args_p["y"], args_p["z"], G1, G2, tol=1e-11,
                                     maxiter=50000, theta0=v.theta).value
            vm = proximal_lagrangian(p, args_m["x"], args_m["y"], args_m["z"], G1, G2, tol=1e-11,
                                     maxiter=50000, theta0=v.theta).value
            num = (vp - vm) / (2 * h)
            assert abs(num - grad @ d) <= 1e-5 * (1 + abs(num)), (var, num, grad @ d)


def test_sandwich_f_minus_v_nonnegative_on_C(rng):
    for p in (bilevel_gallery.toy_a(n=4), random_qp(seed=2)[0]):
        O = p.oracles()
        for _ in range(3):
            w = p.C.project(3 * rng.standard_normal(p.n + p.m))
            x, y = w[: p.n], w[p.n:]
            z = np.abs(rng.standard_normal(p.n_ineq))
            v = proximal_lagrangian(p, x, y, z, G1, G2)
            assert O.f_value(x, y) - v.value >= -1e-8


@pytest.mark.parametrize("toy", ["a", "b"])
def test_equality_at_lower_level_solution_with_its_multiplier(toy, rng):
    p = bilevel_gallery.toy_a(n=4) if toy == "a" else bilevel_gallery.toy_b(n=4)
    x = rng.standard_normal(4)
    y2 = rng.standard_normal(4)
    y2 += (-2 * x.sum() - 4 - y2.sum()) / 4      # sum(y2) = -2 sum(x) - n: y in S(x)
    y = np.concatenate([x + 1, y2])
    v = proximal_lagrangian(p, x, y, np.ones(1), G1, G2, tol=1e-12)
    assert abs(p.oracles().f_value(x, y) - v.value) < 1e-9
    assert np.allclose(v.theta, y, atol=1e-6) and np.allclose(v.lam, 1.0, atol=1e-6)


def test_unconstrained_case_is_the_moreau_envelope(rng):
    # l = 0: v_gamma(x, y) = min_t f(x, t) + |t - y|^2 / (2 g1); for f = 1/2 |t - x|^2 it is
    # |y - x|^2 / (2 (1 + g1))
    p = Bilevel(F=lambda x, y: (x * x).sum(), f=lambda x, y: 0.5 * ((y - x) ** 2).sum(),
                x0=np.zeros(3), y0=np.zeros(3))
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    v = proximal_lagrangian(p, x, y, None, G1, G2, tol=1e-12)
    assert abs(v.value - ((y - x) ** 2).sum() / (2 * (1 + G1))) < 1e-10
    assert v.lam is None and v.grad_z is None


def test_bad_arguments():
    p = bilevel_gallery.toy_a(n=2)
    with pytest.raises(ValueError, match="gamma1 and gamma2 must be positive"):
        proximal_lagrangian(p, np.zeros(2), np.zeros(4), np.zeros(1), 0.0, 1.0)
    with pytest.raises(ValueError, match="z has shape"):
        proximal_lagrangian(p, np.zeros(2), np.zeros(4), np.zeros(3), 1.0, 1.0)
