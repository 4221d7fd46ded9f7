"""Gradient-normalized-smoothness (GNS) Newton: regularized Newton with approximate Hessians.

The step is ``x+ = x - (H(x) + lambda B)^{-1} grad f(x)`` with ``lambda = ||grad f(x)||_* /
gamma``, where ``H`` is the exact Hessian or any PSD approximation (see
:mod:`neurosolve.solvers.hessian_approx`) and the radius ``gamma`` is either given by a
rule (Variant A) or searched adaptively with the acceptance test of Lemma 1 of the paper
(Variant B, the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from neurosolve.backends.ops import to_numpy as _np
from neurosolve.core import Solver, State, Status, Stop, to_float
from neurosolve.problems.smooth import Minimize
from neurosolve.solvers.hessian_approx import (
    DenseModel,
    Exact,
    HessianApprox,
    Zero,
    as_hessian_approx,
)

__all__ = ["GNSNewton", "RULES", "ACCEPT", "resolve_hessian", "start_state", "check_common"]

#: |f_k - f_new| below this times |f| is treated as rounding noise (rounding_guard)
_ROUND = 64 * np.finfo(float).eps

#: acceptance tests of the adaptive search
ACCEPT = ("lemma1-or-ratio", "lemma1")

#: Variant A rules ``gamma_k = rho(||g_k||_*)``; ``L`` (and ``nu``) are the user's constants
RULES = ("adaptive", "constant", "lipschitz", "holder", "bounded-variation")


def resolve_hessian(hessian: Any, problem: Minimize) -> HessianApprox:
    """The approximation to use: the solver's, else the problem's default, else exact."""
    if hessian is None:
        hessian = problem.hessian if problem.hessian is not None else "exact"
    return as_hessian_approx(hessian)


@dataclass(frozen=True, kw_only=True)
class SmoothSolver(Solver):
    """What GNSNewton and its baselines share: setup (oracles for the backend, the Hessian
    approximation), the warm-start refresh, the declared tolerance and the answer copy."""

    def setup(self, problem, ctx) -> "SmoothSetup":
        return smooth_setup(self, problem, ctx)

    def resume(self, problem, state, ctx) -> "SmoothState":
        return smooth_resume(self, problem, state, ctx)

    def tolerance(self, problem, state) -> dict[str, float]:
        return smooth_tolerance(self, problem, state)

    def check(self, problem, state, ctx):
        return check_common(self, problem, state)

    def finalize(self, problem, state, ctx):
        return ctx.xp.copy(state.x)


@dataclass(frozen=True, kw_only=True)
class GNSNewton(SmoothSolver):
    """GNS Newton (Semenov, Jaggi, Doikov 2025) for :class:`~neurosolve.problems.Minimize`.

    Each iteration evaluates ``H_k = H(x_k)`` once and tries
    ``d = -(H_k + lambda B)^{-1} g_k``, ``lambda = ||g_k||_* / (gamma + eps_reg)``.

    *Variant B* (``rule="adaptive"``, the paper's adaptive search): a trial is accepted when
    the Lemma-1 inequality holds,

        f(x_k) - f(x_k + d) >= ||grad f(x_k + d)||_*^2 / (8 lambda);

    then ``gamma <- min(increase * gamma, gamma_max)``. Otherwise (or when ``H_k + lambda B``
    is not positive definite, or ``f``/``grad`` is not finite at the trial point) the trial
    is rejected, ``gamma <- decrease * gamma`` and the next trial reuses ``H_k``. The search
    fails, without moving, when ``max_trials`` trials were rejected or ``gamma`` fell below
    ``gamma_min``. The trial's gradient becomes the next iterate's gradient: each trial
    costs one factorization (or solve), one ``f`` and one gradient.

    *Defaults* (neurosolve's additions, measured on the Moré-Garbow-Hillstrom set and on
    logistic regression; :meth:`paper` switches all of them off):

    * ``accept="lemma1-or-ratio"``: a trial is also accepted when ``f`` decreased by at
      least ``eta`` times the decrease the regularized model predicts,
      ``(lambda ||d||_B^2 - <g_k, d>) / 2`` (computed from the solve, no extra product).
      The Lemma-1 test asks for ``lambda >~ L ||d||``, which on ill-conditioned problems
      keeps the steps short (thousands of iterations on Osborne 1, penalty II); the ratio
      test is the one of regularized Newton methods with ``lambda = mu ||g||`` (Ueda and
      Yamashita 2010), so accepted steps still decrease ``f`` monotonically. ``lemma1`` in
      the history says which test held; ratio-accepted trials are logged
      ``accept-ratio``.
    * ``shrink_to_step=True``: after a rejection ``gamma <- min(decrease * gamma,
      ||d||_B)``. A radius far above the step length gives almost the same (Newton-like)
      step, so halving from there wastes trials; with this jump a large ``gamma0`` costs
      about one extra trial instead of ``log2(gamma0 / gamma(x))``.
    * ``eig_shift=True``: when ``H + lambda B`` fails to factor (an indefinite exact
      Hessian) the next trial uses ``lambda >= 2 |lambda_min(H, B)|`` (one eigenvalue
      solve for the smallest eigenvalue) instead of doubling ``lambda`` up to 40 times.
    * ``gamma0 = 1e6`` ("Newton first"): the first trial is nearly the Newton step. With
      the two jumps above this is cheap when it fails and saves the iterations of ramping
      ``gamma`` up from 1 (9 -> 4 iterations on logistic regression 50,000 x 200).

    *Variant A* (``rule`` one of ``"constant"``, ``"lipschitz"``, ``"holder"``,
    ``"bounded-variation"`` or a callable ``rho(gnorm, x) -> gamma``): one trial with
    ``gamma_k = rho(||g_k||_*)``, always taken; ``lemma1`` records whether the inequality
    held. Rules: constant ``gamma0``; Lipschitz Hessian ``sqrt(2 ||g||_* / L)``; Hölder
    Hessian ``((1 + nu) ||g||_* / L)^(1 / (1 + nu))``; bounded Hessian variation
    ``||g||_* / L`` (``lambda = L``, a Levenberg-Marquardt step).

    *Matrix-free exact Hessians* (``hessian="hessp"``, or ``"exact"`` with only a
    ``hessp`` oracle) are an inexact Newton method [5]_ [6]_: each trial solves
    ``(H_k + lambda B) d = -g_k`` by CG from 0 only to the relative residual
    ``eta_k = min(0.5, ||g_k||^(1/3))`` (a forcing term: loose far from the solution,
    ``O(||g_k||^(1/3))`` near it, so the local rate stays superlinear, order 4/3), truncated at
    non-positive curvature as in Steihaug [7]_ (the last CG iterate, a descent direction;
    at the first CG step the trial counts as not positive definite). The acceptance tests
    use the inexact ``d`` (Lemma 1 is checked at the actual trial point; the ratio test's
    model decrease comes from the CG residual, :meth:`OperatorModel.predicted_decrease
    <neurosolve.solvers.hessian_approx.OperatorModel.predicted_decrease>`), and the
    stopping test is always ``||grad f(x_k)||_* <= gtol`` on the gradient evaluated at
    the accepted point: inexact solves change the path, never the certificate.
    ``hessian="hessp-exact"`` or ``Exact(matrix_free=True, forcing=None)`` gives the old
    solves to ``cg_rtol = 1e-10``; ``Exact(forcing="sqrt")`` / ``"linear"`` the forcing
    terms ``min(0.5, ||g_k||^(1/2))`` / ``min(0.5, ||g_k||)``. On softmax regression
    (digits, 640 unknowns, mu = 1e-3) the default needs 98 Hessian-vector products (10
    iterations) where the exact solves need 867 (9 iterations) (``docs/gns_newton.md``).

    With ``hessian="zero"`` (:meth:`normalized_gradient`) the step is
    ``-gamma B^{-1} g / ||g||_*``: the normalized gradient method with the same search.

    Parameters
    ----------
    hessian : str, HessianApprox or callable, optional
        ``"exact"``, ``"hessp"`` (exact, matrix-free inexact CG, above), ``"hessp-exact"``
        (CG to 1e-10), ``"gauss-newton"``,
        ``"fisher-term"``, ``"fisher"``, ``"weighted-gauss-newton"``, ``"diag"``,
        ``"hutchinson"``, ``"zero"``, an object from
        :mod:`~neurosolve.solvers.hessian_approx`, or a callable ``x -> H`` (a matrix, a
        diagonal, a ``(V, D)`` factor or a matvec; declared PSD). Default: the problem's
        ``hessian``, else ``"exact"``.
    gamma0 : float
        Initial radius (Variant B) or the constant radius (``rule="constant"``). Default
        1e6 ("Newton first"; the paper uses 1).
    rule : str or callable
        ``"adaptive"`` (Variant B) or a Variant A rule (above).
    L, nu : float
        Constants of the Variant A rules.
    max_trials : int
        Trials per iteration before the search is declared failed (official code: 40).
    increase, decrease : float
        Factors applied to ``gamma`` after an accepted / rejected trial (2 and 1/2).
    gamma_min, gamma_max : float
        The search fails when ``gamma`` drops below ``gamma_min``; ``gamma`` never grows
        beyond ``gamma_max`` (so ``lambda`` stays positive).
    eps_reg : float
        Added to ``gamma`` in ``lambda`` (the official code uses 1e-8, which also served as
        its stopping tolerance; here the two are separate and the default is 0).
    gtol : float
        Stopping rule: ``||grad f(x_k)||_* <= gtol`` (dual norm of the metric ``B``).
    ftol : float, optional
        Also stop when ``f(x_k) - f_star <= ftol`` (needs ``problem.f_star``).
    rounding_guard : bool
        When ``|f(x_k) - f(x_k + d)| <= 64 eps |f|`` the difference of ``f`` values is
        rounding noise and the Lemma-1 test would accept or reject at random (and different
        BLAS/backends would disagree). The guard then measures the decrease by the
        trapezoid rule ``-<g_k + g(x_k + d), d> / 2`` (exact for quadratics, error
        ``O(||d||^3)``). A neurosolve addition, not in the paper; ``False`` gives the
        paper's test everywhere.
    accept : {"lemma1-or-ratio", "lemma1"}
        The acceptance test of the adaptive search (above); ``"lemma1"`` is the paper's.
    eta : float
        Fraction of the model's predicted decrease the ratio test asks for (in (0, 1)).
    shrink_to_step : bool
        Cap the radius after a rejection at the rejected step's length (above).
    eig_shift : bool
        After a failed factorization of a dense ``H + lambda B``, jump to
        ``lambda = 2 |lambda_min|`` (above).
    maxiter : int, optional
        Iteration limit (accepted steps); default 1000.

    Notes
    -----
    Metrics per iteration (index ``k`` describes the step that produced ``x_k``; index 0 is
    the start): ``grad_norm`` (``||g_k||_*``), ``f``, ``gamma`` (the radius of the
    accepted trial), ``lam`` (its lambda), ``trials``, ``factorizations`` (solves in this
    iteration), ``step_norm`` (``||x_k - x_{k-1}||_B``, at most ``gamma``), ``lemma1`` (1
    when the Lemma-1 inequality held), ``gamma_next`` (the radius the next search starts
    from). ``state.search_log`` lists every trial as ``(k, gamma, lam, outcome)`` with
    outcome ``"accept"``, ``"accept-rounding"``, ``"accept-ratio"``, ``"reject"``,
    ``"not_pd"`` or ``"nonfinite"``.

    Statuses: CONVERGED; MAX_ITER; STAGNATION (the search failed: the test could not be
    met, typically ``gtol`` below what rounding in ``f`` allows); BREAKDOWN (every trial's
    ``H + lambda B`` was not positive definite, or a PSD-declared approximation is not
    PSD); NONFINITE (``f`` or the gradient at the start, or the Hessian, is not finite).

    Fixes relative to the official code (see ``docs/gns_newton.md``): the regularization
    ``eps_reg`` and the stopping tolerance are separate; a failed factorization is a
    rejected trial (which makes indefinite exact Hessians work); ``gamma_min`` applies to
    halving and ``gamma_max`` caps doubling; an exhausted search returns a status instead
    of taking the last rejected step; ``max_trials`` means what it says.

    References
    ----------
    .. [1] A. Semenov, M. Jaggi, N. Doikov, "Gradient-Normalized Smoothness for
       Optimization with Approximate Hessians", arXiv:2506.13710, 2025 (ICLR 2026).
       Official code: github.com/epfml/grad-norm-smooth.
    .. [2] K. Mishchenko, "Regularized Newton method with global O(1/k^2) convergence",
       SIAM J. Optim. 33(3), 2023, arXiv:2112.02089.
    .. [3] N. Doikov, Y. Nesterov, "Gradient regularization of Newton method with Bregman
       distances", Math. Program. 2023.
    .. [4] K. Ueda, N. Yamashita, "Convergence properties of the regularized Newton method
       for the unconstrained nonconvex optimization", Appl. Math. Optim. 62, 2010.
    .. [5] R. S. Dembo, S. C. Eisenstat, T. Steihaug, "Inexact Newton methods", SIAM J.
       Numer. Anal. 19(2), 400-408, 1982.
    .. [6] S. C. Eisenstat, H. F. Walker, "Choosing the forcing terms in an inexact Newton
       method", SIAM J. Sci. Comput. 17(1), 16-32, 1996.
    .. [7] T. Steihaug, "The conjugate gradient method and trust regions in large scale
       optimization", SIAM J. Numer. Anal. 20(3), 626-637, 1983.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from neurosolve.problems import smooth_gallery as gal
    >>> prob = gal.rosenbrock(2, x0=np.array([-1.2, 1.0]))
    >>> res = ns.solve(prob, ns.solvers.GNSNewton(gtol=1e-10))
    >>> res.success, np.allclose(res.x, 1.0)
    (True, True)
    """

    hessian: Any = None
    gamma0: float = 1e6
    rule: Any = "adaptive"
    L: float | None = None
    nu: float = 1.0
    max_trials: int = 40
    increase: float = 2.0
    decrease: float = 0.5
    gamma_min: float = 1e-9
    gamma_max: float = 1e12
    eps_reg: float = 0.0
    gtol: float = 1e-8
    ftol: float | None = None
    rounding_guard: bool = True
    accept: str = "lemma1-or-ratio"
    eta: float = 0.25
    shrink_to_step: bool = True
    eig_shift: bool = True

    metrics: ClassVar[tuple[str, ...]] = ("grad_norm", "f", "gamma", "lam", "trials",
                                          "factorizations", "step_norm", "lemma1", "gamma_next",
                                          "decrease")
    problem_types: ClassVar[tuple[type, ...]] = (Minimize,)
    backends: ClassVar[tuple[str, ...]] = ("numpy", "numba", "torch")

    def __post_init__(self):
        super().__post_init__()
        for name in ("gamma0", "gamma_min", "gamma_max"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite positive number, got {v!r}")
        if self.gamma_min >= self.gamma_max:
            raise ValueError(f"gamma_min ({self.gamma_min}) must be below "
                             f"gamma_max ({self.gamma_max})")
        if not (isinstance(self.increase, (int, float)) and self.increase >= 1):
            raise ValueError(f"increase must be >= 1, got {self.increase!r}")
        if not (isinstance(self.decrease, (int, float)) and 0 < self.decrease < 1):
            raise ValueError(f"decrease must be in (0, 1), got {self.decrease!r}")
        if not isinstance(self.max_trials, (int, np.integer)) or self.max_trials < 1:
            raise ValueError(f"max_trials must be a positive integer, got {self.max_trials!r}")
        for name in ("gtol", "eps_reg"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.ftol is not None and not (isinstance(self.ftol, (int, float)) and self.ftol >= 0):
            raise ValueError(f"ftol must be None or a non-negative number, got {self.ftol!r}")
        if not callable(self.rule):
            if self.rule not in RULES:
                raise ValueError(f"rule must be one of {', '.join(RULES)} or a callable, "
                                 f"got {self.rule!r}")
            if self.rule in ("lipschitz", "holder", "bounded-variation"):
                if self.L is None or not (isinstance(self.L, (int, float)) and self.L > 0):
                    raise ValueError(f"rule={self.rule!r} needs a positive constant L, "
                                     f"got {self.L!r}")
            if self.rule == "holder" and not (0 <= self.nu <= 1):
                raise ValueError(f"nu must be in [0, 1], got {self.nu!r}")
        if self.accept not in ACCEPT:
            raise ValueError(f"accept must be one of {', '.join(ACCEPT)}, got {self.accept!r}")
        if not (isinstance(self.eta, (int, float)) and 0 < self.eta < 1):
            raise ValueError(f"eta must be in (0, 1), got {self.eta!r}")
        if self.hessian is not None:
            as_hessian_approx(self.hessian)  # validates names early

    @classmethod
    def paper(cls, **kwargs) -> "GNSNewton":
        """The paper's Variant B exactly: ``gamma0 = 1``, the Lemma-1 test alone, plain
        halving on rejection (no step-length or eigenvalue jumps). Keywords override."""
        cfg = dict(gamma0=1.0, accept="lemma1", shrink_to_step=False, eig_shift=False)
        cfg.update(kwargs)
        return cls(**cfg)

    @classmethod
    def normalized_gradient(cls, **kwargs) -> "GNSNewton":
        """The ``H = 0`` variant: normalized gradient steps of length ``gamma_k``."""
        return cls(hessian=Zero(), **kwargs)

    def max_iterations(self, problem):
        return self.maxiter if self.maxiter is not None else 1000

    # -- protocol ----------------------------------------------------------------------------
    def init(self, problem: Minimize, x0, ctx) -> State:
        state = start_state(self, problem, x0, ctx)
        state.gamma = float(self.gamma0)
        state.metrics = {"grad_norm": state.gnorm, "f": state.f, "gamma": float("nan"),
                         "lam": float("nan"), "trials": 0, "factorizations": 0, "step_norm": 0.0,
                         "lemma1": float("nan"), "gamma_next": float(self.gamma0),
                         "decrease": float("nan")}
        return state

    def _rule_gamma(self, gn: float, x) -> float:
        r = self.rule
        if callable(r):
            return float(r(gn, x))
        if r == "constant":
            return float(self.gamma0)
        if r == "lipschitz":
            return math.sqrt(2.0 * gn / self.L)
        if r == "holder":
            return ((1.0 + self.nu) * gn / self.L) ** (1.0 / (1.0 + self.nu))
        return gn / self.L  # bounded-variation

    def step(self, problem: Minimize, state: State, ctx) -> State:
        metric = problem.metric
        oracles = ctx.setup.oracles
        fg = oracles["fun_and_grad"]
        x, f, g = state.x, state.f, state.g
        gn = to_float(state.gnorm)
        f_val = to_float(f)
        model = ctx.setup.approx.evaluate(problem, x, oracles, ctx)
        if isinstance(model, DenseModel) and not metric.la.isfinite(model.H):
            state.failure = Stop(Status.NONFINITE, f"the Hessian ({ctx.setup.approx.name}) has NaN or "
                                               f"inf entries at iteration {state.k}")
            return self._failed(state, 0, 0)
        approx = ctx.setup.approx
        if isinstance(model, DenseModel) and isinstance(approx, Exact) and approx.dense_cg(problem):
            # dense exact H at n >= hessp_from_n: truncated CG on H @ v, no factorization
            model = approx.as_cg(model, ctx)
        adaptive = not callable(self.rule) and self.rule == "adaptive"
        gamma = state.gamma if adaptive else self._rule_gamma(gn, x)
        if not (gamma > 0 and math.isfinite(gamma)):
            state.failure = Stop(Status.BREAKDOWN, f"the gamma rule returned {gamma} at iteration "
                                               f"{state.k}; it must be finite and positive")
            return self._failed(state, 0, 0)
        neg_g = -g
        n_trials = 0
        n_fact = 0
        all_not_pd = True
        accepted = None
        max_trials = self.max_trials if adaptive else 1
        ratio_test = adaptive and self.accept == "lemma1-or-ratio"
        min_eig = None
        while n_trials < max_trials:
            n_trials += 1
            lam = gn / (gamma + self.eps_reg)
            d = model.solve(lam, neg_g)
            n_fact += 1
            if d is None:
                state.search_log.append((state.k, gamma, lam, "not_pd"))
                if model.psd and isinstance(model, DenseModel):
                    # for a PSD H, H + lam B >= lam lambda_min(B) I: a failure with that margin
                    # well above rounding (relative 1e-8) proves H is not PSD
                    bmin, bfro = metric.bounds()
                    hfro = float(np.linalg.norm(_np(model.H)))
                    if lam * bmin > 1e-8 * (hfro + lam * bfro):
                        state.failure = Stop(Status.BREAKDOWN, (
                            f"the Hessian approximation {ctx.setup.approx.name!r} is declared positive "
                            f"semi-definite but H + lambda B is not positive definite at lambda = "
                            f"{lam:.3e}: it is not PSD. Fix the approximation or declare it "
                            "psd=False"))
                        return self._failed(state, n_trials, n_fact)
                if not adaptive:
                    break
                gamma *= self.decrease
                if self.eig_shift and hasattr(model, "min_eig"):
                    if min_eig is None:
                        min_eig = model.min_eig()
                    if min_eig is not None and min_eig < 0:
                        # the smallest lambda with H + lambda B > 0 is -min_eig: go to twice it
                        gamma = min(gamma, gn / (-2.0 * min_eig))
                if gamma < self.gamma_min:
                    break
                continue
            all_not_pd = False
            x_new = x + d
            f_new, g_new = fg(x_new)
            ctx.count("nfev")
            ctx.count("ngev")
            fn_val = to_float(f_new)
            gn_new_t = metric.dual_norm(g_new)
            gn_new = to_float(gn_new_t)
            if not (math.isfinite(fn_val) and math.isfinite(gn_new)):
                state.search_log.append((state.k, gamma, lam, "nonfinite"))
                if not adaptive:
                    state.failure = Stop(Status.NONFINITE, f"f or its gradient is not finite at the "
                                                       f"step of iteration {state.k}")
                    return self._failed(state, n_trials, n_fact)
                gamma = self._shrink(gamma, d, metric)
                if gamma < self.gamma_min:
                    break
                continue
            dec = f_val - fn_val
            rounding = self.rounding_guard and abs(dec) <= _ROUND * max(abs(f_val), abs(fn_val))
            if rounding:
                # f differences are rounding noise here: measure the decrease by the
                # trapezoid rule on the gradients (exact for quadratics, O(||d||^3) error)
                dec = -0.5 * to_float(((g + g_new) * d).sum())
            lemma1 = dec >= gn_new * gn_new / (8.0 * lam)
            ratio_ok = False
            if ratio_test and not lemma1:
                # the regularized model's predicted decrease, from the solve itself:
                # -<g,d> - <Hd,d>/2 = (lam ||d||_B^2 - <g,d>) / 2 since (H + lam B) d = -g
                # (for an inexact CG step the model adds the residual term, see
                # OperatorModel.predicted_decrease)
                pred = model.predicted_decrease(lam, g, d)
                ratio_ok = pred > 0 and dec >= self.eta * pred
            if lemma1 or ratio_ok or not adaptive:
                tag = (("accept-rounding" if rounding else "accept") if lemma1 else
                       "accept-ratio" if ratio_ok else "taken")
                state.search_log.append((state.k, gamma, lam, tag))
                accepted = (x_new, f_new, g_new, gn_new_t, gamma, lam, d, lemma1, dec)
                break
            state.search_log.append((state.k, gamma, lam, "reject"))
            gamma = self._shrink(gamma, d, metric)
            if gamma < self.gamma_min:
                break
        if accepted is None:
            if all_not_pd:
                state.failure = Stop(Status.BREAKDOWN, (
                    f"H + lambda B was not positive definite in any of the {n_trials} trials of "
                    f"iteration {state.k} (last lambda = {lam:.3e}): "
                    "the Hessian is strongly indefinite or singular; use a PSD approximation "
                    "(gauss-newton, fisher, diag) or raise max_trials"))
            else:
                test = "Lemma-1 or model-ratio" if ratio_test else "Lemma-1"
                state.failure = Stop(Status.STAGNATION, (
                    f"the gamma search failed at iteration {state.k} after {n_trials} trials "
                    f"(gamma = {gamma:.3e}, gamma_min = {self.gamma_min:g}): no step met the "
                    f"{test} decrease test. ||g|| = {gn:.3e}; if this is tiny, gtol is below "
                    "what rounding in f allows (loosen gtol); otherwise check that the gradient "
                    "matches f"))
            return self._failed(state, n_trials, n_fact)
        x_new, f_new, g_new, gn_new_t, gamma_used, lam, d, lemma1, dec = accepted
        if adaptive:
            state.gamma = min(gamma_used * self.increase, self.gamma_max)
        state.x, state.f, state.g, state.gnorm = x_new, f_new, g_new, gn_new_t
        state.k += 1
        state.metrics = {"grad_norm": gn_new_t, "f": f_new, "gamma": gamma_used, "lam": lam,
                         "trials": n_trials, "factorizations": n_fact,
                         "step_norm": metric.norm(d), "lemma1": 1.0 if lemma1 else 0.0,
                         "gamma_next": state.gamma if adaptive else float("nan"),
                         "decrease": dec}
        return state

    def _shrink(self, gamma, d, metric):
        """The radius after a rejected trial with step ``d``: halved, and (``shrink_to_step``)
        at most ``||d||_B``, since every radius between ``||d||_B`` and ``gamma`` gives
        almost the same step when ``||d||_B << gamma`` (a Newton-like step)."""
        gamma = gamma * self.decrease
        if self.shrink_to_step:
            gamma = min(gamma, to_float(metric.norm(d)))
        return gamma

    @staticmethod
    def _failed(state, n_trials, n_fact):
        """A failed iteration: x does not move; it still counts (history stays aligned)."""
        state.k += 1
        state.metrics = dict(state.metrics, gamma=float("nan"), lam=float("nan"), trials=n_trials,
                             factorizations=n_fact, step_norm=0.0, lemma1=float("nan"),
                             decrease=float("nan"))
        return state



@dataclass(eq=False)
class SmoothState(State):
    """Iteration data of GNSNewton and its baselines (no oracles, no configuration).

    Attributes
    ----------
    f, g, gnorm : the objective, gradient and dual gradient norm at ``x``.
    failure : Stop or None
        A failed iteration's reason (reported by ``check``).
    gamma : float
        GNSNewton: the next trial step-size parameter.
    M, L : float
        The baselines' regularization / Lipschitz estimates.
    search_log : list
        ``(k, gamma, lambda, outcome)`` of every trial (GNSNewton).
    """

    f: Any = None
    g: Any = None
    gnorm: Any = None
    failure: Stop | None = None
    gamma: float = float("nan")
    M: float = float("nan")
    L: float = float("nan")
    search_log: list = field(default_factory=list)


class SmoothSetup(NamedTuple):
    """What :func:`smooth_setup` derives for one solve: the backend's oracles and the
    Hessian approximation (None for first-order methods)."""

    oracles: dict
    approx: Any


def smooth_setup(solver, problem: Minimize, ctx) -> SmoothSetup:
    """Oracles for the backend and the solver's Hessian approximation."""
    if getattr(solver, "ftol", None) is not None and problem.f_star is None:
        raise ValueError("ftol needs the optimal value: build the problem with f_star=")
    hessian = getattr(solver, "hessian", False)
    approx = resolve_hessian(hessian, problem) if hessian is not False else None
    return SmoothSetup(oracles=problem.oracles(ctx.backend.name), approx=approx)


def start_state(solver, problem: Minimize, x0, ctx) -> SmoothState:
    """Shared start of the smooth solvers: x, f, g, ||g||_* at ``x0`` (or the problem's)."""
    xp = ctx.xp
    oracles = ctx.setup.oracles
    x = problem.x0 if x0 is None else x0
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=float)
    x = xp.copy(x)
    if x.dtype != problem.x0.dtype:
        x = xp.asarray(x, like=problem.x0)
    state = SmoothState(x=x, k=0)
    _evaluate(problem, state, ctx, oracles, "x0")
    return state


