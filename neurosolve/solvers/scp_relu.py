"""SCP: the sampled convex program over fixed random ReLU features, solved by FISTA.

Scenario theory applied to the dual of the training problem samples directions ``h_j`` on
the unit sphere and keeps only those dual constraints; the dual of the sampled problem is
the unconstrained l1-regularized fit over fixed ReLU features ::

    min_a  loss( sum_j (X h_j)_+ a_j , y ) + beta ||a||_1

(with unit-norm first-layer weights the weight decay ``beta/2 (||u||^2 + a^2)`` becomes
``beta |a|`` after rebalancing). Its minimizer is a ReLU network with one neuron per nonzero
``a_j`` and, since ``a_j h_j`` lies in the cone of the pattern ``1[X h_j >= 0]``, also a
feasible point of the sampled convex program with those patterns, so the problem's
certificate applies (its value is an upper bound on the sampled program's optimum).

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, arXiv:2201.01965 (the SCP algorithm); G. C. Calafiore,
   M. C. Campi, "The scenario approach to robust control design", IEEE TAC 51(5), 2006.
.. [2] A. Beck, M. Teboulle, "A Fast Iterative Shrinkage-Thresholding Algorithm for Linear
   Inverse Problems", SIAM J. Imaging Sci. 2(1), 2009; B. O'Donoghue, E. Candes,
   "Adaptive Restart for Accelerated Gradient Schemes", Found. Comput. Math. 15, 2015.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from neurosolve.backends.ops import ops_of
from neurosolve.backends.ops import to_numpy as _to_numpy_any
from neurosolve.core import Solver, State, Status, Stop, to_float
from neurosolve.problems.convex_relu import ConvexReLU
from neurosolve.problems import relu_losses as RL

__all__ = ["SCP"]


class SCPSetup(NamedTuple):
    """SCP's fixed features: unit-norm directions ``Hn_np`` (d, P), ``Phi = max(X Hn, 0)``
    in the problem's library, and the FISTA step."""

    Hn_np: np.ndarray
    Phi: Any
    step: float


@dataclass(eq=False)
class SCPState(State):
    """FISTA's iteration data: coefficients ``A``, the extrapolated point ``Yk``, the
    momentum ``tk``, the objective and the gap of the fixed-feature lasso."""

    A: Any = None
    Yk: Any = None
    tk: float = 1.0
    obj: float = float("inf")
    gap: float = float("inf")


