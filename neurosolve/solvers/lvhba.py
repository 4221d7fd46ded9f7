"""LV-HBA: the proximal Lagrangian value function based Hessian-free bilevel algorithm."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.core import Solver, State, Status, Stop, to_float
from neurosolve.problems import sets as _sets
from neurosolve.problems.bilevel import (
    AffineFunction,
    Bilevel,
    BilevelSolution,
    KronIdentity,
    QuadraticFunction,
    _numpy,
)
from neurosolve.problems.value_function import multiplier_projection

__all__ = ["LVHBA"]


class LVHBASetup(NamedTuple):
    """Configuration of one LV-HBA solve: the problem's oracles, sizes, the multiplier
    bounds ``(lam_lo, lam_hi, z_lo, z_hi)`` in the problem's library, and the fused numba
    kernel's data and constant arguments (None off the numba backend or off its structure)."""

    oracles: Any
    n: int
    m: int
    ncons: int
    bounds: tuple
    fused: dict | None
    kpre: tuple | None
    kernel: str


@dataclass(eq=False)
class LVHBAState(State):
    """LV-HBA's iteration data: ``w = (x, y)``, ``theta``, the multipliers ``lam`` and
    ``z``, the penalty ``c``, the previous iterate (to step back from a NaN), divergence
    bookkeeping, the start of this solve (``k0``) and the fused kernel's scratch buffers."""

    w: Any = None
    theta: Any = None
    lam: Any = None
    z: Any = None
    c: float = 1.0
    prev: tuple | None = None
    grew: bool = False
    sizes: tuple | None = None
    k0: int = 0
    scale0: tuple = ()
    lam_max: float = 0.0
    alt: tuple | None = None
    work: tuple | None = None
    empty: str | None = None


