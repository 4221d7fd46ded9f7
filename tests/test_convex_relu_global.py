"""Pattern generation and the global optimality check of convex ReLU training.

Oracles: Clarabel (through cvxpy) on the program over every activation pattern
(``patterns="all"``, enumerated exactly for small d), and weak duality.
"""

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import ConvexReLU
from neurosolve.problems import relu_patterns as RP

pytest.importorskip("cvxpy")
from neurosolve.solvers import CvxpyReLU, PatternGeneration  # noqa: E402


def _data(n, d, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(n)
    return X, y


@pytest.fixture(scope="module")
def full_optimum():
    X, y = _data(30, 2)
    full = ConvexReLU(X, y, beta=0.05, patterns="all")
    res = ns.solve(full, CvxpyReLU())
    assert res.success
    return X, y, full, res


def test_generation_reaches_the_all_pattern_optimum_with_an_exact_certificate(full_optimum):
    X, y, full, rf = full_optimum
    prob = ConvexReLU(X, y, beta=0.05, patterns="generate")
    P0 = prob.P
    res = ns.solve(prob, PatternGeneration(inner=CvxpyReLU(), violation_tol=1e-6))
    assert res.status is ns.Status.CONVERGED
    p_all = rf.certificate["objective"]
    assert abs(res.certificate["objective"] - p_all) <= 1e-6 * abs(p_all)
    assert res.certificate["global"] == "exact"
    # far fewer patterns than the whole arrangement, more than the start
    assert P0 < prob.P < full.P
    assert res.stats["rounds"] >= 2 and res.stats["patterns"] == prob.P
    # the global gap is a valid bound and small at the optimum
    assert -1e-9 <= res.certificate["global_gap"] <= 1e-5


def test_generation_from_given_patterns(full_optimum):
    """Started from an ordinary sampled program, or from the patterns of a trained network
    (what a user seeds the search with), generation still reaches the all-pattern optimum
    and certifies it."""
    from neurosolve.neural.relu_network import train_nonconvex

    X, y, full, rf = full_optimum
    p_all = rf.certificate["objective"]
    sampled = ConvexReLU(X, y, beta=0.05, patterns=4, seed=0)
    net = train_nonconvex(sampled, width=6, epochs=300, seed=3)
    seeded = ConvexReLU(X, y, beta=0.05, patterns="from_network", network=net)
    for prob in (sampled, seeded):
        res = ns.solve(prob, PatternGeneration(inner=CvxpyReLU(), violation_tol=1e-6))
        assert res.status is ns.Status.CONVERGED, res.message
        assert res.certificate["global"] == "exact"
        assert abs(res.certificate["objective"] - p_all) <= 1e-6 * abs(p_all)


def test_generation_with_a_loose_inner_solver_tightens_it(full_optimum):
    """A loose inner rtol leaves points whose loss gradient does not certify the program's
    own patterns; the certificate refutes the claim and the rounds re-solve with a tighter
    inner rtol until it certifies (before: STAGNATION 3.8e-4 above the optimum)."""
    from neurosolve.solvers import ADMM

    X, y, full, rf = full_optimum
    p_all = rf.certificate["objective"]
    prob = ConvexReLU(X, y, beta=0.05, patterns="generate")
    # without polishing (which would make every inner answer exact, so nothing to tighten)
    res = ns.solve(prob, PatternGeneration(inner=ADMM(rtol=1e-2, maxiter=50_000, polish=False),
                                           violation_tol=1e-2))
    assert res.status is ns.Status.CONVERGED, res.message
    assert res.certificate["global"] == "exact"
    assert res.stats["inner_tightenings"] >= 1
    assert abs(res.certificate["objective"] - p_all) <= 1e-5 * abs(p_all)
    # a warm start with another inner solver does not inherit the tightened tolerance
    # (CvxpyReLU has no rtol to scale) nor the old inner state
    assert res.state.inner_scale < 1.0
    again = ns.solve(prob, PatternGeneration(inner=CvxpyReLU(), violation_tol=1e-2),
                     init=res.state)
    assert again.status is ns.Status.CONVERGED, again.message
    assert again.state.inner_scale == 1.0
    assert abs(again.certificate["objective"] - p_all) <= 1e-6 * abs(p_all)
    # the certificate's label uses the solver's threshold: CONVERGED and "exact" agree
    # (inner rtol 1e-3: CONVERGED with global "sampled" before, the label used 1e-3)
    prob = ConvexReLU(X, y, beta=0.05, patterns="generate")
    res = ns.solve(prob, PatternGeneration(inner=ADMM(rtol=1e-3, maxiter=50_000),
                                           violation_tol=1e-2))
    assert res.status is ns.Status.CONVERGED, res.message
    assert res.certificate["global"] == "exact"
    assert res.certificate["global_ratio"] <= 1.01


def test_global_check_finds_violators_of_a_sampled_optimum(full_optimum):
    X, y, full, rf = full_optimum
    sampled = ConvexReLU(X, y, beta=0.05, patterns=4, seed=0)
    rs = ns.solve(sampled, CvxpyReLU())
    p_all = rf.certificate["objective"]
    assert rs.certificate["objective"] > p_all * (1 + 1e-3)   # the restriction is worse
    g = sampled.global_check(rs.x, search="exact")
    assert g["ratio"] > 1.01 and g["violators"].shape[1] > 0
    # weak duality of the global lower bound, at this non-optimal point
    assert g["lower_bound"] <= p_all + 1e-7 * abs(p_all)
    # violators are patterns of the data, new to the program
    keys = set(RP._keys(sampled.D_np))
    assert not any(k in keys for k in RP._keys(g["violators"]))
    # at the all-pattern optimum no pattern violates
    g_all = full.global_check(rf.x, search="exact")
    assert g_all["ratio"] <= 1 + 1e-5 and g_all["violators"].shape[1] == 0


def test_ascent_finds_a_violator_where_exact_enumeration_does(full_optimum):
    X, y, full, rf = full_optimum
    sampled = ConvexReLU(X, y, beta=0.05, patterns=4, seed=0)
    rs = ns.solve(sampled, CvxpyReLU())
    g = sampled.global_check(rs.x, search="ascent", starts=64)
    exact = sampled.global_check(rs.x, search="exact")
    assert g["violators"].shape[1] > 0
    # the ascent's best value is a value of a real pattern: never above the exact maximum
    assert g["ratio"] <= exact["ratio"] * (1 + 1e-9)


def test_sampled_programs_say_so():
    X, y = _data(30, 2)
    prob = ConvexReLU(X, y, beta=0.05, patterns=8)
    assert ns.solve(prob, CvxpyReLU()).certificate["global"] == "sampled"
    assert type(ns.solvers.default_solver(prob)).__name__ == "ADMM"
    gen = ConvexReLU(X, y, beta=0.05, patterns="generate")
    assert type(ns.solvers.default_solver(gen)).__name__ == "PatternGeneration"


def test_generation_bad_arguments():
    X, y = _data(30, 2)
    with pytest.raises(ValueError, match="epsilon = 0"):
        ConvexReLU(X, y, beta=0.05, patterns="generate", epsilon=0.1)
    with pytest.raises(ValueError, match="max_rounds"):
        PatternGeneration(max_rounds=0)
    with pytest.raises(ValueError, match="search"):
        PatternGeneration(search="random")
    with pytest.raises(TypeError, match="inner"):
        PatternGeneration(inner="admm")
    with pytest.raises(TypeError, match="ConvexReLU"):
        ns.solve(ns.problems.LinearSystem(np.eye(2), np.ones(2)), PatternGeneration())
    prob = ConvexReLU(X, y, beta=0.05, patterns=8)
    with pytest.raises(ValueError, match="0/1 matrix"):
        prob.with_patterns(np.full((30, 2), 0.5))
