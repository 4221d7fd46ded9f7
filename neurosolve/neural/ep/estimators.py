"""Gradient estimators for layered fixed-point networks: BP adjoint, Cauchy EP, exact EP.

Conventions (activity coordinates, nudge *towards* lower loss):

* free phase: ``u* = H(phi(u*), x)``; ``r* = phi(u*)``; ``D = diag phi'(u*)``;
  ``c = dL/dr_out`` at ``r*`` (zero-padded to all layers);
* nudged phase with strength ``beta``: ``u = H(phi(u), x) - beta c(phi(u)_out)``;
* EP error vector ``delta_EP = d r*/d beta |_0 = -(I - D H')^{-1} D c``;
* BP error vector ``delta_BP = -(I - D H'^T)^{-1} D c`` (the implicit-function / RBP
  adjoint);
* one parameter-gradient assembly for all: ``g = -(dH/dtheta)^T delta / B`` plus the
  readout's direct gradient. With ``delta_BP`` this is the exact gradient of the mean loss
  at the fixed point; ``delta_EP == delta_BP`` exactly when ``H'`` is symmetric.

(The reference code nudges with ``+beta c``; its ``delta`` has the opposite sign and its
update the matching sign, so the resulting parameter update is the same.)

Estimators, by name:

``"bp"``
    ``delta_BP`` from the linear fixed point ``lam = D H'^T lam + D c`` (VJPs only).
``"ep_exact"``
    ``delta_EP`` from ``mu = D H' mu + D c`` (JVPs only): the paper's "N = 0" mode, the
    ``beta -> 0`` limit of every nudged estimator.
``"ep"``
    N-point Cauchy estimate with ``beta_k = beta e^{2 pi i k / N}``:
    ``delta = (1/N) sum_k (r_k - r*) / beta_k``. ``N = 1`` is one-sided EP, ``N = 2``
    symmetric EP (both real), ``N >= 3`` uses complex nudges, needs a holomorphic
    activation, and (``conjugate_shortcut=True``) simulates only
    ``ceil((N+1)/2)`` phases, using ``r(conj beta) = conj r(beta)``. Error ``O(beta^N)``.

Every phase (free, nudged, linear) is a :class:`~neurosolve.problems.fixed_point.
FixedPointProblem` solved by :class:`~neurosolve.solvers.FixedPoint` through
:func:`neurosolve.solve`; its status and residual are reported in
:attr:`GradientEstimate.phases`. A phase that did not converge, or NaN anywhere, makes
:attr:`GradientEstimate.status` unsuccessful with a message naming the phase; values are
never zeroed.

The linear solves use only ``jvp``/``vjp`` of the network, i.e. one pass over the nonzero
Jacobian blocks per iteration ("sparse-Jacobian EP"); ``J`` is never formed.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
.. [2] A. Laborieux, F. Zenke, "Holomorphic equilibrium propagation computes exact
   gradients through finite size oscillations", NeurIPS 2022, arXiv:2209.00530.
.. [3] B. Scellier, Y. Bengio, "Equilibrium propagation: bridging the gap between
   energy-based models and backpropagation", Front. Comput. Neurosci. 11, 2017.
.. [4] R. Liao et al., "Reviving and improving recurrent back-propagation", ICML 2018.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurosolve.core import Status, solve, to_float
from neurosolve.backends import ops as xp
from neurosolve.neural.ep.networks import LayeredNetwork, one_hot
from neurosolve.problems.fixed_point import FixedPointProblem
from neurosolve.solvers.fixed_point import FixedPoint

__all__ = [
    "METHODS",
    "PhaseReport",
    "FreePhase",
    "GradientEstimate",
    "default_phase_solver",
    "relaxation_map",
    "free_phase",
    "nudged_phase",
    "exact_response",
    "bp_adjoint",
    "cauchy_response",
    "assemble_gradient",
    "estimate_gradient",
    "nudge_points",
]

METHODS = ("bp", "ep", "ep_exact")

_SEVERITY = {Status.CONVERGED: 0, Status.STOPPED: 1, Status.MAX_ITER: 2, Status.STAGNATION: 2,
             Status.BREAKDOWN: 3, Status.DIVERGED: 4, Status.NONFINITE: 5,
             Status.INFEASIBLE: 3}


def default_phase_solver() -> FixedPoint:
    """Anderson (memory 5, damping 0.5), ``rtol=1e-10``, ``atol=1e-12``, 1000 iterations."""
    return FixedPoint(method="anderson", damping=0.5, rtol=1e-10, atol=1e-12, maxiter=1000)


@dataclass(frozen=True)
class PhaseReport:
    """How one relaxation or linear solve ended."""

    name: str
    beta: complex
    status: Status
    n_iter: int
    residual: float
    converged_fraction: float
    message: str
    f_evals: int = 0

    @property
    def ok(self) -> bool:
        return self.status is Status.CONVERGED


@dataclass
class FreePhase:
    """The free (beta = 0) fixed point of a batch and what is derived from it."""

    x: Any
    y1h: Any
    u: Any
    r: Any
    ext: dict
    params: dict
    loss: Any
    logits: Any
    report: PhaseReport
    layout: Any = None

    @property
    def rd(self) -> dict:
        """Per-layer views of the free activities."""
        return self.layout.split(self.r)

    def correct(self):
        """Per-sample correctness of the readout's argmax (needs labels)."""
        if self.y1h is None:
            return None
        a = xp.to_numpy(self.logits).argmax(-1)
        b = xp.to_numpy(self.y1h).argmax(-1)
        return a == b


