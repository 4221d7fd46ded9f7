"""Pluggable Hessian approximations and the regularized solves ``(H + lambda B) d = r``.

A regularized Newton method needs, at each point ``x``, a symmetric matrix ``H(x)`` (the
exact Hessian or something cheaper) and, for a handful of values of ``lambda``, the
solution of ``(H + lambda B) d = r`` with the metric ``B``. Both depend on the structure:
a dense ``H`` is factored by Cholesky (one factorization per ``lambda``), a low-rank plus
diagonal ``H`` by the Woodbury identity (Sherman-Morrison for rank one), a diagonal ``H``
element-wise, and a matrix-free ``H`` (Hessian-vector, Gauss-Newton or Fisher products)
by conjugate gradients.

Every approximation is an object with ``evaluate(problem, x, oracles, ctx)`` returning a
:class:`HessianModel`, whose ``solve(lam, r)`` returns the solution or ``None`` when
``H + lam B`` is not positive definite (the caller then rejects the trial). Each class
declares its ``solve_method`` and whether it is positive semi-definite by construction
(``psd``); the theory of the GNS method needs ``H`` PSD, and cheap violations (a
negative diagonal entry, a non-symmetric matrix, negative weights) raise ``ValueError``.

=======================  =========================================  =====================
approximation            H(x)                                       solve
=======================  =========================================  =====================
:class:`Exact`           the Hessian (``hess``, autograd, or        Cholesky, or CG on
                         ``hessp`` products)                        Hessian-vector products
:class:`GaussNewton`     ``||u||^{p-2} J^T J + (p-2)||u||^{p-4}     Cholesky, or CG on
                         (J^T u)(J^T u)^T`` for ``(1/p)||u||^p``    J / J^T products
:class:`FisherTerm`      ``(p-2)||u||^{p-4} (J^T u)(J^T u)^T``      Sherman-Morrison
:class:`EmpiricalFisher` ``G^T G / m (+ reg I)``, G per-sample      Cholesky (m >= d) or
                         gradients                                  Woodbury (m < d)
:class:`WeightedGaussNewton`  the problem's ``weighted_gn`` (e.g.   Cholesky
                         ``A^T Diag(pi) A / mu`` for log-sum-exp)
:class:`Diagonal`        diag of the Hessian, or Hutchinson's       element-wise
                         estimate clipped at 0
:class:`LowRankPlusDiagonal`  ``V V^T + Diag(D)`` from a callable   Woodbury
:class:`UserHessian`     any callable: matrix, diagonal,            by what it returns
                         ``(V, D)`` factor, or a matvec
:class:`Zero`            0 (normalized gradient method)             ``B^{-1} r / lambda``
:class:`Constant`        a fixed PSD matrix                         Cholesky
=======================  =========================================  =====================

References
----------
.. [1] A. Semenov, M. Jaggi, N. Doikov, "Gradient-Normalized Smoothness for Optimization
   with Approximate Hessians", arXiv:2506.13710, 2025 (ICLR 2026).
.. [2] E. Frantar, E. Kurtic, D. Alistarh, "M-FAC: Efficient Matrix-Free Approximations of
   Second-Order Information", NeurIPS 2021, arXiv:2107.03356 (Woodbury on gradient windows).
.. [3] Z. Yao et al., "ADAHESSIAN: An Adaptive Second Order Optimizer for Machine
   Learning", AAAI 2021, arXiv:2006.00719 (Hutchinson diagonal).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.problems.metric import Metric

__all__ = [
    "Metric",
    "QuasiNewton",
    "QUASI_NEWTON",
    "HessianApprox",
    "HessianModel",
    "DenseModel",
    "DiagonalModel",
    "LowRankModel",
    "ZeroModel",
    "OperatorModel",
    "DenseCGModel",
    "FORCING",
    "DENSE_SOLVES",
    "asymmetry_estimate",
    "Exact",
    "GaussNewton",
    "FisherTerm",
    "EmpiricalFisher",
    "WeightedGaussNewton",
    "Diagonal",
    "LowRankPlusDiagonal",
    "UserHessian",
    "Zero",
    "Constant",
    "as_hessian_approx",
    "APPROXIMATIONS",
]


class HessianModel:
    """``H`` at one point, plus the solve of ``(H + lam B) d = r``.

    Attributes
    ----------
    solve_method : str
        ``"cholesky"``, ``"woodbury"``, ``"sherman-morrison"``, ``"diagonal"``, ``"cg"``
        or ``"scaled-gradient"``.
    psd : bool
        Whether ``H`` is positive semi-definite by construction.
    """

    solve_method = "none"
    psd = True

    def __init__(self, metric: Metric, ctx=None):
        self.metric = metric
        self.ctx = ctx

    def _count(self, name, n=1):
        if self.ctx is not None:
            self.ctx.count(name, n)

    def solve(self, lam: float, r):  # pragma: no cover - abstract
        """``(H + lam B)^{-1} r``, or None when ``H + lam B`` is not positive definite."""
        raise NotImplementedError

    def matvec(self, h):  # pragma: no cover - abstract
        """``H h``."""
        raise NotImplementedError

    def solver(self, lam: float):
        """A function ``r -> (H + lam B)^{-1} r`` (factored once where possible), or None."""
        return lambda r: self.solve(lam, r)

    def quad(self, h):
        """``<H h, h>``."""
        return (self.matvec(h) * h).sum()

    def predicted_decrease(self, lam, g, d) -> float:
        """The decrease ``-<g, d> - <H d, d> / 2`` of the quadratic model at the step ``d``
        of the last ``solve(lam, -g)``, from the solve itself (no product):
        ``(lam ||d||_B^2 - <g, d>) / 2`` since ``(H + lam B) d = -g``."""
        from neurosolve.core import to_float

        return 0.5 * (lam * to_float(self.metric.norm(d)) ** 2 - to_float((g * d).sum()))


class DenseModel(HessianModel):
    """A dense symmetric ``H``: one Cholesky factorization of ``H + lam B`` per ``lam``."""

    solve_method = "cholesky"

    def __init__(self, H, metric, ctx=None, psd=True):
        super().__init__(metric, ctx)
        self.H = H
        self.psd = psd
        self.la = metric.la

    def factor(self, lam):
        self._count("factorizations")
        self._count("cholesky")
        return self.la.cholesky(self.metric.shifted(self.H, lam))

    def solve(self, lam, r):
        fac = self.factor(lam)
        if fac is None:
            return None
        return self.la.cho_solve(fac, r)

    def solver(self, lam):
        fac = self.factor(lam)
        if fac is None:
            return None
        return lambda r: self.la.cho_solve(fac, r)

    def matvec(self, h):
        return self.H @ h

    def min_eig(self):
        """The smallest eigenvalue of ``H`` relative to the metric (``H v = mu B v``), or
        None when it cannot be computed. One symmetric eigenvalue solve (only the smallest
        eigenvalue), used when ``H + lam B`` failed to factor."""
        m = self.metric
        try:
            if m.library == "numpy":
                from scipy.linalg import eigh

                if m.kind == "identity":
                    w = eigh(self.H, eigvals_only=True, subset_by_index=[0, 0], check_finite=False)
                elif m.kind == "diagonal":
                    s = 1.0 / np.sqrt(m.B)
                    w = eigh(self.H * s[:, None] * s[None, :], eigvals_only=True,
                             subset_by_index=[0, 0], check_finite=False)
                else:
                    w = eigh(self.H, m.B, eigvals_only=True, subset_by_index=[0, 0],
                             check_finite=False)
                return float(w[0])
            torch = m.la.torch
            H = self.H
            if m.kind == "diagonal":
                s = 1.0 / m.B.sqrt()
                H = H * s[:, None] * s[None, :]
            elif m.kind == "dense":
                L = m.factor
                H = torch.linalg.solve_triangular(L, H, upper=False)
                H = torch.linalg.solve_triangular(L, H.T, upper=False)
            return float(torch.linalg.eigvalsh(0.5 * (H + H.T))[0])
        except Exception:  # pragma: no cover - a LAPACK failure: fall back to halving
            return None


class DiagonalModel(HessianModel):
    """``H = Diag(D)``, ``D >= 0``: element-wise solves (Cholesky for a dense metric)."""

    solve_method = "diagonal"

    def __init__(self, D, metric, ctx=None):
        super().__init__(metric, ctx)
        self.D = D
        if metric.kind == "dense":
            self.solve_method = "cholesky"

    def solve(self, lam, r):
        self._count("factorizations")
        m = self.metric
        if m.kind == "identity":
            return r / (self.D + lam)
        if m.kind == "diagonal":
            return r / (self.D + lam * m.B)
        fac = m.la.cholesky(m.la.add_diag(lam * m.B, self.D))
        return None if fac is None else m.la.cho_solve(fac, r)

    def matvec(self, h):
        return self.D * h


class LowRankModel(HessianModel):
    """``H = V V^T + Diag(D)`` solved by the Woodbury identity (m x m Cholesky per ``lam``).

    With ``D = 0`` the products ``B^{-1} V`` and ``C = V^T B^{-1} V`` are computed once and
    each ``lam`` costs one m x m factorization plus O(d m) work:
    ``(lam B + V V^T)^{-1} r = (B^{-1} r - B^{-1} V (lam I + C)^{-1} V^T B^{-1} r) / lam``.
    A non-zero ``D`` needs a diagonal (or identity) metric.
    """

    def __init__(self, V, D, metric, ctx=None):
        super().__init__(metric, ctx)
        if D is not None and metric.kind == "dense":
            raise ValueError("a low-rank-plus-diagonal H with a non-zero diagonal needs an "
                             "identity or diagonal metric B (the Woodbury solve uses B's "
                             "diagonal); pass D=None or use a diagonal B")
        self.V = V
        self.D = D
        self.la = metric.la
        self.m = int(V.shape[1])
        self.solve_method = "sherman-morrison" if self.m == 1 else "woodbury"
        if D is None:
            self.BinvV = self._binv_cols(V)
            self.C = V.T @ self.BinvV

    def _binv_cols(self, V):
        m = self.metric
        if m.kind == "identity":
            return V
        if m.kind == "diagonal":
            return V / m.B.reshape(-1, 1)
        return _cho_solve_cols(m, V)

    def solve(self, lam, r):
        self._count("factorizations")
        la = self.la
        if self.D is None:
            core = la.add_diag(self.C, lam)
            fac = la.cholesky(core)
            if fac is None:
                return None
            Binv_r = self.metric.inv(r)
            return (Binv_r - self.BinvV @ la.cho_solve(fac, self.V.T @ Binv_r)) / lam
        m = self.metric
        dprime = self.D + (lam if m.kind == "identity" else lam * m.B)
        if la.min(dprime) <= 0:
            return None
        DiV = self.V / dprime.reshape(-1, 1)
        core = la.add_diag(self.V.T @ DiV, 1.0)
        fac = la.cholesky(core)
        if fac is None:
            return None
        Dr = r / dprime
        return Dr - DiV @ la.cho_solve(fac, self.V.T @ Dr)

    def matvec(self, h):
        out = self.V @ (self.V.T @ h)
        if self.D is not None:
            out = out + self.D * h
        return out


def _cho_solve_cols(metric: Metric, V):
    """``B^{-1} V`` column by column block (both libraries)."""
    if metric.library == "torch":
        return metric.la.torch.cholesky_solve(V, metric.factor)
    return metric.la.cho_solve(metric.factor, V)


class ZeroModel(HessianModel):
    """``H = 0``: the step ``-B^{-1} g / lam`` (normalized gradient method)."""

    solve_method = "scaled-gradient"

    def solve(self, lam, r):
        return self.metric.inv(r) / lam

    def matvec(self, h):
        return h * 0


#: forcing-term rules of the inexact (truncated CG) solves: eta(||r||) for ``(H + lam B) d = r``
FORCING = ("cbrt", "sqrt", "linear")

#: how GNSNewton solves with a dense exact Hessian (``Exact(dense_solve=...)``)
DENSE_SOLVES = ("auto", "cholesky", "cg")


class OperatorModel(HessianModel):
    """A matrix-free ``H`` (a matvec): ``(H + lam B) d = r`` by conjugate gradients.

    Exact solves (``forcing=None``) run :class:`neurosolve.solvers.CG` to ``rtol``; a
    breakdown (non-positive curvature, which an indefinite exact Hessian can produce)
    counts as a failed solve.

    Inexact solves (``forcing="sqrt"`` or ``"linear"``, an inexact Newton method): a lean
    CG loop from ``d_0 = 0`` stopped at the relative residual
    ``||r - (H + lam B) d|| <= eta ||r||`` with the forcing term
    ``eta = min(eta_max, ||r||^(1/3))`` (``"cbrt"``, local rate of order 4/3),
    ``min(eta_max, ||r||^(1/2))`` (``"sqrt"``, order 3/2) or ``min(eta_max, ||r||)``
    (``"linear"``, quadratic), ``r = -g`` (Dembo, Eisenstat,
    Steihaug 1982; Eisenstat, Walker 1996), and never tighter than ``rtol``. Truncated as in Steihaug (1983): at non-positive curvature the
    last iterate is returned (a descent direction, since every CG iterate from 0 has
    ``<g, d_j> < 0``), or None (a failed solve) when it happens at the first step. Every
    CG iterate ``d_j`` lies in the Krylov space that its residual is orthogonal to, so
    ``<r - (H + lam B) d_j, d_j> = 0`` and the model decrease
    ``(lam ||d||_B^2 - <g, d>) / 2`` the GNS ratio test uses stays exact for the
    truncated step; :meth:`predicted_decrease` adds the rounding-level term anyway.
    """

    solve_method = "cg"

    def __init__(self, matvec, n, metric, ctx=None, psd=True, rtol=1e-10, maxiter=None,
                 counter="hessp_calls", forcing=None, eta_max=0.5):
        super().__init__(metric, ctx)
        self._mv = matvec
        self.n = n
        self.psd = psd
        self.rtol = rtol
        self.maxiter = maxiter
        self.counter = counter
        self.forcing = forcing
        self.eta_max = eta_max
        self.last_rd = 0.0   # <residual, d> of the last inexact solve
        self.last_cg_iterations = 0

    def matvec(self, h):
        self._count(self.counter)
        return self._mv(h)

    def forcing_term(self, rnorm: float) -> float:
        """The relative residual tolerance of an inexact solve with right side norm ``rnorm``."""
        eta = (rnorm ** (1.0 / 3.0) if self.forcing == "cbrt" else
               rnorm ** 0.5 if self.forcing == "sqrt" else rnorm)
        return max(min(self.eta_max, eta), self.rtol)

    def solve(self, lam, r):
        if self.forcing is not None:
            return self._inexact(lam, r)
        from neurosolve.core import solve as _solve
        from neurosolve.operators import FunctionOperator
        from neurosolve.problems.linear import LinearSystem
        from neurosolve.solvers.cg import CG

        self._count("factorizations")
        metric = self.metric

        def shifted(v):
            return self.matvec(v) + lam * metric.matvec(v)

        op = FunctionOperator(shifted, shape=(self.n, self.n), linear=True, spd=True,
                              array_library=metric.library)
        res = _solve(LinearSystem(op, r), CG(rtol=self.rtol, maxiter=self.maxiter or 10 * self.n,
                                             breakdown_tol=0.0),
                     backend="torch" if metric.library == "torch" else "numpy")
        if res.status.name not in ("CONVERGED", "MAX_ITER"):
            return None
        return res.x

    def _inexact(self, lam, r):
        """Truncated CG with the forcing term (see the class docstring)."""
        self._count("factorizations")
        metric = self.metric
        identity = metric.kind == "identity"
        res = r * 1.0
        rr = float((res * res).sum())
        self.last_rd = 0.0
        self.last_cg_iterations = 0
        d = r * 0.0
        if not np.isfinite(rr):
            return None
        if rr == 0.0:
            return d
        eta = self.forcing_term(rr ** 0.5)
        stop = eta * eta * rr
        p = res * 1.0
        maxiter = self.maxiter or 10 * self.n
        for j in range(maxiter):
            Ap = self.matvec(p)
            Ap = Ap + lam * p if identity else Ap + lam * metric.matvec(p)
            pAp = float((p * Ap).sum())
            if not np.isfinite(pAp):
                return None
            if pAp <= 0.0:  # non-positive curvature: truncate (Steihaug)
                if j == 0:
                    return None
                break
            alpha = rr / pAp
            d = d + alpha * p
            res = res - alpha * Ap
            rr_new = float((res * res).sum())
            self.last_cg_iterations = j + 1
            if rr_new <= stop:
                break
            p = res + (rr_new / rr) * p
            rr = rr_new
        self.last_rd = float((res * d).sum())
        return d

    def predicted_decrease(self, lam, g, d):
        """``-<g, d> - <H d, d> / 2`` for the last solve's ``d``: with its residual
        ``s = -g - (H + lam B) d``, ``(lam ||d||_B^2 - <g, d> + <s, d>) / 2``."""
        base = super().predicted_decrease(lam, g, d)
        return base + 0.5 * self.last_rd if self.forcing is not None else base


class DenseCGModel(OperatorModel):
    """A dense exact ``H`` solved by (truncated) CG on the products ``v -> H @ v``.

    ``H`` is evaluated once per iteration (the user's ``hess``); every trial of the GNS
    search then runs the inexact CG of :class:`OperatorModel` on ``H @ v`` (O(n^2) each,
    counted as ``hess_matvecs``) instead of a Cholesky factorization of ``H + lam B``
    (O(n^3) per trial). ``H`` stays available for the finiteness check and the
    eigenvalue shift (:meth:`min_eig`) after a failed solve.
    """

    def __init__(self, H, metric, ctx=None, psd=False, rtol=1e-10, forcing="cbrt", eta_max=0.5):
        super().__init__(lambda v: H @ v, int(H.shape[0]), metric, ctx, psd=psd, rtol=rtol,
                         counter="hess_matvecs", forcing=forcing, eta_max=eta_max)
        self.H = H
        self.la = metric.la

    min_eig = DenseModel.min_eig


# ---------------------------------------------------------------------------------------
# approximations
# ---------------------------------------------------------------------------------------
class HessianApprox:
    """Base class: ``evaluate(problem, x, oracles, ctx) -> HessianModel``.

    Attributes
    ----------
    name : str
    psd : bool
        Positive semi-definite by construction (what the GNS theory needs).
    """

    name = "approx"
    psd = True

    def evaluate(self, problem, x, oracles, ctx=None) -> HessianModel:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


_COMPOSITE_HINT = ("build the problem with Minimize.composite(residual, jac, p, ...) or a "
                   "gallery problem")


def _need(oracles: dict, key: str, who: str, hint: str):
    fn = oracles.get(key)
    if fn is None:
        raise ValueError(f"{who} needs the {key!r} oracle, which this problem does not provide; "
                         f"{hint}")
    return fn


#: probe vectors of the symmetry test, per (n, dtype): a fixed-seed stream (deterministic)
_PROBES: dict = {}


def _probes(n, H, la):
    key = (n, str(H.dtype), str(getattr(H, "device", "")))
    U = _PROBES.get(key)
    if U is None:
        U = np.random.default_rng(20250613).standard_normal((n, 2))
        U /= np.linalg.norm(U, axis=0)
        if la.library == "torch":
            U = la.torch.as_tensor(U, dtype=H.dtype, device=H.device)
        else:
            U = U.astype(H.dtype)
        if len(_PROBES) > 64:
            _PROBES.clear()
        _PROBES[key] = U
    return U


def asymmetry_estimate(H, la) -> float:
    """``||(H - H^T) U||_F / ||H U||_F`` for two fixed-seed random unit probes ``U``
    (n x 2): an estimate of ``||H - H^T||_F / ||H||_F`` (both numerator and denominator
    have expectation proportional to the Frobenius norms) from two thin products,
    ``H U`` and ``(U^T H)^T``, O(n^2) BLAS work without forming ``H - H^T`` (a strided
    transpose that cost more than the Cholesky factorization at n = 640). NaN when a
    product is not finite (then ``H`` has a NaN or inf entry, for these dense probes)."""
    n = int(H.shape[0])
    U = _probes(n, H, la)
    HU = H @ U
    HtU = (U.T @ H).T
    den = float((HU * HU).sum()) ** 0.5
    diff = HU - HtU
    num = float((diff * diff).sum()) ** 0.5
    if not (np.isfinite(den) and np.isfinite(num)):
        return float("nan")
    return num / den if den > 0 else 0.0


def _check_dense(H, n, who, psd, la):
    if tuple(H.shape) != (n, n):
        raise ValueError(f"{who} returned a matrix of shape {tuple(H.shape)}; expected ({n}, {n})")
    tol = 1e-4 if "float32" in str(H.dtype) or "float16" in str(H.dtype) else 1e-8
    asym = asymmetry_estimate(H, la)
    if not np.isfinite(asym):
        return H  # NaN/inf entries: the solver's finiteness check reports it
    if asym > tol:
        raise ValueError(f"{who} returned a non-symmetric matrix "
                         f"(||H - H^T|| / ||H|| ~ {asym:.2e} > {tol:g} for {H.dtype}, "
                         "estimated with two random probes); a Hessian (approximation) must "
                         "be symmetric")
    if psd and la.min(la.diagonal(H)) < 0:
        raise ValueError(f"{who} is declared positive semi-definite but its diagonal has a "
                         f"negative entry ({la.min(la.diagonal(H)):.3e}); the GNS theory needs a "
                         "PSD approximation (use Exact() for an indefinite exact Hessian)")
    return H


@dataclass(frozen=True)
class Exact(HessianApprox):
    """The exact Hessian: dense from ``hess`` (or autograd), else CG on ``hessp``.

    Not assumed PSD: where ``H + lam B`` is not positive definite (indefinite Hessians of
    non-convex problems) the solve fails and the GNS search rejects the trial, which
    doubles ``lam``.

    Parameters
    ----------
    matrix_free : bool
        Use Hessian-vector products and CG even when a dense Hessian is available.
    cg_rtol : float
        Relative tolerance of the inner CG (matrix-free only): the exact solves'
        tolerance (``forcing=None``) and the floor of the inexact ones' forcing term.
    forcing : {"cbrt", "sqrt", "linear"} or None
        Matrix-free only. ``"cbrt"`` (default): inexact Newton, truncated CG to the
        relative residual ``min(eta_max, ||g||^(1/3))`` (see :class:`OperatorModel`;
        on softmax digits 98 / 147 Hessian-vector products at mu = 1e-3 / 1e-4 against
        110 / 266 for ``"sqrt"``, ``||g||^(1/2)``, and 201 / 555 for ``"linear"``,
        ``||g||``); None: CG to ``cg_rtol`` every solve (the
        exact solves of the GNS theory). Only the steps change: the stopping test is
        always on the gradient recomputed at the new point.
    eta_max : float
        The largest forcing term (the first, far-from-solution solves).
    hessp_from_n : int or None
        When the problem has both a dense ``hess`` and a ``hessp`` of its own (not the
        ``hess(x) @ v`` or autograd product :class:`~neurosolve.problems.Minimize` derives)
        and ``n >= hessp_from_n``, use the matrix-free inexact path: forming and factoring
        ``H`` costs more than the few Hessian-vector products of the truncated CG (measured
        in ``docs/gns_newton.md``: softmax digits, n = 640, 5.6x faster; logistic
        50,000 x 200, 1.2x). None: always the dense ``hess`` when there is one. Also the
        threshold of ``dense_solve="auto"``.
    dense_solve : {"auto", "cholesky", "cg"}
        How :class:`~neurosolve.solvers.GNSNewton` solves with a dense Hessian from
        ``hess`` (the only exact oracle, or ``n < hessp_from_n``). ``"cholesky"``: one
        factorization of ``H + lam B`` per trial. ``"cg"``: truncated CG to the forcing
        term ``dense_forcing`` on ``v -> H @ v``, ``H`` evaluated once per iteration
        (:class:`DenseCGModel`, no factorization). ``"auto"`` (default): ``"cg"`` when
        ``n >= hessp_from_n`` and ``dense_forcing`` is not None, else ``"cholesky"`` (so
        the small Moré-Garbow-Hillstrom problems keep the dense solves). Other solvers
        (the Newton baselines) always factor.
    dense_forcing : {"cbrt", "sqrt", "linear"} or None
        The forcing term of the dense CG path (default ``"sqrt"``, ``min(eta_max,
        ||g||^(1/2))``; None: CG to ``cg_rtol``). Tighter than ``forcing``: a product
        ``H @ v`` costs O(n^2), far less than the ``hess`` evaluation an extra outer
        iteration costs. Measured (``docs/gns_newton.md``): logistic 50,000 x 200 takes
        4 iterations with ``"sqrt"`` / ``"linear"`` (as Cholesky) but 5 with ``"cbrt"``.
    """

    matrix_free: bool = False
    cg_rtol: float = 1e-10
    forcing: str | None = "cbrt"
    eta_max: float = 0.5
    hessp_from_n: int | None = 200
    dense_solve: str = "auto"
    dense_forcing: str | None = "sqrt"
    name = "exact"
    psd = False

    def __post_init__(self):
        if self.dense_solve not in DENSE_SOLVES:
            raise ValueError(f"dense_solve must be one of {', '.join(DENSE_SOLVES)}, "
                             f"got {self.dense_solve!r}")
        if self.dense_forcing is not None and self.dense_forcing not in FORCING:
            raise ValueError(f"dense_forcing must be one of {', '.join(FORCING)} or None, "
                             f"got {self.dense_forcing!r}")
        if self.forcing is not None and self.forcing not in FORCING:
            raise ValueError(f"forcing must be one of {', '.join(FORCING)} or None, "
                             f"got {self.forcing!r}")
        if not (0 < self.eta_max < 1):
            raise ValueError(f"eta_max must be in (0, 1), got {self.eta_max!r}")

    def _prefer_hessp(self, problem, oracles) -> bool:
        """A user (or gallery) ``hessp`` next to ``hess``, and ``n >= hessp_from_n``."""
        if self.hessp_from_n is None or problem.n < self.hessp_from_n:
            return False
        hp = oracles.get("hessp")
        # the products Minimize derives (hess(x) @ v, autograd) are defined in its module
        return hp is not None and getattr(hp, "__module__", None) != "neurosolve.problems.smooth"

    def dense_cg(self, problem) -> bool:
        """Whether GNS should solve with the dense ``H`` by truncated CG (``dense_solve``)."""
        if self.dense_solve == "cg":
            return True
        if self.dense_solve == "cholesky" or self.dense_forcing is None:
            return False
        return self.hessp_from_n is not None and problem.n >= self.hessp_from_n

    def as_cg(self, model: "DenseModel", ctx=None) -> "DenseCGModel":
        """The dense model ``model`` solved by this approximation's inexact CG instead."""
        return DenseCGModel(model.H, model.metric, ctx, psd=model.psd, rtol=self.cg_rtol,
                            forcing=self.dense_forcing, eta_max=self.eta_max)

    def evaluate(self, problem, x, oracles, ctx=None):
        metric = problem.metric
        hess = oracles.get("hess")
        if hess is not None and not self.matrix_free and not self._prefer_hessp(problem, oracles):
            H = hess(x)
            if ctx is not None:
                ctx.count("nhev")
            if not hasattr(H, "ndim") or H.ndim != 2:
                raise TypeError(f"hess must return a dense 2-D matrix, got {type(H).__name__}")
            return DenseModel(_check_dense(H, problem.n, "hess", False, metric.la), metric, ctx,
                              psd=False)
        hessp = _need(oracles, "hessp", "Exact()", "pass hess= or hessp= to Minimize (or "
                      "use a torch function, whose Hessian comes from autograd)")
        if ctx is not None:
            ctx.count("nhev")
        return OperatorModel(lambda v: hessp(x, v), problem.n, metric, ctx, psd=False,
                             rtol=self.cg_rtol, forcing=self.forcing, eta_max=self.eta_max)


@dataclass(frozen=True)
class GaussNewton(HessianApprox):
    """Gauss-Newton for ``f = (1/p) ||u(x)||^p`` (``p = 2``: least squares).

    ``H = ||u||^{p-2} J^T J + (p-2) ||u||^{p-4} (J^T u)(J^T u)^T``: the exact Hessian
    without the curvature of ``u`` (PSD). Needs the ``residual``, ``residual_jac`` (or
    autograd) and ``power`` oracles. ``matrix_free=True`` solves by CG on J / J^T
    products.
    """

    matrix_free: bool = False
    cg_rtol: float = 1e-10
    name = "gauss-newton"

    def evaluate(self, problem, x, oracles, ctx=None):
        res = _need(oracles, "residual", "GaussNewton()", _COMPOSITE_HINT)
        hint = _COMPOSITE_HINT
        p = float(oracles.get("power", 2.0))
        u = res(x)
        nu = float((u * u).sum() ** 0.5)
        if ctx is not None:
            ctx.count("nhev")
        metric = problem.metric
        if self.matrix_free:
            jvp = _need(oracles, "residual_jvp", "GaussNewton(matrix_free=True)", hint)
            vjp = _need(oracles, "residual_vjp", "GaussNewton(matrix_free=True)", hint)
            Jtu = vjp(x, u)
            s1 = nu ** (p - 2) if p != 2 else 1.0
            s2 = (p - 2) * nu ** (p - 4) if (p != 2 and nu > 0) else 0.0

            def mv(v):
                out = s1 * vjp(x, jvp(x, v))
                if s2:
                    out = out + s2 * Jtu * (Jtu * v).sum()
                return out

            return OperatorModel(mv, problem.n, metric, ctx, psd=True, rtol=self.cg_rtol,
                                 counter="jac_products")
        J = _need(oracles, "residual_jac", "GaussNewton()", hint)(x)
        la = metric.la
        if p == 2:
            H = J.T @ J
        elif nu == 0:
            H = J.T @ J * 0.0
        else:
            Jtu = J.T @ u
            H = nu ** (p - 2) * (J.T @ J) + (p - 2) * nu ** (p - 4) * la.outer(Jtu, Jtu)
        return DenseModel(H, metric, ctx, psd=True)


@dataclass(frozen=True)
class FisherTerm(HessianApprox):
    """The rank-one "Fisher term" of ``f = (1/p)||u||^p``: ``(p-2)||u||^{p-4} (J^T u)(J^T u)^T``.

    Solved by Sherman-Morrison with ``B^{-1}`` factored once: O(d^2) per solve with a dense
    metric, O(d) with a diagonal one. For linear ``u = A x - b`` the dropped part
    ``||u||^{p-2} A^T A`` is a multiple of the metric ``B = A^T A``.
    """

    name = "fisher-term"

    def evaluate(self, problem, x, oracles, ctx=None):
        res = _need(oracles, "residual", "FisherTerm()", _COMPOSITE_HINT)
        p = float(oracles.get("power", 2.0))
        u = res(x)
        nu = float((u * u).sum() ** 0.5)
        g = oracles["grad"](x)  # = ||u||^{p-2} J^T u
        if ctx is not None:
            ctx.count("nhev")
            ctx.count("ngev")
        # (p-2)||u||^{p-4} (J^T u)(J^T u)^T = (p-2) ||u||^{-p} g g^T
        if p == 2 or nu == 0:
            V = g.reshape(-1, 1) * 0.0
        else:
            V = ((p - 2) * nu ** (-p)) ** 0.5 * g.reshape(-1, 1)
        return LowRankModel(V, None, problem.metric, ctx)


@dataclass(frozen=True)
class EmpiricalFisher(HessianApprox):
    """Empirical Fisher ``G^T G / m (+ reg I)``, with ``G`` the m x d per-sample gradients.

    For ``f = (1/m) sum_i l_i(x) + (reg/2) ||x||^2`` give the problem a ``sample_grads``
    oracle returning the rows ``grad l_i(x)`` (or, for torch, ``sample_losses``; the rows
    then come from autograd) and ``fisher_reg = reg``. Dense Cholesky when ``m >= d``,
    Woodbury (O(d m^2 + m^3) per solve, no d x d matrix) when ``m < d`` or
    ``woodbury=True``.
    """

    woodbury: bool | None = None
    name = "fisher"

    def evaluate(self, problem, x, oracles, ctx=None):
        G = _need(oracles, "sample_grads", "EmpiricalFisher()",
                  "pass sample_grads= (numpy) or sample_losses= (torch) to Minimize")(x)
        if ctx is not None:
            ctx.count("nhev")
        m, d = int(G.shape[0]), int(G.shape[1])
        if d != problem.n:
            raise ValueError(f"sample_grads returned shape {tuple(G.shape)}; "
                             f"expected (m, {problem.n})")
        reg = float(oracles.get("fisher_reg", 0.0) or 0.0)
        metric = problem.metric
        use_wb = self.woodbury if self.woodbury is not None else m < d
        if use_wb:
            V = G.T / m ** 0.5
            if reg:
                D = (V[:, 0] * 0) + reg
                return LowRankModel(V, D, metric, ctx)
            return LowRankModel(V, None, metric, ctx)
        H = G.T @ G / m
        if reg:
            H = metric.la.add_diag(H, reg)
        return DenseModel(H, metric, ctx, psd=True)


@dataclass(frozen=True)
class WeightedGaussNewton(HessianApprox):
    """The problem's weighted Gauss-Newton matrix (oracle ``weighted_gn``).

    For log-sum-exp ``f = mu log sum exp((Ax - b)/mu)`` it is ``A^T Diag(pi) A / mu``, the
    Hessian without the rank-one term ``-(A^T pi)(A^T pi)^T / mu``, so ``H >= grad^2 f``.
    """

    name = "weighted-gauss-newton"

    def evaluate(self, problem, x, oracles, ctx=None):
        fn = _need(oracles, "weighted_gn", "WeightedGaussNewton()",
                   "use smooth_gallery.logsumexp(...) or pass it in structure=")
        H = fn(x)
        if ctx is not None:
            ctx.count("nhev")
        return DenseModel(_check_dense(H, problem.n, "weighted_gn", True, problem.metric.la),
                          problem.metric, ctx, psd=True)


@dataclass(frozen=True)
class Diagonal(HessianApprox):
    """A diagonal approximation: the Hessian's diagonal, or Hutchinson's estimate.

    Parameters
    ----------
    source : {"exact", "hutchinson"}
        ``exact``: the ``hess_diag`` oracle (or the diagonal of ``hess``).
        ``hutchinson``: ``mean_j z_j * (H z_j)`` over Rademacher probes ``z_j`` from
        Hessian-vector products.
    probes : int
        Hutchinson probes.
    seed : int
        Seed of the probes (a fixed stream per solve, so runs are reproducible).
    floor : float
        Entries are clipped to ``>= floor`` so the approximation stays PSD.
    """

    source: str = "exact"
    probes: int = 10
    seed: int = 0
    floor: float = 0.0
    name = "diagonal"

    def __post_init__(self):
        if self.source not in ("exact", "hutchinson"):
            raise ValueError(f"source must be 'exact' or 'hutchinson', got {self.source!r}")

    def evaluate(self, problem, x, oracles, ctx=None):
        la = problem.metric.la
        if self.source == "exact":
            fn = oracles.get("hess_diag")
            if fn is not None:
                D = fn(x)
            else:
                D = la.diagonal(_need(oracles, "hess", "Diagonal()", "pass hess= to Minimize")(x))
            if ctx is not None:
                ctx.count("nhev")
        else:
            hessp = _need(oracles, "hessp", "Diagonal('hutchinson')", "pass hessp= to Minimize")
            rng = np.random.default_rng(self.seed)
            D = None
            for _ in range(self.probes):
                z = rng.choice([-1.0, 1.0], size=problem.n)
                if la.library == "torch":
                    z = la.torch.as_tensor(z, dtype=x.dtype, device=x.device)
                est = z * hessp(x, z)
                D = est if D is None else D + est
                if ctx is not None:
                    ctx.count("hessp_calls")
            D = D / self.probes
        if la.library == "torch":
            D = D.clamp(min=self.floor)
        else:
            D = np.maximum(D, self.floor)
        return DiagonalModel(D, problem.metric, ctx)


@dataclass(frozen=True)
class LowRankPlusDiagonal(HessianApprox):
    """``H = V V^T + Diag(D)`` from a callable ``factor(x) -> (V, D)`` (D may be None).

    Solved by Woodbury; ``D`` must be non-negative.
    """

    factor: Callable
    name = "low-rank-plus-diagonal"

    def evaluate(self, problem, x, oracles, ctx=None):
        V, D = self.factor(x)
        if ctx is not None:
            ctx.count("nhev")
        return _lowrank_model(V, D, problem, ctx, "factor")


def _lowrank_model(V, D, problem, ctx, who):
    la = problem.metric.la
    if V.ndim == 1:
        V = V.reshape(-1, 1)
    if V.ndim != 2 or int(V.shape[0]) != problem.n:
        raise ValueError(f"{who} returned V of shape {tuple(V.shape)}; expected ({problem.n}, m)")
    if D is not None:
        if tuple(D.shape) != (problem.n,):
            raise ValueError(f"{who} returned D of shape {tuple(D.shape)}; expected ({problem.n},)")
        if la.min(D) < 0:
            raise ValueError(f"{who} returned a diagonal D with a negative entry "
                             f"({la.min(D):.3e}); V V^T + Diag(D) must be PSD")
    return LowRankModel(V, D, problem.metric, ctx)


@dataclass(frozen=True)
class UserHessian(HessianApprox):
    """Any user approximation ``fn(x)``, declared PSD unless ``psd=False``.

    ``fn(x)`` may return a dense (d, d) matrix (Cholesky), a (d,) diagonal (element-wise), a
    tuple ``(V, D)`` meaning ``V V^T + Diag(D)`` (Woodbury), or a callable ``v -> H v``
    (CG). Cheap PSD checks raise ``ValueError``: symmetry and a non-negative diagonal for
    matrices, non-negative entries for diagonals.
    """

    fn: Callable
    psd: bool = True
    cg_rtol: float = 1e-10
    name = "user"

    def evaluate(self, problem, x, oracles, ctx=None):
        out = self.fn(x)
        if ctx is not None:
            ctx.count("nhev")
        metric = problem.metric
        la = metric.la
        if isinstance(out, tuple):
            V, D = out
            return _lowrank_model(V, D, problem, ctx, "the Hessian approximation")
        if callable(out) and not hasattr(out, "shape"):
            return OperatorModel(out, problem.n, metric, ctx, psd=self.psd, rtol=self.cg_rtol)
        if out.ndim == 1:
            if tuple(out.shape) != (problem.n,):
                raise ValueError(f"the Hessian approximation returned a diagonal of shape "
                                 f"{tuple(out.shape)}; expected ({problem.n},)")
            if self.psd and la.min(out) < 0:
                raise ValueError(f"the Hessian approximation is declared PSD but its diagonal has "
                                 f"a negative entry ({la.min(out):.3e})")
            return DiagonalModel(out, metric, ctx)
        H = _check_dense(out, problem.n, "the Hessian approximation", self.psd, la)
        return DenseModel(H, metric, ctx, psd=self.psd)


@dataclass(frozen=True)
class Zero(HessianApprox):
    """``H = 0``: GNS becomes the normalized gradient method, step ``gamma B^{-1}g/||g||_*``."""

    name = "zero"

    def evaluate(self, problem, x, oracles, ctx=None):
        return ZeroModel(problem.metric, ctx)


class Constant(HessianApprox):
    """A fixed PSD matrix ``P`` (dense), e.g. ``A^T A / (4 m) + mu I`` for logistic regression."""

    name = "constant"

    def __init__(self, P: Any):
        self.P = P

    def evaluate(self, problem, x, oracles, ctx=None):
        la = problem.metric.la
        P = self.P
        if la.library == "torch" and not is_torch(P):
            P = la.torch.as_tensor(np.asarray(P), dtype=x.dtype, device=x.device)
        return DenseModel(_check_dense(P, problem.n, "Constant(P)", True, la), problem.metric,
                          ctx, psd=True)


#: names accepted by ``GNSNewton(hessian=...)`` and ``minimize(hess=...)``
APPROXIMATIONS: dict[str, Callable[[], HessianApprox]] = {
    "exact": Exact,
    "hessp": lambda: Exact(matrix_free=True),
    "hessp-exact": lambda: Exact(matrix_free=True, forcing=None),
    "gauss-newton": GaussNewton,
    "gn": GaussNewton,
    "fisher-term": FisherTerm,
    "fisher": EmpiricalFisher,
    "weighted-gauss-newton": WeightedGaussNewton,
    "diag": Diagonal,
    "diagonal": Diagonal,
    "hutchinson": lambda: Diagonal(source="hutchinson"),
    "zero": Zero,
    "none": Zero,
}


def as_hessian_approx(h: Any) -> HessianApprox:
    """Turn a name, an approximation object or a callable into a :class:`HessianApprox`."""
    if isinstance(h, HessianApprox):
        return h
    if isinstance(h, str):
        key = h.lower().replace("_", "-")
        if key not in APPROXIMATIONS:
            raise ValueError(f"unknown Hessian approximation {h!r}; choose from "
                             f"{', '.join(sorted(APPROXIMATIONS))}, or pass a HessianApprox "
                             "object or a callable")
        return APPROXIMATIONS[key]()
    if h is None:
        return Zero()
    if callable(h):
        return UserHessian(h)
    raise TypeError(f"hessian must be a name, a HessianApprox or a callable, "
                    f"got {type(h).__name__}")


#: names of the quasi-Newton approximations (scipy's update strategies)
QUASI_NEWTON = ("bfgs", "sr1")


def _host(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float64).reshape(-1)


class QuasiNewton(HessianApprox):
    """A quasi-Newton Hessian approximation updated from the accepted steps.

    At each iterate ``x_k`` the secant pair ``s = x_k - x_{k-1}``, ``y = g_k - g_{k-1}``
    updates ``H`` with one of scipy's :class:`scipy.optimize.HessianUpdateStrategy`
    objects (BFGS by default; its skipped updates keep ``H`` positive definite), and
    the GNS step solves ``(H + lambda B) d = -g`` by Cholesky. ``H_0 = I`` (scipy's
    ``init_scale="auto"`` rescales it at the first update). No Hessian is evaluated.

    The approximation keeps its matrix between the iterations of one solve; a new solve
    (another :class:`~neurosolve.core.Context`) or another problem starts again from
    ``H_0``.

    Parameters
    ----------
    update : {"bfgs", "sr1"} or scipy.optimize.HessianUpdateStrategy
        The update (a strategy object is copied for every solve, never mutated). SR1 may
        be indefinite; a failed factorization then rejects the trial (larger ``lambda``).
    """

    def __init__(self, update: Any = "bfgs"):
        from scipy.optimize import BFGS, SR1, HessianUpdateStrategy

        if isinstance(update, str):
            key = update.lower()
            if key not in QUASI_NEWTON:
                raise ValueError(f"update must be one of {', '.join(QUASI_NEWTON)} or a "
                                 f"scipy.optimize.HessianUpdateStrategy, got {update!r}")
            update = BFGS() if key == "bfgs" else SR1()
        elif not isinstance(update, HessianUpdateStrategy):
            raise TypeError(f"update must be 'bfgs', 'sr1' or a "
                            f"scipy.optimize.HessianUpdateStrategy, got {type(update).__name__}")
        self.update = update
        self.name = type(update).__name__.lower()
        self.psd = isinstance(update, BFGS)
        self._owner: tuple | None = None   # (problem, ctx) of the current solve
        self._strategy = None
        self._last: tuple | None = None    # (x, g) of the last iterate used
        self._seen: tuple | None = None    # (x, g) of the last gradient evaluation

    def observe(self, x, g) -> None:
        """Record a gradient evaluation so that :meth:`evaluate` need not repeat it."""
        self._seen = (_host(x).copy(), _host(g).copy())

    def evaluate(self, problem, x, oracles, ctx=None):
        owner = (problem, ctx)
        if self._owner is None or self._owner[0] is not problem or self._owner[1] is not ctx:
            self._owner = owner
            self._strategy = copy.deepcopy(self.update)
            self._strategy.initialize(problem.n, "hess")
            self._last = None
        xh = _host(x)
        seen = self._seen
        if seen is not None and seen[0].shape == xh.shape and np.array_equal(seen[0], xh):
            gh = seen[1]
        else:
            gh = _host(oracles["grad"](x))
            if ctx is not None:
                ctx.count("ngev")
        if self._last is not None and not np.array_equal(self._last[0], xh):
            s, y = xh - self._last[0], gh - self._last[1]
            if np.all(np.isfinite(s)) and np.all(np.isfinite(y)):
                self._strategy.update(s, y)
        self._last = (xh.copy(), gh.copy())
        H = np.array(self._strategy.get_matrix(), dtype=np.float64)
        H = 0.5 * (H + H.T)
        la = problem.metric.la
        if la.library == "torch":
            H = la.torch.as_tensor(H, dtype=x.dtype, device=x.device)
        elif H.dtype != x.dtype:
            H = H.astype(x.dtype)
        return DenseModel(H, problem.metric, ctx, psd=self.psd)

    def __repr__(self):
        return f"QuasiNewton({self.name!r})"
