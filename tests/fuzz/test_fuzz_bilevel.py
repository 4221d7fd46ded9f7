"""Bad inputs for LV-HBA and its constraint sets."""

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import bilevel_gallery as bg
from neurosolve.problems import sets
from neurosolve.solvers import LVHBA


def _foreign():
    r = ns.solve(bg.toy_b(3), LVHBA(maxiter=5))
    return ns.solve(bg.toy_b(3), LVHBA(), init=r.state)


def _empty_polyhedron():
    # X = Y = [0, 1] but g asks x + y >= 3: C = (X x Y) ∩ {g <= 0} has no point
    from neurosolve.problems.bilevel import AffineFunction, Bilevel, QuadraticFunction

    F = f = QuadraticFunction(np.eye(2))
    g = AffineFunction(np.array([[-1.0, -1.0]]), np.array([-3.0]))
    return Bilevel(F, f, g, x0=np.zeros(1), y0=np.zeros(1), X=sets.Box(0, 1, dim=1),
                   Y=sets.Box(0, 1, dim=1))


def _empty_intersection():
    from neurosolve.problems.bilevel import Bilevel, QuadraticFunction

    F = f = QuadraticFunction(np.eye(2))
    C = sets.Intersection(sets.Box(0, 1, dim=2), sets.Box(3, 4, dim=2))
    return Bilevel(F, f, x0=np.zeros(1), y0=np.zeros(1), C=C)


def _solve_quiet(problem):
    with pytest.warns(UserWarning, match="not in C"):
        return ns.solve(problem, LVHBA(maxiter=10_000))


def _toy_b_correct(res):
    x = np.asarray(res.x.x if hasattr(res.x, "x") else res.x[0], dtype=float)
    return np.allclose(x, 1.0, atol=5e-2)


CASES = {
    "alpha-zero": (lambda: LVHBA(alpha=0.0), (ValueError, "alpha must be")),
    "eta-nan": (lambda: LVHBA(eta=float("nan")), (ValueError, "eta must be")),
    "gamma1-negative": (lambda: LVHBA(gamma1=-1.0), (ValueError, "gamma1 must be")),
    "tol-gap-negative": (lambda: LVHBA(tol_gap=-1.0), (ValueError, "tol_gap")),
    "r-zero": (lambda: LVHBA(r=0.0), (ValueError, "r must be")),
    "p-theory": (lambda: LVHBA(p=0.7, theory=True), (ValueError, "outside")),
    "infeasible-start-word": (lambda: LVHBA(infeasible_start="ignore"), (ValueError, "infeasible_start")),
    "divergence-factor": (lambda: LVHBA(divergence_factor=1.0), (ValueError, "divergence_factor")),
    "maxiter-negative": (lambda: LVHBA(maxiter=-1), (ValueError, "maxiter")),
    "nonconvex-C": (lambda: bg.toy_b(3, P=3), (sets.NonConvexSetError, "")),
    "init-foreign-problem": (_foreign, (ValueError, "different problem")),
    "wrong-problem-type": (lambda: ns.solve(ns.problems.LinearSystem(np.eye(2), np.ones(2)), LVHBA()),
                           (TypeError, "LVHBA solves Bilevel")),
    "huge-steps-diverge": (lambda: ns.solve(bg.toy_b(3), LVHBA(alpha=10.0, beta=10.0, eta=10.0,
                                                              maxiter=500)), "fail"),
    "toy-b-converges-correctly": (lambda: ns.solve(bg.toy_b(3), LVHBA(maxiter=3000)), _toy_b_correct),
    "empty-intersection": (lambda: sets.Intersection(sets.Box(0, 1, dim=2), sets.Box(3, 4, dim=2))
                           ._project_numpy(np.zeros(2)), (sets.EmptySetError, "intersection looks empty")),
    "lvhba-empty-polyhedron": (lambda: _solve_quiet(_empty_polyhedron()), "fail"),
    "lvhba-empty-intersection": (lambda: _solve_quiet(_empty_intersection()), "fail"),
    "intersection-dims": (lambda: sets.Intersection(sets.Box(0, 1, dim=2), sets.Box(0, 1, dim=3)),
                          (ValueError, "different dimensions")),
    "intersection-none": (lambda: sets.Intersection(), (ValueError, "at least one set")),
    "box-inverted": (lambda: sets.Box(1.0, 0.0, dim=2), (ValueError, "lower|upper")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_bilevel(name, fuzz_judge):
    thunk, expect = CASES[name]
    fuzz_judge(thunk, expect)


@pytest.mark.parametrize("build", [_empty_polyhedron, _empty_intersection])
def test_empty_feasible_set_is_infeasible_at_once(build):
    res = _solve_quiet(build())
    assert res.status is ns.Status.INFEASIBLE
    assert res.n_iter == 0 and "looks empty" in res.message
