"""The learning-rate schedule of the EP trainer: values at given steps, validation, that it
is applied, and that a checkpointed run resumes the schedule exactly."""

import math

import numpy as np
import pytest

from neurosolve.neural.ep import load_digits_split, mlp, train
from neurosolve.neural.ep.trainer import TrainConfig, lr_factor


def test_schedule_values_at_given_steps():
    assert lr_factor("constant", 123, 10) == 1.0
    assert lr_factor("cosine", 0, 200, 0.1) == 1.0
    assert lr_factor("cosine", 100, 200, 0.1) == pytest.approx(0.55)
    assert lr_factor("cosine", 200, 200, 0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 500, 200, 0.1) == pytest.approx(0.1)  # held at the end
    assert lr_factor("cosine", 50, 200, 0.2) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert [lr_factor("step", t, 100, 0.01) for t in (0, 49, 50, 74, 75, 100)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    f = [lr_factor("cosine", t, 50, 0.1) for t in range(51)]
    assert all(a >= b for a, b in zip(f, f[1:]))


@pytest.mark.parametrize("kw", [dict(lr_schedule="linear"), dict(lr_final=0.0),
                                dict(lr_final=1.5), dict(lr_schedule_steps=0)])
def test_bad_schedule_settings_raise(kw):
    with pytest.raises(ValueError, match=f"{next(iter(kw))} must be"):
        TrainConfig(**kw)


def _data():
    Xtr, ytr, Xte, yte = load_digits_split()
    return Xtr[:80], ytr[:80], Xte[:40], yte[:40]


def _net():
    return mlp([64, 12, 10], angle=90, seed=0, recurrent_scale=0.6)


KW = dict(epochs=3, batch_size=20, homeostasis=1.0, progress=False, method="ep_exact",
          optimizer="adamw", lr=3e-3, diagnostics=False)


def test_schedule_is_applied():
    Xtr, ytr, Xte, yte = _data()
    const = train(_net(), Xtr, ytr, Xte, yte, **KW)
    cos = train(_net(), Xtr, ytr, Xte, yte, lr_schedule="cosine", **KW)
    # the first step has factor 1: identical after it; then the cosine run moves less
    one_c = train(_net(), Xtr, ytr, Xte, yte, max_steps=1, **KW)
    one_s = train(_net(), Xtr, ytr, Xte, yte, max_steps=1, lr_schedule="cosine", **KW)
    for k in one_c.net.params:
        np.testing.assert_array_equal(one_c.net.params[k], one_s.net.params[k])
    assert any(not np.allclose(const.net.params[k], cos.net.params[k]) for k in const.net.params)


def test_resume_continues_the_schedule_exactly(tmp_path):
    Xtr, ytr, Xte, yte = _data()
    kw = dict(KW, lr_schedule="cosine", lr_final=0.1)
    full = train(_net(), Xtr, ytr, Xte, yte, **kw)
    part = train(_net(), Xtr, ytr, Xte, yte, checkpoint=tmp_path / "ep.npz",
                 callback=lambda ep, h: ep == 1, **kw)
    assert part.history["epoch"] == [0, 1]
    rest = train(_net(), Xtr, ytr, Xte, yte, checkpoint=tmp_path / "ep.npz", resume=True, **kw)
    assert rest.steps == full.steps
    for k in full.net.params:
        np.testing.assert_array_equal(full.net.params[k], rest.net.params[k])
    assert rest.history["test_acc"] == full.history["test_acc"]
    # the schedule's length comes from epochs: resuming with other epochs is refused
    with pytest.raises(ValueError, match="different config"):
        train(_net(), Xtr, ytr, Xte, yte, checkpoint=tmp_path / "ep.npz", resume=True,
              **dict(kw, epochs=5))
