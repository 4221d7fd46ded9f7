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
from typing import Any, ClassVar

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


def build_cvxpy_problem(problem: ConvexReLU, duals: dict | None = None):
    """The cvxpy ``Problem`` of ``problem`` and its variables ``[(V_o, W_o) per output]``.

    ``duals`` (a dict, filled in place) receives the constraints whose dual values make a
    dual point of an epsilon = 0 program: ``"cones"``: per output the pair of ``G >= 0``
    constraints of V and W (duals (n, P), the cone multipliers), and for the hinge loss
    ``"hinge"``: per output the constraint ``t >= 1 - y z`` (its dual is ``-lam / y``).
    """
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
                if duals is not None:
                    duals.setdefault("cones", {}).setdefault(o, []).append(cons[-1])
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
        elif eps > 0 or duals is None:
            obj = obj + w * cp.sum(cp.pos(1 - cp.multiply(y, z) + eps * bn))
        else:
            # the same hinge with a slack, so that its multiplier (the loss's dual) is read off
            t = cp.Variable(n, name=f"h{o}")
            cons.append(t >= 1 - cp.multiply(y, z))
            duals.setdefault("hinge", {})[o] = cons[-1]
            cons.append(t >= 0)
            obj = obj + w * cp.sum(t)
        obj = obj + beta * (cp.sum(cp.norm(V, 2, axis=1)) + cp.sum(cp.norm(W, 2, axis=1)))
    return cp.Problem(cp.Minimize(obj), cons), variables


def _dual_point(problem, x, duals):
    """``(lam (n, c), mu (n, 2 P c))`` from the solved constraints, or None."""
    from neurosolve.backends.ops import to_numpy
    from neurosolve.problems import relu_losses as RL

    cones = duals.get("cones")
    if problem.robust or not cones:
        return None
    n, P, c = problem.n, problem.P, problem.c
    mu = np.zeros((n, 2, P, c))
    for o, (cv, cw) in cones.items():
        if cv.dual_value is None or cw.dual_value is None:
            return None
        mu[:, 0, :, o], mu[:, 1, :, o] = cv.dual_value, cw.dual_value
    z = problem.convex_output(to_numpy(x))
    lam = np.asarray(RL.loss_grad(problem.loss, z, problem.Y_np, problem.w), dtype=np.float64)
    for o, con in duals.get("hinge", {}).items():
        if con.dual_value is None:
            return None
        lam[:, o] = -problem.Y_np[:, o] * np.asarray(con.dual_value, dtype=np.float64)
    return lam, mu.reshape(n, 2 * P * c)


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
    dual: Any = None


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
        duals: dict = {}
        prob, variables = build_cvxpy_problem(problem, duals if not problem.robust else None)
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
        st.dual = _dual_point(problem, st.x, duals)
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
        """The interior-point solution's cone violation, ``relative_cone_violation <= 1e-6``
        (Clarabel's default feasibility tolerance is 1e-8 on a scaled program), and for
        epsilon = 0 programs the relative duality gap with cvxpy's dual point as the
        witness, ``relative_gap <= 1e-4`` (measured 4e-8..2e-7 for hinge, 1.4e-5 for
        logistic, whose exponential cones are solved less tightly)."""
        if problem.robust:
            return {"relative_cone_violation": 1e-6}
        return {"relative_cone_violation": 1e-6, "relative_gap": 1e-4}

    def witness(self, problem, st, ctx) -> dict:
        """cvxpy's dual point (cone multipliers; for the hinge loss its multiplier), which
        the certificate verifies (:meth:`ConvexReLU.witness_bound`)."""
        return {} if st.dual is None else {"dual": st.dual}

    def finalize(self, problem, st, ctx):
        ctx.counters["cvxpy_status"] = st.cvx_status
        ctx.counters["solve_time"] = st.solve_time
        ctx.counters["compile_time"] = st.compile_time
        ctx.counters["build_time"] = st.build_time
        return st.x
