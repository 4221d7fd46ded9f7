"""Implicit differentiation for users' own solvers: :func:`implicit_root`, :func:`attach`
and :func:`implicit_fixed_point`."""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from neurosolve.adjoint.attach import reattach
from neurosolve.adjoint.config import Implicit
from neurosolve.core import Status

__all__ = ["implicit_root", "attach", "implicit_fixed_point"]


def attach(x_star, optimality_fn: Callable, *args, symmetric: bool = False,
           adjoint: Implicit | None = None, report: dict | None = None, **kwargs):
    """Reattach an externally computed root to the autograd graph of its parameters.

    Parameters
    ----------
    x_star : torch.Tensor
        A root of ``optimality_fn(x, *args, **kwargs) = 0`` (its graph, if any, is
        dropped).
    optimality_fn : callable
        ``G(x, *args, **kwargs)``, a torch function returning a tensor shaped like ``x``.
    *args, **kwargs
        Its parameters; tensors among them (and tensors ``G`` captures) that require grad
        receive ``lam^T dG/dtheta`` in backward.
    symmetric : bool
        ``dG/dx`` is symmetric positive definite (``G`` is a gradient of a convex
        function): the adjoint is solved by CG, otherwise by GMRES (scipy, on the host).
    adjoint : Implicit, optional
        Tolerance and iteration cap of the adjoint solve (defaults: rtol 1e-10, 100 times
        the size of ``x`` at most 1000 iterations).
    report : dict, optional
        Filled by backward with the adjoint solve's solver, iterations, residual, status.

    Returns
    -------
    torch.Tensor
        ``x_star``'s values, with ``grad_fn`` when something requires grad.

    Examples
    --------
    >>> import torch, neurosolve as ns
    >>> theta = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    >>> x = ns.adjoint.attach(theta.detach() ** (1 / 3), lambda x, t: x ** 3 - t, theta)
    >>> x.backward()
    >>> round(float(theta.grad), 6)  # d(theta^(1/3))/dtheta = 1 / (3 x^2) = 1/12
    0.083333
    """
    import torch

    config = adjoint if adjoint is not None else Implicit(rtol=1e-10)
    if not isinstance(config, Implicit):
        raise TypeError(f"adjoint must be a neurosolve.adjoint.Implicit, got "
                        f"{type(config).__name__}")
    if not torch.is_tensor(x_star):
        raise TypeError(f"x_star must be a torch tensor, got {type(x_star).__name__}")
    holder: dict[str, Any] = {}

    def optimality(x):
        xv = x.detach().requires_grad_(True)
        r = optimality_fn(xv, *args, **kwargs)
        if not torch.is_tensor(r) or r.shape != x.shape:
            raise ValueError(f"optimality_fn must return a tensor shaped like x {tuple(x.shape)}, "
                             f"got {getattr(r, 'shape', type(r).__name__)}")
        holder["x"], holder["r"] = xv, r
        return r

    def solve_adjoint(g, rtol, max_iter, x0=None):  # Krylov from zero: x0 unused
        xv, r = holder["x"], holder["r"]

        def vjp(v):
            (jtv,) = torch.autograd.grad(r, xv, v.reshape(r.shape), retain_graph=True,
                                         allow_unused=True)
            if jtv is None:
                raise ValueError("optimality_fn does not depend on x")
            return jtv.reshape(-1)

        if symmetric:
            return _cg(vjp, g, rtol, max_iter)
        return _gmres(vjp, g, rtol, max_iter)

    n = int(x_star.numel())
    return reattach(x_star, optimality, solve_adjoint, config=config,
                    defaults=(1e-10, min(1000, max(50, 100 * n))), n_forward=0,
                    report=report if report is not None else {})


def _cg(vjp, g, rtol, max_iter):
    from neurosolve.solvers.cg import spd_solve

    flat = g.reshape(-1)
    lam, k, rr, status = spd_solve(vjp, -flat, rtol=rtol, maxiter=max_iter)
    return lam.reshape(g.shape), {"solver": "CG", "n_iter": int(k), "status": status,
                                  "relative_residual": float(rr), "message": status.message}


