"""Two-layer ReLU networks: the numpy predictor returned by convex training, its torch
module, and a back-propagation (Adam/SGD) trainer of the same non-convex objective.

The network is ``f(x) = sum_j (x~^T u_j)_+ alpha_j`` where ``x~`` is the standardized input
with a trailing 1 (when the problem has a bias), exactly the coordinates of
:class:`neurosolve.problems.ConvexReLU`; ``to_torch`` folds the standardization into the
first ``nn.Linear`` so the module acts on raw inputs.

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, arXiv:2201.01965, section 2 (weight recovery).
.. [2] D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ReLUNetwork", "train_nonconvex"]


@dataclass
class ReLUNetwork:
    """A one-hidden-layer ReLU network on raw inputs (numpy predictor).

    Attributes
    ----------
    U : (m, d) array
        Hidden weights in model coordinates (standardized features, bias weight last).
    alpha : (m, c) array
        Output weights.
    mean, scale : (d_in,) arrays
        The input standardization ``(x - mean) / scale``.
    bias : bool
        Whether the last coordinate of ``U`` is a bias.
    task : str
        "regression", "binary", "multiclass" or "multilabel".
    classes : array or None
        Labels that ``predict`` returns (binary: ``classes[1]`` for a positive output).
    """

    U: np.ndarray
    alpha: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    bias: bool = True
    task: str = "regression"
    classes: Any = None

    @property
    def width(self) -> int:
        return int(self.U.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.alpha.shape[1])

    def features(self, X) -> np.ndarray:
        Xs = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        if self.bias:
            Xs = np.hstack([Xs, np.ones((Xs.shape[0], 1))])
        return Xs

    def decision_function(self, X) -> np.ndarray:
        """Network outputs, shape (n,) for one output, (n, c) otherwise."""
        Z = np.maximum(self.features(X) @ self.U.T, 0.0) @ self.alpha
        return Z[:, 0] if Z.shape[1] == 1 else Z

    __call__ = decision_function

    def predict(self, X) -> np.ndarray:
        """Class labels for classification tasks, outputs for regression."""
        Z = self.decision_function(X)
        if self.task == "multiclass":
            return np.asarray(self.classes)[np.argmax(Z, axis=1)]
        if self.task == "binary":
            cls = self.classes if self.classes is not None else np.array([-1.0, 1.0])
            return np.where(Z > 0, cls[1], cls[0])
        if self.task == "multilabel":
            return np.where(Z > 0, 1.0, -1.0)
        return Z

    def weight_decay(self) -> float:
        """``1/2 sum_j (||u_j||^2 + ||alpha_j||^2)`` in model coordinates."""
        return 0.5 * float(np.sum(self.U**2) + np.sum(self.alpha**2))

    def raw_first_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)``: hidden weights (m, d_in) and biases (m,) acting on raw inputs."""
        d_in = self.mean.shape[0]
        Uf = self.U[:, :d_in]
        W = Uf / self.scale[None, :]
        b = (self.U[:, d_in] if self.bias else np.zeros(self.width)) - W @ self.mean
        return W, b

    def to_torch(self, dtype=None, device=None):
        """The same network as a ``torch.nn.Module`` on raw inputs (float64 by default)."""
        import torch

        dtype = dtype or torch.float64
        W, b = self.raw_first_layer()
        return _TorchReLUNet(W, b, self.alpha, dtype=dtype, device=device)


def _module_class():
    import torch

    class TorchReLUNet(torch.nn.Module):
        """``Linear -> ReLU -> Linear(no bias)``; squeezes a single output."""

        def __init__(self, W, b, alpha, dtype=None, device=None):
            super().__init__()
            m, d_in = W.shape
            c = alpha.shape[1]
            kw = dict(dtype=dtype, device=device)
            self.hidden = torch.nn.Linear(d_in, m, **kw)
            self.out = torch.nn.Linear(m, c, bias=False, **kw)
            with torch.no_grad():
                self.hidden.weight.copy_(torch.as_tensor(W, **kw))
                self.hidden.bias.copy_(torch.as_tensor(b, **kw))
                self.out.weight.copy_(torch.as_tensor(np.asarray(alpha).T, **kw))
            self.squeeze = c == 1

        def forward(self, x):
            z = self.out(torch.relu(self.hidden(x)))
            return z[:, 0] if self.squeeze else z

    return TorchReLUNet


_CLS = None


def _TorchReLUNet(*args, **kwargs):
    global _CLS
    if _CLS is None:
        _CLS = _module_class()
    return _CLS(*args, **kwargs)


def train_nonconvex(problem, width: int, *, epochs: int = 2000, lr: float = 1e-2,
                    optimizer: str = "adam", seed: int = 0, init_scale: float = 1.0,
                    verbose: bool = False, num_threads: int | None = 1) -> ReLUNetwork:
    """Train a width-``width`` ReLU network on ``problem``'s non-convex objective.

    Full-batch Adam (or plain gradient descent with ``optimizer="sgd"``) on
    ``loss(net(X), y) + beta/2 (||U||^2 + ||alpha||^2)``, in the problem's coordinates,
    loss and reduction (float64, CPU). Robust problems are trained on the clean loss.
    ``num_threads`` torch threads are used during training (default 1: these problems are
    small, and extra threads only contend on busy machines); None keeps torch's setting.

    Returns
    -------
    ReLUNetwork
    """
    import torch

    nthreads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(problem, width, epochs, lr, optimizer, seed, init_scale, verbose)
    finally:
        torch.set_num_threads(nthreads)


def _train(problem, width, epochs, lr, optimizer, seed, init_scale, verbose):
    import torch

    from neurosolve.problems import relu_losses as RL

    g = torch.Generator().manual_seed(int(seed))
    X = torch.as_tensor(problem.Xt_np)
    Y = torch.as_tensor(problem.Y_np)
    d, c = X.shape[1], Y.shape[1]
    U = (torch.randn(width, d, generator=g, dtype=torch.float64) * init_scale / np.sqrt(d))
    A = (torch.randn(width, c, generator=g, dtype=torch.float64) * init_scale / np.sqrt(width))
    U.requires_grad_(True)
    A.requires_grad_(True)
    if optimizer == "adam":
        opt = torch.optim.Adam([U, A], lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD([U, A], lr=lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    beta = problem.beta
    for ep in range(epochs):
        opt.zero_grad()
        z = torch.relu(X @ U.T) @ A
        obj = RL.loss_value(problem.loss, z, Y, problem.w) + 0.5 * beta * ((U**2).sum() + (A**2).sum())
        obj.backward()
        opt.step()
        if verbose and ep % max(1, epochs // 10) == 0:
            print(ep, float(obj))
    return ReLUNetwork(U=U.detach().numpy().copy(), alpha=A.detach().numpy().copy(),
                       mean=problem.mean, scale=problem.scale, bias=problem.bias,
                       task=problem.task, classes=problem.classes)
