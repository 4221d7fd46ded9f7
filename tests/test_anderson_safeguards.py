"""Safeguarded Anderson acceleration: never more iterations than the damped iteration.

On every fixed-point test problem (``cases_fixed_point.PROBLEMS``) and on the free and
nudged phases of the EP demo network, ``FixedPoint(method="anderson")`` must converge
wherever the damped iteration (same damping, same tolerance) converges, in at most as many
iterations (one iteration = one evaluation of F, rejected candidates included). The ghost
problems show that the safeguards are what makes this true: plain Anderson stalls there.
"""

import cmath
import math
import pathlib
import sys

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.core import Status
from neurosolve.solvers.fixed_point import FixedPoint

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from cases_fixed_point import PROBLEMS, ghost

TOL = dict(rtol=1e-10, atol=1e-12, maxiter=5000)
PLAIN = dict(safeguard=False, restart=math.inf, max_condition=math.inf)


def _pair(prob, **tol):
    tol = {**TOL, **tol}
    rd = ns.solve(prob, FixedPoint(method="damped", damping=0.5, **tol))
    ra = ns.solve(prob, FixedPoint(method="anderson", damping=0.5, **tol))
    return rd, ra


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_anderson_never_slower_than_damped_on_test_problems(name):
    prob = PROBLEMS[name]()
    rd, ra = _pair(prob)
    assert rd.status is Status.CONVERGED, rd.message
    assert ra.status is Status.CONVERGED, ra.message
    assert ra.n_iter <= rd.n_iter, (ra.n_iter, rd.n_iter)
    assert ra.stats["F_evals"] == ra.n_iter + 1
    xa, xd = (np.asarray(r.x.numpy() if hasattr(r.x, "numpy") else r.x) for r in (ra, rd))
    assert np.allclose(xa, xd, rtol=1e-6, atol=1e-8)   # the same fixed point
    for key in ("anderson_fallbacks", "anderson_restarts", "anderson_stalls"):
        assert isinstance(ra.stats[key], int) and ra.stats[key] >= 0


def test_plain_anderson_stalls_at_the_ghost_and_the_progress_test_fixes_it():
    prob = ghost(1e-3, 1)
    kw = dict(rtol=1e-10, atol=1e-12, maxiter=600)
    rd = ns.solve(prob, FixedPoint(method="damped", **kw))
    assert rd.success and abs(rd.x[0] - 3.0) < 1e-8
    plain = ns.solve(prob, FixedPoint(method="anderson", **PLAIN, **kw))
    assert plain.status is Status.MAX_ITER
    assert abs(plain.x[0] - 1.0) < 0.2          # stuck near the ghost
    fallback_only = ns.solve(prob, FixedPoint(method="anderson", stall_window=0, **kw))
    assert fallback_only.status is Status.MAX_ITER
    ra = ns.solve(prob, FixedPoint(method="anderson", **kw))
    assert ra.success and abs(ra.x[0] - 3.0) < 1e-8
    assert ra.n_iter <= rd.n_iter
    assert ra.stats["anderson_stalls"] >= 1


def test_restarts_alone_diverge_on_the_5d_ghost():
    prob = ghost(1e-3, 5)
    r = ns.solve(prob, FixedPoint(method="anderson", safeguard=False, rtol=1e-10, atol=1e-12,
                                  maxiter=2000))
    assert not r.success
    plain = ns.solve(prob, FixedPoint(method="anderson", **PLAIN, rtol=1e-10, atol=1e-12,
                                      maxiter=2000))
    assert not plain.success
    rd, ra = _pair(prob)
    assert rd.success and ra.success and ra.n_iter <= rd.n_iter


def test_nonfinite_candidate_is_rejected_not_returned():
    # the 5-d ghost map made undefined (NaN) outside |z| <= 4: the damped iteration never
    # goes there, Anderson's extrapolations do
    g = ghost(1e-2, 5)
    hits = {"n": 0}

    def F(z):
        if np.abs(z).max() > 4:
            hits["n"] += 1
            return g.F(z) * np.nan
        return g.F(z)

    prob = ns.problems.FixedPointProblem(F, np.zeros(5))
    rd = ns.solve(prob, FixedPoint(method="damped", **TOL))
    assert rd.success and hits["n"] == 0
    ra = ns.solve(prob, FixedPoint(method="anderson", **TOL))
    assert ra.success and ra.n_iter <= rd.n_iter
    assert hits["n"] >= 1 and ra.stats["anderson_fallbacks"] >= hits["n"]
    assert np.all(np.isfinite(ra.history["residual"]))
    unguarded = ns.solve(prob, FixedPoint(method="anderson", safeguard=False, **TOL))
    assert unguarded.status is Status.NONFINITE


def test_anderson_warm_start_resumes():
    prob = ghost(1e-3, 5)
    r1 = ns.solve(prob, FixedPoint(method="anderson", maxiter=20))
    assert r1.status is Status.MAX_ITER
    r2 = ns.solve(prob, FixedPoint(method="anderson", atol=1e-12), init=r1.state)
    assert r2.success
    assert r2.stats["anderson_fallbacks"] <= r2.n_iter


def test_new_arguments_are_validated():
    for bad in (dict(safeguard_ratio=0.5), dict(max_condition=0.0), dict(stall_window=-1),
                dict(backoff=0), dict(stall_factor=0.0), dict(stall_factor=1.5),
                dict(restart=float("nan"))):
        with pytest.raises(ValueError):
            FixedPoint(method="anderson", **bad)


