"""Contract cases for the smooth-minimization family."""

import numpy as np

from contract import ContractCase
from neurosolve.problems import smooth_gallery as gal
from neurosolve.solvers import GNSNewton


def _logistic():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 10))
    y = np.where(A @ rng.standard_normal(10) + 0.3 * rng.standard_normal(200) > 0, 1.0, -1.0)
    return gal.logistic(A, y, mu=1e-2)


CASES = [
    ContractCase("gns-exact-logistic", _logistic, lambda: GNSNewton(), "grad_norm", 1e-6),
    ContractCase("gns-fisher-logistic", _logistic, lambda: GNSNewton(hessian="fisher"),
                 "grad_norm", 1e-6),
]