@dataclass
class GradientEstimate:
    """An estimated parameter gradient with everything needed to judge it.

    Attributes
    ----------
    method : str
    grads : dict
        Gradient of the mean loss for every parameter (readout included).
    delta : array (batch, n)
        The error vector used (``delta_EP`` estimate, or ``delta_BP`` for ``"bp"``).
    delta_bp : array or None
        The BP adjoint, when ``reference=True`` (or ``method="bp"``).
    loss : float
        Mean loss at the free fixed point.
    accuracy : float
        Batch accuracy of the free phase (``nan`` for float targets).
    free : FreePhase
    phases : list of PhaseReport
        Every solve: free, each nudged phase, linear solves.
    status : Status
        CONVERGED only when every phase converged and everything is finite.
    message : str
    """

    method: str
    grads: dict
    delta: Any
    delta_bp: Any
    loss: float
    accuracy: float
    free: FreePhase
    phases: list
    status: Status
    message: str
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.CONVERGED

    def raise_for_status(self) -> "GradientEstimate":
        if not self.ok:
            raise RuntimeError(f"{self.status.name}: {self.message}")
        return self


# --------------------------------------------------------------------------------------
def relaxation_map(net: LayeredNetwork, params: dict, ext: dict, y1h=None, beta: complex = 0.0):
    """The map ``G(u) = H(phi(u), x) - beta c(phi(u)_out)`` on flat ``(batch, n)`` states."""
    layout, act, out = net.layout, net.activation, net.output_layer

    def G(u):
        r = act(u)
        rd = layout.split(r)
        h = net.drive(params, rd, ext)
        if beta != 0:
            c = net.nudge(params, rd[out], y1h)
            h[out] = h[out] - beta * c
        return layout.join(h, like=u)

    return G


def _report(name, beta, res) -> PhaseReport:
    hist = res.history.get("residual")
    resid = float(hist[-1]) if hist is not None and len(hist) else float("nan")
    fr = res.history.get("converged_fraction")
    frac = float(fr[-1]) if fr is not None and len(fr) else float("nan")
    msg = res.message if not res.success else "converged"
    return PhaseReport(name, complex(beta), res.status, res.n_iter, resid, frac, msg,
                       int(res.stats.get("F_evals", 0)))


def _solve(G, u0, solver, progress=False):
    prob = FixedPointProblem(G, u0, batched=True, validate=False, name="relaxation")
    return solve(prob, solver, progress=progress)