# -- the EP demo network ---------------------------------------------------------------
def _demo_net(library="numpy"):
    """The demo's 64-64-64-10 network (angle 90, recurrent scale 0.6, seed 0), untrained."""
    from neurosolve.demos.ep import NET
    from neurosolve.neural.ep import load_digits_split, mlp

    net = mlp([64, 64, 64, 10], angle=90.0, seed=0, **NET)
    _, _, Xte, yte = load_digits_split()
    if library == "torch":
        import torch

        net = net.to("torch")
        Xte, yte = torch.as_tensor(Xte), torch.as_tensor(yte)
    return net, Xte, yte


def _phases(net, X, y, solver):
    from neurosolve.neural.ep import free_phase, nudged_phase

    fp = free_phase(net, X, y, solver=solver)
    out = {"free": fp.report}
    for beta in (0.1, -0.1, 0.1 * cmath.exp(0.5j * math.pi)):  # real and complex nudges
        _, rep = nudged_phase(net, fp, beta, solver=solver)
        out[f"{beta:.3g}"] = rep
    return out


def _check_phases(net, X, y, tol, damped_must_converge=True):
    """Anderson converges on every phase, in no more iterations than the damped iteration
    wherever that converges (with ``damped_must_converge`` the damped one must converge
    on every phase too)."""
    rd = _phases(net, X, y, FixedPoint(method="damped", damping=0.5, **tol))
    ra = _phases(net, X, y, FixedPoint(method="anderson", damping=0.5, **tol))
    assert rd["free"].status is Status.CONVERGED, rd["free"].message
    for k in rd:
        if damped_must_converge:
            assert rd[k].status is Status.CONVERGED, (k, rd[k].message)
        assert ra[k].status is Status.CONVERGED, (k, ra[k].message)
        if rd[k].status is Status.CONVERGED:
            assert ra[k].n_iter <= rd[k].n_iter, (k, ra[k].n_iter, rd[k].n_iter)
    return rd, ra


def test_ep_demo_network_phases_numpy():
    net, X, y = _demo_net()
    _check_phases(net, X[:120], y[:120], dict(rtol=1e-8, atol=1e-10, maxiter=5000))


def test_ep_demo_network_free_phase_torch():
    pytest.importorskip("torch")
    from neurosolve.neural.ep import free_phase

    net, X, y = _demo_net("torch")
    tol = dict(rtol=1e-8, atol=1e-10, maxiter=5000)
    rd = free_phase(net, X[:20], y[:20], solver=FixedPoint(method="damped", **tol)).report
    ra = free_phase(net, X[:20], y[:20], solver=FixedPoint(method="anderson", **tol)).report
    assert rd.status is Status.CONVERGED and ra.status is Status.CONVERGED
    assert ra.n_iter <= rd.n_iter


#: The demo's recipe before the cosine decay, the 0.8 gain target and the skip of
#: unconverged batches: it trains the networks near the stability edge on which plain
#: Anderson stalls (docs/ep_homeostasis.md, "Safeguarded Anderson").
EDGE_RECIPE = dict(lr_schedule="constant", contraction_target=0.9, skip_unconverged=False)


def _trained(config, seed=0):
    """A demo network trained as ``python -m neurosolve.demos.ep`` trains it (10 epochs, all
    data), with ``config`` overriding the recipe."""
    from threadpoolctl import threadpool_limits

    from neurosolve.demos.ep import _run_one
    from neurosolve.neural.ep import load_digits_split

    data = load_digits_split()
    with threadpool_limits(1):
        res, _ = _run_one(config, hidden=64, epochs=10, seed=seed, data=data, progress=False)
    return res.net, data[2], data[3]


@pytest.mark.slow
def test_ep_edge_trained_network_phases():
    """EP angle 90 + homeostasis, seed 0, 10 epochs of ``EDGE_RECIPE``: plain Anderson (and
    restarts alone) end MAX_ITER on its free phase at residual ~1e-2, the damped iteration
    converges (about 580 iterations)."""
    from neurosolve.neural.ep import free_phase

    net, X, y = _trained(dict(method="ep_exact", angle=90.0, homeostasis=10.0, **EDGE_RECIPE))
    tol = dict(rtol=1e-8, atol=1e-10, maxiter=5000)
    for unguarded in (PLAIN, dict(safeguard=False)):
        rep = free_phase(net, X, y, solver=FixedPoint(method="anderson", **unguarded,
                                                      **{**tol, "maxiter": 1500})).report
        assert rep.status is Status.MAX_ITER and rep.residual > 1e-4
    _check_phases(net, X, y, tol)


@pytest.mark.slow
def test_ep_edge_trained_without_homeostasis_phases():
    """EP angle 90 without homeostasis, seed 0, 10 epochs of ``EDGE_RECIPE`` (damped: about
    1200 iterations on the free phase)."""
    net, X, y = _trained(dict(method="ep_exact", angle=90.0, **EDGE_RECIPE))
    _check_phases(net, X, y, dict(rtol=1e-8, atol=1e-10, maxiter=5000))


@pytest.mark.slow
@pytest.mark.parametrize("homeostasis", [0.0, 10.0])
def test_ep_demo_trained_network_phases(homeostasis):
    """The demo's networks (EP angle 90 with and without homeostasis, seed 0, the current
    recipe). Without homeostasis the damped iteration ends MAX_ITER on the complex nudge
    (5000 iterations, residual 1e-7) where Anderson converges (about 90)."""
    net, X, y = _trained(dict(method="ep_exact", angle=90.0, homeostasis=homeostasis))
    _check_phases(net, X, y, dict(rtol=1e-8, atol=1e-10, maxiter=5000),
                  damped_must_converge=False)
