"""Per-parameter learning-rate multipliers of the EP trainer (``TrainConfig.lr_scales``)."""

import numpy as np
import pytest

from neurosolve.neural.ep import load_digits_split, mlp, train
from neurosolve.neural.ep.trainer import SGD, TrainConfig, _param_lr_scales


def _setup():
    Xtr, ytr, _, _ = load_digits_split()
    return mlp([64, 12, 12, 10], angle=90, seed=0, recurrent_scale=0.6), Xtr[:60], ytr[:60]


def test_first_matching_pattern_sets_the_factor_and_readout_keeps_its_own():
    net, _, _ = _setup()
    cfg = TrainConfig(lr_scales={"W_input_h1": 0.0, "*_h1": 3.0, "b_*": 2.0},
                      readout_lr_scale=7.0)
    f = _param_lr_scales(net.params, cfg)
    assert f["W_input_h1"] == 0.0               # first match wins over "*_h1"
    assert f["b_h1"] == 3.0 and f["B_h2_h1"] == 3.0
    assert f["b_h2"] == 2.0 and f["b_out"] == 2.0
    assert f["readout_W"] == 7.0 and f["readout_b"] == 7.0
    assert "W_h1_h2" not in f                   # unmatched: factor 1


def test_a_zero_factor_freezes_the_parameter_and_others_move():
    net, X, y = _setup()
    before = {k: np.array(v, copy=True) for k, v in net.params.items()}
    train(net, X, y, epochs=1, batch_size=20, method="bp", lr=1e-2, progress=False,
          diagnostics=False, lr_scales={"W_input_h1": 0.0, "B_*": 0.0})
    assert np.array_equal(net.params["W_input_h1"], before["W_input_h1"])
    assert np.array_equal(net.params["B_h2_h1"], before["B_h2_h1"])
    assert not np.array_equal(net.params["W_h1_h2"], before["W_h1_h2"])


def test_the_factor_multiplies_the_sgd_step():
    p = {"a": np.ones(3), "b": np.ones(3)}
    g = {"a": np.full(3, 2.0), "b": np.full(3, 2.0)}
    SGD(0.1, momentum=0.0).step(p, g, {"a": 5.0})
    np.testing.assert_allclose(p["a"], 1 - 0.1 * 5 * 2)
    np.testing.assert_allclose(p["b"], 1 - 0.1 * 2)


def test_bad_lr_scales_name_the_argument():
    net, X, y = _setup()
    with pytest.raises(TypeError, match="lr_scales must be a dict"):
        TrainConfig(lr_scales=[("W_*", 2.0)])
    with pytest.raises(ValueError, match=r"lr_scales\['W_\*'\] must be a finite non-negative"):
        TrainConfig(lr_scales={"W_*": -1.0})
    with pytest.raises(ValueError, match=r"\['W_conv1\*'\] match no parameter"):
        train(net, X, y, epochs=1, progress=False, lr_scales={"W_conv1*": 2.0})


def test_skip_unconverged_skips_every_step_whose_phases_failed():
    from neurosolve.solvers.fixed_point import FixedPoint

    net, X, y = _setup()
    before = {k: np.array(v, copy=True) for k, v in net.params.items()}
    never = FixedPoint(method="damped", damping=0.5, rtol=1e-14, atol=1e-16, maxiter=2)
    res = train(net, X, y, epochs=1, batch_size=20, method="ep_exact", progress=False,
                diagnostics=False, solver=never, skip_unconverged=True)
    assert res.history["skipped_steps"][-1] == 3 and res.history["failed_phases"][-1] >= 3
    assert all(np.array_equal(net.params[k], before[k]) for k in before)
    res = train(net, X, y, epochs=1, batch_size=20, method="ep_exact", progress=False,
                diagnostics=False, solver=never)              # default: the steps are taken
    assert res.history["skipped_steps"][-1] == 0
    assert not np.array_equal(net.params["W_h1_h2"], before["W_h1_h2"])
