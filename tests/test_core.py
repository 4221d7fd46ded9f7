"""The solve() loop: callbacks, history, progress, check/record cadence, warm starts."""

import numpy as np
import pytest
import scipy.sparse as sp

import neurosolve as ns
from neurosolve.core import Status, to_float
from neurosolve.problems import LinearSystem
from neurosolve.solvers import CG


@pytest.fixture
def prob():
    n = 40
    A = sp.diags([-1.0, 2.1, -1.0], [-1, 0, 1], shape=(n, n)).tocsr()
    return LinearSystem(A, np.random.default_rng(3).standard_normal(n))


def test_history_has_n_iter_plus_one_entries_and_starts_at_r0(prob):
    res = ns.solve(prob, CG(rtol=1e-10))
    h = res.history["relative_residual"]
    assert len(h) == res.n_iter + 1
    assert h[0] == pytest.approx(1.0)
    assert h[-1] < 1e-10
    assert res.history["residual_norm"][0] == pytest.approx(np.linalg.norm(prob.b))


def test_callback_called_at_zero_and_every_iteration(prob):
    seen = []
    res = ns.solve(prob, CG(rtol=1e-10), callback=lambda v: seen.append(v.k))
    assert seen == list(range(res.n_iter + 1))


def test_callback_returning_true_stops(prob):
    res = ns.solve(prob, CG(rtol=1e-12), callback=lambda v: v.k >= 3)
    assert res.status is Status.STOPPED and res.n_iter == 3 and not res.success


def test_solver_callback_also_runs(prob):
    seen = []
    ns.solve(prob, CG(rtol=1e-6, callback=lambda v: seen.append(v.k)))
    assert seen[0] == 0 and len(seen) > 2


def test_record_every_and_check_every(prob):
    full = ns.solve(prob, CG(rtol=1e-10))
    res = ns.solve(prob, CG(rtol=1e-10), record_every=4, check_every=3)
    assert res.success
    it = res.history["iteration"]
    assert it[0] == 0 and it[-1] == res.n_iter
    assert set(it[1:-1]) <= set(range(0, res.n_iter + 1, 4))
    # checking less often can only overshoot by fewer than check_every iterations
    assert full.n_iter <= res.n_iter < full.n_iter + 3


def test_progress_bar_runs(prob, capsys):
    res = ns.solve(prob, CG(rtol=1e-8), progress=True)
    assert res.success


def test_progress_bar_measures_the_way_to_the_tolerance(prob, monkeypatch):
    """The bar's total is 100% of the log-residual way from the start to the tolerance
    (never maxiter = 10 n); it ends near 100% when the solve converges."""
    import tqdm.auto

    bars = []
    real = tqdm.auto.tqdm

    def spy(*a, **k):
        bar = real(*a, **k)
        bars.append(bar)
        return bar

    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    res = ns.solve(prob, CG(rtol=1e-8), progress=True)
    (bar,) = bars
    assert bar.total == 100 and res.success
    assert 90.0 <= bar.n <= 100.0
    # a solver whose leading metric has no declared bound gets a counter, not a total
    bars.clear()

    class NoBound(CG):
        def tolerance(self, problem, state):
            return {}

    ns.solve(prob, NoBound(rtol=1e-8), progress=True)
    assert bars[0].total is None


def test_result_repr_is_one_line_without_arrays(prob):
    res = ns.solve(prob, CG(rtol=1e-8))
    text = repr(res)
    assert "\n" not in text and len(text) < 400
    assert text.startswith("Result(CONVERGED, n_iter=") and "relative_residual=" in text
    assert "array([" not in text and "State(" not in text and "x=ndarray(" in text


def test_result_fields_and_summary(prob):
    res = ns.solve(prob, CG(rtol=1e-8))
    assert res.success and res.raise_for_status() is res
    assert res.stats["matvecs"] == res.n_iter
    assert res.stats["wall_time"] >= res.stats["setup_time"] >= 0
    assert "CONVERGED" in res.summary()
    for s in Status:
        assert isinstance(s.message, str) and len(s.message) > 10


def test_warm_start_from_x_is_not_slower(prob):
    cold = ns.solve(prob, CG(rtol=1e-10))
    half = ns.solve(prob, CG(rtol=1e-4))
    warm = ns.solve(prob, CG(rtol=1e-10), half.x)
    assert warm.n_iter <= cold.n_iter


def test_stepping_by_hand_matches_solve(prob):
    """init/step/check can be driven without solve(), e.g. inside a training loop."""
    from neurosolve.backends import backend_for
    from neurosolve.core import Context

    solver = CG(rtol=1e-8)
    ctx = Context(backend_for("numpy", "numpy"))
    ctx.setup = solver.setup(prob, ctx)
    state = solver.init(prob, None, ctx)
    while solver.check(prob, state, ctx) is None:
        state = solver.step(prob, state, ctx)
    res = ns.solve(prob, solver, backend="numpy")
    assert state.k == res.n_iter
    np.testing.assert_allclose(state.x, res.x)


def test_to_float_handles_torch_and_numpy():
    import torch

    assert to_float(torch.tensor(2.5)) == 2.5
    assert to_float(np.float32(1.5)) == 1.5
    assert to_float(3) == 3.0
