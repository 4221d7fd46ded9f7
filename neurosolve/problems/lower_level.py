"""Exact lower-level solvers of bilevel problems, used by the certificate only.

``v(x) = min_y {f(x, y) : g(x, y) <= 0, h(x, y) = 0, y in Y}`` is what the lower-level gap
``f(x, y) - v(x)`` of :meth:`neurosolve.problems.bilevel.Bilevel.certificate` is measured
against: a QP through cvxpy/Clarabel when ``f`` is quadratic and the constraints affine,
SLSQP (scipy) for small smooth problems otherwise.
"""

from __future__ import annotations

import warnings

import numpy as np

from neurosolve.problems import sets as _sets
from neurosolve.problems.bilevel_functions import KronIdentity, _numpy, _vec_to

__all__ = ["qp_lower_level", "slsqp_lower_level", "set_constraints_cvx"]


def set_constraints_cvx(S, var, cp):
    """cvxpy constraints for ``var in S`` (None when S cannot be expressed)."""
    if isinstance(S, _sets.Reals):
        return []
    if isinstance(S, _sets.Box):
        cons = []
        lo, hi = S.lower, S.upper
        if np.any(np.isfinite(lo)):
            idx = np.isfinite(lo)
            cons.append(var[idx] >= lo[idx])
        if np.any(np.isfinite(hi)):
            idx = np.isfinite(hi)
            cons.append(var[idx] <= hi[idx])
        return cons
    if isinstance(S, _sets.HalfSpace):
        return [S.a @ var <= S.b]
    if isinstance(S, _sets.Affine):
        return [S.A @ var == S.b]
    if isinstance(S, _sets.Ball):
        return [cp.norm(var - S.center) <= S.radius]
    if isinstance(S, _sets.Polyhedron):
        cons = []
        if S.A_ub is not None:
            cons.append(S.A_ub @ var <= S.b_ub)
        if S.A_eq is not None:
            cons.append(S.A_eq @ var == S.b_eq)
        box = _sets.Box(S.lower, S.upper)
        return cons + set_constraints_cvx(box, var, cp)
    if isinstance(S, _sets.Intersection):
        out = []
        for P in S.parts:
            c = set_constraints_cvx(P, var, cp)
            if c is None:
                return None
            out += c
        return out
    return None


def qp_lower_level(problem, x: np.ndarray):
    """``(y*, v(x))`` of a bilevel problem in array form (quadratic ``f``, affine ``g``/``h``)
    by cvxpy/Clarabel."""
    import cvxpy as cp
    import scipy.sparse as sp

    n, m = problem.n, problem.m
    fq = problem.f.to("numpy")
    Q = fq.Q
    if isinstance(Q, KronIdentity):
        Q = Q.tosparse()
    Q = sp.csr_matrix(Q) if not sp.issparse(Q) else Q.tocsr()
    Qyy, Qyx = Q[n:, n:], Q[n:, :n]
    c = _numpy(fq.c)
    lin = Qyx @ x + c[n:]
    const = 0.5 * x @ (Q[:n, :n] @ x) + c[:n] @ x + fq.const
    y = cp.Variable(m)
    obj = 0.5 * cp.quad_form(y, cp.psd_wrap(Qyy)) + lin @ y
    cons = set_constraints_cvx(problem.Y, y, cp)
    if cons is None:
        return None, float("nan")
    for fn, kind in ((problem.g, "ineq"), (problem.h, "eq")):
        if fn is None:
            continue
        A = fn.to("numpy")
        Am = A.A if not hasattr(A.A, "tocsr") else A.A.tocsr()
        Ax, Ay = Am[:, :n], Am[:, n:]
        rhs = A.b_numpy() - Ax @ x
        cons.append(Ay @ y <= rhs if kind == "ineq" else Ay @ y == rhs)
    prob = cp.Problem(cp.Minimize(obj), cons)
    try:
        prob.solve(solver="CLARABEL")
    except Exception:  # noqa: BLE001
        return None, float("nan")
    if prob.status not in ("optimal", "optimal_inaccurate"):
        return None, float("nan")
    return y.value, float(prob.value + const)


def slsqp_lower_level(problem, x: np.ndarray):
    """``(y*, v(x))`` of a small smooth lower level by SLSQP (a local solver: exact only
    for convex lower levels)."""
    from scipy.optimize import minimize

    lib = problem.array_library
    O = problem.oracles()
    conv = (lambda a: _vec_to(a, "torch", problem.dtype, problem.device)) if lib == "torch" \
        else (lambda a: np.asarray(a, dtype=float))
    xa = conv(x)
    l = problem.n_ineq + problem.n_eq

    def fun(y):
        v, _, gy = O.f_grad(xa, conv(y))
        return float(_numpy(v)), _numpy(gy)

    def jac_rows(y):
        J = np.empty((l, problem.m))
        for i in range(l):
            e = np.zeros(l)
            e[i] = 1.0
            _, _, vy = O.cons_vjp(xa, conv(y), conv(e))
            J[i] = _numpy(vy)
        return J

    cons = []
    if problem.n_ineq:
        cons.append({"type": "ineq", "fun": lambda y: -_numpy(O.cons(xa, conv(y)))[: problem.n_ineq],
                     "jac": lambda y: -jac_rows(y)[: problem.n_ineq]})
    if problem.n_eq:
        cons.append({"type": "eq", "fun": lambda y: _numpy(O.cons(xa, conv(y)))[problem.n_ineq:],
                     "jac": lambda y: jac_rows(y)[problem.n_ineq:]})
    bounds = None
    if isinstance(problem.Y, _sets.Box):
        bounds = list(zip(np.where(np.isfinite(problem.Y.lower), problem.Y.lower, None),
                          np.where(np.isfinite(problem.Y.upper), problem.Y.upper, None)))
    elif not isinstance(problem.Y, _sets.Reals):
        return None, float("nan")
    y0 = _numpy(problem.y0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = minimize(fun, y0, jac=True, method="SLSQP", bounds=bounds, constraints=cons,
                       options={"maxiter": 1000, "ftol": 1e-14})
    if not res.success:
        return None, float("nan")
    return res.x, float(res.fun)