def free_phase(net: LayeredNetwork, x, y=None, *, params: dict | None = None,
               solver: FixedPoint | None = None, init: Any = "zero") -> FreePhase:
    """Relax the network to its free fixed point on a batch.

    Parameters
    ----------
    net : LayeredNetwork
    x : array (batch, *input_shape)
    y : array, optional
        Integer labels ``(batch,)`` or float targets ``(batch, n_classes)``.
    params : dict, optional
        Parameters to use (default ``net.params``).
    solver : FixedPoint, optional
        Default :func:`default_phase_solver`.
    init : {"zero", "forward"} or array
        Starting state: zeros (the reference), a feed-forward pass, or a flat array.
    """
    params = net.params if params is None else params
    net.check_input(x, y)
    solver = solver or default_phase_solver()
    ext = net.input_drive(params, x)
    if isinstance(init, str):
        if init == "zero":
            if xp.lib(x) == "torch":
                u0 = x.new_zeros((x.shape[0], net.n_state))
            else:
                u0 = np.zeros((x.shape[0], net.n_state), dtype=x.dtype)
        elif init == "forward":
            u0 = net.forward_state(params, x)
        else:
            raise ValueError(f"init must be 'zero', 'forward' or an array, got {init!r}")
    else:
        u0 = init
        if tuple(u0.shape) != (x.shape[0], net.n_state):
            raise ValueError(f"init has shape {tuple(u0.shape)}; expected {(x.shape[0], net.n_state)}")
    res = _solve(relaxation_map(net, params, ext), u0, solver)
    u = res.x
    r = net.activation(u)
    y1h = None if y is None else one_hot(y, net.n_classes, x)
    r_out = net.layout.split(r)[net.output_layer]
    if y1h is not None:
        loss, logits, _ = net.loss_terms(params, r_out, y1h)
    else:
        loss, logits = None, net.logits(params, r_out)
    fp = FreePhase(x=x, y1h=y1h, u=u, r=r, ext=ext, params=params, loss=loss, logits=logits,
                   report=_report("free", 0.0, res), layout=net.layout)
    return fp


def nudged_phase(net: LayeredNetwork, free: FreePhase, beta: complex, *,
                 solver: FixedPoint | None = None, name: str | None = None):
    """Relax with nudge ``beta`` (real or complex) from the free state.

    Returns the flat activities ``r(beta)`` and a :class:`PhaseReport`. A complex
    ``beta`` runs the phase in the complex dtype matching the network's precision.
    """
    solver = solver or default_phase_solver()
    beta = complex(beta)
    u0 = free.u
    if beta.imag != 0:
        cd = xp.complex_dtype(u0)
        u0 = u0.to(cd) if xp.lib(u0) == "torch" else u0.astype(cd)
        b = beta
    else:
        b = beta.real
    G = relaxation_map(net, free.params, free.ext, free.y1h, b)
    res = _solve(G, u0, solver)
    return net.activation(res.x), _report(name or f"nudged(beta={_fmt(beta)})", beta, res)


def _fmt(b: complex) -> str:
    if b.imag == 0:
        return f"{b.real:.4g}"
    r, th = abs(b), cmath.phase(b)
    return f"{r:.4g}*exp({th / math.pi:.4g}i*pi)"


def nudge_points(beta: float, n_points: int) -> list[complex]:
    """``beta e^{2 pi i k / N}`` for ``k = 0..N-1`` (exact reals for k = 0 and k = N/2)."""
    pts = []
    for k in range(n_points):
        if k == 0:
            pts.append(complex(beta, 0.0))
        elif 2 * k == n_points:
            pts.append(complex(-beta, 0.0))
        else:
            pts.append(beta * cmath.exp(2j * math.pi * k / n_points))
    return pts


def _nudge_vector(net, free):
    out = net.output_layer
    r_out = net.layout.split(free.r)[out]
    c = net.nudge(free.params, r_out, free.y1h)
    return net.layout.join({out: c}, like=free.r)


def _linear(net, free, transpose: bool, solver, name):
    if free.y1h is None:
        raise ValueError("the free phase has no targets y; pass y to free_phase")
    D = net.activation.deriv(free.u)
    Dc = D * _nudge_vector(net, free)
    layout, params, rd = net.layout, free.params, free.rd
    if transpose:
        def F(m):
            return D * layout.join(net.vjp(params, rd, layout.split(m)), like=m) + Dc
    else:
        def F(m):
            return D * layout.join(net.jvp(params, rd, layout.split(m)), like=m) + Dc
    res = _solve(F, xp.zeros_like(free.u), solver)
    return -res.x, _report(name, 0.0, res)


