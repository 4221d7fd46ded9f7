"""Bad and adversarial inputs for smooth minimization (GNS Newton, baselines, minimize)
and the fixed-point solver."""

import numpy as np
import pytest
import scipy.optimize as so
import torch

import neurosolve as ns
from neurosolve.problems import FixedPointProblem, Minimize
from neurosolve.solvers import FixedPoint, GNSNewton

X0 = np.array([-1.2, 1.0])
ROSEN_MIN = np.ones(2)


def rosen(x):
    return so.rosen(x)


def quad(x):
    return 0.5 * float(x @ x)


def eye(n):
    return lambda x: np.eye(n)


def near_min(res, xstar, tol=1e-5):
    return np.linalg.norm(np.asarray(res.x, dtype=float) - xstar) <= tol


def _foreign_gns():
    p = Minimize(quad, lambda x: x, np.ones(3), hess=eye(3))
    r = ns.solve(p, GNSNewton(maxiter=1))
    return ns.solve(Minimize(quad, lambda x: x, np.ones(3), hess=eye(3)), GNSNewton(), init=r.state)


def _foreign_fp():
    p = FixedPointProblem(lambda z: 0.5 * z, np.ones(3))
    r = ns.solve(p, FixedPoint(maxiter=2))
    return ns.solve(FixedPointProblem(lambda z: 0.5 * z, np.ones(3)), FixedPoint(), init=r.state)


def _float32_torch():
    x0 = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float32)
    Q = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.5]])
    return ns.minimize(lambda x: 0.5 * x @ Q @ x + torch.logsumexp(x, 0), x0)


def _float32_ok(res):
    x = res.x.double()
    Q = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.5]], dtype=torch.float64)
    g = Q @ x + torch.softmax(x, 0)
    return res.x.dtype == torch.float32 and float(g.norm()) <= 1e-3


