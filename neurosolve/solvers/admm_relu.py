"""ADMM for the convex two-layer ReLU training program (Bai, Gautam, Sojoudi, section 3).

Splitting (scaled form, two penalties): ::

    min  loss(F u) + beta ||v||_{2,1} + 1(s >= 0)   s.t.  u = v  (rho1),  G u = s  (rho2)

``u`` is the loss copy of the weights, ``v`` the sparse copy (the answer), ``s`` the slack of
the cone constraints ``(2D_i - I) X v_i >= 0``. For the squared loss the u-step is one
linear solve with a fixed matrix (:mod:`neurosolve.solvers.relu_linsys`); for the logistic
and hinge losses, and for every robust program, the loss is split off as well
(``z = F u``, penalty ``rho_loss``; robust: also the input gradients ``b = H u``) and handled
by its exact proximal map (:mod:`neurosolve.problems.relu_losses`); ``u_step="rbcd"``
instead minimizes the u-subproblem inexactly by randomized block coordinate descent
(section 4, ADMM-RBCD).

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, "Efficient Global Optimization of Two-layer ReLU
   Networks: Quadratic-time Algorithms and Adversarial Training", SIAM J. Math. Data Sci.
   2023, arXiv:2201.01965, sections 3-4.
.. [2] S. Boyd, N. Parikh, E. Chu, B. Peleato, J. Eckstein, "Distributed Optimization and
   Statistical Learning via the Alternating Direction Method of Multipliers", Found.
   Trends Mach. Learn. 3(1), 2011 (over-relaxation, residual balancing).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from neurosolve.backends.ops import to_numpy
from neurosolve.backends.relu_kernel_table import ReLUKernels
from neurosolve.backends.relu_kernel_table import select as select_kernels
from neurosolve.core import Solver, State, Status, Stop, to_float
from neurosolve.problems.convex_relu import ConvexReLU
from neurosolve.problems import relu_losses as RL
from neurosolve.solvers.relu_linsys import UStepSystem, choose_ustep, make_ustep

__all__ = ["ADMM", "default_rho2"]


def default_rho2(problem: ConvexReLU) -> float:
    """The starting cone penalty ``rho2`` (adapted during the solve when ``adaptive``).

    ``rho2 = 0.02 w n`` with ``w`` the loss weight (1 for sums, 1/n for means). The cone
    term ``rho2 G^T G`` and the loss term ``w F^T F`` scale alike with X, so the rule is
    invariant under rescaling of X; 0.02 n matched the best fixed value at n = 5000
    (spec section 3.7 data) but is too large for n <= 1000 (best about 1.5-3 at n = 500),
    which the adaptive rule corrects only partly (docs/convex_relu.md). Split losses use
    the same value for ``rho_loss``.
    """
    return 0.02 * problem.w * problem.n


class ADMMSetup(NamedTuple):
    """What :meth:`ADMM.setup` derives once per solve: the kernel table, the u-step kind,
    whether the loss is split off, robustness, the pattern signs ``E = 2 D - 1`` (and
    their repetition ``E2c`` over the 2P c weight columns) and ``||X||_2``."""

    kernels: ReLUKernels
    kind: str
    split: bool
    robust: bool
    E: Any
    E2c: Any
    normX: float


@dataclass(eq=False)
class ADMMState(State):
    """ADMM's iteration data: the primal blocks (u, v, slacks), the scaled duals, the
    adaptive penalties with the u-step system factorized for them (``sys``, ``ustep``:
    they change when rho2 adapts), the objective trend, and the last certified values."""

    sys: Any = None
    ustep: Any = None
    rho1: float = 0.0
    rho2: float = 0.0
    rhoz: float = 0.0
    t_factor: float = 0.0
    U: Any = None
    V: Any = None
    L: Any = None
    W: Any = None
    EabsW: Any = None
    XU: Any = None
    FU: Any = None
    FtY: Any = None
    Z: Any = None
    Mu: Any = None
    B: Any = None
    MuB: Any = None
    S: Any = None
    Nu: Any = None
    R: Any = None
    NuR: Any = None
    rng: Any = None
    rbcd_thresh: float = 0.0
    rbcd_step: float = 0.0
    next_adapt: int = 200
    obj_hist: list = field(default_factory=list)
    last: dict = field(default_factory=dict)
    gap: float = float("nan")
    viol: float = float("nan")
    abs_prim: float = float("nan")
    scale_prim: float = float("nan")
    zres2: float = 0.0
    zscale2: float = 0.0
    rho2_0: float = 0.0
    adapt_gap: int = 200
    next_proj: int = 0
    proj_gap: int = 5
    #: whether the loss-gradient dual bound beat ADMM's multipliers at its last use, and
    #: projection checks since then (it is skipped while it lags, see ADMM.check)
    grad_bound_useful: bool = True
    checks_since_grad_bound: int = 0
    x_feasible: Any = None
    k_feasible: int = -1
    gap_price: float = float("nan")
    dual: float = float("nan")
    tol_scale: float = 1.0
    lam_cert: Any = None
    mu_cert: Any = None
    next_polish: int = 0
    polish_failures: int = 0
    polished: bool = False


@dataclass(frozen=True, kw_only=True)
class ADMM(Solver):
    """ADMM (and ADMM-RBCD) for :class:`~neurosolve.problems.ConvexReLU`.

    Parameters
    ----------
    rtol : float
        Certified relative accuracy: CONVERGED means the returned point is cone feasible
        and its relative duality gap (an upper bound on its relative suboptimality) is at
        most ``rtol``.
    dual_rtol : float
        Robust programs only: tolerance of the relative u-optimality residual.
    atol : float
        Absolute floor added to the residual tests (guards all-zero solutions).
    window : int
        Iterations between the objective values compared by the stall test.
    rho1 : float, optional
        Penalty of ``u = v``. Default ``rho2 / 10`` (it barely matters).
    rho2 : float, optional
        Penalty of the cone split ``G u = s``. Default :func:`default_rho2` (0.02 w n).
    rho_loss : float, optional
        Penalty of the loss split ``z = F u`` (logistic, hinge, robust). Default ``rho2``.
    alpha : float
        Over-relaxation (1 = plain ADMM; 1.6 measured best).
    adaptive : bool
        Adapt ``rho2`` (and ``rho_loss``) every ``adapt_every`` iterations, refactorizing
        only when it changes. Non-robust programs: rho2 balances the price of v's cone
        violation against the one-sided certified gap (multiplied by ``adapt_factor`` when
        the price exceeds ``gap_balance`` times the gap, divided when the gap exceeds
        ``gap_balance`` times the price), within ``[1/rho_span, rho_span]`` times its start,
        with the interval between changes growing by ``adapt_growth``. Robust programs: residual balancing (``adapt_bias`` times the relative cone
        residual over the relative u-optimality residual, changed by the square root of
        the ratio when outside ``[1/adapt_mu, adapt_mu]``).
    adapt_every, adapt_factor, adapt_mu, adapt_bias, gap_balance, rho_span, adapt_growth
        See ``adaptive``.
    u_step : {"auto", "cholesky", "woodbury", "cg", "rbcd"}
        How the u-subproblem is solved (see :mod:`neurosolve.solvers.relu_linsys`).
        ``auto`` (:func:`~neurosolve.solvers.relu_linsys.choose_ustep`): Cholesky when
        the ``dP x dP`` difference system is small, Woodbury when ``n < dP`` and the
        n x n matrix fits in ``memory_limit``, CG otherwise. ``rbcd``: inexact randomized
        block coordinate descent (section 4; squared and logistic losses keep the loss in
        the u-step, hinge minimizes the split quadratic).
    cg_rtol, cg_maxiter : float, int
        Inner CG tolerance and iteration cap (u_step="cg"); warm started.
    rbcd_block : int
        Patterns per RBCD block.
    rbcd_thresh : float
        RBCD inner stop: mean of the last ``ceil(8 sqrt(P/b))`` decreases of the
        u-objective below ``rbcd_thresh * max(1, |L_u|)``; multiplied by 0.96 per ADMM
        iteration.
    rbcd_step : float
        Initial RBCD step size.
    rbcd_max_sweeps : int
        At most ``rbcd_max_sweeps * ceil(P / b)`` blocks per u-step.
    memory_limit : float
        Bytes the automatic u-step choice may use for matrices.
    check_interval : int
        The stopping rule is evaluated every this many iterations.
    certify_every : int
        Every this many iterations the metrics ``gap`` (a certified relative duality gap
        using the ADMM multipliers) and ``cone_violation`` are recomputed (non-robust).
    polish : bool
        Solution polishing (epsilon = 0, every loss; default on): every
        ``polish_every`` iterations, and never sooner than half the iterations done so far
        after the last attempt, a primal active-set method started from ADMM's support
        and cone multipliers (:func:`~neurosolve.solvers.relu_polish.polish`) proposes a
        point, which is projected onto the cones and certified like any other. If its
        certified gap is at most ``rtol`` it is returned (usually exact to about 1e-12);
        otherwise ADMM goes on.
    polish_every : int
        See ``polish``.
    polish_tries : int, optional
        Unsuccessful polishing attempts after which ADMM stops polishing. Default: no
        limit for the squared and logistic losses (an attempt costs little), 4 for the
        hinge loss, whose attempts are longer (up to 1,000 set changes; measured in
        docs/convex_relu.md, "Solution polishing").
    seed : int
        Seed of the RBCD block draws.
    maxiter : int, optional
        Default 20000.

    Notes
    -----
    **Stopping rule** (epsilon = 0; checked every ``check_interval`` iterations): the primal
    residuals ``||u - v||``, ``||G u - s||`` (and ``||F u - z||`` for split losses) below
    ``rtol`` relative; ``max(0, -G v) <= rtol max |X v|``; the one-sided certified gap of v
    (dual point from ADMM's multipliers, see ``_certify``) at most ``rtol``; then v is
    projected onto its cones (:meth:`ConvexReLU.project_feasible`) and the two-sided gap
    ``(f(Pi v) - dual) / max(1, |f(Pi v)|) <= rtol`` is required, with the better of the
    multipliers' dual and the loss gradient's at ``Pi v``. ``Result.x`` is ``Pi v``; the dual
    point goes to the certificate as a witness (:meth:`witness`). With ``polish``, a
    polished point whose certified gap (the certificate's own dual point) is at most
    ``rtol`` ends the solve as well, and is returned. Robust programs: the
    objective stall test over two ``window``-iteration windows, the primal residuals, and
    the u-optimality residual ``<= dual_rtol``.

    The v- and s-optimality conditions of the paper (``beta v_g/||v_g|| = rho1 lambda_g``
    on active groups, ``||rho1 lambda_g|| <= beta`` on zero groups; ``s >= 0 >= nu``,
    ``s nu = 0``) hold exactly after every iteration by construction of the proximal steps.

    Status: CONVERGED; MAX_ITER; NONFINITE (NaN in the iterates); INFEASIBLE for a robust
    program whose solution is (numerically) zero (epsilon too large for any neuron to stay
    robust, or beta too large).

    Metrics: ``objective`` (convex objective at the loss copy u), ``gap`` and
    ``cone_violation`` (of v, refreshed every ``certify_every`` iterations),
    ``primal_residual``, ``cone_residual``, ``dual_residual`` (a cheap bound), ``rho2``.
    ``Result.stats`` adds ``factor_time``, ``u_step``, ``rho2_final``, ``factorizations``,
    ``rho_updates``, ``polished`` (whether the answer is a polished point),
    ``polish_attempts`` and, for CG/RBCD, ``cg_iterations``/``rbcd_blocks``.

    References
    ----------
    .. [1] Y. Bai, T. Gautam, S. Sojoudi, arXiv:2201.01965, sections 3 and 4.
    .. [2] S. Boyd et al., Found. Trends Mach. Learn. 3(1), 2011, sections 3.3-3.4.
    .. [3] B. Stellato et al., "OSQP: an operator splitting solver for quadratic
       programs", Math. Program. Comput. 12, 2020 (solution polishing).

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 4)); y = np.sign(X[:, 0] + X[:, 1] ** 2 - 1)
    >>> prob = ns.problems.ConvexReLU(X, y, beta=0.5, patterns=10)
    >>> res = ns.solve(prob, ns.solvers.ADMM(rtol=1e-5))
    >>> res.status.name
    'CONVERGED'
    """

    rtol: float = 1e-4
    dual_rtol: float = 1e-2
    window: int = 100
    atol: float = 1e-9
    rho1: float | None = None
    rho2: float | None = None
    rho_loss: float | None = None
    alpha: float = 1.6
    adaptive: bool = True
    adapt_mu: float = 20.0
    adapt_bias: float = 10.0
    adapt_factor: float = 3.0
    adapt_every: int = 200
    gap_balance: float = 2.0
    rho_span: float = 1e3
    adapt_growth: float = 1.2
    u_step: str = "auto"
    cg_rtol: float = 1e-9
    cg_maxiter: int = 200
    rbcd_block: int = 1
    rbcd_thresh: float = 1e-3
    rbcd_step: float = 1e-3
    rbcd_max_sweeps: int = 4
    memory_limit: float = 1.5e9
    check_interval: int = 10
    certify_every: int = 100
    polish: bool = True
    polish_every: int = 2000
    polish_tries: int | None = None
    seed: int = 0

    metrics: ClassVar[tuple[str, ...]] = ("objective", "gap", "cone_violation",
                                          "primal_residual", "cone_residual", "dual_residual",
                                          "rho2")
    problem_types: ClassVar[tuple[type, ...]] = (ConvexReLU,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("rho1", "rho2", "rho_loss"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0):
                raise ValueError(f"{name} must be a finite number > 0 or None, got {v!r}")
        if not (0 < self.alpha < 2):
            raise ValueError(f"alpha (over-relaxation) must lie in (0, 2), got {self.alpha!r}")
        if self.u_step not in ("auto", "cholesky", "woodbury", "cg", "rbcd"):
            raise ValueError(
                f"u_step must be 'auto', 'cholesky', 'woodbury', 'cg' or 'rbcd', got {self.u_step!r}")
        for name in ("window", "adapt_every", "check_interval", "rbcd_max_sweeps",
                     "polish_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.polish_tries is not None and (not isinstance(self.polish_tries, (int, np.integer))
                                              or self.polish_tries < 0):
            raise ValueError(f"polish_tries must be a non-negative integer or None, got "
                             f"{self.polish_tries!r}")
        if not isinstance(self.rbcd_block, int) or self.rbcd_block < 1:
            raise ValueError(f"rbcd_block must be a positive integer, got {self.rbcd_block!r}")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 20000

    # ------------------------------------------------------------------------------------
    def setup(self, problem: ConvexReLU, ctx) -> "ADMMSetup":
        """The u-step kind, whether the loss is split, the sign matrices of the cone
        constraints, ``||X||_2`` and the backend's kernel table."""
        X, D = problem.Xt, problem.D
        c = problem.c
        robust = problem.robust
        split = robust or problem.loss != "squared"
        kind = self.u_step
        if kind == "rbcd":
            if robust:
                raise ValueError("u_step='rbcd' does not support robust programs (epsilon > 0); "
                                 "use u_step='cholesky' or 'cg'")
            split = problem.loss == "hinge"
        elif kind == "auto":
            kind = choose_ustep(problem.n, problem.d, problem.P, robust, self.memory_limit)
        if kind == "woodbury" and robust:
            raise ValueError("u_step='woodbury' does not support robust programs; use "
                             "'cholesky' or 'cg'")
        E = 2.0 * D - 1.0
        if problem.array_library == "torch":
            import torch

            E2c = torch.repeat_interleave(torch.cat([E, E], 1), c, dim=1)
            normX = float(torch.linalg.matrix_norm(X, ord=2))
        else:
            E2c = np.repeat(np.concatenate([E, E], 1), c, axis=1)
            normX = float(np.linalg.norm(X, 2))
        return ADMMSetup(kernels=select_kernels(ctx.backend.name), kind=kind, split=split,
                         robust=robust, E=E, E2c=E2c, normX=normX)

    def init(self, problem: ConvexReLU, x0, ctx) -> "ADMMState":
        su = ctx.setup
        lib = problem.array_library
        X, D, Y = problem.Xt, problem.D, problem.Y
        n, d, P, c = problem.n, problem.d, problem.P, problem.c
        robust, split, kind = su.robust, su.split, su.kind
        rho2 = self.rho2 if self.rho2 is not None else default_rho2(problem)
        rho1 = self.rho1 if self.rho1 is not None else rho2 / 10.0
        rhoz = (self.rho_loss if self.rho_loss is not None else rho2) if split else 0.0
        w = problem.w
        aF = rhoz if split else w
        sc = problem.sc if robust else None
        system = UStepSystem(X, D, c, aF=aF, rho1=rho1, rho2=rho2, sc=sc,
                             aH=rhoz if robust else 0.0)
        t0 = time.perf_counter()
        if kind == "rbcd":
            ustep = None
        elif kind == "cg":
            ustep = make_ustep("cg", system, rtol=self.cg_rtol, maxiter=self.cg_maxiter)
        else:
            ustep = make_ustep(kind, system)
        if ustep is not None:
            ctx.count("factorizations")
        t_factor = time.perf_counter() - t0

        if lib == "torch":
            import torch

            zeros = lambda *s: torch.zeros(s, dtype=X.dtype, device=X.device)  # noqa: E731
        else:
            zeros = lambda *s: np.zeros(s, dtype=X.dtype)  # noqa: E731
        E2c = su.E2c
        st = ADMMState(x=None, k=0, sys=system, ustep=ustep, rho1=rho1, rho2=rho2, rhoz=rhoz,
                       t_factor=t_factor)
        if not split:
            st.FtY = system.Ft(Y) * w  # w F^T y
        U = zeros(d, 2 * P, c)
        if x0 is not None:
            xs = tuple(x0.shape)
            if xs != problem.x_shape:
                raise ValueError(f"x0 must have shape {problem.x_shape}, got {xs}")
            x4 = x0 if c > 1 else x0[..., None]
            U = (x4.permute(2, 0, 1, 3) if lib == "torch" else x4.transpose(2, 0, 1, 3)).reshape(d, 2 * P, c) + 0
        st.U, st.V, st.L = U + 0, U + 0, zeros(d, 2 * P, c)
        XU = (X @ U.reshape(d, -1))
        st.W = E2c * XU  # s = G u, nu = 0
        st.EabsW = E2c * abs(st.W)
        st.XU = XU
        if split:
            st.Z = system.F(U) + 0
            st.Mu = zeros(n, c)
            if robust:
                st.B = system.H(U) + 0
                st.MuB = zeros(n, d, c)
                st.S = st.W.clip(min=0)
                st.Nu = zeros(n, 2 * P * c)
                st.R = U * problem.sc[:, None, None]
                st.NuR = zeros(d, 2 * P, c)
        st.rng = np.random.default_rng(self.seed)
        st.rbcd_thresh = self.rbcd_thresh
        st.rbcd_step = self.rbcd_step
        st.next_adapt = self.adapt_every
        st.adapt_gap = self.adapt_every
        st.rho2_0 = st.sys.rho2
        st.obj_hist = []
        st.last = {}
        st.metrics = self._metrics(problem, st, ctx, first=True)
        st.x = None
        return st

    # ------------------------------------------------------------------------------------
    def _rhs_common(self, problem, st, ctx):
        s = st.sys
        d = problem.d
        if ctx.setup.robust:
            GtSN = (problem.Xt.T @ (ctx.setup.E2c * (st.S - st.Nu))).reshape(st.U.shape)
            GtSN = GtSN + problem.sc[:, None, None] * (st.R - st.NuR)
        else:
            GtSN = (problem.Xt.T @ st.EabsW).reshape(d, -1, problem.c)
        rhs = s.rho1 * (st.V - st.L) + s.rho2 * GtSN
        if ctx.setup.split:
            rhs = rhs + s.aF * s.Ft(st.Z - st.Mu)
            if ctx.setup.robust:
                rhs = rhs + s.aH * s.Ht(st.B - st.MuB)
        else:
            rhs = rhs + st.FtY
        return rhs

    def step(self, problem: ConvexReLU, st: State, ctx) -> State:
        s = st.sys
        X = problem.Xt
        d, P, c = problem.d, problem.P, problem.c
        a = self.alpha
        # ---- u-step
        if ctx.setup.kind == "rbcd":
            st.U = _rbcd_ustep(self, problem, st, ctx)
        else:
            rhs = self._rhs_common(problem, st, ctx)
            st.U = st.ustep.solve(rhs, st.U)
        XU = X @ st.U.reshape(d, -1)
        st.XU = XU
        # ---- v-step (group soft-threshold) and its dual
        V_old = st.V
        A = a * st.U + (1 - a) * V_old + st.L
        A2 = A.reshape(d, -1)
        kern = ctx.setup.kernels
        Vn = kern.soft_threshold(A2, problem.beta / s.rho1)
        st.V = Vn.reshape(st.U.shape)
        st.L = A - st.V
        # ---- cone step
        if ctx.setup.robust:
            GU = ctx.setup.E2c * XU
            RU = st.U * problem.sc[:, None, None]
            S_old, R_old = st.S, st.R
            Gh = a * GU + (1 - a) * S_old + st.Nu
            Rh = a * RU + (1 - a) * R_old + st.NuR
            n2 = 2 * P * c
            Sn, Rn = kern.robust_cone(Gh, Rh.reshape(d, n2), problem.epsilon, problem.q)
            st.S, st.R = Sn, Rn.reshape(st.U.shape)
            st.Nu = Gh - st.S
            st.NuR = Rh - st.R
            prim2 = float(((GU - st.S) ** 2).sum() + ((RU - st.R) ** 2).sum())
            ds2 = float(((st.S - S_old) ** 2).sum() + ((st.R - R_old) ** 2).sum())
            ngu2 = float((GU**2).sum() + (RU**2).sum())
            ns2 = float((st.S**2).sum() + (st.R**2).sum())
            nnu2 = float((st.Nu**2).sum() + (st.NuR**2).sum())
        else:
            st.W, st.EabsW, FU, (prim2, ds2, ngu2, ns2) = kern.cone_step(
                XU, ctx.setup.E, ctx.setup.E2c, problem.D, st.W, st.EabsW, a, c)
            nnu2 = None
        # ---- loss split
        if ctx.setup.robust:
            FU = kern.masked_output(XU, problem.D, c)
        if ctx.setup.split:
            Zh = a * FU + (1 - a) * st.Z
            if ctx.setup.robust:
                HU = s.H(st.U)
                Bh = a * HU + (1 - a) * st.B
                Zn, Bn = kern.robust_loss(problem.loss, (Zh + st.Mu).reshape(-1),
                                          _flat_b(Bh + st.MuB), problem.Y.reshape(-1),
                                          problem.epsilon, problem.q, problem.w, s.aF)
                Zn = Zn.reshape(Zh.shape)
                Bn = _unflat_b(Bn, Bh.shape)
                st.MuB = st.MuB + Bh - Bn
                st.B = Bn
                st.zres2 = to_float(((FU - Zn) ** 2).sum() + ((HU - Bn) ** 2).sum())
                st.zscale2 = max(to_float((FU**2).sum() + (HU**2).sum()),
                                 to_float((Zn**2).sum() + (Bn**2).sum()))
            else:
                Zn = RL.prox_loss(problem.loss, Zh + st.Mu, problem.Y, problem.w, s.aF)
                st.zres2 = to_float(((FU - Zn) ** 2).sum())
                st.zscale2 = max(to_float((FU**2).sum()), to_float((Zn**2).sum()))
            st.Mu = st.Mu + Zh - Zn
            st.Z = Zn
        st.FU = FU
        st.k += 1
        st.last = dict(prim2=prim2, ds2=ds2, ngu2=ngu2, ns2=ns2, nnu2=nnu2,
                       dv=to_float(((st.V - V_old) ** 2).sum()) ** 0.5)
        st.metrics = self._metrics(problem, st, ctx)
        if self.adaptive and st.k >= st.next_adapt:
            self._adapt(problem, st, ctx)
        return st

    # ------------------------------------------------------------------------------------
    def _metrics(self, problem, st, ctx, first=False):
        s = st.sys
        U, V = st.U, st.V
        nu_ = to_float((U * U).sum()) ** 0.5
        nv = to_float((V * V).sum()) ** 0.5
        if first:
            FU = s.F(U)
            st.FU = FU
            st.gap = st.viol = float("nan")
            return {"objective": self._objective_u(problem, st, FU), "gap": st.gap,
                    "cone_violation": st.viol, "primal_residual": float("nan"),
                    "cone_residual": float("nan"), "dual_residual": float("nan"), "rho2": s.rho2}
        L = st.last
        pr = to_float(((U - V) ** 2).sum()) ** 0.5 / max(nu_, nv, 1e-300)
        cr = math.sqrt(L["prim2"]) / max(math.sqrt(L["ngu2"]), math.sqrt(L["ns2"]), 1e-300)
        dual_bound = s.rho1 * L["dv"] + s.rho2 * ctx.setup.normX * math.sqrt(L["ds2"])
        lam_scale = s.rho1 * to_float((st.L * st.L).sum()) ** 0.5
        dr = dual_bound / max(lam_scale, problem.beta, 1e-300)
        st.abs_prim = to_float(((U - V) ** 2).sum()) ** 0.5
        st.scale_prim = max(nu_, nv)
        return {"objective": self._objective_u(problem, st, st.FU),
                "gap": st.gap, "cone_violation": st.viol, "primal_residual": pr,
                "cone_residual": cr, "dual_residual": dr, "rho2": s.rho2}

    def _objective_u(self, problem, st, FU):
        U = st.U
        reg = problem.beta * ((U * U).sum(0) ** 0.5).sum()
        if problem.robust:
            B = st.sys.H(U)
            bn = abs(B).sum(1) if problem.q == 1 else ((B * B).sum(1)) ** 0.5
            val = RL.robust_loss_value(problem.loss, FU, problem.Y, bn, problem.epsilon, problem.w)
        else:
            val = RL.loss_value(problem.loss, FU, problem.Y, problem.w)
        return val + reg

    def _adapt(self, problem, st, ctx):
        """Adapt rho2 (and rho_loss) from the trend of the objective and the violation.

        Non-robust programs: over the last ``window`` iterations, an objective that rises
        while v violates the cones by more than ``rtol`` means the iterates approach the
        optimum from the infeasible side (rho2 too small): multiply rho2 by
        ``adapt_factor``; an objective that falls while v is feasible to ``rtol`` means
        they approach from the feasible side too slowly (rho2 too large): divide it.
        Robust programs balance the relative cone residual against the relative
        u-optimality residual (``adapt_bias`` times the first over the second, changed
        when outside ``[1/adapt_mu, adapt_mu]``).
        """
        st.next_adapt = st.k + (self.adapt_every if problem.robust else st.adapt_gap)
        if problem.robust:
            cr = st.metrics["cone_residual"]
            res, scale = self._u_optimality(problem, st, ctx)
            ctx.count("kkt_checks")
            dr = res / max(scale, 1e-300)
            if not (cr > 0 and dr > 0 and math.isfinite(cr) and math.isfinite(dr)):
                return
            ratio = self.adapt_bias * cr / dr
            if 1.0 / self.adapt_mu <= ratio <= self.adapt_mu:
                return
            f = min(10.0, max(0.1, math.sqrt(ratio)))
        else:
            # balance the two parts of the two-sided gap: the price of making v feasible
            # (large when rho2 is too small) and the one-sided certified gap (dual
            # infeasibility: large when rho2 is too large)
            gap, _ = self._certify(problem, st, ctx)
            price = st.gap_price
            if not (math.isfinite(gap) and math.isfinite(price)):
                return
            if gap <= 0 or price > self.gap_balance * gap:
                f = self.adapt_factor
            elif gap > self.gap_balance * price:
                f = 1.0 / self.adapt_factor
            else:
                return
            lo, hi = st.rho2_0 / self.rho_span, st.rho2_0 * self.rho_span
            f = min(max(st.sys.rho2 * f, lo), hi) / st.sys.rho2
            if abs(math.log(f)) < 1e-12:
                return
            # change less and less often: eventually a fixed penalty (ADMM's theory)
            st.adapt_gap = int(math.ceil(st.adapt_gap * self.adapt_growth))
            st.next_adapt = st.k + st.adapt_gap
        s = st.sys
        old2, new2 = s.rho2, s.rho2 * f
        pen = {"rho2": new2}
        if ctx.setup.split:
            pen["aF"] = s.aF * f
            if ctx.setup.robust:
                pen["aH"] = s.aH * f
        if st.ustep is not None:
            st.ustep.update(**pen)
            ctx.count("factorizations")
        else:
            s.set_penalties(**pen)
        ctx.count("rho_updates")
        # rescale the scaled duals of the changed constraints
        if ctx.setup.robust:
            st.Nu = st.Nu * (old2 / new2)
            st.NuR = st.NuR * (old2 / new2)
        else:
            st.W = st.W.clip(min=0) + st.W.clip(max=0) * (old2 / new2)
            st.EabsW = ctx.setup.E2c * abs(st.W)
        if ctx.setup.split:
            st.Mu = st.Mu / f
            if ctx.setup.robust:
                st.MuB = st.MuB / f

    # ------------------------------------------------------------------------------------
    def _u_optimality(self, problem, st, ctx):
        """Exact relative u-optimality residual ``||grad + rho1 lam + rho2 G^T nu||``."""
        s = st.sys
        X = problem.Xt
        d, c = problem.d, problem.c
        if ctx.setup.split:
            grad = s.aF * s.Ft(st.FU - st.Z + st.Mu)
            if ctx.setup.robust:
                grad = grad + s.aH * s.Ht(s.H(st.U) - st.B + st.MuB)
        else:
            grad = problem.w * s.Ft(st.FU) - st.FtY
        if ctx.setup.robust:
            GtNu = (X.T @ (ctx.setup.E2c * st.Nu)).reshape(st.U.shape) + problem.sc[:, None, None] * st.NuR
        else:
            GtNu = (X.T @ (ctx.setup.E2c * st.W.clip(max=0))).reshape(d, -1, c)
        lam = s.rho1 * st.L
        res = grad + lam + s.rho2 * GtNu
        scale = max(to_float((lam * lam).sum()) ** 0.5, to_float((grad * grad).sum()) ** 0.5)
        return to_float((res * res).sum()) ** 0.5, scale

    def _certify(self, problem, st, ctx):
        """Certified relative duality gap and relative cone violation of the current v
        (non-robust; numpy).

        The dual point: the loss multiplier ``lam`` (``grad loss(F v)`` when the loss sits
        in the u-step, the loss-split multiplier ``rho_loss mu_z`` otherwise), moved into
        the conjugate's domain, and the cone multipliers ``mu = -rho2 nu >= 0`` of the ADMM
        state. Since ``G_g u >= 0`` on the cone, ``c_g <= ||-F_g^T lam + G_g^T mu_g||``
        bounds each block's dual constraint; every ``t`` in ``[0, min(1, beta / max_g
        c_g)]`` makes ``t lam`` dual feasible, and the best such ``t`` (per output) gives
        the lower bound ``-loss*(t lam) <= p*`` (computed by
        :meth:`ConvexReLU.witness_bound`, the certificate's own check). Also sets ``st.gap_price``, the
        first-order cost ``mu^T max(0, -G v)`` of v's cone violation (relative).
        """
        s = st.sys
        X, D, Y, w, beta = problem.Xt_np, problem.D_np, problem.Y_np, problem.w, problem.beta
        n, d, P, c = problem.n, problem.d, problem.P, problem.c
        V, W = to_numpy(st.V, np.float64), to_numpy(st.W, np.float64)
        E2 = to_numpy(ctx.setup.E2c, np.float64)
        XV = X @ V.reshape(d, -1)
        XV3 = XV.reshape(n, 2 * P, c)
        FV = ((XV3[:, :P] - XV3[:, P:]) * D[:, :, None]).sum(1)
        obj = float(RL.loss_value(problem.loss, FV, Y, w)) + beta * float(
            np.sqrt((V * V).sum(0)).sum())
        GV = E2 * XV
        top = float(np.abs(XV).max(initial=0.0))
        viol = float(np.maximum(-GV, 0).max(initial=0.0)) / top if top > 0 else 0.0
        if ctx.setup.split:
            lam = s.aF * to_numpy(st.Mu, np.float64)
        else:
            lam = np.asarray(RL.loss_grad(problem.loss, FV, Y, w), dtype=np.float64)
        mu = -s.rho2 * np.minimum(W, 0.0)
        dual = problem.witness_bound(lam, mu)  # the certificate's own verification
        st.lam_cert, st.mu_cert = lam, mu
        ctx.count("certificate_checks")
        scale = max(1.0, abs(obj))
        st.gap = (obj - dual) / scale
        st.dual = dual
        st.viol = viol
        st.gap_price = float((mu * np.maximum(-GV, 0.0)).sum()) / scale
        st.metrics["gap"] = st.gap
        st.metrics["cone_violation"] = viol
        return st.gap, viol

    def _violation(self, problem, st, ctx):
        """``max(0, -G v) / max |X v|``: the relative cone violation of v."""
        XV = problem.Xt @ st.V.reshape(problem.d, -1)
        top = to_float(abs(XV).max())
        st.viol = to_float((-(ctx.setup.E2c * XV)).clip(min=0).max()) / top if top > 0 else 0.0
        return st.viol

    def _stalled(self, st, obj):
        """Objective test: the changes over the last two windows of ``window`` iterations,
        ``d2`` (latest) and ``d1``, extrapolated as a linearly convergent sequence
        (``q = d2 / d1``, remaining ``d2 q / (1 - q)``), must both be below
        ``rtol max(1, |objective|)``."""
        W = self.window
        hist = st.obj_hist
        hist.append((st.k, obj))
        while hist and hist[0][0] < st.k - 2 * W:
            hist.pop(0)
        vals = dict(hist)
        if (st.k - W) not in vals or (st.k - 2 * W) not in vals:
            return False
        d2 = abs(obj - vals[st.k - W])
        d1 = abs(vals[st.k - W] - vals[st.k - 2 * W])
        scale = self.rtol * max(1.0, abs(obj))
        if d2 > scale:
            return False
        if d1 <= d2:  # not contracting: only accept when essentially flat
            return d2 <= 0.01 * scale
        q = d2 / d1
        return d2 * q / (1.0 - q) <= scale

    def check(self, problem: ConvexReLU, st: State, ctx):
        m = st.metrics
        if st.k == 0:
            return None
        obj = to_float(m["objective"])
        if not math.isfinite(obj) or not math.isfinite(m["primal_residual"]):
            return Stop(Status.NONFINITE, (
                f"a NaN/inf appeared at iteration {st.k}; check the data scaling or lower rho2"))
        if st.k % self.check_interval != 0:
            return None
        tol = self.rtol * st.tol_scale
        if problem.robust:
            return self._check_robust(problem, st, ctx, obj)
        if self.certify_every and st.k % self.certify_every == 0:
            self._certify(problem, st, ctx)
        if self._polish_due(problem, st):
            stop = self._try_polish(problem, st, ctx, tol)
            if stop is not None:
                return stop
        if not self._primal_small(st, ctx):
            return None
        if self._violation(problem, st, ctx) > tol:
            return None
        gap, _ = self._certify(problem, st, ctx)
        if st.k < st.next_proj:
            return None
        if gap > tol and not problem.certifies_gap:
            return None
        # the two-sided test at the point to be returned: v projected onto its cones
        # (exactly feasible, so its objective bounds p* from above) against the better of
        # two dual bounds: ADMM's multipliers, and the loss gradient at that point with
        # its dual constraints solved exactly (the certificate's own; it converges with
        # the primal iterate where the multipliers lag)
        # The exact dual bound costs one NNLS per block; it is skipped where the
        # multipliers already certify, and while it lags them (it is tried again after
        # three projection checks): before polishing, ADMM's multipliers usually give the
        # tighter bound.
        xf = problem.project_feasible(_answer(problem, st))
        ctx.count("projections")
        objf = problem.objective(xf)
        scale = max(1.0, abs(objf))
        dual = st.dual
        st.checks_since_grad_bound += 1
        if (problem.certifies_gap and (objf - dual) / scale > tol
                and (st.grad_bound_useful or st.checks_since_grad_bound >= 3)):
            grad_dual = problem.dual_bound(xf)[0]
            ctx.count("certificate_checks")
            st.grad_bound_useful = grad_dual > dual
            st.checks_since_grad_bound = 0
            dual = max(dual, grad_dual)
        gap2 = (objf - dual) / scale
        st.metrics["gap"] = gap2
        if gap2 <= tol:
            st.x_feasible, st.k_feasible = xf, st.k
            return Stop(Status.CONVERGED)
        st.proj_gap = min(2 * st.proj_gap, 100)  # in check intervals: 10 .. 100
        st.next_proj = st.k + st.proj_gap * self.check_interval
        return None

    def _polish_due(self, problem, st) -> bool:
        """Whether to try polishing now: enabled, applicable (a polishable loss,
        a program whose gap the certificate computes) and the attempt is due."""
        from neurosolve.solvers.relu_polish import POLISHABLE_LOSSES

        tries = self.polish_tries
        if tries is None:
            tries = 4 if problem.loss == "hinge" else None
        return (self.polish and problem.loss in POLISHABLE_LOSSES and problem.certifies_gap
                and st.k >= max(st.next_polish, self.polish_every)
                and (tries is None or st.polish_failures < tries))

    def _try_polish(self, problem, st, ctx, tol):
        """One polishing attempt: CONVERGED with the polished point if it certifies."""
        from neurosolve.solvers.relu_polish import polish

        n, P, c = problem.n, problem.P, problem.c
        mult = -st.sys.rho2 * to_numpy(st.W, np.float64).reshape(n, 2, P, c).clip(max=0)
        ctx.count("polish_attempts")
        xp = polish(problem, to_numpy(_answer(problem, st), np.float64), mult)
        st.next_polish = st.k + max(self.polish_every, st.k // 2)
        if xp is None:
            st.polish_failures += 1
            return None
        xf = problem.project_feasible(problem._from_numpy(xp))
        ctx.count("projections")
        objf = problem.objective(xf)
        dual = problem.dual_bound(xf)[0]
        ctx.count("certificate_checks")
        gap2 = (objf - dual) / max(1.0, abs(objf))
        if gap2 <= tol:
            st.metrics["gap"] = gap2
            st.x_feasible, st.k_feasible, st.polished = xf, st.k, True
            return Stop(Status.CONVERGED)
        st.polish_failures += 1
        return None

    def on_uncertified(self, problem, st, ctx, failed):
        """The certificate (its own dual point, the loss gradient at the returned x) did not
        confirm the stopping rule's gap: continue with the internal tolerance tightened
        3x (a closer point makes both duals agree), after a pause before the next claim."""
        if problem.robust:
            return super().on_uncertified(problem, st, ctx, failed)
        st.tol_scale /= 3.0
        st.proj_gap = min(2 * st.proj_gap, 100)
        st.next_proj = st.k + st.proj_gap * self.check_interval
        return None

    def _primal_small(self, st, ctx) -> bool:
        tol, atol = self.rtol * st.tol_scale, self.atol
        L = st.last
        ok = st.abs_prim <= tol * st.scale_prim + atol
        ok = ok and math.sqrt(L["prim2"]) <= tol * max(math.sqrt(L["ngu2"]), math.sqrt(L["ns2"])) + atol
        if ctx.setup.split:
            ok = ok and math.sqrt(st.zres2) <= tol * math.sqrt(st.zscale2) + atol
        return ok

    def _check_robust(self, problem, st, ctx, obj):
        """The robust program's rule: stall test, primal residuals, u-optimality."""
        if not self._stalled(st, obj):
            return None
        if not self._primal_small(st, ctx):
            return None
        res, scale = self._u_optimality(problem, st, ctx)
        ctx.count("kkt_checks")
        if res > self.dual_rtol * scale + self.atol:
            return None
        if problem.is_trivial(_answer(problem, st)):
            return Stop(Status.INFEASIBLE, (
                f"the robust program's solution is all zero: with epsilon={problem.epsilon:g} no "
                "neuron can keep its activation pattern on the whole perturbation ball (or beta "
                "is too large). Reduce epsilon or beta, or use more patterns."))
        return Stop(Status.CONVERGED)

    def witness(self, problem, st, ctx) -> dict:
        """The dual point of the last certification (the loss multiplier and the cone
        multipliers ``-rho2 nu``), for the certificate to verify (non-robust). None for a
        polished answer: the multipliers belong to an earlier iterate, and the
        certificate's own dual point (the loss gradient at the answer) is the tight one."""
        if problem.robust or st.lam_cert is None or (st.polished and st.k_feasible == st.k):
            return {}
        return {"dual": (st.lam_cert, st.mu_cert)}

    def tolerance(self, problem, state) -> dict[str, float]:
        """What CONVERGED promises, recomputed by the certificate (epsilon = 0): the
        relative cone violation of the returned point at most ``rtol`` (it is the cone
        projection of v, feasible up to round-off) and the relative duality gap at most
        ``rtol``, with the better of the certificate's own dual point and ADMM's
        (:meth:`witness`), which the certificate verifies. Robust programs declare
        nothing yet."""
        if problem.robust:
            return {}
        return {"relative_cone_violation": float(self.rtol) + float(self.atol),
                "relative_gap": float(self.rtol) + float(self.atol)}

    def finalize(self, problem: ConvexReLU, st: State, ctx):
        ctx.counters["factor_time"] = st.t_factor
        if st.ustep is not None and hasattr(st.ustep, "iters"):
            ctx.counters["cg_iterations"] = st.ustep.iters
        ctx.counters["u_step"] = ctx.setup.kind
        ctx.counters["rho2_final"] = st.sys.rho2
        ctx.counters["polished"] = bool(st.polished and st.k_feasible == st.k)
        if st.k_feasible == st.k and st.x_feasible is not None:
            return st.x_feasible
        return _answer(problem, st)


def _answer(problem: ConvexReLU, st) -> Any:
    """The returned weights ``(2, P, d[, c])`` from ``v`` (stored as ``(d, 2P, c)``)."""
    V = st.V
    d, P, c = problem.d, problem.P, problem.c
    V4 = V.reshape(d, 2, P, c)
    x = V4.permute(1, 2, 0, 3) if problem.array_library == "torch" else V4.transpose(1, 2, 0, 3)
    x = x + 0
    return x[..., 0] if c == 1 else x


def _flat_b(B):
    """(n, d, c) -> (n*c, d) rows per (sample, output)."""
    n, d, c = B.shape
    T = B.permute(0, 2, 1) if not isinstance(B, np.ndarray) else B.transpose(0, 2, 1)
    return T.reshape(n * c, d)


def _unflat_b(Bf, shape):
    n, d, c = shape
    T = Bf.reshape(n, c, d)
    return T.permute(0, 2, 1) if not isinstance(T, np.ndarray) else T.transpose(0, 2, 1)


# ---------------------------------------------------------------------------------------
# ADMM-RBCD u-step (section 4)
# ---------------------------------------------------------------------------------------
def _rbcd_ustep(solver: ADMM, problem: ConvexReLU, st: State, ctx):
    """Inexact u-step by randomized block coordinate descent over pattern blocks.

    Minimizes ``L_u(u) = f(F u) + rho1/2 ||u - v + lam||^2 + rho2/2 ||G u - (s - nu)||^2``
    where ``f`` is the loss (squared, logistic) or, for the hinge loss, the split quadratic
    ``rho_loss/2 ||F u - (z - mu)||^2``. Blocks of ``rbcd_block`` patterns (their v and w
    parts) take gradient steps with Armijo backtracking (accept when the decrease is at
    least ``1e-3 alpha ||g||^2``; otherwise divide the step by 2.5 and the next starting
    step by 1.5; after an accepted step the starting step grows by 1.05). The inner loop
    stops when the mean of the last ``ceil(8 sqrt(P/b))`` decreases falls below
    ``thresh * max(1, |L_u|)`` or after ``rbcd_max_sweeps * ceil(P / b)`` blocks.
    """
    s = st.sys
    X, D = problem.Xt, problem.D
    d, P, c = problem.d, problem.P, problem.c
    b = min(solver.rbcd_block, P)
    U = st.U + 0
    rho1, rho2 = s.rho1, s.rho2
    if ctx.setup.split:
        loss, target, wt = "squared", st.Z - st.Mu, s.aF
    else:
        loss, target, wt = problem.loss, problem.Y, problem.w
    SN = (X.T @ st.EabsW).reshape(d, 2 * P, c)  # G^T (s - nu)
    VL = st.V - st.L
    XtX = s.XtX
    yhat = s.F(U)

    def f_val(z):
        return to_float(RL.loss_value(loss, z, target, wt))

    def quad(Ublk, idx):  # rho1/2||u - v + lam||^2 + rho2/2 (u^T XtX u - 2 sn^T u) on blocks
        Dv = Ublk - VL[:, idx]
        XU_ = (XtX @ Ublk.reshape(d, -1)).reshape(Ublk.shape)
        return to_float(0.5 * rho1 * (Dv * Dv).sum() + rho2 * (0.5 * (Ublk * XU_).sum()
                                                                 - (SN[:, idx] * Ublk).sum()))

    win = int(math.ceil(8 * math.sqrt(P / b)))
    buf = []
    fcur = f_val(yhat)
    Lu0 = abs(fcur + quad(U, slice(None)))
    thresh = st.rbcd_thresh * max(1.0, Lu0)
    step0 = st.rbcd_step
    nblocks = 0
    is_np = isinstance(X, np.ndarray)
    for _ in range(max(1, solver.rbcd_max_sweeps * math.ceil(P / b))):
        pats = st.rng.choice(P, size=b, replace=False)
        idx = np.concatenate([pats, pats + P])
        idx_t = idx if is_np else __import__("torch").as_tensor(idx, device=X.device)
        pats_t = pats if is_np else idx_t[:b]
        g_loss = RL.loss_grad(loss, yhat, target, wt)  # (n, c)
        Dp = D[:, pats_t]  # (n, b)
        half = (X.T @ (Dp[:, :, None] * g_loss[:, None, :]).reshape(X.shape[0], -1)).reshape(d, b, c)
        gF = _cat2(half, -half)
        Ublk = U[:, idx_t]
        XU_ = (XtX @ Ublk.reshape(d, -1)).reshape(Ublk.shape)
        grad = gF + rho1 * (Ublk - VL[:, idx_t]) + rho2 * (XU_ - SN[:, idx_t])
        gn2 = to_float((grad * grad).sum())
        if gn2 == 0:
            continue
        q0 = quad(Ublk, idx_t)
        a_ = step0
        accepted = False
        while a_ >= 1e-8 * step0 and a_ > 1e-14:
            Unew = Ublk - a_ * grad
            dU = Unew - Ublk
            dy = ((X @ (dU[:, :b] - dU[:, b:]).reshape(d, -1)).reshape(-1, b, c)
                  * Dp[:, :, None]).sum(1)
            fnew = f_val(yhat + dy)
            change = (fnew - fcur) + (quad(Unew, idx_t) - q0)
            if change <= -1e-3 * a_ * gn2:
                accepted = True
                break
            a_ /= 2.5
            step0 = max(1e-10, step0 / 1.5)
        nblocks += 1
        if accepted:
            U[:, idx_t] = Unew
            yhat = yhat + dy
            fcur = fnew
            step0 *= 1.05
            buf.append(-change)
        else:
            buf.append(0.0)
        if len(buf) > win:
            buf.pop(0)
        if len(buf) == win and sum(buf) / win <= thresh:
            break
    ctx.count("rbcd_blocks", nblocks)
    st.rbcd_step = step0
    st.rbcd_thresh = max(1e-14, st.rbcd_thresh * 0.96)
    return U


def _cat2(a, b):
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b], axis=1)
    import torch

    return torch.cat([a, b], dim=1)