def exact_response(net: LayeredNetwork, free: FreePhase, *, solver: FixedPoint | None = None):
    """``delta_EP = d r*/d beta = -(I - D H')^{-1} D c`` by a matrix-free linear solve (JVPs).

    Returns ``(delta, PhaseReport)``.
    """
    return _linear(net, free, False, solver or default_phase_solver(), "ep_exact(linear)")


def bp_adjoint(net: LayeredNetwork, free: FreePhase, *, solver: FixedPoint | None = None):
    """``delta_BP = -(I - D H'^T)^{-1} D c``, the implicit-function adjoint (VJPs).

    Returns ``(delta, PhaseReport)``.
    """
    return _linear(net, free, True, solver or default_phase_solver(), "bp(adjoint)")


def cauchy_response(net: LayeredNetwork, free: FreePhase, beta: float, n_points: int, *,
                    conjugate_shortcut: bool = True, solver: FixedPoint | None = None):
    """N-point Cauchy estimate of ``delta_EP``: ``(1/N) sum_k (r(beta_k) - r*) / beta_k``.

    Subtracting the free activities ``r*`` is required for ``N = 1`` and, for ``N >= 2``,
    changes nothing but rounding (``sum_k 1/beta_k = 0``).

    Returns ``(delta, reports, imag)`` where ``imag`` is the relative size of the discarded
    imaginary part (0 with the shortcut, rounding-level without it).
    """
    _check_nudge(net, beta, n_points)
    pts = nudge_points(beta, n_points)
    r0 = free.r
    reports = []
    total = None
    imag = 0.0
    if conjugate_shortcut:
        # real points (k = 0 and, for even N, k = N/2) once; complex points k = 1..ceil(N/2)-1
        # twice through 2 Re(.) (their conjugates are the points N - k)
        sims = [0] + list(range(1, (n_points + 1) // 2)) + ([n_points // 2] if n_points % 2 == 0
                                                              and n_points >= 2 else [])
        for k in sims:
            b = pts[k]
            r, rep = nudged_phase(net, free, b, solver=solver, name=f"nudged k={k} (beta={_fmt(b)})")
            reports.append(rep)
            term = (r - r0) / (b if b.imag != 0 else b.real)
            if b.imag != 0:
                term = 2 * xp.real(term)
            total = term if total is None else total + term
    else:
        for k, b in enumerate(pts):
            r, rep = nudged_phase(net, free, b, solver=solver, name=f"nudged k={k} (beta={_fmt(b)})")
            reports.append(rep)
            term = (r - r0) / (b if b.imag != 0 else b.real)
            total = term if total is None else total + term
        if xp.is_complex(total):
            re = xp.real(total)
            im = total.imag
            den = math.sqrt(max(float(xp.sumsq(re)), 1e-300))
            num = math.sqrt(float(xp.sumsq(im)))
            imag = num / den
            total = re
    return total / n_points, reports, imag


def _check_nudge(net, beta, n_points):
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}")
    if isinstance(beta, complex) or not isinstance(beta, (int, float, np.floating)) \
            or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite positive real number, got {beta!r}")
    if n_points >= 3 and not net.activation.holomorphic:
        raise ValueError(
            f"n_points={n_points} needs complex nudges, but the activation "
            f"{net.activation.name!r} is not holomorphic; use n_points <= 2 or a holomorphic "
            "activation (sigmoid, dsilu, tanh)"
        )


def assemble_gradient(net: LayeredNetwork, free: FreePhase, delta) -> dict:
    """``g = -(dH/dtheta)^T delta / B`` plus the readout's direct gradient (mean loss)."""
    B = free.x.shape[0]
    pv = net.param_vjp(free.params, free.rd, free.x, net.layout.split(delta))
    grads = {k: -v / B for k, v in pv.items()}
    r_out = net.layout.split(free.r)[net.output_layer]
    _, _, rg = net.loss_terms(free.params, r_out, free.y1h)
    grads.update(rg)
    return grads


def _aggregate(phases):
    worst = max(phases, key=lambda p: _SEVERITY.get(p.status, 3))
    if worst.ok:
        return Status.CONVERGED, "every phase converged"
    bad = [p for p in phases if not p.ok]
    names = "; ".join(f"{p.name}: {p.status.name} (residual {p.residual:.2e}, "
                      f"{100 * p.converged_fraction:.0f}% of samples converged)" for p in bad)
    return worst.status, f"{len(bad)} phase(s) failed -- {names}. {worst.message}"