@dataclass(frozen=True, kw_only=True)
class SCP(Solver):
    """FISTA with adaptive restart on the SCP lasso / logistic lasso.

    The features are the problem's pattern directions, normalized: ``ConvexReLU(...,
    patterns=N)`` samples ``N`` Gaussian directions (one per distinct pattern); for an
    explicit pattern matrix a realizing direction is found by linear programming.

    Parameters
    ----------
    rtol : float
        Stop when the duality gap of the SCP program is at most
        ``rtol * max(1, |objective|)``.
    step_size : float, optional
        Step size; default ``1 / L`` with ``L = smoothness(loss) * ||Phi||_2^2``.
    restart : bool
        Function-value restart of the momentum (O'Donoghue-Candes).
    maxiter : int, optional
        Default 20000.

    Notes
    -----
    The duality gap uses ``lam = grad loss(Phi a)`` scaled by
    ``min(1, beta / ||Phi^T lam||_inf)`` (a dual-feasible point), so it is a certificate of
    the SCP program itself. Losses: squared and logistic (smooth); the hinge loss raises
    ``ValueError`` (use :class:`~neurosolve.solvers.ADMM`). Robust programs are not
    supported. Status: CONVERGED, MAX_ITER, NONFINITE. Metrics: ``objective``,
    ``relative_gap``.

    References
    ----------
    .. [1] Bai, Gautam, Sojoudi, arXiv:2201.01965. .. [2] Beck, Teboulle, 2009.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((80, 3)); y = np.abs(X[:, 0])
    >>> prob = ns.problems.ConvexReLU(X, y, beta=0.5, patterns=100)
    >>> res = ns.solve(prob, ns.solvers.SCP())
    >>> res.status.name            # optimal for SCP's fixed features, not for the program
    'STAGNATION'
    >>> bool(res.certificate["relative_gap"] > 0.1)   # the certified gap says how far
    True
    """

    rtol: float = 1e-6
    step_size: float | None = None
    restart: bool = True

    metrics: ClassVar[tuple[str, ...]] = ("objective", "relative_gap")
    problem_types: ClassVar[tuple[type, ...]] = (ConvexReLU,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.rtol, (int, float)) or not np.isfinite(self.rtol) or self.rtol < 0:
            raise ValueError(f"rtol must be a finite number >= 0, got {self.rtol!r}")
        if self.step_size is not None and not (self.step_size > 0):
            raise ValueError(f"step_size must be > 0, got {self.step_size!r}")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 20000

    def setup(self, problem: ConvexReLU, ctx) -> "SCPSetup":
        """The fixed features ``Phi = max(X H, 0)`` (unit-norm directions) and the step."""
        if problem.loss == "hinge":
            raise ValueError("SCP solves smooth losses (squared, logistic) by FISTA; for the "
                             "hinge loss use ADMM or CvxpyReLU")
        if problem.robust:
            raise ValueError("SCP does not support robust programs (epsilon > 0); use ADMM")
        H = problem.directions
        Hn = H / np.linalg.norm(H, axis=0, keepdims=True)
        Phi = np.maximum(problem.Xt_np @ Hn, 0.0)
        smooth = problem.w if problem.loss == "squared" else problem.w / 4.0
        L = smooth * float(np.linalg.norm(Phi, 2)) ** 2
        step = self.step_size if self.step_size is not None else 1.0 / max(L, 1e-300)
        return SCPSetup(Hn_np=Hn, Phi=problem._from_numpy(Phi), step=step)

    def init(self, problem: ConvexReLU, x0, ctx) -> "SCPState":
        su = ctx.setup
        A = problem._from_numpy(np.zeros((problem.P, problem.c)))
        if x0 is not None:
            v, w = problem._vw(x0)
            A = problem._from_numpy(np.einsum("pdc,dp->pc", v - w, su.Hn_np))
        st = SCPState(x=None, k=0, A=A, Yk=A + 0, tk=1.0)
        st.obj = to_float(self._obj(problem, st, A, ctx))
        st.metrics = {"objective": st.obj, "relative_gap": float("nan")}
        return st

    def _obj(self, problem, st, A, ctx):
        z = ctx.setup.Phi @ A
        return RL.loss_value(problem.loss, z, problem.Y, problem.w) + problem.beta * abs(A).sum()

    def step(self, problem: ConvexReLU, st: State, ctx) -> State:
        L = ops_of(st.A)
        Phi, beta, h = ctx.setup.Phi, problem.beta, ctx.setup.step
        g = Phi.T @ RL.loss_grad(problem.loss, Phi @ st.Yk, problem.Y, problem.w)
        Z = st.Yk - h * g
        Anew = L.sign(Z) * (abs(Z) - h * beta).clip(min=0)
        obj = to_float(self._obj(problem, st, Anew, ctx))
        ctx.count("gradient_evaluations")
        if self.restart and obj > st.obj:
            st.tk = 1.0
            st.Yk = st.A + 0
            ctx.count("restarts")
            # take a plain proximal-gradient step from A instead
            g = Phi.T @ RL.loss_grad(problem.loss, Phi @ st.A, problem.Y, problem.w)
            Z = st.A - h * g
            Anew = L.sign(Z) * (abs(Z) - h * beta).clip(min=0)
            obj = to_float(self._obj(problem, st, Anew, ctx))
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * st.tk * st.tk) ** 0.5)
        st.Yk = Anew + ((st.tk - 1.0) / t_new) * (Anew - st.A)
        st.tk = t_new
        st.A = Anew
        st.obj = obj
        st.k += 1
        # duality gap of the SCP program
        lam = RL.loss_grad(problem.loss, Phi @ Anew, problem.Y, problem.w)
        corr = _np(abs(Phi.T @ lam).max(0))
        lam_np = _np(lam)
        t = np.minimum(1.0, beta / np.maximum(corr, 1e-300))
        dual = RL.loss_conjugate_neg(problem.loss, lam_np * t[None, :], problem.Y_np, problem.w)
        st.gap = obj - dual
        st.metrics = {"objective": obj, "relative_gap": st.gap / max(1.0, abs(obj))}
        return st

    def check(self, problem, st, ctx):
        if st.k == 0:
            return None
        if not np.isfinite(st.obj):
            return Stop(Status.NONFINITE, f"the objective became {st.obj} at iteration {st.k}")
        if st.gap <= self.rtol * max(1.0, abs(st.obj)):
            return Stop(Status.CONVERGED)
        return None

    def tolerance(self, problem, state) -> dict[str, float]:
        """CONVERGED means what it means for every convex ReLU solver: the program's
        certified relative duality gap at most ``max(rtol, 1e-4)``. SCP's own ``rtol``
        bounds the gap of the lasso over its *fixed* features, a restriction of the
        program, so an SCP answer that is optimal for its features but not for the
        program ends in STAGNATION with the program's measured gap (see
        :meth:`on_uncertified`)."""
        if not problem.certifies_gap:
            return {}
        return {"relative_gap": max(float(self.rtol), 1e-4)}

    def on_uncertified(self, problem, state, ctx, failed):
        gap = failed.get("relative_gap", (float("nan"),))[0]
        return Stop(Status.STAGNATION, (
            f"SCP solved the lasso over its fixed ReLU features to rtol={self.rtol:g}, but the "
            f"sampled program's certified relative gap at that point is {gap:.2e}: the features "
            "(one direction per pattern) are a restriction of the program. Use ADMM (or "
            "CvxpyReLU) for the program's optimum, or SCP's answer as a warm start"))

    def finalize(self, problem: ConvexReLU, st: State, ctx):
        A = st.A.detach().cpu().numpy() if hasattr(st.A, "detach") else np.asarray(st.A)
        Hn = ctx.setup.Hn_np  # (d, P)
        v = np.maximum(A, 0.0)[:, None, :] * Hn.T[:, :, None]  # (P, d, c)
        w = np.maximum(-A, 0.0)[:, None, :] * Hn.T[:, :, None]
        x = np.stack([v, w])
        if problem.c == 1:
            x = x[..., 0]
        ctx.counters["features"] = int(problem.P)
        return problem._from_numpy(x)


def _np(a) -> np.ndarray:
    return np.asarray(_to_numpy_any(a), dtype=float)
