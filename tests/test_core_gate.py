"""Core v2: Stop, the certificate gate, setup/resume and warm-start fingerprints.

These tests use toy solvers written here, so they exercise :func:`neurosolve.solve`
itself and would fail if the gate, the fingerprint check or the setup/resume order
were missing, whatever the families do.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import neurosolve as ns
from neurosolve.core import Solver, State, Status, Stop, fingerprint


class Scalar:
    """Find x with x = target; the certificate is |x - target|."""

    def __init__(self, target=1.0):
        self.target = float(target)

    def certificate(self, x):
        return {"error": abs(float(x) - self.target)}

    def fingerprint(self):
        return (self.target,)


@dataclass(eq=False)
class ToyState(State):
    estimate: float = 1.0
    exact: bool = False   # set by a repair: the estimate is the true error from now on


@dataclass(frozen=True, kw_only=True)
class Liar(Solver):
    """Halves the error each step but claims convergence from a biased estimate."""

    tol: float = 1e-6
    bias: float = 1e-3          # the internal estimate is error * bias
    repair: bool = False        # on_uncertified: continue (True) or stop (default)

    metrics: ClassVar[tuple[str, ...]] = ("estimate",)
    problem_types: ClassVar[tuple[type, ...]] = (Scalar,)

    def setup(self, problem, ctx):
        return {"tol": self.tol, "seen_setup": True}

    def init(self, problem, x0, ctx):
        assert ctx.setup["seen_setup"]
        x = 0.0 if x0 is None else float(x0)
        return ToyState(x=x, estimate=abs(x - problem.target) * self.bias)

    def step(self, problem, state, ctx):
        state.x = problem.target + 0.5 * (state.x - problem.target)
        state.estimate = abs(state.x - problem.target) * (1.0 if state.exact else self.bias)
        state.k += 1
        state.metrics = {"estimate": state.estimate}
        return state

    def check(self, problem, state, ctx):
        if state.estimate <= ctx.setup["tol"]:
            return Stop(Status.CONVERGED)
        return None

    def tolerance(self, problem, state):
        return {"error": self.tol}

    def on_uncertified(self, problem, state, ctx, failed):
        if self.repair:
            ctx.count("repairs")
            state.exact = True  # like CG replacing its recursive residual by the true one
            state.estimate = abs(state.x - problem.target)
            return None
        return super().on_uncertified(problem, state, ctx, failed)


def test_stop_text_and_notes():
    s = Stop(Status.BREAKDOWN, "p^T A p < 0", ("note one",)).with_note("note two")
    assert s.text == "p^T A p < 0 note one note two"
    assert Stop(Status.MAX_ITER).text == Status.MAX_ITER.message
    assert Stop(Status.STOPPED, notes="single").notes == ("single",)
    with pytest.raises(TypeError, match="Stop.status must be a Status"):
        Stop("converged")


def test_false_convergence_claim_becomes_stagnation_with_measured_gap():
    res = ns.solve(Scalar(), Liar(bias=1e-3, maxiter=200))
    assert res.status is Status.STAGNATION
    assert "error = " in res.message and "> 1.000e-06" in res.message
    assert res.certificate["error"] > 1e-6
    assert res.stats["refuted_convergence_claims"] == 1


def test_repairing_solver_continues_until_certificate_holds():
    res = ns.solve(Scalar(), Liar(bias=1e-3, repair=True, maxiter=200))
    assert res.status is Status.CONVERGED
    assert res.certificate["error"] <= 1e-6
    assert res.stats["repairs"] >= 1


def test_endless_refutation_is_capped():
    # a repair that repairs nothing: the estimate claims convergence at every step and
    # the certificate never agrees
    @dataclass(frozen=True, kw_only=True)
    class Stubborn(Liar):
        def on_uncertified(self, problem, state, ctx, failed):
            return None

    res = ns.solve(Scalar(), Stubborn(bias=0.0, tol=1e-300, maxiter=1000))
    assert res.status is Status.STAGNATION
    assert res.n_iter < 20 and "refuted it each time" in res.message


def test_honest_solver_converges_and_reuses_the_verified_certificate():
    res = ns.solve(Scalar(), Liar(bias=1.0, maxiter=200))
    assert res.status is Status.CONVERGED and res.certificate["error"] <= 1e-6
    assert "refuted_convergence_claims" not in res.stats


def test_tolerance_naming_a_missing_certificate_key_is_a_clear_error():
    @dataclass(frozen=True, kw_only=True)
    class Wrong(Liar):
        def tolerance(self, problem, state):
            return {"gap": 1.0}

    with pytest.raises(KeyError, match="'gap'.*does not compute"):
        ns.solve(Scalar(), Wrong(bias=1.0))


def test_check_returning_something_else_is_a_type_error():
    @dataclass(frozen=True, kw_only=True)
    class Bad(Liar):
        def check(self, problem, state, ctx):
            return "done"

    with pytest.raises(TypeError, match="must return a neurosolve.core.Stop or None"):
        ns.solve(Scalar(), Bad())

    @dataclass(frozen=True, kw_only=True)
    class Legacy(Liar):
        def check(self, problem, state, ctx):
            return Status.CONVERGED, "the old (Status, message) form"

    with pytest.raises(TypeError, match="got tuple"):
        ns.solve(Scalar(), Legacy())


def test_state_from_another_problem_is_refused():
    res = ns.solve(Scalar(1.0), Liar(bias=1.0, maxiter=3))
    assert res.state.fingerprint == fingerprint(Scalar(1.0))  # plain entries: by value
    with pytest.raises(ValueError, match="different problem"):
        ns.solve(Scalar(2.0), Liar(bias=1.0), init=res.state)


def test_resume_runs_setup_with_the_new_configuration():
    prob = Scalar()
    first = ns.solve(prob, Liar(bias=1.0, tol=1e-3))
    assert first.success and first.certificate["error"] > 1e-9
    res = ns.solve(prob, Liar(bias=1.0, tol=1e-9), init=first.state)
    assert res.success and res.n_iter > 0 and res.certificate["error"] <= 1e-9


def test_init_must_be_a_state():
    with pytest.raises(TypeError, match="init must be the state"):
        ns.solve(Scalar(), Liar(), init={"x": 1.0})


def test_default_solver_table():
    from neurosolve.problems import LinearSystem
    from neurosolve.solvers import default_solver

    assert type(default_solver(LinearSystem(np.eye(3), np.ones(3)))).__name__ == "CG"
    with pytest.raises(TypeError, match="no default solver for Scalar"):
        ns.solve(Scalar())


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_check_every_validated(bad):
    with pytest.raises(ValueError, match="check_every"):
        ns.solve(Scalar(), Liar(), check_every=bad)


def test_callback_must_be_callable():
    with pytest.raises(TypeError, match="callback must be callable"):
        ns.solve(Scalar(), Liar(), callback=3)


def test_resume_copies_the_state_but_not_the_problem():
    import numpy as np_

    from neurosolve.problems import LinearSystem
    from neurosolve.solvers import CG

    A = np_.diag(np_.arange(1.0, 30.0))
    prob = LinearSystem(A, np_.ones(29))
    first = ns.solve(prob, CG(maxiter=3))
    res = ns.solve(prob, CG(rtol=1e-10), init=first.state)
    assert res.success and res.state.fingerprint[-1] is A
    assert first.state.k == 3 and first.state.x is not res.state.x


def test_resume_leaves_the_earlier_result_untouched():
    prob = Scalar()
    first = ns.solve(prob, Liar(bias=1.0, tol=1e-3))
    k, x = first.state.k, first.state.x
    ns.solve(prob, Liar(bias=1.0, tol=1e-9), init=first.state)
    assert first.state.k == k and first.state.x == x


def test_default_fingerprint_survives_address_reuse():
    """Problems without fingerprint(): identity of the object itself, kept alive by the
    state, so a new problem that happens to get the freed one's address is refused."""
    from neurosolve.core import same_fingerprint

    class Plain(Scalar):
        fingerprint = None

    for _ in range(20):  # id() reuse after garbage collection is common in CPython
        res = ns.solve(Plain(), Liar(bias=1.0, maxiter=2))
        fresh = Plain()
        assert not same_fingerprint(res.state.fingerprint, fingerprint(fresh))
        with pytest.raises(ValueError, match="different problem"):
            ns.solve(fresh, Liar(bias=1.0), init=res.state)