def estimate_gradient(net: LayeredNetwork, x, y, method: str = "ep", *, beta: float = 0.1,
                      n_points: int = 2, conjugate_shortcut: bool = True,
                      solver: FixedPoint | None = None, linear_solver: FixedPoint | None = None,
                      reference: bool = False, free: FreePhase | None = None,
                      params: dict | None = None, init: Any = "zero") -> GradientEstimate:
    """Estimate the loss gradient on a batch with the chosen estimator.

    Parameters
    ----------
    net : LayeredNetwork
    x, y : arrays
        Batch inputs ``(B, *input_shape)`` and integer labels ``(B,)`` (or targets).
    method : {"bp", "ep", "ep_exact"}
        See the module docstring.
    beta : float
        Nudge strength (``"ep"`` only). Must keep every nudged phase convergent (complex
        states inside the activation's analytic strip).
    n_points : int
        ``N`` of the Cauchy estimator (``"ep"`` only).
    conjugate_shortcut : bool
        Simulate only ``ceil((N+1)/2)`` nudged phases (``N >= 3``).
    solver, linear_solver : FixedPoint, optional
        Solvers for the relaxations and for the linear (adjoint/response) solves.
    reference : bool
        Also compute ``delta_BP`` (for alignment diagnostics).
    free : FreePhase, optional
        Reuse a free phase computed on the same batch.
    params : dict, optional
        Parameters (default ``net.params``).
    init : {"zero", "forward"} or array
        Free-phase starting state.

    Returns
    -------
    GradientEstimate
        Check ``.ok`` (or call ``.raise_for_status()``) before using ``.grads``.

    Raises
    ------
    ValueError
        Unknown method, bad ``beta`` / ``n_points``, ``n_points >= 3`` with a
        non-holomorphic activation, mismatched shapes.
    TypeError
        ``x`` from another array library than the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.neural.ep import mlp, estimate_gradient
    >>> net = mlp([8, 6, 6, 3], angle=0, tied=True, seed=0)
    >>> x = np.random.default_rng(0).random((4, 8)); y = np.array([0, 1, 2, 0])
    >>> est = estimate_gradient(net, x, y, "ep", beta=0.05, n_points=4, reference=True)
    >>> est.ok, float(np.max(np.abs(est.delta - est.delta_bp))) < 1e-6
    (True, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "ep":
        _check_nudge(net, beta, n_points)
    solver = solver or default_phase_solver()
    linear_solver = linear_solver or solver
    if free is None:
        free = free_phase(net, x, y, params=params, solver=solver, init=init)
    elif free.y1h is None:
        raise ValueError("the given free phase has no targets; pass y to free_phase")
    phases = [free.report]
    delta_bp = None
    stats = {}
    if method == "bp":
        delta, rep = bp_adjoint(net, free, solver=linear_solver)
        phases.append(rep)
        delta_bp = delta
    else:
        if method == "ep_exact":
            delta, rep = exact_response(net, free, solver=linear_solver)
            phases.append(rep)
        else:
            delta, reps, imag = cauchy_response(net, free, beta, n_points,
                                                conjugate_shortcut=conjugate_shortcut,
                                                solver=solver)
            phases.extend(reps)
            stats["imag_residual"] = imag
        if reference:
            delta_bp, rep = bp_adjoint(net, free, solver=linear_solver)
            phases.append(rep)
    grads = assemble_gradient(net, free, delta)
    status, message = _aggregate(phases)
    if status is Status.CONVERGED and not (xp.isfinite_all(delta)
                                           and all(xp.isfinite_all(g) for g in grads.values())):
        status, message = Status.NONFINITE, "NaN/inf in the error vector or the gradient"
    stats["f_evals"] = sum(p.f_evals for p in phases)
    loss = float(to_float(free.loss.mean()))
    corr = free.correct()
    acc = float(np.mean(corr)) if corr is not None else float("nan")
    return GradientEstimate(method=method, grads=grads, delta=delta, delta_bp=delta_bp,
                            loss=loss, accuracy=acc, free=free, phases=phases, status=status,
                            message=message, stats=stats)
