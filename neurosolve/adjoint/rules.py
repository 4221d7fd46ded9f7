"""Adjoint rules: for each problem type, its optimality condition ``G(x) = 0`` and the
solve of the adjoint system ``(dG/dx)^T lam = -g``.

A rule is built from the problem, the forward solver and the :class:`Implicit`
configuration; :mod:`neurosolve.adjoint.attach` evaluates ``rule.optimality(x*)`` once with
autograd recording (the graph from the problem's tensors to ``G``) and calls
``rule.solve_adjoint(g, rtol, max_iter)`` in the backward pass. Autograd then carries
``lam`` through that graph: ``dL/dtheta = lam^T dG/dtheta``.

==================  ==========================  ===========================================
problem             ``G(x)``                    adjoint solve
==================  ==========================  ===========================================
LinearSystem        ``A x - b``                 ``A lam = -g`` with the forward solver and
                                                preconditioner (SPD: ``A^T = A``)
Minimize            ``grad f(x)``               ``H lam = -g`` by CG on Hessian-vector
                                                products
FixedPointProblem   ``F(z) - z``                ``u = J^T u + g`` with the forward
                                                fixed-point method and damping
ConvexReLU          KKT of the program reduced  dense LU of the reduced KKT matrix, after
                    to its active set           an active-set polish of the answer
                                                (:mod:`neurosolve.adjoint.relu_rule`)
==================  ==========================  ===========================================

References
----------
.. [1] M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer, F. Llinares-Lopez,
   F. Pedregosa, J.-P. Vert, "Efficient and Modular Implicit Differentiation", NeurIPS
   2022, arXiv:2105.15183.
.. [2] S. Bai, J. Z. Kolter, V. Koltun, "Deep Equilibrium Models", NeurIPS 2019.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from neurosolve.core import solve

__all__ = ["rule_for", "linear_vjp", "LinearRule", "MinimizeRule", "FixedPointRule"]


def _needs_torch(problem, what: str) -> None:
    if getattr(problem, "array_library", None) != "torch":
        raise TypeError(
            f'adjoint="implicit" differentiates torch tensors, and this {what} holds numpy '
            "data; build the problem from torch tensors (for a LinearSystem of explicit "
            'matrices, problem.to("cpu") converts it)')


def _info(res, solver) -> dict[str, Any]:
    return {"solver": type(solver).__name__, "n_iter": int(res.n_iter), "status": res.status,
            "message": res.message,
            "relative_residual": float(res.certificate.get("relative_residual", np.nan))}


class LinearRule:
    """``G = A x - b``; the adjoint is the same SPD system with right-hand side ``-g``.

    The forward solver's configuration is reused, preconditioner included: an SPD ``M``
    is its own transpose, so the adjoint solve is preconditioned exactly as the forward
    one (dropping it is the defect lineax fixed in its transpose rule). A singular
    system's cotangent is projected onto the range first, so ``lam`` is orthogonal to the
    null space and the gradient is the one along null-space-preserving changes of ``A``.
    """

    #: the forward's iterations are Krylov iterations on the same operator: an adjoint
    #: that needs many more is suspicious (see attach)
    comparable_iterations = True

    def __init__(self, problem, solver, config, *, need_torch: bool = True):
        if need_torch:
            _needs_torch(problem, "LinearSystem")
        if not problem.spd:
            raise NotImplementedError(
                'adjoint="implicit" supports symmetric positive (semi-)definite systems (the '
                "CG family); this LinearSystem was built with spd=False")
        self.problem, self.solver, self.config = problem, solver, config

    def default_rtol(self) -> float:
        return float(getattr(self.solver, "rtol", 1e-8))

    def default_max_iter(self, n_forward: int) -> int:
        return max(50, 3 * n_forward)

    def optimality(self, x):
        return self.problem.optimality(x)

    def solve_adjoint(self, g, rtol: float, max_iter: int, x0=None):
        from neurosolve.problems import LinearSystem

        p = self.problem
        g = p.project_range(g)  # the answer's components outside range(A) never move
        system = LinearSystem(p.A, g, spd=True, nullspace=p.nullspace)
        solver = self.config.solver or dataclasses.replace(
            self.solver, rtol=rtol, atol=0.0, maxiter=max_iter, callback=None)
        res = solve(system, solver, None if x0 is None else -x0)  # A (-lam) = g
        return -res.x, _info(res, solver)


class MinimizeRule:
    """``G = grad f(x)``; the adjoint is ``H lam = -g`` with Hessian-vector products of
    ``fun`` (exact, by double backward), solved by CG.

    Whatever Hessian approximation the forward solver used changed only its path; the
    adjoint uses the exact Hessian. CG needs ``H`` positive definite at the answer (a
    strict local minimum); otherwise the adjoint solve reports BREAKDOWN and backward
    raises.
    """

    comparable_iterations = False  # Newton steps vs CG iterations

    def __init__(self, problem, solver, config):
        _needs_torch(problem, "Minimize")
        self.problem, self.solver, self.config = problem, solver, config

    def default_rtol(self) -> float:
        return 1e-10

    def default_max_iter(self, n_forward: int) -> int:
        return max(50, 3 * n_forward, 2 * self.problem.n)

    def optimality(self, x):
        self._x = x.detach().requires_grad_(True)
        self._r = self.problem.optimality(self._x)
        return self._r

    def solve_adjoint(self, g, rtol: float, max_iter: int, x0=None):
        import torch

        from neurosolve.operators import aslinearoperator
        from neurosolve.problems import LinearSystem
        from neurosolve.solvers import CG

        r, x = self._r, self._x

        def hvp(v):
            (hv,) = torch.autograd.grad(r, x, v, retain_graph=True)
            return hv

        n = int(g.shape[0])
        H = aslinearoperator(hvp, linear=True, spd=True, shape=(n, n))
        solver = self.config.solver or CG(rtol=rtol, maxiter=max_iter, flexible=False)
        res = solve(LinearSystem(H, -g), solver, x0)
        return res.x, _info(res, solver)


class FixedPointRule:
    """``G = F(z) - z``; the adjoint is the fixed point ``u = J^T u + g`` (``J = dF/dz``
    at ``z*``), solved with the forward method and damping: damped iteration on it has the
    transposed linearization, hence the forward's contraction rate.
    """

    comparable_iterations = True

    def __init__(self, problem, solver, config):
        _needs_torch(problem, "FixedPointProblem")
        self.problem, self.solver, self.config = problem, solver, config

    def default_rtol(self) -> float:
        return float(max(getattr(self.solver, "rtol", 1e-10), 1e-12))

    def default_max_iter(self, n_forward: int) -> int:
        return max(50, 3 * n_forward)

    def optimality(self, z):
        self._z = z.detach().requires_grad_(True)
        self._r = self.problem.optimality(self._z)
        return self._r

    def solve_adjoint(self, g, rtol: float, max_iter: int, x0=None):
        import torch

        from neurosolve.problems.fixed_point import FixedPointProblem

        r, z = self._r, self._z

        def adjoint_map(u):
            # J^T u = (J - I)^T u + u, one vector-Jacobian product of G
            (jtu,) = torch.autograd.grad(r, z, u, retain_graph=True)
            return jtu + u + g

        prob = FixedPointProblem(adjoint_map, torch.zeros_like(g) if x0 is None else x0,
                                 batched=self.problem.batched, validate=False, name="adjoint")
        # the tolerance is relative to the (unit) cotangent, not to the iterate
        solver = self.config.solver or dataclasses.replace(
            self.solver, rtol=0.0, atol=rtol, maxiter=max_iter, callback=None)
        res = solve(prob, solver)
        info = _info(res, solver)
        info["relative_residual"] = float(res.certificate.get("residual", np.nan))
        return res.x, info


def linear_vjp(problem, result, g, *, solver=None, adjoint=None) -> dict[str, Any]:
    """The implicit vector-Jacobian product of a linear solve, for numpy/scipy systems.

    Torch systems get gradients from ``solve(..., adjoint="implicit")``; a numpy or scipy
    system has no autograd, so this returns the gradients of ``L`` with cotangent
    ``g = dL/dx`` at ``result.x`` directly: ``b = A^{-1} g`` and ``A = -lam x^T``
    (for a sparse ``A`` only on its stored entries, as a CSR matrix of the same pattern).

    Parameters
    ----------
    problem : LinearSystem
    result : Result
        The forward solve of ``problem`` (must be CONVERGED unless
        ``adjoint.on_unconverged="warn"``).
    g : array of shape (n,)
        The cotangent.
    solver : Solver, optional
        The forward solver (its configuration and preconditioner solve the adjoint);
        default CG.
    adjoint : Implicit, optional
        Tolerance and iteration cap of the adjoint solve.

    Returns
    -------
    dict
        ``"b"``, ``"A"`` (dense array, CSR matrix of ``A``'s pattern, or None for an
        operator without entries) and ``"report"`` (the adjoint solve's numbers).

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]]); b = np.array([1.0, 2.0])
    >>> prob = ns.problems.LinearSystem(A, b)
    >>> res = ns.solve(prob, ns.solvers.CG(rtol=1e-12))
    >>> d = ns.adjoint.linear_vjp(prob, res, np.ones(2))
    >>> bool(np.allclose(d["b"], np.linalg.solve(A, np.ones(2))))
    True
    """
    import scipy.sparse as sp

    from neurosolve.adjoint.config import Implicit, ImplicitDiffError
    from neurosolve.backends.ops import to_numpy
    from neurosolve.core import Status
    from neurosolve.operators import MatrixOperator
    from neurosolve.solvers import CG

    config = adjoint if adjoint is not None else Implicit()
    solver = solver if solver is not None else CG(rtol=1e-10)
    if result.status is not Status.CONVERGED and config.on_unconverged == "raise":
        raise ImplicitDiffError(
            f"the forward solve ended {result.status.name}; its answer is not the root the "
            'gradient formula assumes (pass adjoint=Implicit(on_unconverged="warn") to '
            "accept an approximate gradient)", result=result)
    rule = LinearRule(problem, solver, config, need_torch=False)
    g = np.asarray(to_numpy(g), dtype=float).reshape(-1)
    gn = float(np.linalg.norm(g))
    x = np.asarray(to_numpy(result.x), dtype=float)
    if gn == 0.0:
        lam = np.zeros_like(g)
        info = {"solver": None, "n_iter": 0, "status": Status.CONVERGED,
                "relative_residual": 0.0}
    else:
        rtol = config.rtol if config.rtol is not None else rule.default_rtol()
        max_iter = config.max_iter or rule.default_max_iter(result.n_iter)
        neg, info = rule.solve_adjoint(g / gn, max(rtol, 1e-14), max_iter)
        lam = -np.asarray(to_numpy(neg)) * gn
        if info["status"] is not Status.CONVERGED and config.on_unconverged == "raise":
            raise ImplicitDiffError(f"the adjoint solve ended {info['status'].name} at relative "
                                    f"residual {info['relative_residual']:.2e}", info)
    gA = None
    op = problem.A
    if isinstance(op, MatrixOperator) and op.array_library == "numpy":
        if sp.issparse(op.matrix):
            C = sp.csr_matrix(op.matrix)
            rows = np.repeat(np.arange(C.shape[0]), np.diff(C.indptr))
            gA = sp.csr_matrix((-lam[rows] * x[C.indices], C.indices.copy(), C.indptr.copy()),
                               shape=C.shape)
        else:
            gA = -np.outer(lam, x)
    return {"b": lam, "A": gA, "report": info}


def rule_for(problem, solver, config):
    """The adjoint rule of ``problem``'s type; raises before any work for what cannot be
    differentiated."""
    from neurosolve.problems import LinearSystem, Minimize
    from neurosolve.problems.fixed_point import FixedPointProblem

    if isinstance(problem, LinearSystem):
        return LinearRule(problem, solver, config)
    if isinstance(problem, Minimize):
        return MinimizeRule(problem, solver, config)
    if isinstance(problem, FixedPointProblem):
        return FixedPointRule(problem, solver, config)
    if type(problem).__name__ == "ConvexReLU":
        from neurosolve.adjoint.relu_rule import ConvexReLURule

        return ConvexReLURule(problem, solver, config)
    name = type(problem).__name__
    if name == "Bilevel":
        raise NotImplementedError(
            'adjoint="implicit" does not apply to Bilevel problems: the derivative of a '
            "bilevel solution needs second-order information at both levels, which LV-HBA "
            'is built to avoid; use adjoint="unrolled" through the torch iterations')
    raise NotImplementedError(
        f'adjoint="implicit" is not available for {name} problems (supported: LinearSystem, '
        "Minimize, FixedPointProblem, ConvexReLU; for your own solver use "
        "neurosolve.implicit_root)")

