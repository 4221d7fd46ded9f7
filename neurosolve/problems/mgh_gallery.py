"""The Moré-Garbow-Hillstrom unconstrained test set as :class:`~neurosolve.problems.Minimize`.

All 35 functions of Moré, Garbow and Hillstrom (1981) are sums of squares
``f(x) = sum_{i=1}^m r_i(x)^2``. Each is written here from its residuals ``r``, their
Jacobian ``J`` and the curvature term ``S(x, w) = sum_i w_i grad^2 r_i(x)``, which give
the exact oracles

* gradient ``2 J^T r``,
* Hessian ``2 (J^T J + S(x, r))`` (indefinite in general),
* Hessian-vector product ``2 (J^T (J v) + S(x, r) v)``,

and, for Gauss-Newton approximations, the residual ``u = sqrt(2) r`` with ``f = ||u||^2 / 2``
(``residual``, ``residual_jac``, ``power = 2``).

=====  ==============================  ========  =========================================
 no.   name (``mgh(name)``)            n, m      minima listed by the paper
=====  ==============================  ========  =========================================
  1    ``rosenbrock``                  2, 2      0
  2    ``freudenstein_roth``           2, 2      0; 48.9842 (local)
  3    ``powell_badly_scaled``         2, 2      0
  4    ``brown_badly_scaled``          2, 3      0
  5    ``beale``                       2, 3      0
  6    ``jennrich_sampson``            2, 10     124.362
  7    ``helical_valley``              3, 3      0
  8    ``bard``                        3, 15     8.21487e-3; 17.4286 (at infinity)
  9    ``gaussian``                    3, 15     1.12793e-8
 10    ``meyer``                       3, 16     87.9458
 11    ``gulf``                        3, 99     0
 12    ``box3``                        3, 10     0
 13    ``powell_singular``             4, 4      0
 14    ``wood``                        4, 6      0
 15    ``kowalik_osborne``             4, 11     3.07505e-4; 1.02734e-3 (at infinity)
 16    ``brown_dennis``                4, 20     85822.2
 17    ``osborne1``                    5, 33     5.46489e-5
 18    ``biggs_exp6``                  6, 13     0; 5.65565e-3 (local)
 19    ``osborne2``                    11, 65    4.01377e-2
 20    ``watson``                      6, 31     2.28767e-3 (n=6); 1.39976e-6 (n=9);
                                                 4.72238e-10 (n=12)
 21    ``extended_rosenbrock``         10, 10    0
 22    ``extended_powell``             12, 12    0
 23    ``penalty1``                    10, 11    7.08765e-5 (n=10); 2.24997e-5 (n=4)
 24    ``penalty2``                    10, 20    2.93660e-4 (n=10); 9.37629e-6 (n=4)
 25    ``variably_dimensioned``        10, 12    0
 26    ``trigonometric``               10, 10    0
 27    ``brown_almost_linear``         10, 10    0; 1
 28    ``discrete_boundary_value``     10, 10    0
 29    ``discrete_integral``           10, 10    0
 30    ``broyden_tridiagonal``         10, 10    0
 31    ``broyden_banded``              10, 10    0
 32    ``linear_full_rank``            10, 20    m - n
 33    ``linear_rank1``                10, 20    m(m-1) / (2(2m+1))
 34    ``linear_rank1_zero``           10, 20    (m^2 + 3m - 6) / (2(2m-3))
 35    ``chebyquad``                   8, 8      3.51687e-3 (n=8); 0 (n <= 7, n = 9);
                                                 6.50395e-3 (n=10)
=====  ==============================  ========  =========================================

The dimensions in the table are the defaults (the paper leaves ``n`` and ``m`` free for
20-35; ``m = 99`` for Gulf is this module's choice within the paper's range
``n <= m <= 100``). Every problem starts at the paper's standard point ``x0``, times
``scale`` (the paper's ``10 x0`` and ``100 x0`` are ``scale=10`` and ``scale=100``).

``problem.data["f_min"]`` holds the minimum values the paper lists for these dimensions
(rounded to the paper's six digits; a solver may also end at another local minimum or,
from a scaled start, somewhere else). ``f_star`` is set only when the global minimum is
exactly 0 (then it is a lower bound that certificates report as ``f_gap``).

References
----------
.. [1] J. J. Moré, B. S. Garbow, K. E. Hillstrom, "Testing unconstrained optimization
   software", ACM Transactions on Mathematical Software 7(1), 17-41, 1981.

Examples
--------
>>> import numpy as np
>>> from neurosolve.problems import mgh_gallery as mgh
>>> p = mgh.mgh("beale")
>>> p.n, float(p.fun(np.array([3.0, 0.5])))
(2, 0.0)
>>> len(mgh.test_set(scales=(1,)))
35
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from neurosolve.problems.smooth import Minimize

__all__ = ["mgh", "test_set", "names", "residuals", "MGH", "Residuals"]

_SQRT2 = np.sqrt(2.0)


@dataclass(frozen=True)
class Residuals:
    """One MGH function: ``f = sum r_i(x)^2``.

    Attributes
    ----------
    name : str
    number : int
        The function's number in the paper (1-35).
    n, m : int
        Unknowns and residuals.
    x0 : (n,) array
        The paper's standard start.
    r : callable
        ``x -> (m,)`` residuals.
    J : callable
        ``x -> (m, n)`` Jacobian.
    S : callable
        ``(x, w) -> (n, n)``: ``sum_i w_i grad^2 r_i(x)``.
    f_min : tuple of float
        Minimum values listed by the paper for these dimensions.
    f_star : float or None
        The global minimum when it is exactly 0.
    """

    name: str
    number: int
    n: int
    m: int
    x0: np.ndarray
    r: Callable
    J: Callable
    S: Callable
    f_min: tuple = ()
    f_star: float | None = None


def _zero_S(n):
    return lambda x, w: np.zeros((n, n))


# ---------------------------------------------------------------------------------------
# 1-19: fixed dimensions
# ---------------------------------------------------------------------------------------
def _rosenbrock(n=2, m=2):
    def r(x):
        return np.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])

    def J(x):
        return np.array([[-20.0 * x[0], 10.0], [-1.0, 0.0]])

    def S(x, w):
        return np.array([[-20.0 * w[0], 0.0], [0.0, 0.0]])

    return Residuals("rosenbrock", 1, 2, 2, np.array([-1.2, 1.0]), r, J, S, (0.0,), 0.0)


def _freudenstein_roth(n=2, m=2):
    def r(x):
        x1, x2 = x
        return np.array([-13.0 + x1 + ((5.0 - x2) * x2 - 2.0) * x2,
                         -29.0 + x1 + ((x2 + 1.0) * x2 - 14.0) * x2])

    def J(x):
        x2 = x[1]
        return np.array([[1.0, 10.0 * x2 - 3.0 * x2 ** 2 - 2.0],
                         [1.0, 3.0 * x2 ** 2 + 2.0 * x2 - 14.0]])

    def S(x, w):
        x2 = x[1]
        return np.array([[0.0, 0.0], [0.0, w[0] * (10.0 - 6.0 * x2) + w[1] * (6.0 * x2 + 2.0)]])

    return Residuals("freudenstein_roth", 2, 2, 2, np.array([0.5, -2.0]), r, J, S,
                     (0.0, 48.9842), 0.0)


def _powell_badly_scaled(n=2, m=2):
    def r(x):
        return np.array([1e4 * x[0] * x[1] - 1.0, np.exp(-x[0]) + np.exp(-x[1]) - 1.0001])

    def J(x):
        return np.array([[1e4 * x[1], 1e4 * x[0]], [-np.exp(-x[0]), -np.exp(-x[1])]])

    def S(x, w):
        return np.array([[w[1] * np.exp(-x[0]), 1e4 * w[0]],
                         [1e4 * w[0], w[1] * np.exp(-x[1])]])

    return Residuals("powell_badly_scaled", 3, 2, 2, np.array([0.0, 1.0]), r, J, S, (0.0,), 0.0)


def _brown_badly_scaled(n=2, m=3):
    def r(x):
        return np.array([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])

    def J(x):
        return np.array([[1.0, 0.0], [0.0, 1.0], [x[1], x[0]]])

    def S(x, w):
        return np.array([[0.0, w[2]], [w[2], 0.0]])

    return Residuals("brown_badly_scaled", 4, 2, 3, np.array([1.0, 1.0]), r, J, S, (0.0,), 0.0)


def _beale(n=2, m=3):
    y = np.array([1.5, 2.25, 2.625])
    i = np.arange(1.0, 4.0)

    def r(x):
        return y - x[0] * (1.0 - x[1] ** i)

    def J(x):
        return np.column_stack([-(1.0 - x[1] ** i), x[0] * i * x[1] ** (i - 1)])

    def S(x, w):
        c = np.sum(w * i * x[1] ** (i - 1))
        d = np.sum(w * x[0] * i * (i - 1) * x[1] ** np.maximum(i - 2, 0))
        return np.array([[0.0, c], [c, d]])

    return Residuals("beale", 5, 2, 3, np.array([1.0, 1.0]), r, J, S, (0.0,), 0.0)


def _jennrich_sampson(n=2, m=10):
    i = np.arange(1.0, m + 1)

    def r(x):
        return 2.0 + 2.0 * i - (np.exp(i * x[0]) + np.exp(i * x[1]))

    def J(x):
        return np.column_stack([-i * np.exp(i * x[0]), -i * np.exp(i * x[1])])

    def S(x, w):
        return np.diag([-np.sum(w * i * i * np.exp(i * x[0])),
                        -np.sum(w * i * i * np.exp(i * x[1]))])

    f_min = (124.362,) if m == 10 else ()
    return Residuals("jennrich_sampson", 6, 2, m, np.array([0.3, 0.4]), r, J, S, f_min)


def _helical_valley(n=3, m=3):
    tp = 2.0 * np.pi

    def theta(x):
        t = np.arctan(x[1] / x[0]) / tp if x[0] != 0 else np.copysign(0.25, x[1])
        return t + 0.5 if x[0] < 0 else t

    def r(x):
        rho = np.hypot(x[0], x[1])
        return np.array([10.0 * (x[2] - 10.0 * theta(x)), 10.0 * (rho - 1.0), x[2]])

    def J(x):
        x1, x2 = x[0], x[1]
        q = x1 * x1 + x2 * x2
        rho = np.sqrt(q)
        return np.array([[100.0 * x2 / (tp * q), -100.0 * x1 / (tp * q), 10.0],
                         [10.0 * x1 / rho, 10.0 * x2 / rho, 0.0],
                         [0.0, 0.0, 1.0]])

    def S(x, w):
        x1, x2 = x[0], x[1]
        q = x1 * x1 + x2 * x2
        rho3 = q ** 1.5
        t11 = x1 * x2 / (np.pi * q * q)
        t12 = (x2 * x2 - x1 * x1) / (tp * q * q)
        out = np.zeros((3, 3))
        # r1 = 10 x3 - 100 theta; r2 = 10 (rho - 1)
        out[0, 0] = -100.0 * w[0] * t11 + 10.0 * w[1] * x2 * x2 / rho3
        out[1, 1] = 100.0 * w[0] * t11 + 10.0 * w[1] * x1 * x1 / rho3
        out[0, 1] = out[1, 0] = -100.0 * w[0] * t12 - 10.0 * w[1] * x1 * x2 / rho3
        return out

    return Residuals("helical_valley", 7, 3, 3, np.array([-1.0, 0.0, 0.0]), r, J, S, (0.0,), 0.0)


def _bard(n=3, m=15):
    y = np.array([0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96,
                  1.34, 2.10, 4.39])
    u = np.arange(1.0, 16.0)
    v = 16.0 - u
    wv = np.minimum(u, v)

    def r(x):
        return y - (x[0] + u / (v * x[1] + wv * x[2]))

    def J(x):
        D = v * x[1] + wv * x[2]
        return np.column_stack([-np.ones(15), u * v / D ** 2, u * wv / D ** 2])

    def S(x, w):
        D3 = (v * x[1] + wv * x[2]) ** 3
        out = np.zeros((3, 3))
        out[1, 1] = np.sum(w * -2.0 * u * v * v / D3)
        out[1, 2] = out[2, 1] = np.sum(w * -2.0 * u * v * wv / D3)
        out[2, 2] = np.sum(w * -2.0 * u * wv * wv / D3)
        return out

    return Residuals("bard", 8, 3, 15, np.array([1.0, 1.0, 1.0]), r, J, S, (8.21487e-3, 17.4286))


def _gaussian(n=3, m=15):
    y = np.array([0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989, 0.3521,
                  0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009])
    t = (8.0 - np.arange(1.0, 16.0)) / 2.0

    def r(x):
        s = t - x[2]
        return x[0] * np.exp(-x[1] * s * s / 2.0) - y

    def J(x):
        s = t - x[2]
        E = np.exp(-x[1] * s * s / 2.0)
        return np.column_stack([E, -x[0] * E * s * s / 2.0, x[0] * E * x[1] * s])

    def S(x, w):
        x1, x2 = x[0], x[1]
        s = t - x[2]
        E = np.exp(-x2 * s * s / 2.0) * w
        out = np.zeros((3, 3))
        out[0, 1] = out[1, 0] = np.sum(-E * s * s / 2.0)
        out[0, 2] = out[2, 0] = np.sum(E * x2 * s)
        out[1, 1] = np.sum(x1 * E * s ** 4 / 4.0)
        out[1, 2] = out[2, 1] = np.sum(x1 * E * (s - x2 * s ** 3 / 2.0))
        out[2, 2] = np.sum(x1 * x2 * E * (x2 * s * s - 1.0))
        return out

    return Residuals("gaussian", 9, 3, 15, np.array([0.4, 1.0, 0.0]), r, J, S, (1.12793e-8,))


def _meyer(n=3, m=16):
    y = np.array([34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0,
                  8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0])
    t = 45.0 + 5.0 * np.arange(1.0, 17.0)

    def r(x):
        return x[0] * np.exp(x[1] / (t + x[2])) - y

    def J(x):
        q = 1.0 / (t + x[2])
        E = np.exp(x[1] * q)
        return np.column_stack([E, x[0] * E * q, -x[0] * E * x[1] * q * q])

    def S(x, w):
        x1, x2 = x[0], x[1]
        q = 1.0 / (t + x[2])
        E = np.exp(x2 * q) * w
        out = np.zeros((3, 3))
        out[0, 1] = out[1, 0] = np.sum(E * q)
        out[0, 2] = out[2, 0] = np.sum(-E * x2 * q * q)
        out[1, 1] = np.sum(x1 * E * q * q)
        out[1, 2] = out[2, 1] = np.sum(-x1 * E * q * q * (x2 * q + 1.0))
        out[2, 2] = np.sum(x1 * x2 * E * q ** 3 * (x2 * q + 2.0))
        return out

    return Residuals("meyer", 10, 3, 16, np.array([0.02, 4000.0, 250.0]), r, J, S, (87.9458,))


def _gulf(n=3, m=99):
    if not 3 <= m <= 100:
        raise ValueError(f"m must be in [3, 100] for gulf, got {m!r}")
    t = np.arange(1.0, m + 1) / 100.0
    y = 25.0 + (-50.0 * np.log(t)) ** (2.0 / 3.0)

    def parts(x):
        dy = y - x[1]
        a = np.abs(dy)
        s = np.sign(dy)
        P = a ** x[2]
        E = np.exp(-P / x[0])
        return a, s, P, E

    def r(x):
        return parts(x)[3] - t

    def grads(x):
        a, s, P, E = parts(x)
        x1, x3 = x[0], x[2]
        L = np.log(a)
        dP2 = -s * x3 * a ** (x3 - 1.0)
        z = np.column_stack([P / x1 ** 2, -dP2 / x1, -P * L / x1])  # grad of z = -P/x1
        return a, s, P, E, L, dP2, z

    def J(x):
        _, _, _, E, _, _, z = grads(x)
        return E[:, None] * z

    def S(x, w):
        a, s, P, E, L, dP2, z = grads(x)
        x1, x3 = x[0], x[2]
        d2P22 = x3 * (x3 - 1.0) * a ** (x3 - 2.0)
        d2P23 = -s * a ** (x3 - 1.0) * (1.0 + x3 * L)
        we = w * E
        out = np.einsum("i,ij,ik->jk", we, z, z)
        zz = np.zeros((3, 3))
        zz[0, 0] = np.sum(we * -2.0 * P / x1 ** 3)
        zz[0, 1] = zz[1, 0] = np.sum(we * dP2 / x1 ** 2)
        zz[0, 2] = zz[2, 0] = np.sum(we * P * L / x1 ** 2)
        zz[1, 1] = np.sum(we * -d2P22 / x1)
        zz[1, 2] = zz[2, 1] = np.sum(we * -d2P23 / x1)
        zz[2, 2] = np.sum(we * -P * L * L / x1)
        return out + zz

    return Residuals("gulf", 11, 3, m, np.array([5.0, 2.5, 0.15]), r, J, S, (0.0,), 0.0)


def _box3(n=3, m=10):
    t = 0.1 * np.arange(1.0, m + 1)
    c = np.exp(-t) - np.exp(-10.0 * t)

    def r(x):
        return np.exp(-t * x[0]) - np.exp(-t * x[1]) - x[2] * c

    def J(x):
        return np.column_stack([-t * np.exp(-t * x[0]), t * np.exp(-t * x[1]), -c])

    def S(x, w):
        return np.diag([np.sum(w * t * t * np.exp(-t * x[0])),
                        -np.sum(w * t * t * np.exp(-t * x[1])), 0.0])

    return Residuals("box3", 12, 3, m, np.array([0.0, 10.0, 20.0]), r, J, S, (0.0,), 0.0)


def _extended_powell(n=12, m=None, name="extended_powell", number=22):
    if n % 4:
        raise ValueError(f"n must be a multiple of 4 for {name}, got {n!r}")
    s5, s10 = np.sqrt(5.0), np.sqrt(10.0)

    def r(x):
        X = x.reshape(-1, 4)
        out = np.column_stack([X[:, 0] + 10.0 * X[:, 1], s5 * (X[:, 2] - X[:, 3]),
                               (X[:, 1] - 2.0 * X[:, 2]) ** 2, s10 * (X[:, 0] - X[:, 3]) ** 2])
        return out.reshape(-1)

    def J(x):
        out = np.zeros((n, n))
        for b in range(n // 4):
            i = 4 * b
            x1, x2, x3, x4 = x[i:i + 4]
            out[i, i:i + 2] = (1.0, 10.0)
            out[i + 1, i + 2:i + 4] = (s5, -s5)
            out[i + 2, i + 1:i + 3] = (2.0 * (x2 - 2.0 * x3), -4.0 * (x2 - 2.0 * x3))
            out[i + 3, i] = 2.0 * s10 * (x1 - x4)
            out[i + 3, i + 3] = -2.0 * s10 * (x1 - x4)
        return out

    def S(x, w):
        out = np.zeros((n, n))
        for b in range(n // 4):
            i = 4 * b
            w3, w4 = w[i + 2], w[i + 3]
            out[i + 1, i + 1] += 2.0 * w3
            out[i + 1, i + 2] += -4.0 * w3
            out[i + 2, i + 1] += -4.0 * w3
            out[i + 2, i + 2] += 8.0 * w3
            c = 2.0 * s10 * w4
            out[i, i] += c
            out[i, i + 3] -= c
            out[i + 3, i] -= c
            out[i + 3, i + 3] += c
        return out

    return Residuals(name, number, n, n, np.tile([3.0, -1.0, 0.0, 1.0], n // 4), r, J, S,
                     (0.0,), 0.0)


def _powell_singular(n=4, m=4):
    return _extended_powell(4, name="powell_singular", number=13)


def _wood(n=4, m=6):
    s90, s10 = np.sqrt(90.0), np.sqrt(10.0)

    def r(x):
        x1, x2, x3, x4 = x
        return np.array([10.0 * (x2 - x1 ** 2), 1.0 - x1, s90 * (x4 - x3 ** 2), 1.0 - x3,
                         s10 * (x2 + x4 - 2.0), (x2 - x4) / s10])

    def J(x):
        x1, x3 = x[0], x[2]
        return np.array([[-20.0 * x1, 10.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, -2.0 * s90 * x3, s90], [0.0, 0.0, -1.0, 0.0],
                         [0.0, s10, 0.0, s10], [0.0, 1.0 / s10, 0.0, -1.0 / s10]])

    def S(x, w):
        return np.diag([-20.0 * w[0], 0.0, -2.0 * s90 * w[2], 0.0])

    return Residuals("wood", 14, 4, 6, np.array([-3.0, -1.0, -3.0, -1.0]), r, J, S, (0.0,), 0.0)


def _kowalik_osborne(n=4, m=11):
    y = np.array([0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323,
                  0.0235, 0.0246])
    u = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])

    def r(x):
        return y - x[0] * (u * u + u * x[1]) / (u * u + u * x[2] + x[3])

    def J(x):
        x1 = x[0]
        N = u * u + u * x[1]
        D = u * u + u * x[2] + x[3]
        return -np.column_stack([N / D, x1 * u / D, -x1 * N * u / D ** 2, -x1 * N / D ** 2])

    def S(x, w):
        x1 = x[0]
        N = u * u + u * x[1]
        D = u * u + u * x[2] + x[3]
        m2 = np.zeros((4, 4))
        m2[0, 1] = np.sum(w * u / D)
        m2[0, 2] = np.sum(w * -N * u / D ** 2)
        m2[0, 3] = np.sum(w * -N / D ** 2)
        m2[1, 2] = np.sum(w * -x1 * u * u / D ** 2)
        m2[1, 3] = np.sum(w * -x1 * u / D ** 2)
        m2[2, 3] = np.sum(w * 2.0 * x1 * N * u / D ** 3)
        m2 = m2 + m2.T
        m2[2, 2] = np.sum(w * 2.0 * x1 * N * u * u / D ** 3)
        m2[3, 3] = np.sum(w * 2.0 * x1 * N / D ** 3)
        return -m2

    return Residuals("kowalik_osborne", 15, 4, 11, np.array([0.25, 0.39, 0.415, 0.39]), r, J, S,
                     (3.07505e-4, 1.02734e-3))


def _brown_dennis(n=4, m=20):
    t = np.arange(1.0, m + 1) / 5.0
    st, ct, et = np.sin(t), np.cos(t), np.exp(t)

    def ab(x):
        return x[0] + t * x[1] - et, x[2] + x[3] * st - ct

    def r(x):
        a, b = ab(x)
        return a * a + b * b

    def J(x):
        a, b = ab(x)
        return np.column_stack([2 * a, 2 * a * t, 2 * b, 2 * b * st])

    def S(x, w):
        out = np.zeros((4, 4))
        out[0, 0] = 2 * np.sum(w)
        out[0, 1] = out[1, 0] = 2 * np.sum(w * t)
        out[1, 1] = 2 * np.sum(w * t * t)
        out[2, 2] = 2 * np.sum(w)
        out[2, 3] = out[3, 2] = 2 * np.sum(w * st)
        out[3, 3] = 2 * np.sum(w * st * st)
        return out

    f_min = (85822.2,) if m == 20 else ()
    return Residuals("brown_dennis", 16, 4, m, np.array([25.0, 5.0, -5.0, -1.0]), r, J, S, f_min)


_OSBORNE1_Y = np.array([0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784,
                        0.751, 0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522,
                        0.506, 0.490, 0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420,
                        0.414, 0.411, 0.406])


def _osborne1(n=5, m=33):
    y = _OSBORNE1_Y
    t = 10.0 * np.arange(33.0)

    def r(x):
        return y - (x[0] + x[1] * np.exp(-t * x[3]) + x[2] * np.exp(-t * x[4]))

    def J(x):
        e4, e5 = np.exp(-t * x[3]), np.exp(-t * x[4])
        return np.column_stack([-np.ones(33), -e4, -e5, x[1] * t * e4, x[2] * t * e5])

    def S(x, w):
        e4, e5 = np.exp(-t * x[3]) * w, np.exp(-t * x[4]) * w
        out = np.zeros((5, 5))
        out[1, 3] = out[3, 1] = np.sum(t * e4)
        out[3, 3] = np.sum(-x[1] * t * t * e4)
        out[2, 4] = out[4, 2] = np.sum(t * e5)
        out[4, 4] = np.sum(-x[2] * t * t * e5)
        return out

    return Residuals("osborne1", 17, 5, 33, np.array([0.5, 1.5, -1.0, 0.01, 0.02]), r, J, S,
                     (5.46489e-5,))


def _biggs_exp6(n=6, m=13):
    t = 0.1 * np.arange(1.0, m + 1)
    y = np.exp(-t) - 5.0 * np.exp(-10.0 * t) + 3.0 * np.exp(-4.0 * t)

    def r(x):
        return (x[2] * np.exp(-t * x[0]) - x[3] * np.exp(-t * x[1]) + x[5] * np.exp(-t * x[4])
                - y)

    def J(x):
        e1, e2, e5 = np.exp(-t * x[0]), np.exp(-t * x[1]), np.exp(-t * x[4])
        return np.column_stack([-t * x[2] * e1, t * x[3] * e2, e1, -e2, -t * x[5] * e5, e5])

    def S(x, w):
        e1, e2, e5 = (np.exp(-t * x[0]) * w, np.exp(-t * x[1]) * w, np.exp(-t * x[4]) * w)
        out = np.zeros((6, 6))
        out[0, 0] = np.sum(t * t * x[2] * e1)
        out[0, 2] = out[2, 0] = np.sum(-t * e1)
        out[1, 1] = np.sum(-t * t * x[3] * e2)
        out[1, 3] = out[3, 1] = np.sum(t * e2)
        out[4, 4] = np.sum(t * t * x[5] * e5)
        out[4, 5] = out[5, 4] = np.sum(-t * e5)
        return out

    f_min = (0.0, 5.65565e-3) if m == 13 else (0.0,)
    return Residuals("biggs_exp6", 18, 6, m, np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0]), r, J, S,
                     f_min, 0.0)


_OSBORNE2_Y = np.array([
    1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679, 0.608,
    0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644, 0.624, 0.661,
    0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375, 0.372, 0.391, 0.396, 0.405, 0.428,
    0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559,
    0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054])


def _osborne2(n=11, m=65):
    y = _OSBORNE2_Y
    t = np.arange(65.0) / 10.0
    # Gaussian terms (amplitude, rate, centre) as 0-based indices into x
    terms = ((1, 5, 8), (2, 6, 9), (3, 7, 10))

    def r(x):
        out = y - x[0] * np.exp(-t * x[4])
        for a, c, p in terms:
            out = out - x[a] * np.exp(-(t - x[p]) ** 2 * x[c])
        return out

    def J(x):
        out = np.zeros((65, 11))
        e = np.exp(-t * x[4])
        out[:, 0] = -e
        out[:, 4] = t * x[0] * e
        for a, c, p in terms:
            s = t - x[p]
            E = np.exp(-s * s * x[c])
            out[:, a] = -E
            out[:, c] = x[a] * s * s * E
            out[:, p] = -2.0 * x[a] * s * x[c] * E
        return out

    def S(x, w):
        out = np.zeros((11, 11))
        e = np.exp(-t * x[4]) * w
        out[0, 4] = out[4, 0] = np.sum(t * e)
        out[4, 4] = np.sum(-t * t * x[0] * e)
        for a, c, p in terms:
            s = t - x[p]
            E = np.exp(-s * s * x[c]) * w
            xa, xc = x[a], x[c]
            # second derivatives of the model term x_a exp(-s^2 x_c); r = y - model
            out[a, c] = out[c, a] = np.sum(s * s * E)
            out[a, p] = out[p, a] = np.sum(-2.0 * s * xc * E)
            out[c, c] = np.sum(-xa * s ** 4 * E)
            out[c, p] = out[p, c] = np.sum(-xa * E * (2.0 * s - 2.0 * s ** 3 * xc))
            out[p, p] = np.sum(-2.0 * xa * xc * E * (2.0 * s * s * xc - 1.0))
        return out

    return Residuals("osborne2", 19, 11, 65,
                     np.array([1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5]),
                     r, J, S, (4.01377e-2,))


# ---------------------------------------------------------------------------------------
# 20-35: variable dimensions
# ---------------------------------------------------------------------------------------
def _watson(n=6, m=31):
    if not 2 <= n <= 31:
        raise ValueError(f"n must be in [2, 31] for watson, got {n!r}")
    t = np.arange(1.0, 30.0) / 29.0
    j = np.arange(n)
    P = t[:, None] ** j[None, :]                              # t^(j-1), 1-based j
    Q = j[None, :] * t[:, None] ** np.maximum(j - 1, 0)[None, :]  # (j-1) t^(j-2)

    def r(x):
        s2 = P @ x
        return np.concatenate([Q @ x - s2 * s2 - 1.0, [x[0], x[1] - x[0] ** 2 - 1.0]])

    def J(x):
        s2 = P @ x
        out = np.zeros((31, n))
        out[:29] = Q - 2.0 * s2[:, None] * P
        out[29, 0] = 1.0
        out[30, 0] = -2.0 * x[0]
        out[30, 1] = 1.0
        return out

    def S(x, w):
        out = -2.0 * (P.T * w[:29]) @ P
        out[0, 0] += -2.0 * w[30]
        return out

    f_min = {6: (2.28767e-3,), 9: (1.39976e-6,), 12: (4.72238e-10,)}.get(n, ())
    return Residuals("watson", 20, n, 31, np.zeros(n), r, J, S, f_min)


def _extended_rosenbrock(n=10, m=None):
    if n % 2:
        raise ValueError(f"n must be even for extended_rosenbrock, got {n!r}")

    def r(x):
        a, b = x[0::2], x[1::2]
        return np.column_stack([10.0 * (b - a * a), 1.0 - a]).reshape(-1)

    def J(x):
        out = np.zeros((n, n))
        i = np.arange(0, n, 2)
        out[i, i] = -20.0 * x[i]
        out[i, i + 1] = 10.0
        out[i + 1, i] = -1.0
        return out

    def S(x, w):
        d = np.zeros(n)
        d[0::2] = -20.0 * w[0::2]
        return np.diag(d)

    return Residuals("extended_rosenbrock", 21, n, n, np.tile([-1.2, 1.0], n // 2), r, J, S,
                     (0.0,), 0.0)


def _penalty1(n=10, m=None):
    a = 1e-5
    sa = np.sqrt(a)

    def r(x):
        return np.concatenate([sa * (x - 1.0), [x @ x - 0.25]])

    def J(x):
        return np.vstack([sa * np.eye(n), 2.0 * x[None, :]])

    def S(x, w):
        return 2.0 * w[n] * np.eye(n)

    f_min = {4: (2.24997e-5,), 10: (7.08765e-5,)}.get(n, ())
    return Residuals("penalty1", 23, n, n + 1, np.arange(1.0, n + 1), r, J, S, f_min)


def _penalty2(n=10, m=None):
    a = 1e-5
    sa = np.sqrt(a)
    i = np.arange(2, n + 1)
    y = np.exp(i / 10.0) + np.exp((i - 1) / 10.0)
    c = n - np.arange(n)  # n - j + 1, 1-based j
    e1 = np.exp(-0.1)

    def r(x):
        ex = np.exp(x / 10.0)
        return np.concatenate([[x[0] - 0.2], sa * (ex[1:] + ex[:-1] - y), sa * (ex[1:] - e1),
                               [np.sum(c * x * x) - 1.0]])

    def J(x):
        ex = np.exp(x / 10.0) / 10.0
        out = np.zeros((2 * n, n))
        out[0, 0] = 1.0
        k = np.arange(1, n)
        out[k, k] = sa * ex[1:]
        out[k, k - 1] = sa * ex[:-1]
        out[n - 1 + k, k] = sa * ex[1:]
        out[2 * n - 1] = 2.0 * c * x
        return out

    def S(x, w):
        ex = np.exp(x / 10.0) / 100.0
        d = np.zeros(n)
        k = np.arange(1, n)
        d[1:] += sa * w[k] * ex[1:]
        d[:-1] += sa * w[k] * ex[:-1]
        d[1:] += sa * w[n - 1 + k] * ex[1:]
        d += 2.0 * c * w[2 * n - 1]
        return np.diag(d)

    f_min = {4: (9.37629e-6,), 10: (2.93660e-4,)}.get(n, ())
    return Residuals("penalty2", 24, n, 2 * n, np.full(n, 0.5), r, J, S, f_min)


def _variably_dimensioned(n=10, m=None):
    j = np.arange(1.0, n + 1)

    def r(x):
        s = j @ (x - 1.0)
        return np.concatenate([x - 1.0, [s, s * s]])

    def J(x):
        s = j @ (x - 1.0)
        return np.vstack([np.eye(n), j[None, :], 2.0 * s * j[None, :]])

    def S(x, w):
        return 2.0 * w[n + 1] * np.outer(j, j)

    return Residuals("variably_dimensioned", 25, n, n + 2, 1.0 - j / n, r, J, S, (0.0,), 0.0)


def _trigonometric(n=10, m=None):
    i = np.arange(1.0, n + 1)

    def r(x):
        c = np.cos(x)
        return n - c.sum() + i * (1.0 - c) - np.sin(x)

    def J(x):
        s, c = np.sin(x), np.cos(x)
        return np.tile(s, (n, 1)) + np.diag(i * s - c)

    def S(x, w):
        s, c = np.sin(x), np.cos(x)
        return np.diag(w.sum() * c + w * (i * c + s))

    f_min = (0.0, 2.79506e-5) if n == 10 else (0.0,)
    return Residuals("trigonometric", 26, n, n, np.full(n, 1.0 / n), r, J, S, f_min, 0.0)


def _brown_almost_linear(n=10, m=None):
    def prod_except(x):
        """``prod_{k != j} x_k`` for every j, without dividing (x may hold zeros)."""
        pre = np.concatenate([[1.0], np.cumprod(x[:-1])])
        suf = np.concatenate([np.cumprod(x[::-1][:-1])[::-1], [1.0]])
        return pre * suf

    def r(x):
        return np.concatenate([x[:-1] + x.sum() - (n + 1.0), [np.prod(x) - 1.0]])

    def J(x):
        out = np.ones((n, n)) + np.eye(n)
        out[n - 1] = prod_except(x)
        return out

    def S(x, w):
        out = np.zeros((n, n))
        for k in range(n):
            xk = x.copy()
            xk[k] = 1.0
            row = prod_except(xk)  # prod over l != j of xk = prod_{l not in {j, k}} x_l
            row[k] = 0.0
            out[k] = row
        return w[n - 1] * out

    return Residuals("brown_almost_linear", 27, n, n, np.full(n, 0.5), r, J, S, (0.0, 1.0), 0.0)


def _grid(n):
    h = 1.0 / (n + 1)
    return h, h * np.arange(1.0, n + 1)


def _discrete_boundary_value(n=10, m=None):
    h, t = _grid(n)

    def r(x):
        xp = np.concatenate([[0.0], x, [0.0]])
        return 2.0 * x - xp[:-2] - xp[2:] + h * h * (x + t + 1.0) ** 3 / 2.0

    def J(x):
        out = np.diag(2.0 + 1.5 * h * h * (x + t + 1.0) ** 2)
        k = np.arange(n - 1)
        out[k, k + 1] = -1.0
        out[k + 1, k] = -1.0
        return out

    def S(x, w):
        return np.diag(3.0 * h * h * w * (x + t + 1.0))

    return Residuals("discrete_boundary_value", 28, n, n, t * (t - 1.0), r, J, S, (0.0,), 0.0)


def _discrete_integral(n=10, m=None):
    h, t = _grid(n)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    K = np.where(j <= i, (1.0 - t[:, None]) * t[None, :], t[:, None] * (1.0 - t[None, :]))

    def r(x):
        return x + h * (K @ (x + t + 1.0) ** 3) / 2.0

    def J(x):
        return np.eye(n) + (h / 2.0) * K * (3.0 * (x + t + 1.0) ** 2)[None, :]

    def S(x, w):
        return np.diag((h / 2.0) * (K.T @ w) * 6.0 * (x + t + 1.0))

    return Residuals("discrete_integral", 29, n, n, t * (t - 1.0), r, J, S, (0.0,), 0.0)


def _broyden_tridiagonal(n=10, m=None):
    def r(x):
        xp = np.concatenate([[0.0], x, [0.0]])
        return (3.0 - 2.0 * x) * x - xp[:-2] - 2.0 * xp[2:] + 1.0

    def J(x):
        out = np.diag(3.0 - 4.0 * x)
        k = np.arange(n - 1)
        out[k + 1, k] = -1.0
        out[k, k + 1] = -2.0
        return out

    def S(x, w):
        return np.diag(-4.0 * w)

    return Residuals("broyden_tridiagonal", 30, n, n, np.full(n, -1.0), r, J, S, (0.0,), 0.0)


def _broyden_banded(n=10, m=None):
    ml, mu = 5, 1
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    M = ((j != i) & (j >= i - ml) & (j <= i + mu)).astype(float)

    def r(x):
        return x * (2.0 + 5.0 * x * x) + 1.0 - M @ (x * (1.0 + x))

    def J(x):
        return np.diag(2.0 + 15.0 * x * x) - M * (1.0 + 2.0 * x)[None, :]

    def S(x, w):
        return np.diag(30.0 * x * w - 2.0 * (M.T @ w))

    return Residuals("broyden_banded", 31, n, n, np.full(n, -1.0), r, J, S, (0.0,), 0.0)


def _linear(A, b, name, number, f_min, f_star=None):
    n = A.shape[1]

    def r(x):
        return A @ x - b

    return Residuals(name, number, n, A.shape[0], np.ones(n), r, lambda x: A.copy(), _zero_S(n),
                     f_min, f_star)


def _linear_full_rank(n=10, m=20):
    if m < n:
        raise ValueError(f"m must be >= n for linear_full_rank, got n={n}, m={m}")
    A = np.vstack([np.eye(n), np.zeros((m - n, n))]) - 2.0 / m
    return _linear(A, np.ones(m), "linear_full_rank", 32, (float(m - n),),
                   0.0 if m == n else None)


def _linear_rank1(n=10, m=20):
    if m < n:
        raise ValueError(f"m must be >= n for linear_rank1, got n={n}, m={m}")
    A = np.outer(np.arange(1.0, m + 1), np.arange(1.0, n + 1))
    return _linear(A, np.ones(m), "linear_rank1", 33, (m * (m - 1) / (2.0 * (2 * m + 1)),))


def _linear_rank1_zero(n=10, m=20):
    if m < n or n < 3:
        raise ValueError(f"linear_rank1_zero needs m >= n >= 3, got n={n}, m={m}")
    col = np.concatenate([[0.0], np.arange(1.0, m - 1), [0.0]])  # i - 1 for 2 <= i <= m-1
    row = np.concatenate([[0.0], np.arange(2.0, n), [0.0]])      # j for 2 <= j <= n-1
    return _linear(np.outer(col, row), np.ones(m), "linear_rank1_zero", 34,
                   ((m * m + 3 * m - 6) / (2.0 * (2 * m - 3)),))


def _chebyquad(n=8, m=None):
    m = n if m is None else m
    if m < n:
        raise ValueError(f"m must be >= n for chebyquad, got n={n}, m={m}")
    i = np.arange(1, m + 1)
    integral = np.zeros(m)
    even = i % 2 == 0
    integral[even] = -1.0 / (i[even] * i[even] - 1.0)

    def cheb(x):
        """T_i(2x - 1) and its first two x-derivatives, i = 1..m (rows), per entry of x."""
        y = 2.0 * x - 1.0
        T = np.zeros((m + 1, n))
        dT = np.zeros((m + 1, n))
        d2T = np.zeros((m + 1, n))
        T[0] = 1.0
        T[1] = y
        dT[1] = 1.0
        for k in range(1, m):
            T[k + 1] = 2.0 * y * T[k] - T[k - 1]
            dT[k + 1] = 2.0 * T[k] + 2.0 * y * dT[k] - dT[k - 1]
            d2T[k + 1] = 4.0 * dT[k] + 2.0 * y * d2T[k] - d2T[k - 1]
        return T[1:], 2.0 * dT[1:], 4.0 * d2T[1:]

    def r(x):
        return cheb(x)[0].mean(axis=1) - integral

    def J(x):
        return cheb(x)[1] / n

    def S(x, w):
        return np.diag(w @ cheb(x)[2] / n)

    f_min = ()
    if m == n:
        f_min = {8: (3.51687e-3,), 10: (6.50395e-3,)}.get(n, (0.0,) if n <= 7 or n == 9 else ())
    return Residuals("chebyquad", 35, n, m, np.arange(1.0, n + 1) / (n + 1), r, J, S, f_min,
                     0.0 if f_min == (0.0,) else None)


#: name -> (builder, default n, default m)
MGH: dict[str, tuple[Callable, int, int | None]] = {
    "rosenbrock": (_rosenbrock, 2, 2),
    "freudenstein_roth": (_freudenstein_roth, 2, 2),
    "powell_badly_scaled": (_powell_badly_scaled, 2, 2),
    "brown_badly_scaled": (_brown_badly_scaled, 2, 3),
    "beale": (_beale, 2, 3),
    "jennrich_sampson": (_jennrich_sampson, 2, 10),
    "helical_valley": (_helical_valley, 3, 3),
    "bard": (_bard, 3, 15),
    "gaussian": (_gaussian, 3, 15),
    "meyer": (_meyer, 3, 16),
    "gulf": (_gulf, 3, 99),
    "box3": (_box3, 3, 10),
    "powell_singular": (_powell_singular, 4, 4),
    "wood": (_wood, 4, 6),
    "kowalik_osborne": (_kowalik_osborne, 4, 11),
    "brown_dennis": (_brown_dennis, 4, 20),
    "osborne1": (_osborne1, 5, 33),
    "biggs_exp6": (_biggs_exp6, 6, 13),
    "osborne2": (_osborne2, 11, 65),
    "watson": (_watson, 6, 31),
    "extended_rosenbrock": (_extended_rosenbrock, 10, None),
    "extended_powell": (_extended_powell, 12, None),
    "penalty1": (_penalty1, 10, None),
    "penalty2": (_penalty2, 10, None),
    "variably_dimensioned": (_variably_dimensioned, 10, None),
    "trigonometric": (_trigonometric, 10, None),
    "brown_almost_linear": (_brown_almost_linear, 10, None),
    "discrete_boundary_value": (_discrete_boundary_value, 10, None),
    "discrete_integral": (_discrete_integral, 10, None),
    "broyden_tridiagonal": (_broyden_tridiagonal, 10, None),
    "broyden_banded": (_broyden_banded, 10, None),
    "linear_full_rank": (_linear_full_rank, 10, 20),
    "linear_rank1": (_linear_rank1, 10, 20),
    "linear_rank1_zero": (_linear_rank1_zero, 10, 20),
    "chebyquad": (_chebyquad, 8, None),
}

#: functions 1-19 have a fixed n; these five of them leave m free
_FREE_M_FIXED_N = {"jennrich_sampson", "gulf", "box3", "brown_dennis", "biggs_exp6"}
_FIXED_N = set(list(MGH)[:19]) - _FREE_M_FIXED_N


def names() -> list[str]:
    """The 35 function names, in the paper's order."""
    return list(MGH)


