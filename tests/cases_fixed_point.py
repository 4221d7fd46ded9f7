"""Contract cases for the fixed-point family."""

import numpy as np

from contract import ContractCase
from neurosolve.problems import FixedPointProblem
from neurosolve.solvers import FixedPoint


def _affine(batched=False):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 6))
    W *= 0.6 / np.linalg.norm(W, 2)
    c = rng.standard_normal(6)
    if batched:
        C = np.stack([c, 2 * c, -c])
        return FixedPointProblem(lambda Z: np.tanh(Z @ W.T + C), np.zeros((3, 6)), batched=True)
    return FixedPointProblem(lambda z: np.tanh(W @ z + c), np.zeros(6))


CASES = [
    ContractCase("fixed-point-damped", _affine, lambda: FixedPoint(rtol=1e-8, atol=1e-10),
                 "relative_residual", 1e-7),
    ContractCase("fixed-point-anderson", _affine,
                 lambda: FixedPoint(method="anderson", rtol=1e-8, atol=1e-10),
                 "relative_residual", 1e-7),
    ContractCase("fixed-point-batched", lambda: _affine(True),
                 lambda: FixedPoint(rtol=1e-8, atol=1e-10), "relative_residual", 1e-7),
]
