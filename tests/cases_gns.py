"""Contract cases for the smooth-minimization family."""

import numpy as np

from contract import ContractCase
from neurosolve.problems import smooth_gallery as gal
from neurosolve.solvers import GNSNewton
from neurosolve.solvers.newton_baselines import CubicNewton, GradientMethod, SuperUniversalNewton


def _tighter(solver):
    return solver.replace(gtol=solver.gtol / 100)


def _quadratic():
    rng = np.random.default_rng(1)
    Q = rng.standard_normal((8, 8))
    return gal.least_squares(Q, rng.standard_normal(8))


def _logistic():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 10))
    y = np.where(A @ rng.standard_normal(10) + 0.3 * rng.standard_normal(200) > 0, 1.0, -1.0)
    return gal.logistic(A, y, mu=1e-2)


CASES = [
    ContractCase("gns-exact-logistic", _logistic, lambda: GNSNewton(), "grad_norm", 1e-6,
                 tighten=_tighter),
    ContractCase("gns-fisher-logistic", _logistic, lambda: GNSNewton(hessian="fisher"),
                 "grad_norm", 1e-6, tighten=_tighter),
    ContractCase("super-universal-logistic", _logistic, lambda: SuperUniversalNewton(gtol=1e-6),
                 "grad_norm", 1e-6, tighten=_tighter),
    ContractCase("cubic-logistic", _logistic, lambda: CubicNewton(gtol=1e-6), "grad_norm", 1e-6,
                 tighten=_tighter),
    ContractCase("gradient-least-squares", _quadratic, lambda: GradientMethod(gtol=1e-5),
                 "grad_norm", 1e-5, tighten=_tighter),
]