def residuals(name: str, n: int | None = None, m: int | None = None) -> Residuals:
    """The :class:`Residuals` of one function (see :func:`mgh` for the arguments)."""
    if name not in MGH:
        raise ValueError(f"unknown MGH function {name!r}; choose from {', '.join(MGH)}")
    build, n_def, m_def = MGH[name]
    if n is not None and (name in _FIXED_N or name in _FREE_M_FIXED_N) and n != n_def:
        raise ValueError(f"n is fixed at {n_def} for {name}, got n={n!r}")
    if m is not None and name in _FIXED_N and m != m_def:
        raise ValueError(f"m is fixed at {m_def} for {name}, got m={m!r}")
    for label, v in (("n", n), ("m", m)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or v < 1):
            raise ValueError(f"{label} must be a positive integer, got {v!r}")
    n = n_def if n is None else int(n)
    m = m_def if m is None else int(m)
    return build(n, m)


def mgh(name: str, n: int | None = None, m: int | None = None, *, scale: float = 1.0,
        x0: Any = None) -> Minimize:
    """One Moré-Garbow-Hillstrom function as a :class:`~neurosolve.problems.Minimize`.

    Parameters
    ----------
    name : str
        One of :func:`names` (table in the module docstring).
    n, m : int, optional
        Unknowns and residuals, for the functions where the paper leaves them free
        (default: the module table's values).
    scale : float
        Start at ``scale * x0`` (the paper's scaled starts use 10 and 100).
    x0 : (n,) array, optional
        Another start (then ``scale`` is ignored).

    Returns
    -------
    Minimize
        ``fun``, ``fun_and_grad``, ``hess``, ``hessp``, the Gauss-Newton structure
        (``residual = sqrt(2) r``, ``power = 2``), ``hess_diag``; ``data`` holds
        ``number``, ``m``, ``scale``, ``f_min`` (the paper's minimum values) and the raw
        ``residuals`` object. ``name`` is ``"mgh-<name>-n<n>"`` with ``-x<scale>`` for a
        scaled start.

    Raises
    ------
    ValueError
        An unknown ``name``; ``n``/``m`` given for a function whose dimensions are fixed,
        or out of the function's range; a non-finite or non-positive ``scale``.
    """
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    spec = residuals(name, n, m)
    nn = spec.n
    r, J, S = spec.r, spec.J, spec.S
    start = spec.x0 * float(scale) if x0 is None else np.asarray(x0, dtype=float)

    def fun(x):
        rv = r(x)
        return float(rv @ rv)

    def fun_and_grad(x):
        rv = r(x)
        return float(rv @ rv), 2.0 * (J(x).T @ rv)

    def hess(x):
        Jx = J(x)
        H = 2.0 * (Jx.T @ Jx + S(x, r(x)))
        return 0.5 * (H + H.T)

    def hessp(x, v):
        Jx = J(x)
        return 2.0 * (Jx.T @ (Jx @ v) + S(x, r(x)) @ v)

    def hess_diag(x):
        Jx = J(x)
        return 2.0 * ((Jx * Jx).sum(axis=0) + np.diagonal(S(x, r(x))))

    label = f"mgh-{name}-n{nn}" + ("" if scale == 1 or x0 is not None else f"-x{scale:g}")
    return Minimize(fun, None, start, fun_and_grad=fun_and_grad, hess=hess, hessp=hessp,
                    residual=lambda x: _SQRT2 * r(x), residual_jac=lambda x: _SQRT2 * J(x),
                    power=2.0, f_star=spec.f_star, structure={"hess_diag": hess_diag},
                    name=label,
                    data={"number": spec.number, "m": spec.m, "scale": float(scale),
                          "f_min": spec.f_min, "residuals": spec})


def test_set(scales=(1.0, 10.0, 100.0), *, only: list[str] | None = None) -> list[Minimize]:
    """The test set: every function at its default dimensions from each scaled start.

    Watson's standard start is 0, so its scaled starts coincide with it and are left out
    (as in the paper). A scaled start where ``f`` or its gradient is not finite is left out
    too (none at the default dimensions).

    Parameters
    ----------
    scales : tuple of float
        Start multipliers (default the paper's 1, 10, 100).
    only : list of str, optional
        A subset of :func:`names`.
    """
    out = []
    for nm in (only if only is not None else names()):
        for s in scales:
            spec = residuals(nm)
            if s != 1 and not np.any(spec.x0):
                continue
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    out.append(mgh(nm, scale=s))
            except ValueError:  # a non-finite start
                continue
    return out


test_set.__test__ = False  # not a pytest test