@dataclass(frozen=True, kw_only=True)
class LVHBA(Solver):
    """LV-HBA for bilevel problems with coupled lower-level constraints [1]_.

    Solves :class:`neurosolve.problems.Bilevel` by a single-loop, first-order,
    Hessian-free method on the penalized value-function reformulation

    ``min_{(x, y) in C, z in Z}  F(x, y) / c_k + f(x, y) - v_gamma(x, y, z)``,

    where ``v_gamma`` is the proximal Lagrangian value function of the lower level (see
    :mod:`neurosolve.problems.value_function`) and ``c_k = c0 (k + 1)^p``. Iteration ``k``
    (in exactly this order):

    1. ``c_k = c0 (k + 1)^p``.
    2. One projected gradient descent-ascent step on the proximal Lagrangian, both
       directions at the OLD ``theta^k``, ``lam^k``::

           d_theta = grad_y f(x, theta) + J_y c(x, theta)^T lam + (theta - y) / gamma1
           d_lam   = -c(x, theta) + (lam - z) / gamma2
           theta+  = Proj_Y(theta - eta d_theta);   lam+ = Proj_Lambda(lam - eta d_lam)

    3. One projected gradient step on the penalized objective at the OLD ``x, y, z`` with
       the NEW ``theta+``, ``lam+``::

           d_x = grad_x F(x, y)/c_k + grad_x f(x, y) - grad_x f(x, theta+) - J_x c(x, theta+)^T lam+
           d_y = grad_y F(x, y)/c_k + grad_y f(x, y) - (y - theta+) / gamma1
           d_z = (z - lam+) / gamma2
           (x+, y+) = Proj_C((x, y) - alpha (d_x, d_y));   z+ = Proj_Z(z - beta d_z)

    Here ``c = [g; h]``, ``Lambda = R^l_+ x R^q`` (free equality multipliers; clipped to
    the truncation box too when ``clip_lam``) and ``Z = [0, r]^l x [-r, r]^q``.

    Parameters
    ----------
    alpha, beta, eta : float
        Step sizes of ``(x, y)``, ``z`` and ``(theta, lam)``. Keep ``alpha <= eta`` so that
        ``theta`` tracks faster than ``(x, y)`` moves, and ``eta ||J_y g||^2`` well below
        ``1 / gamma1``.
    alpha_x : float or None
        A separate step size for the upper-level variable ``x`` (the paper's step sizes
        are per block of Algorithm 1; one ``alpha`` for ``(x, y)`` is its simplest choice).
        ``None``: ``alpha``. Useful when ``grad_x`` of the penalized objective is much
        smaller than ``grad_y`` (e.g. per-sample weights ``exp(c_i)`` near zero in
        hyper-cleaning). The stationarity measure then uses ``||x+ - x|| / alpha_x`` for
        the ``x`` block. A value other than ``alpha`` runs the generic iteration on the
        numba backend (the fused kernel has one step size).
    gamma1, gamma2 : float
        Proximal parameters of ``v_gamma``; ``gamma1 < 1 / rho_f`` for weakly convex ``f``.
        A small ``gamma1`` makes ``f - v_gamma`` flat, so the penalty barely bites.
    c0, p : float
        Penalty schedule ``c_k = c0 (k + 1)^p``. The theory needs ``0 < p < 1/2``; other
        values warn (``theory=False``) or raise ``ValueError`` (``theory=True``). ``p = 0``
        is a constant penalty, whose bias is ``O(1 / c0)``.
    r : float or None
        Truncation box of ``z`` (``Z = [0, r]``; ``[-r, r]`` for equalities). ``None``:
        unbounded. It must exceed the lower-level multipliers.
    clip_lam : bool
        Also clip ``lam`` to the truncation box (as the reference code does). Default: the
        paper's ``lam in R^l_+``.
    theory : bool
        Enforce the convergence theory's parameter ranges (``0 < p < 1/2``) with errors.
    tol_stat, tol_inner, tol_gap : float
        Stopping rule (all three must hold)::

            stationarity   = sqrt(||w+ - w||^2 / alpha^2 + ||z+ - z||^2 / beta^2) <= tol_stat
            inner_residual = sqrt(||theta+ - theta||^2 + ||lam+ - lam||^2) / eta  <= tol_inner
            |ll_gap_estimate| = |f(x, y) - Lhat|                                  <= tol_gap

        with ``w = (x, y)`` and ``Lhat`` the proximal Lagrangian at
        ``(x, y, z; theta+, lam+)``. The penalty bias is ``O(1 / c_k)``: report all three.
    maxiter : int, optional
        Iteration limit (default 10000).
    divergence_factor : float
        Report ``DIVERGED`` when ``||(x, y)||``, ``||theta||`` or ``||lam||`` exceeds
        ``divergence_factor * (1 + its initial size)``, or when a NaN/inf appears after
        growth; the result then holds the last finite iterate.
    infeasible_start : {"project", "raise"}
        What to do when ``(x0, y0)`` is not in ``C``: project it with a warning, or raise
        ``ValueError``.

    Notes
    -----
    ``Result.x`` is a :class:`~neurosolve.problems.bilevel.BilevelSolution`
    ``(x, y, z, lam, theta, gamma1, gamma2, c, r)``: unpack ``x, y = res.x[:2]``.
    ``x0`` may be ``None`` (the problem's ``x0``, ``y0``), a tuple ``(x, y)`` or a
    ``BilevelSolution`` (warm start; its ``z``, ``lam`` and ``theta`` are used when set).
    Defaults: ``theta0 = Proj_Y(y0)``, ``lam0 = z0 = 0``.

    Metrics: ``stationarity``, ``inner_residual``, ``ll_gap_estimate``, ``upper_objective``,
    ``lower_objective``, ``penalty`` (``c_k``), ``lam_max``.
    Status: CONVERGED, MAX_ITER, DIVERGED, NONFINITE.

    Backends: ``numpy`` and ``torch`` run the same iteration with the problem's oracles
    (torch autograd for functions given without gradients). ``numba`` runs one fused kernel
    per iteration (:mod:`neurosolve.backends.lvhba_kernels`) when the problem is given as
    arrays with :class:`~neurosolve.problems.bilevel.KronIdentity` Hessians of at most 8
    blocks, at most 8 dense affine constraint rows, a box ``Y`` and ``C`` a box or
    half-space; otherwise it runs the numpy
    iteration (``stats["kernel"]`` says which ran). The fused kernel is generated for the
    block structure (number of blocks, nonzero pattern of the ``M`` factors, number of
    constraints, kind of ``C``) and compiled once per structure (cached on disk under
    ``$NEUROSOLVE_CACHE``, default ``~/.cache/neurosolve``). All three backends agree to
    rounding (1e-10 over 100 steps in the tests).

    References
    ----------
    .. [1] W. Yao, C. Yu, S. Zeng, J. Zhang, "Constrained Bi-Level Optimization: Proximal
       Lagrangian Value Function Approach and Hessian-free Algorithm", ICLR 2024,
       arXiv:2401.16164 (Algorithm 1, LV-HBA).

    Examples
    --------
    >>> import neurosolve as ns
    >>> from neurosolve.problems import bilevel_gallery
    >>> prob = bilevel_gallery.toy_b(n=10)
    >>> res = ns.solve(prob, ns.solvers.LVHBA(gamma1=1.0, maxiter=50000))
    >>> x, y = res.x[:2]
    >>> bool(abs(x - 1).max() < 1e-3)                      # x* = 1
    True
    """

    alpha: float = 1e-3
    alpha_x: float | None = None
    beta: float = 1e-3
    eta: float = 1e-3
    gamma1: float = 10.0
    gamma2: float = 1.0
    c0: float = 1.0
    p: float = 0.3
    r: float | None = 10.0
    clip_lam: bool = False
    theory: bool = False
    tol_stat: float = 1e-6
    tol_inner: float = 1e-6
    tol_gap: float = 1e-8
    divergence_factor: float = 1e8
    infeasible_start: str = "project"

    metrics: ClassVar[tuple[str, ...]] = ("stationarity", "inner_residual", "ll_gap_estimate",
                                          "upper_objective", "lower_objective", "penalty", "lam_max")
    problem_types: ClassVar[tuple[type, ...]] = (Bilevel,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        for name in ("alpha", "beta", "eta", "gamma1", "gamma2", "c0"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite positive number, got {v!r}")
        for name in ("tol_stat", "tol_inner", "tol_gap"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating)) or v < 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        ax = self.alpha_x
        if ax is not None and (not isinstance(ax, (int, float, np.floating)) or not math.isfinite(ax)
                               or ax <= 0):
            raise ValueError(f"alpha_x must be a finite positive number or None, got {ax!r}")
        if self.r is not None and not (isinstance(self.r, (int, float, np.floating)) and self.r > 0):
            raise ValueError(f"r must be a positive number or None, got {self.r!r}")
        if not isinstance(self.p, (int, float, np.floating)) or not math.isfinite(self.p) or self.p < 0:
            raise ValueError(f"p must be a finite non-negative number (c_k = c0 (k+1)^p), got {self.p!r}")
        if not (0 < self.p < 0.5):
            msg = (f"p = {self.p} is outside (0, 1/2), the range of LV-HBA's convergence theory "
                   "(c_k = c0 (k+1)^p; the rate O(K^{-(1-2p)/2}) needs p < 1/2)")
            if self.theory:
                raise ValueError(msg + "; use 0 < p < 1/2 or theory=False")
            warnings.warn(msg, UserWarning, stacklevel=3)
        if self.infeasible_start not in ("project", "raise"):
            raise ValueError(f"infeasible_start must be 'project' or 'raise', got {self.infeasible_start!r}")
        if not (self.divergence_factor > 1):
            raise ValueError(f"divergence_factor must exceed 1, got {self.divergence_factor!r}")

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 10000

    @property
    def step_x(self) -> float:
        """The upper-level step size: ``alpha_x``, or ``alpha`` when it is None."""
        return self.alpha if self.alpha_x is None else self.alpha_x

    def penalty(self, k: int) -> float:
        """``c_k = c0 (k + 1)^p``."""
        return self.c0 * (k + 1) ** self.p

    # -- init ----------------------------------------------------------------------------
    def init(self, problem: Bilevel, x0, ctx) -> State:
        lib = problem.array_library
        n, m = problem.n, problem.m
        ncons = problem.n_ineq + problem.n_eq
        O = ctx.setup.oracles
        start = x0 if x0 is not None else (problem.x0, problem.y0)
        if not isinstance(start, tuple) or len(start) < 2:
            raise TypeError("x0 must be None, a tuple (x, y) or a BilevelSolution")
        x, y = start[0], start[1]
        for nm, v, size in (("x0[0] (x)", x, n), ("x0[1] (y)", y, m)):
            if tuple(v.shape) != (size,):
                raise ValueError(f"{nm} has shape {tuple(v.shape)}; expected ({size},)")
            if is_torch(v) != (lib == "torch"):
                raise TypeError(f"{nm} is not a {lib} array like the problem's data")
        z0 = lam0 = th0 = None
        empty = None
        if isinstance(start, BilevelSolution):
            z0, lam0, th0 = start.z, start.lam, start.theta
        w = O._cat(_as_lib(x, problem), _as_lib(y, problem))
        dist = problem.C.violation(_numpy(w)) if not isinstance(problem.C, _sets.Reals) else 0.0
        wscale = 1.0 + float(np.max(np.abs(_numpy(w)), initial=0.0))
        if dist > 1e-8 * wscale:
            msg = (f"the starting point (x0, y0) is not in C (violation {dist:.3g}); LV-HBA needs "
                   "(x, y) in C = (X x Y) ∩ {g <= 0, h = 0}")
            if self.infeasible_start == "raise":
                raise ValueError(msg + "; pass a feasible start or LVHBA(infeasible_start='project')")
            warnings.warn(msg + "; projecting it onto C", UserWarning, stacklevel=3)
            try:
                w = problem.C.project(w)
            except _sets.EmptySetError as e:
                empty = str(e)
        y = w[n:]
        theta = problem.Y.project(y if th0 is None else th0)
        zeros = _zeros(problem, ncons)
        lam = zeros if lam0 is None else _as_lib(lam0, problem)
        z = zeros if z0 is None else _as_lib(z0, problem)
        for nm, v in (("lam", lam), ("z", z)):
            if tuple(v.shape) != (ncons,):
                raise ValueError(f"x0.{nm} has shape {tuple(v.shape)}; expected ({ncons},)")
        lam = multiplier_projection(lam, problem.n_ineq, 0.0, self.r if self.clip_lam else None)
        z = multiplier_projection(z, problem.n_ineq, 0.0, self.r)

        st = LVHBAState(x=None, k=0, w=w, theta=theta, lam=lam, z=z, c=self.penalty(0),
                        empty=empty)
        st.scale0 = (1.0 + _norm(w), 1.0 + _norm(theta), 1.0 + (_norm(lam) if ncons else 0.0))
        if ctx.setup.fused is not None:
            self._fused_alloc(st, ctx.setup)
        Fv = O.F_value(w[:n], w[n:])
        fv = O.f_value(w[:n], w[n:])
        inf = float("inf")
        st.metrics = {"stationarity": inf, "inner_residual": inf, "ll_gap_estimate": inf,
                      "upper_objective": Fv, "lower_objective": fv, "penalty": st.c,
                      "lam_max": _max(lam) if ncons else 0.0}
        st.x = BilevelSolution(w[:n], w[n:])
        ctx.count("projections_C", 1 if dist > 0 else 0)
        return st

    def setup(self, problem: Bilevel, ctx) -> "LVHBASetup":
        """Oracles, sizes, the multiplier bounds and, on the numba backend, the fused kernel
        with its constant arguments (chosen once here; ``step`` does not branch on it)."""
        ncons = problem.n_ineq + problem.n_eq
        r = self.r
        lam_hi = r if (self.clip_lam and r is not None) else np.inf
        zr = np.inf if r is None else r
        bounds = (np.concatenate([np.zeros(problem.n_ineq), np.full(problem.n_eq, -lam_hi)]),
                  np.full(ncons, lam_hi),
                  np.concatenate([np.zeros(problem.n_ineq), np.full(problem.n_eq, -zr)]),
                  np.full(ncons, zr))
        if problem.array_library == "torch":
            import torch

            bounds = tuple(torch.as_tensor(a, dtype=problem.dtype, device=problem.device)
                           for a in bounds)
        fused = self._fused_data(problem) if ctx.backend.name == "numba" and \
            self.step_x == self.alpha else None
        kpre = None
        if fused is not None:
            d = fused
            kpre = (d["Fr"], d["Fc"], d["Fv"], d["cF"], d["fr"], d["fc"], d["fv"], d["cf"],
                    d["s"], d["nx"], d["G"], d["bg"]) + tuple(bounds) + (
                    d["ylo"], d["yhi"], d["c_kind"], d["clo"], d["chi"], d["ca"], d["cb"],
                    d["ca_sq"], self.alpha, self.beta, self.eta, 1.0 / self.gamma1,
                    1.0 / self.gamma2)
        kernel = "numba-fused" if fused is not None else ctx.backend.name
        ctx.counters["kernel"] = kernel  # reported in Result.stats
        return LVHBASetup(oracles=problem.oracles(), n=problem.n, m=problem.m, ncons=ncons,
                          bounds=bounds, fused=fused, kpre=kpre, kernel=kernel)

    def resume(self, problem: Bilevel, st, ctx) -> "LVHBAState":
        """Continue from ``result.state`` (warm start); the iteration count carries on."""
        st.k0 = st.k
        if ctx.setup.fused is not None:
            self._fused_alloc(st, ctx.setup)
        return st

    # -- the fused numba path ---------------------------------------------------------------
    def _fused_data(self, problem: Bilevel):
        """Arrays for the fused kernel, or None when the problem does not fit it."""
        F, f = problem.F, problem.f
        if not (isinstance(F, QuadraticFunction) and isinstance(f, QuadraticFunction)):
            return None
        if not (isinstance(F.Q, KronIdentity) and isinstance(f.Q, KronIdentity)):
            return None
        if F.Q.size != f.Q.size or problem.n % F.Q.size != 0 or F.Q.M.shape != f.Q.M.shape:
            return None
        if not all(fn is None or isinstance(fn, AffineFunction) for fn in (problem.g, problem.h)):
            return None
        Y, C = problem.Y, problem.C
        if not isinstance(Y, (_sets.Reals, _sets.Box)):
            return None
        if not isinstance(C, (_sets.Reals, _sets.Box, _sets.HalfSpace)):
            return None
        N = problem.n + problem.m
        ncons = problem.n_ineq + problem.n_eq
        if ncons * N > 50_000_000:
            return None
        from neurosolve.backends import lvhba_kernels as K

        rows = [fn.dense_numpy() for fn in (problem.g, problem.h) if fn is not None]
        bs = [fn.b_numpy() for fn in (problem.g, problem.h) if fn is not None]
        G = np.ascontiguousarray(np.vstack(rows)) if rows else np.zeros((0, N))
        bg = np.concatenate(bs) if bs else np.zeros(0)
        if isinstance(Y, _sets.Box):
            ylo, yhi = Y.lower.copy(), Y.upper.copy()
        else:
            ylo, yhi = np.full(problem.m, -np.inf), np.full(problem.m, np.inf)
        clo = chi = ca = np.zeros(1)
        cb = ca_sq = 0.0
        if isinstance(C, _sets.Box):
            kind, clo, chi = K.C_BOX, C.lower.copy(), C.upper.copy()
        elif isinstance(C, _sets.HalfSpace):
            kind, ca, cb, ca_sq = K.C_HALFSPACE, C.a.copy(), C.b, C.a_sq
        else:
            kind = K.C_REALS
        FQ, fQ = F.Q, f.Q
        B = FQ.M.shape[0]
        Bx = problem.n // FQ.size
        if not (B <= 8 and len(bg) <= 8 and 0 < Bx < B):
            return None
        kfun = K.generated_kron_step(FQ.M, fQ.M, B, Bx, len(bg), kind, isinstance(Y, _sets.Box))
        kpost = (np.ascontiguousarray(FQ.M), np.ascontiguousarray(fQ.M))
        return dict(kfun=kfun, kpost=kpost,Fr=FQ.terms[0], Fc=FQ.terms[1], Fv=FQ.terms[2], cF=_numpy(F.c),
                    fr=fQ.terms[0], fc=fQ.terms[1], fv=fQ.terms[2], cf=_numpy(f.c),
                    s=FQ.size, nx=problem.n, G=G, bg=bg, ylo=ylo, yhi=yhi, c_kind=kind,
                    clo=clo, chi=chi, ca=ca, cb=float(cb), ca_sq=float(ca_sq),
                    F_const=F.const, f_const=f.const)

    def _fused_alloc(self, st, su):
        N = su.n + su.m
        l = su.ncons
        st.w = np.ascontiguousarray(st.w, dtype=float)
        st.theta = np.ascontiguousarray(st.theta, dtype=float)
        st.lam = np.ascontiguousarray(st.lam, dtype=float)
        st.z = np.ascontiguousarray(st.z, dtype=float)
        st.alt = (np.empty(N), np.empty(su.m), np.empty(l), np.empty(l))
        st.work = (np.empty(N), np.empty(N), np.empty(N), np.empty(N), np.empty(max(l, 1)),
                   np.zeros(11))

    def _fused_step(self, st, c, su):
        d = su.fused
        w_out, th_out, lam_out, z_out = st.alt
        v, b1, b2, b3, cons, met = st.work
        d["kfun"](*su.kpre, 1.0 / c, st.w, st.theta, st.lam, st.z,
                  w_out, th_out, lam_out, z_out, v, b1, b2, b3, cons, met, *d["kpost"])
        st.alt = (st.w, st.theta, st.lam, st.z)
        st.prev = st.alt
        st.w, st.theta, st.lam, st.z = w_out, th_out, lam_out, z_out
        Fval = met[0] + d["F_const"]
        fval = met[1] + d["f_const"]
        lag = met[2] + d["f_const"]
        stat = math.sqrt(met[3] / self.alpha ** 2 + met[4] / self.beta ** 2)
        inner = math.sqrt(met[5] + met[6]) / self.eta
        st.sizes = (math.sqrt(met[7]), math.sqrt(met[8]), math.sqrt(met[9]))
        st.lam_max = float(met[10])
        return Fval, fval, fval - lag, stat, inner

    # -- the generic path (numpy / torch) ------------------------------------------------
    def _generic_step(self, problem, st, c, ctx):
        su = ctx.setup
        O = su.oracles
        n = su.n
        w, th, lam, z = st.w, st.theta, st.lam, st.z
        x, y = w[:n], w[n:]
        lam_lo, lam_hi, z_lo, z_hi = su.bounds
        g1, g2 = self.gamma1, self.gamma2
        # step 2: theta, lambda from the old theta^k, lambda^k
        _, _, fy_t = O.f_grad(x, th)
        d_th = fy_t + (th - y) / g1
        if ctx.setup.ncons:
            cval, _, cy = O.cons_vjp(x, th, lam)
            d_th = d_th + cy
            d_lam = -cval + (lam - z) / g2
            lam_new = _clip(lam - self.eta * d_lam, lam_lo, lam_hi)
        else:
            lam_new = lam
        th_new = problem.Y.project(th - self.eta * d_th)
        # step 3: x, y, z from the new theta, lambda and the old x, y, z
        Fv, Fx, Fy = O.F_grad(x, y)
        fv, fx, fy = O.f_grad(x, y)
        ftv, ftx, _ = O.f_grad(x, th_new)
        dx = Fx / c + fx - ftx
        lag = ftv + _sumsq(th_new - y) / (2 * g1)
        if ctx.setup.ncons:
            cval2, cx2, _ = O.cons_vjp(x, th_new, lam_new)
            dx = dx - cx2
            lag = lag + (lam_new * cval2).sum() - _sumsq(lam_new - z) / (2 * g2)
            z_new = _clip(z - self.beta * (z - lam_new) / g2, z_lo, z_hi)
        else:
            z_new = z
        dy = Fy / c + fy - (y - th_new) / g1
        ax = self.step_x
        w_new = problem.C.project(O._cat(x - ax * dx, y - self.alpha * dy))
        ctx.count("projections_C")
        st.prev = (w, th, lam, z)
        st.w, st.theta, st.lam, st.z = w_new, th_new, lam_new, z_new
        if ax == self.alpha:
            stat2 = _sumsq(w_new - w) / self.alpha ** 2
        else:
            stat2 = _sumsq(w_new[:n] - x) / ax ** 2 + _sumsq(w_new[n:] - y) / self.alpha ** 2
        inner2 = _sumsq(th_new - th)
        if ctx.setup.ncons:
            stat2 = stat2 + _sumsq(z_new - z) / self.beta ** 2
            inner2 = inner2 + _sumsq(lam_new - lam)
        return Fv, fv, fv - lag, _sqrt(stat2), _sqrt(inner2) / self.eta

    def step(self, problem, st, ctx) -> State:
        c = self.penalty(st.k)
        st.c = c
        su = ctx.setup
        if su.fused is not None:
            Fv, fv, gap, stat, inner = self._fused_step(st, c, su)
            lam_max = st.lam_max
        else:
            try:
                # no autograd graph by default: solve() runs the loop under no_grad unless
                # adjoint="unrolled" asks for one
                Fv, fv, gap, stat, inner = self._generic_step(problem, st, c, ctx)
            except _sets.EmptySetError as e:
                st.empty = str(e)
                st.k += 1
                return st
            st.sizes = None
            lam_max = _max(st.lam) if ctx.setup.ncons else 0.0
        st.k += 1
        st.metrics = {"stationarity": stat, "inner_residual": inner, "ll_gap_estimate": gap,
                      "upper_objective": Fv, "lower_objective": fv, "penalty": c,
                      "lam_max": lam_max}
        st.x = BilevelSolution(st.w[:ctx.setup.n], st.w[ctx.setup.n:])
        return st

    # -- stopping ------------------------------------------------------------------------
    def check(self, problem, st, ctx):
        if st.empty is not None:
            return Stop(Status.INFEASIBLE, (
                f"the feasible set C = (X x Y) ∩ {{g <= 0, h = 0}} looks empty ({st.empty}); "
                "check X, Y and the coupled constraints g, h for a common point"))
        if st.k == 0:
            return None
        met = st.metrics
        if st.sizes is None and is_torch(st.w):
            # one host transfer for the six numbers of the test (not six .item() syncs)
            import torch

            parts = [met["stationarity"], met["inner_residual"], met["ll_gap_estimate"],
                     st.w.norm(), st.theta.norm()] + ([st.lam.norm()] if ctx.setup.ncons else [])
            vals = torch.stack([torch.as_tensor(v, dtype=st.w.dtype, device=st.w.device)
                                for v in parts]).tolist()
            stat, inner, gap = vals[:3]
            sizes = tuple(vals[3:]) + (() if ctx.setup.ncons else (0.0,))
        else:
            stat, inner, gap = (to_float(met["stationarity"]), to_float(met["inner_residual"]),
                                to_float(met["ll_gap_estimate"]))
            sizes = st.sizes if st.sizes is not None else \
                (_norm(st.w), _norm(st.theta), _norm(st.lam) if ctx.setup.ncons else 0.0)
        finite = all(math.isfinite(v) for v in (stat, inner, gap) + sizes)
        grown = [s > self.divergence_factor * s0 for s, s0 in zip(sizes, st.scale0)]
        if any(s > 10 * s0 for s, s0 in zip(sizes, st.scale0) if math.isfinite(s)):
            st.grew = True
        if any(grown) or (not finite and st.grew):
            which = ["(x, y)", "theta", "lambda"][[i for i, gflag in enumerate(grown) if gflag][0]] \
                if any(grown) else "the iterates"
            if not finite:
                self._restore_prev(st, ctx.setup.n)
            return Stop(Status.DIVERGED, (
                f"LV-HBA diverged at iteration {st.k}: {which} grew beyond "
                f"{self.divergence_factor:.0e} times its initial size. Reduce alpha (keep "
                f"alpha <= eta; now alpha = {self.alpha:g}, eta = {self.eta:g}) or eta "
                "(keep eta * ||J_y g||^2 well below 1/gamma1)"
            ))
        if not finite:
            self._restore_prev(st, ctx.setup.n)
            return Stop(Status.NONFINITE, (
                f"a NaN or infinity appeared at iteration {st.k} without prior growth: check F, f, "
                "g (and their gradients) at the current iterate"
            ))
        if stat <= self.tol_stat and inner <= self.tol_inner and abs(gap) <= self.tol_gap:
            return Stop(Status.CONVERGED)
        return None

    def tolerance(self, problem, state) -> dict[str, float]:
        """The lower-level gap recomputed from scratch (``f(x, y) - v(x)`` with the value
        function solved afresh) within ``tol_gap``, as the stopping rule's estimate is."""
        return {"ll_gap": float(self.tol_gap)}

    def _restore_prev(self, st, n):
        if st.prev is not None:
            w, th, lam, z = st.prev
            if all(_finite(a) for a in (w, th, lam, z)):
                st.w, st.theta, st.lam, st.z = w, th, lam, z
                st.x = BilevelSolution(w[:n], w[n:])

    def finalize(self, problem, st, ctx):
        cp = (lambda a: a.clone()) if problem.array_library == "torch" else (lambda a: np.array(a, copy=True))
        ctx.counters.setdefault("projections_C", 0)
        k = st.k - st.k0
        ctx.count("grad_f", 3 * k)
        ctx.count("grad_F", k)
        if ctx.setup.ncons:
            ctx.count("constraint_vjps", 2 * k)
        sol = BilevelSolution(cp(st.w[:ctx.setup.n]), cp(st.w[ctx.setup.n:]),
                              cp(st.z) if ctx.setup.ncons else None, cp(st.lam) if ctx.setup.ncons else None,
                              cp(st.theta), self.gamma1, self.gamma2, st.c, self.r)
        return sol


# --------------------------------------------------------------------------------------
def _as_lib(v, problem):
    if problem.array_library == "torch":
        import torch

        return torch.as_tensor(v, dtype=problem.dtype, device=problem.device)
    return np.asarray(v, dtype=float)


def _zeros(problem, k):
    if problem.array_library == "torch":
        import torch

        return torch.zeros(k, dtype=problem.dtype, device=problem.device)
    return np.zeros(k)


def _clip(a, lo, hi):
    if is_torch(a):
        import torch

        return torch.minimum(torch.maximum(a, lo), hi)
    return np.minimum(np.maximum(a, lo), hi)


def _sumsq(a):
    return (a * a).sum()


def _sqrt(a):
    if is_torch(a):
        return a.sqrt()
    return math.sqrt(float(a))


def _norm(a) -> float:
    if is_torch(a):
        return float(a.detach().norm().item())
    return float(np.linalg.norm(a))


def _max(a):
    if is_torch(a):
        return a.abs().max() if a.numel() else 0.0
    return float(np.max(np.abs(a), initial=0.0))


def _finite(a) -> bool:
    if is_torch(a):
        return bool(a.isfinite().all())
    return bool(np.all(np.isfinite(a)))
