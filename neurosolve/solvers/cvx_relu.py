"""The convex ReLU programs through cvxpy: the interior-point reference (Clarabel default).

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, arXiv:2201.01965 (the authors' baseline solves the
   same program with CVXPY + MOSEK).
.. [2] S. Diamond, S. Boyd, "CVXPY: A Python-Embedded Modeling Language for Convex
   Optimization", JMLR 17(83), 2016; P. J. Goulart, Y. Chen, "Clarabel: An interior-point
   solver for conic programs with quadratic objectives", arXiv:2405.12762, 2024.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from neurosolve.core import Solver, State, Status, Stop
from neurosolve.problems.convex_relu import ConvexReLU

__all__ = ["CvxpyReLU", "build_cvxpy_problem"]

_STATUS = {
    "optimal": Status.CONVERGED,
    "optimal_inaccurate": Status.STAGNATION,
    "infeasible": Status.INFEASIBLE,
    "infeasible_inaccurate": Status.INFEASIBLE,
    "unbounded": Status.DIVERGED,
    "unbounded_inaccurate": Status.DIVERGED,
    "user_limit": Status.MAX_ITER,
    "solver_error": Status.BREAKDOWN,
}


def build_cvxpy_problem(problem: ConvexReLU):
    """The cvxpy ``Problem`` of ``problem`` and its variables ``[(V_o, W_o) per output]``."""
    import cvxpy as cp

    X, D, Y = problem.Xt_np, problem.D_np, problem.Y_np
    n, d, P = problem.n, problem.d, problem.P
    E = 2.0 * D - 1.0
    eps, q, w, beta = problem.epsilon, problem.q, problem.w, problem.beta
    sc = problem.sc_np
    cons, obj, variables = [], 0, []
    for o in range(problem.c):
        V = cp.Variable((P, d), name=f"v{o}")
        W = cp.Variable((P, d), name=f"w{o}")
        variables.append((V, W))
        y = Y[:, o]
        z = cp.sum(cp.multiply(D, X @ (V - W).T), axis=1)
        for B in (V, W):
            G = cp.multiply(E, X @ B.T)
            if eps > 0:
                nb = cp.norm(cp.multiply(B, np.tile(sc, (P, 1))), q, axis=1)
                cons.append(G >= eps * (np.ones((n, 1)) @ cp.reshape(nb, (1, P), order="C")))
            else:
                cons.append(G >= 0)
        if eps > 0:
            Bk = cp.multiply(D @ (V - W), np.tile(sc, (n, 1)))
            bn = cp.norm(Bk, q, axis=1)
        else:
            bn = 0
        if problem.loss == "squared":
            if eps > 0:
                t = cp.Variable(n, name=f"t{o}")
                cons.append(t >= cp.abs(z - y) + eps * bn)
                obj = obj + 0.5 * w * cp.sum_squares(t)
            else:
                obj = obj + 0.5 * w * cp.sum_squares(z - y)
        elif problem.loss == "logistic":
            obj = obj + w * cp.sum(cp.logistic(-cp.multiply(y, z) + eps * bn))
        else:
            obj = obj + w * cp.sum(cp.pos(1 - cp.multiply(y, z) + eps * bn))
        obj = obj + beta * (cp.sum(cp.norm(V, 2, axis=1)) + cp.sum(cp.norm(W, 2, axis=1)))
    return cp.Problem(cp.Minimize(obj), cons), variables


@dataclass(eq=False)
class CvxState(State):
    """The outcome of the one interior-point solve (``init`` does all the work)."""

    cvx_status: str = ""
    message: str | None = None
    objective: float = float("nan")
    solve_time: float | None = None
    compile_time: float | None = None
    build_time: float = 0.0
    total_time: float = 0.0
    zero: bool = False


@dataclass(frozen=True, kw_only=True)
class CvxpyReLU(Solver):
    """Solve :class:`~neurosolve.problems.ConvexReLU` with cvxpy (one step: init solves).

    Parameters
    ----------
    solver : str
        Any installed cvxpy solver name (``cvxpy.installed_solvers()``); default Clarabel.
    solver_options : dict, optional
        Keyword arguments passed to ``Problem.solve`` (e.g. tolerances, ``time_limit``).
    verbose : bool

    Notes
    -----
    Status follows cvxpy's: "optimal" -> CONVERGED, "optimal_inaccurate" -> STAGNATION,
    "infeasible" -> INFEASIBLE, "unbounded" -> DIVERGED, "user_limit" -> MAX_ITER, a
    solver error -> BREAKDOWN. A robust program whose optimal solution is all zero is
    reported INFEASIBLE (epsilon too large). ``Result.stats`` holds ``solve_time``
    (cvxpy's measured solver time), ``compile_time`` and ``cvxpy_status``.

    References
    ----------
    .. [1] S. Diamond, S. Boyd, JMLR 17(83), 2016. .. [2] Bai et al., arXiv:2201.01965.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 3)); y = X[:, 0] ** 2
    >>> prob = ns.problems.ConvexReLU(X, y, beta=0.1, patterns=6)
    >>> ns.solve(prob, ns.solvers.CvxpyReLU()).status.name
    'CONVERGED'
    """

    solver: str = "CLARABEL"
    solver_options: dict | None = field(default=None, compare=False)
    verbose: bool = False

    metrics: ClassVar[tuple[str, ...]] = ("objective",)
    problem_types: ClassVar[tuple[type, ...]] = (ConvexReLU,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def init(self, problem: ConvexReLU, x0, ctx) -> State:
        import cvxpy as cp

        if self.solver.upper() not in cp.installed_solvers():
            raise ValueError(f"cvxpy solver {self.solver!r} is not installed; installed: "
                             f"{', '.join(cp.installed_solvers())}")
        t0 = time.perf_counter()
        prob, variables = build_cvxpy_problem(problem)
        t_build = time.perf_counter() - t0
        message = None
        try:
            prob.solve(solver=self.solver.upper(), verbose=self.verbose,
                       **(self.solver_options or {}))
            cstatus = prob.status
        except cp.error.SolverError as exc:
            cstatus, message = "solver_error", f"cvxpy solver {self.solver} failed: {exc}"
        t_total = time.perf_counter() - t0
        x = np.zeros((2, problem.P, problem.d, problem.c))
        for o, (V, W) in enumerate(variables):
            if V.value is not None:
                x[0, :, :, o] = V.value
                x[1, :, :, o] = W.value
        if problem.c == 1:
            x = x[..., 0]
        st = CvxState(x=problem._from_numpy(x), k=0)
        st.cvx_status = cstatus
        st.message = message
        st.objective = prob.value if prob.value is not None else float("nan")
        stats = getattr(prob, "solver_stats", None)
        st.solve_time = getattr(stats, "solve_time", None) if stats is not None else None
        st.compile_time = getattr(prob, "compilation_time", None)
        st.build_time = t_build
        st.total_time = t_total
        st.metrics = {"objective": float(st.objective) if st.objective is not None else float("nan")}
        st.zero = problem.is_trivial(x)
        return st

    def step(self, problem, st, ctx):  # pragma: no cover - init does all the work
        st.k += 1
        return st

    def check(self, problem, st, ctx):
        status = _STATUS.get(st.cvx_status, Status.BREAKDOWN)
        if status is Status.CONVERGED and problem.robust and st.zero:
            return Stop(Status.INFEASIBLE, (
                f"the robust program's solution is all zero: with epsilon={problem.epsilon:g} no "
                "neuron can keep its activation pattern on the whole perturbation ball (or beta "
                "is too large). Reduce epsilon or beta, or use more patterns."))
        if status is Status.CONVERGED:
            return Stop(status)
        return Stop(status, st.message or f"cvxpy returned status {st.cvx_status!r} ({self.solver})")

    def tolerance(self, problem, state) -> dict[str, float]:
        """The interior-point solution's cone violation: ``relative_cone_violation <= 1e-6``
        (Clarabel's default feasibility tolerance is 1e-8 on a scaled program)."""
        return {"relative_cone_violation": 1e-6}

    def finalize(self, problem, st, ctx):
        ctx.counters["cvxpy_status"] = st.cvx_status
        ctx.counters["solve_time"] = st.solve_time
        ctx.counters["compile_time"] = st.compile_time
        ctx.counters["build_time"] = st.build_time
        return st.x
