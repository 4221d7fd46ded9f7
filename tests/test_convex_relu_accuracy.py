"""ADMM's CONVERGED against Clarabel's optimum of the same program (a solver nobody here
wrote): whenever ADMM says CONVERGED at rtol, its returned point is cone feasible and its
objective lies within rtol (relative) of Clarabel's; tightening rtol never worsens it.

The default run holds a fast subset; ``pytest -m slow`` runs the seeded grid of 30
instances (n 100-5,000, d 2-50, P 8-64; squared, logistic, hinge; with and without bias).
"""

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.problems import ConvexReLU

pytest.importorskip("cvxpy")
from neurosolve.solvers import ADMM, CvxpyReLU  # noqa: E402


def _instance(n, d, P, loss, bias, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    t = np.sin(3 * X[:, 0]) + (X[:, 1] * X[:, -1] if d > 1 else 0.0) \
        + 0.1 * rng.standard_normal(n)
    y = t if loss == "squared" else np.sign(t)
    return ConvexReLU(X, y, beta=1e-3 * n, loss=loss, patterns=P, bias=bias, seed=seed)


def _judge(prob, res, p_star, rtol):
    c = res.certificate
    assert c["relative_cone_violation"] <= rtol + 1e-9
    err = (c["objective"] - p_star) / max(1.0, abs(p_star))
    # feasible, so never (meaningfully) below the optimum; certified, so within rtol
    assert err >= -1e-6, err
    assert err <= rtol + 1e-7, err
    # the certified gap bounds the true suboptimality
    assert c["relative_gap"] >= err - 1e-7
    return err


FAST = [(100, 2, 8, "squared", True, 1), (100, 2, 8, "squared", False, 2),
        (120, 3, 8, "logistic", True, 3), (120, 3, 8, "hinge", False, 4)]


@pytest.mark.parametrize("n,d,P,loss,bias,seed", FAST)
def test_converged_is_within_rtol_of_clarabel(n, d, P, loss, bias, seed):
    prob = _instance(n, d, P, loss, bias, seed)
    p_star = ns.solve(prob, CvxpyReLU()).certificate["objective"]
    res = ns.solve(prob, ADMM(rtol=1e-4, maxiter=40_000))
    if loss == "squared":
        assert res.status is ns.Status.CONVERGED, res.message
    if res.status is ns.Status.CONVERGED:
        _judge(prob, res, p_star, 1e-4)
    else:  # an honest failure says how far it is
        assert res.message and np.isfinite(res.certificate["relative_gap"])


def test_tighter_rtol_never_worse():
    prob = _instance(100, 2, 8, "squared", True, 1)
    objs = {}
    for rtol in (1e-2, 1e-3, 1e-5):
        res = ns.solve(prob, ADMM(rtol=rtol, maxiter=60_000))
        assert res.status is ns.Status.CONVERGED, (rtol, res.message)
        objs[rtol] = res.certificate["objective"]
    scale = abs(objs[1e-5])
    assert objs[1e-5] <= objs[1e-3] + 1e-5 * scale
    assert objs[1e-3] <= objs[1e-2] + 1e-3 * scale


def _grid():
    out, seed = [], 100
    shapes = [(100, 2, 8), (300, 5, 16), (1000, 10, 16), (2000, 20, 32), (5000, 50, 64)]
    for loss in ("squared", "logistic", "hinge"):
        for n, d, P in shapes:
            for bias in (True, False):
                seed += 1
                out.append((n, d, P, loss, bias, seed))
    return out


_CLARABEL = {}


@pytest.mark.slow
@pytest.mark.parametrize("n,d,P,loss,bias,seed", _grid())
@pytest.mark.parametrize("rtol", [1e-4, 1e-6])
def test_grid_converged_is_within_rtol_of_clarabel(n, d, P, loss, bias, seed, rtol):
    prob = _instance(n, d, P, loss, bias, seed)
    key = (n, d, P, loss, bias, seed)
    if key not in _CLARABEL:  # both rtols judge against one reference solve
        rc = ns.solve(prob, CvxpyReLU())
        if not rc.success:
            # Clarabel's Ruiz equilibration breaks down on some exponential-cone
            # (logistic) programs that it solves without it
            rc = ns.solve(prob, CvxpyReLU(solver="CLARABEL",
                                          solver_options={"equilibrate_enable": False}))
        _CLARABEL[key] = rc
    rc = _CLARABEL[key]
    if not rc.success:
        pytest.skip(f"Clarabel itself did not certify this instance: {rc.message}")
    res = ns.solve(prob, ADMM(rtol=rtol, maxiter=100_000))
    if res.status is ns.Status.CONVERGED:
        _judge(prob, res, rc.certificate["objective"], rtol)
    else:
        assert res.status in (ns.Status.MAX_ITER, ns.Status.STAGNATION), res.status


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_a_witness_cannot_certify_a_false_bound(loss):
    # any (lam, mu) -- random, wrong sign, huge -- is verified by the certificate: its dual
    # bound never exceeds Clarabel's optimum, so no witness can make a wrong answer pass
    prob = _instance(80, 3, 8, loss, True, 11)
    p_star = ns.solve(prob, CvxpyReLU()).certificate["objective"]
    rng = np.random.default_rng(0)
    for scale in (1e-2, 1.0, 1e3):
        lam = scale * rng.standard_normal((prob.n, prob.c))
        mu = scale * rng.standard_normal((prob.n, 2 * prob.P * prob.c))
        assert prob.witness_bound(lam, mu) <= p_star + 1e-7 * abs(p_star)
    # ADMM's own witness at its answer is tight (a polished answer has none: the loss
    # gradient at the polished point is its dual point, computed by the certificate)
    res = ns.solve(prob, ADMM(rtol=1e-4, maxiter=40_000))
    if res.success:
        if res.stats["polished"]:
            assert ADMM(rtol=1e-4).witness(prob, res.state, None) == {}
            bound = prob.dual_bound(res.x)[0]
        else:
            w = ADMM(rtol=1e-4).witness(prob, res.state, None)["dual"]
            bound = prob.witness_bound(*w)
        assert bound <= p_star + 1e-7 * abs(p_star)
        assert (p_star - bound) / max(1.0, abs(p_star)) <= 1e-4 + 1e-7


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_clarabel_answers_carry_a_tight_certified_gap(loss):
    # cvxpy's dual point is the witness: the hinge gap was 0.83-0.88 with the gradient dual
    prob = _instance(120, 3, 8, loss, False, 4)
    res = ns.solve(prob, CvxpyReLU())
    assert res.status is ns.Status.CONVERGED
    assert -1e-9 <= res.certificate["relative_gap"] <= 1e-4
    assert res.certificate["dual_objective"] <= res.certificate["objective"] + 1e-9
