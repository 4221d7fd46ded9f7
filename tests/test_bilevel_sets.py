"""Projection contracts of neurosolve.problems.sets, checked against cvxpy/Clarabel."""

import cvxpy as cp
import numpy as np
import pytest

from neurosolve.problems import sets


def cvx_projection(w, build):
    u = cp.Variable(w.shape[0])
    cp.Problem(cp.Minimize(cp.sum_squares(u - w)), build(u)).solve(solver="CLARABEL")
    return u.value


def test_box_halfspace_affine_ball_closed_forms(rng):
    w = 3 * rng.standard_normal(6)
    B = sets.Box(-1.0, np.linspace(0, 1, 6))
    assert np.allclose(B.project(w), np.clip(w, -1, np.linspace(0, 1, 6)))
    a, b = rng.standard_normal(6), 0.3
    H = sets.HalfSpace(a, b)
    ref = cvx_projection(w, lambda u: [a @ u <= b])
    assert np.allclose(H.project(w), ref, atol=1e-7)
    A, rhs = rng.standard_normal((3, 6)), rng.standard_normal(3)
    Af = sets.Affine(A, rhs)
    p = Af.project(w)
    assert np.allclose(A @ p, rhs, atol=1e-12)
    assert np.allclose(p, cvx_projection(w, lambda u: [A @ u == rhs]), atol=1e-7)
    Bl = sets.Ball(np.ones(6), 0.5)
    assert np.isclose(np.linalg.norm(Bl.project(w) - 1), 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polyhedron_matches_cvxpy_and_is_idempotent(seed):
    rng = np.random.default_rng(seed)
    for k, bounds in ((4, False), (40, False), (70, True)):
        A = rng.standard_normal((k, 8))
        b = np.abs(rng.standard_normal(k)) + 0.1  # 0 is strictly feasible
        lo, hi = (-2.0, 2.0) if bounds else (None, None)
        P = sets.Polyhedron(A, b, lower=lo, upper=hi, dim=8)
        w = 4 * rng.standard_normal(8)
        p = P.project(w)

        def build(u):
            c = [A @ u <= b]
            return c + ([u >= -2, u <= 2] if bounds else [])
        assert np.allclose(p, cvx_projection(w, build), atol=1e-6)
        assert np.max(A @ p - b) <= 1e-9
        assert np.allclose(P.project(p), p, atol=1e-8)


def test_polyhedron_with_equalities_and_reductions(rng):
    A = rng.standard_normal((2, 5))
    E = rng.standard_normal((1, 5))
    P = sets.Polyhedron(A, np.ones(2), E, np.zeros(1))
    w = 3 * rng.standard_normal(5)
    ref = cvx_projection(w, lambda u: [A @ u <= 1, E @ u == 0])
    assert np.allclose(P.project(w), ref, atol=1e-6)
    assert isinstance(sets.Polyhedron(A[:1], np.ones(1))._fast, sets.HalfSpace)
    assert isinstance(sets.Polyhedron(A_eq=E, b_eq=np.zeros(1))._fast, sets.Affine)


def test_dykstra_intersection_is_the_exact_projection(rng):
    a = rng.standard_normal(4)
    S = sets.Intersection(sets.HalfSpace(a, 0.2), sets.Ball(np.zeros(4), 1.0), sets.Box(-0.6, 0.6, dim=4))
    w = 3 * rng.standard_normal(4)
    ref = cvx_projection(w, lambda u: [a @ u <= 0.2, cp.norm(u) <= 1, u >= -0.6, u <= 0.6])
    p = S.project(w)
    # the conic reference is accurate to ~1e-5; ours must be feasible and at least as close
    assert np.allclose(p, ref, atol=1e-4)
    assert a @ p <= 0.2 + 1e-10 and np.linalg.norm(p) <= 1 + 1e-10 and np.all(np.abs(p) <= 0.6 + 1e-12)
    assert np.linalg.norm(p - w) <= np.linalg.norm(ref - w) + 1e-9


def test_product_and_torch_paths(rng):
    import torch

    P = sets.Product(sets.Box(0.0, 1.0, dim=2), sets.HalfSpace(np.ones(3), 0.0))
    w = 2 * rng.standard_normal(5)
    pn = P.project(w)
    pt = P.project(torch.as_tensor(w))
    assert isinstance(pt, torch.Tensor) and np.allclose(pt.numpy(), pn)
    A = rng.standard_normal((2, 5))
    Af = sets.Affine(A, np.zeros(2))
    assert np.allclose(Af.project(torch.as_tensor(w)).numpy(), Af.project(w))


def test_empty_sets_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="Box is empty"):
        sets.Box(1.0, 0.0, dim=2)
    with pytest.raises(ValueError, match="Affine set is empty"):
        sets.Affine(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="normal a is zero"):
        sets.HalfSpace(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="R\\^3"):
        sets.Box(0.0, 1.0, dim=3).project(np.zeros(4))


def test_as_set_refuses_non_projectable_and_nonconvex():
    with pytest.raises(TypeError, match="convex set with a projection"):
        sets.as_set(np.eye(3), 3)
    with pytest.raises(TypeError, match="convex set with a projection"):
        sets.as_set([1, 2, 3], 3)

    class Weird(sets.Custom):
        is_convex = False
    with pytest.raises(sets.NonConvexSetError, match="non-convex"):
        sets.as_set(Weird(lambda w: w, 3), 3)
    assert isinstance(sets.as_set(lambda w: w, 3), sets.Custom)


def test_sublevel_affine_and_nonconvex():
    S = sets.sublevel(lambda w: np.array([w.sum() - 1.0]), 3)
    assert isinstance(S, sets.HalfSpace) and np.isclose(S.b, 1.0)
    with pytest.raises(sets.NonConvexSetError, match="not convex"):
        sets.sublevel(lambda w: np.array([-(w ** 3).sum()]), 3)
    with pytest.raises(sets.NonConvexSetError, match="nonlinear"):
        sets.sublevel(lambda w: np.array([(w ** 2).sum() - 1.0]), 3)


def test_nnls_kernel_matches_scipy(rng):
    from scipy.optimize import nnls

    from neurosolve.backends.lvhba_kernels import nnls_gram

    for _ in range(5):
        A = rng.standard_normal((6, 9))
        r = rng.standard_normal(6)
        K = A @ A.T
        L = np.linalg.cholesky(K)
        ref, _ = nnls(L.T, np.linalg.solve(L, r))
        assert np.allclose(nnls_gram(K, r, 1e-14, 300), ref, atol=1e-9)