CASES = {
    # -- oracles that lie about their output -----------------------------------------------
    "grad-wrong-shape": (lambda: ns.minimize(quad, np.ones(3), lambda x: x[:2]), (ValueError, "grad")),
    "grad-complex": (lambda: ns.minimize(quad, np.ones(3), lambda x: x + 1j, eye(3)),
                     (TypeError, "grad returned dtype complex")),
    "grad-list": (lambda: ns.minimize(quad, np.ones(3), lambda x: list(x), eye(3)),
                  (ValueError, "grad returned shape list")),
    "grad-nan-at-x0": (lambda: ns.minimize(quad, np.ones(3), lambda x: x * np.nan, eye(3)),
                       (ValueError, "gradient at x0 has non-finite")),
    "f-nan-at-x0": (lambda: ns.minimize(lambda x: float("nan"), np.ones(3), lambda x: x, eye(3)),
                    (ValueError, r"f\(x0\) = nan")),
    "f-returns-vector": (lambda: ns.minimize(lambda x: x, np.ones(3), lambda x: x, eye(3)),
                         (ValueError, "f returned ndarray of shape")),
    "no-hessian-for-exact": (lambda: ns.minimize(quad, np.ones(3), lambda x: x, "exact"),
                             (ValueError, "needs the 'hessp' oracle")),
    "hess-nonsymmetric": (lambda: ns.minimize(quad, np.ones(2), lambda x: x,
                                              lambda x: np.array([[1.0, 1.0], [0.0, 1.0]])),
                          (ValueError, "non-symmetric")),
    "hess-wrong-shape": (lambda: ns.minimize(quad, np.ones(2), lambda x: x, lambda x: np.eye(3)),
                         (ValueError, "shape")),
    "hess-nan": (lambda: ns.minimize(quad, np.ones(2), lambda x: x, lambda x: np.full((2, 2), np.nan)),
                 "fail"),
    "wrong-gradient": (lambda: ns.minimize(quad, np.ones(3), lambda x: -x, eye(3), maxiter=50),
                       lambda r: near_min(r, np.zeros(3))),
    "f-star-above-minimum": (lambda: ns.minimize(quad, np.ones(3), lambda x: x, eye(3), f_star=0.1),
                             (ValueError, "f_star is not a lower bound")),
    "ftol-without-f-star": (lambda: ns.minimize(quad, np.ones(3), lambda x: x, eye(3), ftol=1e-6),
                            (ValueError, "f_star")),
    # -- configuration ---------------------------------------------------------------------
    "gtol-nan": (lambda: GNSNewton(gtol=float("nan")), (ValueError, "gtol")),
    "gtol-negative": (lambda: GNSNewton(gtol=-1.0), (ValueError, "gtol")),
    "gamma0-zero": (lambda: GNSNewton(gamma0=0.0), (ValueError, "gamma0")),
    "increase-below-one": (lambda: GNSNewton(increase=0.5), (ValueError, "increase")),
    "decrease-above-one": (lambda: GNSNewton(decrease=2.0), (ValueError, "decrease")),
    "max-trials-zero": (lambda: GNSNewton(max_trials=0), (ValueError, "max_trials")),
    "rule-unknown": (lambda: GNSNewton(rule="magic"), (ValueError, "rule must be")),
    "rule-lipschitz-no-L": (lambda: GNSNewton(rule="lipschitz"), (ValueError, "needs a positive constant L")),
    "hessian-unknown": (lambda: GNSNewton(hessian="nonsense"), (ValueError, "nonsense")),
    "maxiter-negative": (lambda: GNSNewton(maxiter=-3), (ValueError, "maxiter")),
    "method-unknown": (lambda: ns.minimize(quad, np.ones(2), lambda x: x, method="sgd"),
                       (ValueError, "method must be one of")),
    "x0-wrong-shape": (lambda: ns.solve(Minimize(quad, lambda x: x, np.ones(3), hess=eye(3)), GNSNewton(),
                                        np.ones(4)),
                       (ValueError, "x0")),
    "init-foreign-problem": (_foreign_gns, (ValueError, "different problem")),
    # -- hard but valid problems: a certified answer or an honest status --------------------
    "rosenbrock": (lambda: ns.minimize(rosen, X0, so.rosen_der, so.rosen_hess, gtol=1e-10),
                   lambda r: near_min(r, ROSEN_MIN)),
    "rosenbrock-x100": (lambda: ns.minimize(rosen, 100 * X0, so.rosen_der, so.rosen_hess, gtol=1e-9,
                                            maxiter=3000), lambda r: near_min(r, ROSEN_MIN, 1e-4)),
    "int-x0": (lambda: ns.minimize(quad, np.array([1, 2, 3]), lambda x: x, eye(3)),
               lambda r: r.x.dtype == np.float64 and near_min(r, np.zeros(3))),
    "unbounded-below": (lambda: ns.minimize(lambda x: -float(x @ x), np.ones(2), lambda x: -2 * x,
                                            lambda x: -2 * np.eye(2), maxiter=100), "fail"),
    "gtol-zero": (lambda: ns.minimize(quad, np.ones(2), lambda x: x, eye(2), gtol=0.0, maxiter=30),
                  lambda r: float(np.linalg.norm(r.x)) == 0.0),
    "float32-torch": (_float32_torch, _float32_ok),
    # -- fixed points ----------------------------------------------------------------------
    "fp-F-wrong-shape": (lambda: ns.solve(FixedPointProblem(lambda z: z[:-1], np.ones(3)), FixedPoint()),
                         (ValueError, "F")),
    "fp-F-nan": (lambda: ns.solve(FixedPointProblem(lambda z: z * np.nan, np.ones(3)), FixedPoint()),
                 "fail"),
    "fp-expanding": (lambda: ns.solve(FixedPointProblem(lambda z: 3.0 * z + 1.0, np.ones(3)),
                                      FixedPoint(maxiter=300)), "fail"),
    "fp-anderson-expanding": (lambda: ns.solve(FixedPointProblem(lambda z: np.sinh(3.0 * z) + 1.0, np.ones(3)),
                                               FixedPoint(method="anderson", maxiter=300)),
                              lambda r: np.allclose(np.sinh(3 * r.x) + 1, r.x, atol=1e-6)),
    "fp-damping-zero": (lambda: FixedPoint(damping=0.0), (ValueError, "damping")),
    "fp-damping-big": (lambda: FixedPoint(damping=1.5), (ValueError, "damping")),
    "fp-memory-zero": (lambda: FixedPoint(memory=0), (ValueError, "memory")),
    "fp-method": (lambda: FixedPoint(method="broyden"), (ValueError, "method must be")),
    "fp-rtol-nan": (lambda: FixedPoint(rtol=float("nan")), (ValueError, "rtol")),
    "fp-x0-wrong-shape": (lambda: ns.solve(FixedPointProblem(lambda z: 0.5 * z, np.ones(3)), FixedPoint(),
                                           np.ones(4)), (ValueError, "x0 has shape")),
    "fp-init-foreign": (_foreign_fp, (ValueError, "different problem")),
    "fp-contraction": (lambda: ns.solve(FixedPointProblem(lambda z: np.cos(z), np.zeros(4)), FixedPoint()),
                       lambda r: np.allclose(np.cos(r.x), r.x, atol=1e-8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_smooth(name, fuzz_judge):
    thunk, expect = CASES[name]
    fuzz_judge(thunk, expect)
