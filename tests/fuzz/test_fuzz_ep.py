"""Bad inputs for equilibrium propagation: batches, labels and training settings."""

import numpy as np
import pytest
import torch

from neurosolve.neural.ep import TrainConfig, estimate_gradient, mlp, train

rng = np.random.default_rng(0)
X = rng.standard_normal((6, 4))
Y = np.array([0, 1, 2, 0, 1, 2])


def net():
    return mlp([4, 5, 3], seed=0)


def grad(x, y):
    return estimate_gradient(net(), x, y)


CASES = {
    "label-minus-one": (lambda: grad(X, np.array([0, 1, -1, 0, 1, 2])), (ValueError, r"labels must be in \[0, 3\)")),
    "label-too-large": (lambda: grad(X, np.array([0, 1, 3, 0, 1, 2])), (ValueError, r"labels must be in \[0, 3\)")),
    "label-fractional": (lambda: grad(X, np.array([0, 1, 1.7, 0, 1, 2])), (ValueError, "integer class labels")),
    "label-bool": (lambda: grad(X, np.array([True, False] * 3)), (ValueError, "integer class labels")),
    "label-length": (lambda: grad(X, Y[:-1]), (ValueError, r"len\(y\) == len\(x\)")),
    "label-scalar": (lambda: grad(X, np.int64(1)), (ValueError, "y has shape")),
    "targets-wrong-width": (lambda: grad(X, np.zeros((6, 4))), (ValueError, "y has shape")),
    "empty-batch": (lambda: grad(X[:0], Y[:0]), (ValueError, "empty batch")),
    "x-nan": (lambda: grad(np.where(X > 1, np.nan, X), Y), (ValueError, "x contains NaN")),
    "x-int": (lambda: grad(X.astype(int), Y), (TypeError, "real floating dtype")),
    "x-complex": (lambda: grad(X + 0j, Y), (TypeError, "real floating dtype")),
    "x-wrong-features": (lambda: grad(X[:, :3], Y), (ValueError, "x has shape")),
    "x-torch-on-numpy-net": (lambda: grad(torch.as_tensor(X), Y), (TypeError, "x is a torch")),
    "train-label-out-of-range-late": (lambda: train(net(), X, np.array([0, 1, 2, 0, 1, 5]), epochs=1,
                                                    batch_size=2, progress=False),
                                      (ValueError, r"labels must be in \[0, 3\)")),
    "train-test-labels-bad": (lambda: train(net(), X, Y, X, np.array([0, 1, 2, 0, 1, -1]), epochs=1,
                                            batch_size=2, progress=False),
                              (ValueError, r"labels must be in \[0, 3\)")),
    "train-test-half-given": (lambda: train(net(), X, Y, X, None, epochs=1, progress=False),
                              (ValueError, "X_test and y_test")),
    "config-method": (lambda: TrainConfig(method="cd"), (ValueError, "method must be one of")),
    "config-optimizer": (lambda: TrainConfig(optimizer="lbfgs"), (ValueError, "optimizer must be")),
    "config-lr-nan": (lambda: TrainConfig(lr=float("nan")), (ValueError, "lr must be")),
    "config-lr-negative": (lambda: TrainConfig(lr=-0.1), (ValueError, "lr must be")),
    "config-batch-zero": (lambda: TrainConfig(batch_size=0), (ValueError, "batch_size")),
    "config-epochs-negative": (lambda: TrainConfig(epochs=-1), (ValueError, "epochs")),
    "config-homeostasis-inf": (lambda: TrainConfig(homeostasis=float("inf")), (ValueError, "homeostasis")),
    "method-unknown": (lambda: estimate_gradient(net(), X, Y, method="magic"), (ValueError, "method")),
    "valid-batch-ok": (lambda: grad(X, Y).status.name == "CONVERGED", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_ep(name, fuzz_judge):
    thunk, expect = CASES[name]
    if expect is None:
        assert thunk()
        return
    fuzz_judge(thunk, expect)
