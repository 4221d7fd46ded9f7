"""The adjoint rule of the convex ReLU program: implicit differentiation on its active set.

The program (see :class:`~neurosolve.problems.ConvexReLU`) is nonsmooth: a group norm
``||u_g||`` per neuron block and the cone constraints ``(2 D_i - I) X u_g >= 0``. Where the
solution is *locally stable* it is smooth in the data: the activation patterns ``D`` are
held fixed (they are piecewise constant in ``X``), the nonzero blocks stay nonzero, the
zero blocks stay strictly inside their dual ball, and each active constraint row keeps a
strictly positive multiplier (strict complementarity). On such a point the solution is
the root of the KKT system of the *reduced* problem (active blocks ``u_S``, active rows
``R`` with multipliers ``mu``)::

    G_u  = grad_u loss(z(u)) + beta u_g / ||u_g|| - (E X)_R^T mu     = 0
    G_mu = -(E X)_R u                                                 = 0

whose Jacobian ``[[H, -A^T], [-A, 0]]`` is symmetric and nonsingular when the active rows
of each block are linearly independent. The rule

1. *polishes* the forward answer: the active-set method of
   :func:`neurosolve.solvers.relu_polish.polish` (the one ADMM uses; its answers are
   usually polished already) gives the active blocks and independent tight rows, and
   Newton on the reduced KKT system resolves the multipliers to rounding level (refused
   if one is negative: the active set is then not consistent); the polished point
   replaces the answer and its certificate is recomputed from scratch;
2. *verifies* local stability and refuses (``ImplicitDiffError``, before any gradient is
   returned) where the answer is not differentiable;
3. solves the adjoint ``J^T lam = -g`` with the dense KKT matrix (LU).

References
----------
.. [1] M. Pilanci, T. Ergen, "Neural Networks are Convex Regularizers", ICML 2020.
.. [2] M. Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022,
   arXiv:2105.15183 (section 2: optimality conditions of constrained problems as roots).
.. [3] A. V. Fiacco, "Sensitivity analysis for nonlinear programming using penalty
   methods", Math. Programming 10 (1976): differentiability of a KKT point under strict
   complementarity and linear independence of the active constraints.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neurosolve.adjoint.config import ImplicitDiffError
from neurosolve.core import Status

__all__ = ["ConvexReLURule", "MAX_KKT_SIZE"]

#: largest reduced KKT system (active weights plus active rows) the rule factors densely
MAX_KKT_SIZE = 4000


class ConvexReLURule:
    """Implicit adjoint of :class:`~neurosolve.problems.ConvexReLU` on its active set
    (epsilon = 0; squared or logistic loss); see the module docstring."""

    comparable_iterations = False  # ADMM iterations vs one dense factorization

    def __init__(self, problem, solver, config):
        if getattr(problem, "array_library", None) != "torch":
            raise TypeError('adjoint="implicit" differentiates torch tensors: build the '
                            "ConvexReLU from torch tensors X and y")
        if problem.robust:
            raise NotImplementedError(
                'adjoint="implicit" supports epsilon = 0 convex ReLU programs: the robust '
                "program's worst-case loss has kinks at every sample's ball radius")
        if problem.loss == "hinge":
            raise NotImplementedError(
                'adjoint="implicit" needs a differentiable loss; the hinge loss has a kink at '
                'margin 1 (use loss="squared" or "logistic")')
        if not problem._y_direct and getattr(problem.y, "requires_grad", False):
            raise ValueError("y holds class labels here (a classification loss or one_vs_all): "
                             "labels are discrete and have no gradient; pass y without "
                             "requires_grad")
        self.problem, self.solver, self.config = problem, solver, config
        self._J = None

    def default_rtol(self) -> float:
        return 1e-12

    def default_max_iter(self, n_forward: int) -> int:
        return 1

    # ---------------------------------------------------------------- reduced KKT system
    def _layout(self, groups, rows):
        p = self.problem
        self.groups = groups          # list of (s, i, o)
        self.rows = rows              # list of int arrays, active rows of each group
        self.nu = len(groups) * p.d
        self.m = self.nu + sum(len(r) for r in rows)

    def _kkt(self, z, Xt, Y):
        """The reduced KKT residual at ``z`` for data ``(Xt, Y)`` (torch, differentiable)."""
        import torch

        from neurosolve.problems import relu_losses as RL

        p = self.problem
        d = p.d
        D = torch.as_tensor(p.D_np, dtype=Xt.dtype, device=Xt.device)
        E = 2.0 * D - 1.0
        U = z[: self.nu].reshape(len(self.groups), d)
        Z = torch.zeros((p.n, p.c), dtype=Xt.dtype, device=Xt.device)
        XU = Xt @ U.T  # (n, |S|)
        for k, (s, i, o) in enumerate(self.groups):
            sign = 1.0 if s == 0 else -1.0
            Z = Z.index_add(1, torch.tensor([o], device=Xt.device),
                            (sign * D[:, i] * XU[:, k])[:, None])
        gZ = RL.loss_grad(p.loss, Z, Y, p.w)
        out_u, out_mu = [], []
        pos = self.nu
        for k, (s, i, o) in enumerate(self.groups):
            sign = 1.0 if s == 0 else -1.0
            u = U[k]
            gu = sign * (Xt.T @ (D[:, i] * gZ[:, o])) + p.beta * u / torch.linalg.vector_norm(u)
            r = self.rows[k]
            if len(r):
                Ar = E[r, i][:, None] * Xt[r]  # (|r|, d)
                mu = z[pos: pos + len(r)]
                pos += len(r)
                gu = gu - Ar.T @ mu
                out_mu.append(-(Ar @ u))
            out_u.append(gu)
        return torch.cat(out_u + out_mu)

    def _jacobian(self, z, Xt, Y):
        import torch

        return torch.autograd.functional.jacobian(lambda t: self._kkt(t, Xt, Y), z)

    # ---------------------------------------------------------------- polish and verify
    def polish(self, result, report: dict):
        """Newton on the reduced KKT system with active-set refinement; returns ``result``
        with the polished answer and its recomputed certificate (the status is kept: the
        polished point is feasible and at least as good, which is checked)."""
        try:
            return self._polish(result, report)
        except ImplicitDiffError as exc:
            if result.status is Status.CONVERGED:
                raise
            raise ImplicitDiffError(
                f"the forward solve ended {result.status.name} ({result.message}) and its "
                f"answer could not be polished to a root: {exc}", report, result) from None

    def _polish(self, result, report: dict):
        import torch

        p = self.problem
        x0 = np.asarray(result.x.detach().cpu().numpy() if hasattr(result.x, "detach")
                        else result.x, dtype=np.float64)
        x0 = x0 if x0.ndim == 4 else x0[..., None]
        with torch.no_grad():
            Xt, Y = (a.detach() for a in p.torch_data())
        Xt64, Y64 = Xt.to(torch.float64), Y.to(torch.float64)
        norms = np.linalg.norm(x0, axis=2)  # (2, P, c)
        top = float(norms.max(initial=0.0))
        if top == 0.0:
            raise ImplicitDiffError(
                "the convex ReLU solution is zero (beta at or above beta_max): the network is "
                "switched off and the answer is not differentiable in the data there", report,
                result)
        # the active set: the blocks and independent tight rows of the polished point
        # (:func:`neurosolve.solvers.relu_polish.polish`, which ADMM's answers usually are
        # already); Newton on the reduced KKT system then resolves the multipliers
        from neurosolve.solvers.relu_polish import polish

        shape = p.x_shape
        xp, active = polish(p, x0.reshape(shape), return_active=True)
        if xp is None:
            raise ImplicitDiffError(
                "the active set of the convex ReLU solution could not be identified from the "
                "forward answer (the active-set polish did not settle); tighten the forward "
                "tolerance (rtol)", report, result)
        xp = np.asarray(xp).reshape(x0.shape)
        groups = sorted(active)
        rows = [np.asarray(active[g], dtype=int) for g in groups]
        self._layout(groups, rows)
        if self.m > MAX_KKT_SIZE:
            raise ImplicitDiffError(
                f"the reduced KKT system has {self.m} unknowns (active weights plus active "
                f"constraints; limit {MAX_KKT_SIZE}): too large for the dense adjoint of "
                "the convex ReLU program; use fewer patterns or a larger beta", report,
                result)
        z = torch.as_tensor(np.concatenate([xp[s, i, :, o] for s, i, o in groups]
                                           + [np.zeros(len(r)) for r in rows]),
                            dtype=torch.float64, device=Xt.device)
        z, steps, res = self._newton(z, Xt64, Y64)
        rounds = 1
        mus = z[self.nu:].cpu().numpy()
        if res > 1e-10 or (mus.size and mus.min() < -1e-9 * max(1.0, float(np.abs(mus).max()))):
            raise ImplicitDiffError(
                f"Newton on the convex ReLU's reduced KKT system ended at residual {res:.1e} "
                f"with smallest multiplier {mus.min(initial=0.0):.1e}: the active set "
                "identified from the forward answer is not consistent; tighten the forward "
                "tolerance (rtol)", report, result)
        self._verify(z, groups, rows, Xt64, Y64, report, result)
        x_new = np.zeros_like(x0)
        U = z[: self.nu].reshape(len(groups), p.d).cpu().numpy()
        for k2, (s, i, o) in enumerate(groups):
            x_new[s, i, :, o] = U[k2]
        obj_old, obj_new = p.objective(x0.reshape(shape)), p.objective(x_new.reshape(shape))
        if obj_new > obj_old + 1e-8 * max(1.0, abs(obj_old)):
            raise ImplicitDiffError(
                f"the polished point's objective {obj_new:.10g} exceeds the forward's "
                f"{obj_old:.10g}: the forward answer is not near a locally stable optimum",
                report, result)
        self._z = z.to(Xt.dtype)
        self._J = self._jacobian(z, Xt64, Y64)
        change = float(np.abs(x_new - x0).max() / max(np.abs(x0).max(), 1e-300))
        report["polish"] = {"newton_steps": steps, "rounds": rounds, "kkt_residual": res,
                            "relative_change": change, "active_blocks": len(groups),
                            "active_rows": int(sum(len(r) for r in rows)),
                            "objective_before": obj_old, "objective_after": obj_new}
        xt = torch.as_tensor(x_new.reshape(shape), dtype=p.Xt.dtype, device=p.Xt.device)
        return dataclasses.replace(result, x=xt, certificate=p.certificate(x_new.reshape(shape)))

    def _newton(self, z, Xt, Y, max_steps: int = 30):
        import torch

        res = float("inf")
        for k in range(max_steps):
            G = self._kkt(z, Xt, Y)
            res = float(torch.linalg.vector_norm(G)) / max(1.0, float(torch.linalg.vector_norm(z)))
            if res <= 1e-13:
                return z, k, res
            J = self._jacobian(z, Xt, Y)
            try:
                step = torch.linalg.solve(J, G)
            except RuntimeError:  # singular KKT matrix: dependent active rows
                step = torch.linalg.lstsq(J, G[:, None]).solution[:, 0]
            z = z - step
        return z, max_steps, res

    def _verify(self, z, groups, rows, Xt, Y, report, result):
        """Refuse where the polished KKT point is not locally stable."""
        import torch
        from neurosolve.problems.convex_relu import verified_nnls

        from neurosolve.problems import relu_losses as RL

        p = self.problem
        E = 2.0 * p.D_np - 1.0
        mu = z[self.nu:].cpu().numpy()
        if mu.size and mu.min() <= 1e-9 * max(1.0, float(np.abs(mu).max())):
            raise ImplicitDiffError(
                f"a cone constraint is active with multiplier {mu.min():.1e} (not strictly "
                "positive): a neuron sits exactly on a sample's activation boundary, and the "
                "answer has only one-sided derivatives there", report, result)
        J = self._jacobian(z, Xt, Y)
        sv = torch.linalg.svdvals(J)
        if float(sv.min()) <= 1e-12 * float(sv.max()):
            raise ImplicitDiffError(
                "the reduced KKT matrix of the convex ReLU solution is singular (the active "
                "constraints of a neuron are linearly dependent): the answer is not "
                "differentiable there", report, result)
        U = z[: self.nu].reshape(len(groups), p.d).cpu().numpy()
        Z = np.zeros((p.n, p.c))
        for k, (s, i, o) in enumerate(groups):
            Z[:, o] += (1.0 if s == 0 else -1.0) * p.D_np[:, i] * (p.Xt_np @ U[k])
        gZ = RL.loss_grad(p.loss, Z, Y.cpu().numpy(), p.w)
        active = set(groups)
        worst = 0.0
        for s in range(2):
            for i in range(p.P):
                for o in range(p.c):
                    if (s, i, o) in active:
                        continue
                    a = (1.0 if s == 0 else -1.0) * (p.Xt_np.T @ (p.D_np[:, i] * gZ[:, o]))
                    _, c_g = verified_nnls((E[:, i:i + 1] * p.Xt_np).T, a, maxiter=50 * p.d + 500)
                    worst = max(worst, c_g / p.beta)
        report["dual_margin"] = 1.0 - worst
        if worst >= 1.0 - 1e-7:
            raise ImplicitDiffError(
                f"a switched-off neuron is at the edge of its dual ball (ratio {worst:.8f} of "
                "beta): it is about to switch on, so the answer is not differentiable here",
                report, result)

    # ---------------------------------------------------------------- the adjoint
    def root(self, x):
        return self._z

    def optimality(self, z):
        Xt, Y = self.problem.torch_data()
        return self._kkt(z, Xt, Y)

    def solve_adjoint(self, g, rtol: float, max_iter: int, x0=None):  # x0: dense, unused
        import torch

        J = self._J.to(g.dtype)
        lam = torch.linalg.solve(J.T, -g)
        rel = float(torch.linalg.vector_norm(J.T @ lam + g) / torch.linalg.vector_norm(g))
        status = Status.CONVERGED if rel <= max(rtol, 1e-9) else Status.BREAKDOWN
        return lam, {"solver": "dense KKT (LU)", "n_iter": 1, "status": status,
                     "message": "" if status is Status.CONVERGED else
                     "the dense KKT solve lost accuracy (ill-conditioned active set)",
                     "relative_residual": rel}

    def embed(self, z):
        """The full ``(2, P, d[, c])`` solution with the active blocks taken from ``z``
        (zero blocks stay zero and get no gradient)."""
        import torch

        p = self.problem
        idx = torch.tensor([((s * p.P + i) * p.d + j) * p.c + o for s, i, o in self.groups
                            for j in range(p.d)], device=z.device)
        flat = torch.zeros(2 * p.P * p.d * p.c, dtype=z.dtype, device=z.device)
        flat = flat.index_put((idx,), z[: self.nu])
        return flat.reshape(p.x_shape)