def _gmres(vjp, g, rtol, max_iter):
    """GMRES on the host (scipy) for a nonsymmetric ``(dG/dx)^T``."""
    import torch
    from scipy.sparse.linalg import LinearOperator, gmres

    flat = g.reshape(-1)
    n = int(flat.numel())
    complex_ = flat.dtype.is_complex
    dtype = np.complex128 if complex_ else np.float64

    def mv(v):
        t = torch.as_tensor(np.asarray(v).reshape(-1), dtype=flat.dtype, device=flat.device)
        return vjp(t).detach().cpu().numpy().astype(dtype)

    op = LinearOperator((n, n), matvec=mv, dtype=dtype)
    rhs = -flat.detach().cpu().numpy().astype(dtype)
    count = [0]
    sol, info = gmres(op, rhs, rtol=rtol, atol=0.0, restart=min(n, 50), maxiter=max_iter,
                      callback=lambda _: count.__setitem__(0, count[0] + 1),
                      callback_type="pr_norm")
    res = np.linalg.norm(rhs - op.matvec(sol)) / max(np.linalg.norm(rhs), 1e-300)
    status = Status.CONVERGED if info == 0 and res <= 10 * rtol else (
        Status.BREAKDOWN if info < 0 else Status.MAX_ITER)
    lam = torch.as_tensor(sol, dtype=flat.dtype, device=flat.device).reshape(g.shape)
    return lam, {"solver": "GMRES", "n_iter": count[0], "status": status,
                 "relative_residual": float(res), "message": status.message}


def implicit_root(optimality_fn: Callable, *, symmetric: bool = False,
                  adjoint: Implicit | None = None):
    """Decorate a root-finding function so that its answer is differentiable.

    ``solver_fn(x0, *args, **kwargs)`` returns a root of ``optimality_fn(x, *args,
    **kwargs) = 0``; the decorated function runs it without autograd recording and
    reattaches its answer with :func:`attach`, so that ``*args``/``**kwargs`` tensors (and
    tensors ``optimality_fn`` captures) get implicit gradients. ``x0`` gets none.

    Parameters
    ----------
    optimality_fn : callable
        ``G(x, *args, **kwargs)``, zero at the answer.
    symmetric : bool
        ``dG/dx`` is SPD: CG for the adjoint instead of GMRES.
    adjoint : Implicit, optional
        The adjoint solve's tolerance and iteration cap.

    Examples
    --------
    >>> import torch, neurosolve as ns
    >>> def G(x, theta):
    ...     return x ** 3 - theta
    >>> @ns.implicit_root(G)
    ... def cube_root(x0, theta, iters=50):  # Newton's method, written by the user
    ...     x = x0
    ...     for _ in range(iters):
    ...         x = x - (x ** 3 - theta) / (3 * x ** 2)
    ...     return x
    >>> theta = torch.tensor([8.0, 27.0], dtype=torch.float64, requires_grad=True)
    >>> x = cube_root(torch.ones(2, dtype=torch.float64), theta)
    >>> x.sum().backward()
    >>> torch.allclose(theta.grad, 1 / (3 * x.detach() ** 2))
    True

    References
    ----------
    .. [1] M. Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS
       2022, arXiv:2105.15183 (``custom_root``).
    """
    if not callable(optimality_fn):
        raise TypeError(f"optimality_fn must be callable, got {type(optimality_fn).__name__}")

    def decorate(solver_fn: Callable) -> Callable:
        @functools.wraps(solver_fn)
        def wrapper(x0, *args, **kwargs):
            import torch

            with torch.no_grad():
                x_star = solver_fn(x0, *args, **kwargs)
            return attach(x_star, optimality_fn, *args, symmetric=symmetric, adjoint=adjoint,
                          **kwargs)

        return wrapper

    return decorate


def implicit_fixed_point(T: Callable, *, adjoint: Implicit | None = None):
    """:func:`implicit_root` for a fixed-point map: ``G(z, *args) = T(z, *args) - z``.

    Examples
    --------
    >>> import torch, neurosolve as ns
    >>> w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    >>> @ns.implicit_fixed_point(lambda z, w: w * z + 1)
    ... def iterate(z0, w):
    ...     z = z0
    ...     for _ in range(200):
    ...         z = w * z + 1
    ...     return z
    >>> z = iterate(torch.zeros((), dtype=torch.float64), w)  # z* = 1 / (1 - w) = 2
    >>> z.backward()
    >>> round(float(w.grad), 6)  # dz*/dw = 1 / (1 - w)^2
    4.0
    """
    return implicit_root(lambda z, *a, **k: T(z, *a, **k) - z, adjoint=adjoint)
