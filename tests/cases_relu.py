"""Contract cases for the convex ReLU family (ADMM on a small sampled program)."""

import numpy as np

from contract import ContractCase
from neurosolve.problems import ConvexReLU
from neurosolve.solvers import ADMM


def _program():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.maximum(X @ rng.standard_normal(3), 0.0) + 0.05 * rng.standard_normal(60)
    return ConvexReLU(X, y, 1e-2, patterns=8, seed=0)


CASES = [
    ContractCase("admm-numpy", _program, lambda: ADMM(), "relative_cone_violation", 1e-4 + 1e-9,
                 "numpy", warm_start=False),
    ContractCase("admm-numba", _program, lambda: ADMM(), "relative_cone_violation", 1e-4 + 1e-9,
                 "numba", warm_start=False),
]