def _evaluate(problem, state, ctx, oracles, who):
    f, g, msg = problem.check_point(state.x, who, oracles)
    ctx.count("nfev")
    ctx.count("ngev")
    state.f, state.g, state.gnorm = f, g, problem.metric.dual_norm(g)
    state.failure = None
    if msg is not None:
        state.failure = Stop(Status.NONFINITE, f"{msg}; start from a point where f and its "
                                               "gradient are finite")


def smooth_resume(solver, problem, state, ctx) -> SmoothState:
    """Warm start: f and g recomputed at ``state.x`` with this solve's oracles (one
    evaluation), a recorded failure cleared; the step-size estimates are kept."""
    _evaluate(problem, state, ctx, ctx.setup.oracles, "the warm-start point")
    state.metrics = dict(state.metrics, grad_norm=state.gnorm, f=state.f)
    return state


def smooth_tolerance(solver, problem, state) -> dict[str, float]:
    """``grad_norm <= gtol``; with ``ftol``, ``f_gap <= ftol`` when that rule stopped."""
    if solver.ftol is not None and to_float(state.gnorm) > solver.gtol:
        return {"f_gap": float(solver.ftol)}
    return {"grad_norm": float(solver.gtol)}


def check_common(solver, problem: Minimize, state: SmoothState):
    """Shared stopping rule: a recorded failure, a non-finite gradient, gtol, ftol."""
    if state.failure is not None:
        return state.failure
    gn = to_float(state.gnorm)
    if not math.isfinite(gn):
        return Stop(Status.NONFINITE, f"the gradient norm is {gn} at iteration {state.k}")
    if problem.f_star is not None:
        fval = to_float(state.f)
        slack = 1e-12 * max(1.0, abs(problem.f_star))
        if fval < problem.f_star - slack:
            raise ValueError(
                f"f(x) = {fval!r} at iteration {state.k} is below the declared optimal value "
                f"f_star = {problem.f_star!r}: f_star is not a lower bound of f. Fix f_star (or "
                "the objective) in the problem")
    if gn <= solver.gtol:
        return Stop(Status.CONVERGED)
    if solver.ftol is not None and to_float(state.f) - problem.f_star <= solver.ftol:
        return Stop(Status.CONVERGED)
    return None


