"""Pattern generation: the convex ReLU program over *all* activation patterns, by cutting
planes on the sampled one.

A sampled program (``P`` patterns) is a restriction of the full convex program, whose
optimum is the global optimum of the non-convex two-layer training problem. Its dual point
``lam = grad loss(z(x))`` certifies global optimality when
``max_{||u|| <= 1} |lam^T (X u)_+| <= beta`` (Pilanci and Ergen [1]_); a pattern where the
maximum exceeds ``beta`` is a violated dual constraint, i.e. a pair of weight blocks whose
addition can decrease the objective. Each round of :class:`PatternGeneration` solves the
current sampled program (warm started from the previous round, new blocks at zero), looks
for violating patterns (exactly, over the whole hyperplane arrangement, when ``d`` is
small; by multi-start ascent otherwise, see
:meth:`neurosolve.problems.ConvexReLU.global_check`), adds the worst ones and repeats until
none is found. No peer library does this: scnn and CRONOS solve the sampled program only.

References
----------
.. [1] M. Pilanci, T. Ergen, "Neural Networks are Convex Regularizers: Exact
   Polynomial-time Convex Optimization Formulations for Two-layer Networks", ICML 2020,
   theorem 1 and the dual constraint of section 3.
.. [2] A. Mishkin, A. Sahiner, M. Pilanci, "Fast Convex Optimization for Two-Layer ReLU
   Networks: Equivalent Model Classes and Cone Decompositions", ICML 2022 (the sampled
   program and its cone constraints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neurosolve.core import Solver, State, Status, Stop
from neurosolve.problems.convex_relu import ConvexReLU

__all__ = ["PatternGeneration", "PatternGenerationState"]


@dataclass(eq=False)
class PatternGenerationState(State):
    """One round's data: the current pattern matrix ``D`` (numpy), the inner result on it,
    the violators found at its solution and the kind of search that found them."""

    D: Any = None
    inner: Any = None
    violators: Any = None
    search: str = ""
    inner_iterations: int = 0
    inner_scale: float = 1.0
    sub: Any = None


@dataclass(frozen=True, kw_only=True)
class PatternGeneration(Solver):
    """Solve a convex ReLU program over all activation patterns by pattern generation.

    Parameters
    ----------
    inner : Solver, optional
        The solver of each sampled program (default ``ADMM(rtol=1e-5, maxiter=50000)``;
        the dual condition is only as accurate as the inner solution).
    max_rounds : int
        Rounds of (solve, search, add).
    add_per_round : int
        At most this many violating patterns are added per round (the worst first).
    search : {"auto", "exact", "ascent"}
        How violators are searched (see :meth:`ConvexReLU.global_check`).
    starts : int
        Random starts of the ascent search.
    violation_tol : float
        A pattern violates when its dual value exceeds ``beta (1 + violation_tol)``.

    Notes
    -----
    Use on a problem built with ``patterns="generate"`` (it is then the default solver)
    or with any epsilon = 0 ``ConvexReLU`` (sampled patterns, a given pattern matrix, the
    patterns of a trained network: they are the first round's program, and the problem is
    marked as generated so that its certificate runs the global check). The problem adopts
    the generated patterns at the end of the solve (``problem.P`` grows), so that
    ``problem.certificate(result.x)`` and ``problem.network(result)`` refer to the
    generated program.

    Status CONVERGED: the search found no violating pattern at the last round's point and
    the certificate recomputed there meets the inner solver's bounds (relative gap, cone
    violation) and ``global_ratio <= 1 + violation_tol``; ``certificate["global"]`` then
    says whether the search was exhaustive (``"exact"``) or heuristic
    (``"no_violation_found"``), and ``certificate["global_gap"]`` bounds the
    suboptimality against every network (a proof when exact). An inner solve that ends
    MAX_ITER or STAGNATION does not stop the rounds: with violators they are added, and
    without, the next round continues the same program from that point (see
    :meth:`on_uncertified`). MAX_ITER: violators remained, or the certificate was not
    met, after ``max_rounds``. STAGNATION: the certificate refuted 8 claims (the core's
    limit), or an inner solver without ``rtol`` could not be tightened. An inner solve's
    other failure statuses end the solve with that status.

    ``Result.stats`` adds ``rounds``, ``patterns`` (final P), ``patterns_added``,
    ``inner_iterations``, ``search``, and the rounds that resumed the same program after a
    refuted claim: ``inner_continuations`` (an unfinished inner solve continued) and
    ``inner_tightenings`` (a converged one continued with a 10x tighter rtol).

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 1)); y = np.abs(X[:, 0]) + 0.1 * rng.standard_normal(40)
    >>> prob = ns.problems.ConvexReLU(X, y, beta=0.05, patterns="generate")
    >>> res = ns.solve(prob)                     # PatternGeneration is the default here
    >>> res.status.name, res.certificate["global"]
    ('CONVERGED', 'exact')
    """

    inner: Any = None
    max_rounds: int = 20
    add_per_round: int = 16
    search: str = "auto"
    starts: int = 256
    violation_tol: float = 1e-3

    metrics: ClassVar[tuple[str, ...]] = ("violators", "patterns", "objective")

    def __post_init__(self):
        if not isinstance(self.max_rounds, (int, np.integer)) or self.max_rounds < 1:
            raise ValueError(f"max_rounds must be an integer >= 1, got {self.max_rounds!r}")
        if not isinstance(self.add_per_round, (int, np.integer)) or self.add_per_round < 1:
            raise ValueError(f"add_per_round must be an integer >= 1, got {self.add_per_round!r}")
        if self.search not in ("auto", "exact", "ascent"):
            raise ValueError(f"search must be 'auto', 'exact' or 'ascent', got {self.search!r}")
        if not np.isfinite(self.violation_tol) or self.violation_tol < 0:
            raise ValueError(f"violation_tol must be >= 0, got {self.violation_tol!r}")
        if self.inner is not None and not isinstance(self.inner, Solver):
            raise TypeError(f"inner must be a neurosolve Solver, got {type(self.inner).__name__}")

    def _inner(self):
        if self.inner is not None:
            return self.inner
        from neurosolve.solvers.admm_relu import ADMM

        return ADMM(rtol=1e-5, maxiter=50_000)

    def _round_solver(self, st):
        """The inner solver of this round: ``inner`` with its rtol scaled by
        ``st.inner_scale`` (tightened by :meth:`on_uncertified`)."""
        inner = self._inner()
        if st.inner_scale == 1.0:
            return inner
        return dataclasses.replace(inner, rtol=inner.rtol * st.inner_scale)

    def max_iterations(self, problem):
        return self.max_rounds

    def setup(self, problem, ctx):
        if not isinstance(problem, ConvexReLU):
            raise TypeError(f"PatternGeneration solves ConvexReLU problems, got "
                            f"{type(problem).__name__}")
        if problem.robust:
            raise ValueError("PatternGeneration is for epsilon = 0 programs")
        # a program built from sampled or given patterns becomes a generated one: its
        # certificate then runs the global check that ``tolerance`` gates on, with this
        # solver's threshold (so that "exact" and CONVERGED mean the same test)
        problem.generate = True
        problem.global_tol = self.violation_tol
        return None

    def init(self, problem, x0, ctx) -> PatternGenerationState:
        st = PatternGenerationState(x=x0, k=0, D=problem.D_np.copy())
        st.metrics = {"violators": float("nan"), "patterns": float(st.D.shape[1]),
                      "objective": float("nan")}
        return st

    def resume(self, problem, state, ctx):
        """A warm start keeps the patterns, the point and the last violators, not the
        earlier solve's configuration: the inner tolerance starts from this solver's
        ``inner`` again, and the first round solves its program afresh (the stored inner
        result may come from another inner solver)."""
        state.inner_scale = 1.0
        state.sub = None
        state.inner = None
        return state

    def step(self, problem, st, ctx) -> PatternGenerationState:
        from neurosolve.core import solve

        if st.violators is not None and st.violators.shape[1]:
            add = st.violators[:, : self.add_per_round]
            P_old = st.D.shape[1]
            st.D = np.concatenate([st.D, add], axis=1)
            ctx.count("patterns_added", add.shape[1])
            st.x = _pad(st.x, problem, st.D.shape[1], P_old)
            st.sub = None
        if st.sub is not None and st.inner is not None and st.inner.state is not None:
            # the same program again (see on_uncertified): resume the inner solver's state
            sub = st.sub
            res = solve(sub, self._round_solver(st), init=st.inner.state)
        else:
            sub = st.sub = problem.with_patterns(st.D)
            st.D = sub.D_np  # dedup may have dropped repeats
            res = solve(sub, self._round_solver(st), st.x)
        st.inner = res
        st.x = res.x
        st.inner_iterations += int(res.n_iter)
        ctx.count("inner_iterations", int(res.n_iter))
        g = sub.global_check(res.x, search=self.search, starts=self.starts, seed=st.k,
                             tol=self.violation_tol)
        st.violators, st.search = g["violators"], g["search"]
        st.k += 1
        st.metrics = {"violators": float(st.violators.shape[1]),
                      "patterns": float(st.D.shape[1]),
                      "objective": float(res.certificate["objective"])}
        return st

    def check(self, problem, st, ctx):
        if st.inner is None:
            return None
        inner = st.inner
        if not inner.success and inner.status not in (Status.MAX_ITER, Status.STAGNATION):
            return Stop(inner.status, f"the inner solve of round {st.k} ended "
                        f"{inner.status.name}: {inner.message}")
        if st.violators.shape[1] == 0:
            # the claim is checked by the certificate at the returned point, whatever the
            # inner stopping rule said (see on_uncertified for what happens when it fails)
            return Stop(Status.CONVERGED)
        return None

    def on_uncertified(self, problem, st, ctx, failed):
        """No new violating pattern was found, but the certificate missed a bound (its
        global ratio also counts the program's own patterns, at the loss gradient's dual
        point): the point is too inexact for its gradient to certify. The next round
        resumes the inner solver's state on the same program: an unfinished inner solve
        (MAX_ITER, STAGNATION) continues as it was; a converged one continues with the
        inner rtol 10x tighter (down to 1e-10; an inner solver without ``rtol`` ends
        STAGNATION)."""
        if not st.inner.success:
            ctx.count("inner_continuations")
            return None
        rtol = getattr(self._inner(), "rtol", None)
        if rtol is None or rtol * st.inner_scale * 0.1 < 1e-10:
            return super().on_uncertified(problem, st, ctx, failed)
        st.inner_scale *= 0.1
        ctx.count("inner_tightenings")
        return None

    def tolerance(self, problem, state) -> dict[str, float]:
        """The inner solver's tolerance on the generated program, and no violating pattern
        in the certificate's own search (``global_ratio <= 1 + violation_tol``)."""
        inner = state.inner
        bounds = dict(self._inner().tolerance(problem, inner.state)) if inner is not None else {}
        bounds["global_ratio"] = 1.0 + self.violation_tol
        return bounds

    def witness(self, problem, st, ctx) -> dict:
        """The last inner solve's witness (e.g. ADMM's dual point) for the generated
        program, which the problem has adopted by the time the certificate runs."""
        if st.inner is None or st.inner.state is None:
            return {}
        return self._inner().witness(problem, st.inner.state, ctx)

    def finalize(self, problem, st, ctx):
        problem.adopt_patterns(st.D)
        ctx.counters["rounds"] = st.k
        ctx.counters["patterns"] = int(st.D.shape[1])
        ctx.counters["search"] = st.search
        for key in ("patterns_added", "inner_tightenings", "inner_continuations"):
            ctx.counters.setdefault(key, 0)
        return st.x if st.x is not None else problem.zeros()


def _pad(x, problem, P_new, P_old):
    """A solution on ``P_old`` patterns extended by zero blocks to ``P_new``."""
    if x is None:
        return None
    if problem.array_library == "torch":
        import torch

        shape = list(x.shape)
        shape[1] = P_new - P_old
        return torch.cat([x, torch.zeros(shape, dtype=x.dtype, device=x.device)], dim=1)
    shape = list(x.shape)
    shape[1] = P_new - P_old
    return np.concatenate([x, np.zeros(shape, dtype=x.dtype)], axis=1)
