"""Smooth unconstrained minimization ``min_x f(x)``: the problem type and its oracles.

:class:`Minimize` holds ``f`` and its derivatives, given as callables or derived by torch
autograd when ``f`` is a torch function, a metric ``B`` (the norm in which the gradient
is measured), optional structure used by Hessian approximations (a residual ``u`` for
Gauss-Newton, per-sample gradients for the empirical Fisher), and per-backend kernels
(the gallery's numba oracles). Solvers read the oracles through
``problem.oracles(backend_name)``; the certificate is the objective and the gradient norm,
recomputed from scratch.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from neurosolve.backends.ops import to_numpy as _np
from neurosolve.backends import is_torch

__all__ = ["Minimize"]

_ORACLE_KEYS = ("fun", "grad", "fun_and_grad", "hess", "hessp", "hess_diag", "residual",
                "residual_jac", "residual_jvp", "residual_vjp", "power", "sample_grads",
                "fisher_reg", "weighted_gn")


class Minimize:
    """Minimize a smooth function ``f: R^d -> R``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> float`` (numpy) or a 0-d tensor (torch).
    grad : callable, optional
        ``grad(x) -> array of shape (d,)``. Omitted for a torch ``fun``: autograd.
    x0 : array of shape (d,)
        Default starting point; fixes the dimension, the array library (numpy or torch)
        and the device.
    hess : callable, optional
        ``hess(x) -> (d, d)`` dense Hessian. Omitted for a torch ``fun``: autograd.
    hessp : callable, optional
        ``hessp(x, v) -> H(x) v``. Omitted for a torch ``fun``: autograd (double backward).
    fun_and_grad : callable, optional
        ``fun_and_grad(x) -> (f, g)`` sharing work between the two (used when given).
    B : None, (d,) or (d, d) array
        The metric: identity, a positive diagonal, or an SPD matrix. The gradient norm in
        the certificate and in stopping rules is the dual norm ``sqrt(g^T B^{-1} g)``.
    f_star : float, optional
        The optimal value, when known: the certificate then reports ``f_gap``.
    residual, residual_jac, power : optional
        Structure ``f = (1/p) ||u(x)||^p`` for Gauss-Newton approximations
        (:meth:`composite` builds ``fun``/``grad``/``hess`` from these).
    sample_grads : callable, optional
        ``x -> G`` (m, d) per-sample gradients of ``f = (1/m) sum_i l_i + (fisher_reg/2)||x||^2``
        for the empirical Fisher ``G^T G / m + fisher_reg I``.
    sample_losses : callable, optional
        torch only: ``x -> (m,)`` per-sample losses; their Jacobian gives ``sample_grads``.
    fisher_reg : float
        The ridge added to the empirical Fisher.
    hessian : str or HessianApprox, optional
        The approximation a solver uses by default (``"exact"`` when omitted).
    structure : dict, optional
        Further named oracles (``hess_diag``, ``weighted_gn``...).
    kernels : dict, optional
        ``{"numba": {name: callable}}``: oracles that replace the defaults on a backend.
    data : dict, optional
        The raw data behind the oracles (gallery problems set it, e.g. ``A``, ``y``, ``mu``),
        so peers and reports can rebuild the objective elsewhere.
    name : str
        A label for reports.

    Attributes
    ----------
    n : int
        The dimension.
    array_library : {"numpy", "torch"}
    device : str
    metric : neurosolve.problems.metric.Metric

    Raises
    ------
    ValueError
        ``x0`` missing or not 1-D or not finite; a non-finite ``f`` or gradient at ``x0``;
        a gradient or Hessian of the wrong shape; a bad metric ``B``.
    TypeError
        ``fun`` not callable; numpy ``x0`` without ``grad``; mixed numpy / torch inputs.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> Q = np.diag([1.0, 10.0]); c = np.array([1.0, 1.0])
    >>> prob = ns.problems.Minimize(lambda x: 0.5 * x @ Q @ x - c @ x, lambda x: Q @ x - c,
    ...                             np.zeros(2), hess=lambda x: Q)
    >>> res = ns.solve(prob, ns.solvers.GNSNewton(gtol=1e-10))
    >>> np.allclose(res.x, [1.0, 0.1])
    True
    """

    def __init__(self, fun: Callable, grad: Callable | None = None, x0: Any = None, *,
                 hess: Callable | None = None, hessp: Callable | None = None,
                 fun_and_grad: Callable | None = None, B: Any = None,
                 f_star: float | None = None, residual: Callable | None = None,
                 residual_jac: Callable | None = None, power: float | None = None,
                 sample_grads: Callable | None = None, sample_losses: Callable | None = None,
                 fisher_reg: float = 0.0, hessian: Any = None, structure: dict | None = None,
                 kernels: dict | None = None, data: dict | None = None,
                 name: str = "minimize"):
        from neurosolve.problems.metric import Metric

        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        if x0 is None:
            raise ValueError("x0 is required: it fixes the dimension, array library and device")
        if isinstance(x0, (list, tuple)):
            x0 = np.asarray(x0, dtype=float)
        if not (is_torch(x0) or isinstance(x0, np.ndarray)):
            raise TypeError(f"x0 must be a numpy array or torch tensor, got {type(x0).__name__}")
        if x0.ndim != 1:
            raise ValueError(f"x0 must be a 1-D vector, got shape {tuple(x0.shape)}")
        if isinstance(x0, np.ndarray) and not np.issubdtype(x0.dtype, np.floating):
            x0 = x0.astype(float)
        self.array_library = "torch" if is_torch(x0) else "numpy"
        self.device = str(x0.device) if is_torch(x0) else "cpu"
        self.n = int(x0.shape[0])
        self.x0 = x0
        self.name = name
        self.data = dict(data) if data else {}
        self.f_star = None if f_star is None else float(f_star)
        for nm, fn in (("grad", grad), ("hess", hess), ("hessp", hessp),
                       ("fun_and_grad", fun_and_grad), ("residual", residual),
                       ("residual_jac", residual_jac), ("sample_grads", sample_grads),
                       ("sample_losses", sample_losses)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{nm} must be callable, got {type(fn).__name__}")
        torch_ = self.array_library == "torch"
        if sample_losses is not None and not torch_:
            raise TypeError("sample_losses needs a torch x0 (autograd); "
                            "for numpy pass sample_grads=")

        base: dict[str, Any] = {"fun": fun, "grad": grad, "hess": hess, "hessp": hessp,
                                "fun_and_grad": fun_and_grad, "residual": residual,
                                "residual_jac": residual_jac, "power": power,
                                "sample_grads": sample_grads, "fisher_reg": fisher_reg}
        if torch_:
            _add_autograd(base, fun, residual, sample_losses)
        elif grad is None and fun_and_grad is None:
            raise TypeError("grad is required for a numpy fun (pass grad= or fun_and_grad=, or "
                            "write fun with torch and pass a torch x0 to use autograd)")
        if base["fun_and_grad"] is None:
            f_, g_ = base["fun"], base["grad"]
            base["fun_and_grad"] = lambda x: (f_(x), g_(x))
        if base["grad"] is None:
            fg = base["fun_and_grad"]
            base["grad"] = lambda x: fg(x)[1]
        if not torch_ and residual_jac is not None:
            J_ = residual_jac
            base["residual_jvp"] = lambda x, v: J_(x) @ v
            base["residual_vjp"] = lambda x, w: J_(x).T @ w
        if base["hessp"] is None and base["hess"] is not None:
            h_ = base["hess"]
            base["hessp"] = lambda x, v: h_(x) @ v
        for k, v in (structure or {}).items():
            if k not in _ORACLE_KEYS:
                raise ValueError(f"unknown structure oracle {k!r}; "
                                 f"known: {', '.join(_ORACLE_KEYS)}")
            base[k] = v
        self._oracles = base
        self._kernels = {}
        for bk, table in (kernels or {}).items():
            if bk not in ("numpy", "numba", "torch"):
                raise ValueError(f"kernels keys must be backend names, got {bk!r}")
            unknown = set(table) - set(_ORACLE_KEYS)
            if unknown:
                raise ValueError(f"unknown kernel oracle(s) {sorted(unknown)}")
            self._kernels[bk] = dict(table)
        self.metric = B if isinstance(B, Metric) else Metric(
            B, self.n, self.array_library, like=x0 if torch_ else None)
        self.hessian = hessian
        self._validate_x0(x0)

    # -- construction helpers ---------------------------------------------------------------
    @classmethod
    def composite(cls, residual: Callable, jac: Callable | None, x0: Any, *, p: float = 2.0,
                  residual_hess: Callable | None = None, **kwargs) -> "Minimize":
        """``f(x) = (1/p) ||u(x)||^p`` from the residual ``u`` and its Jacobian ``J``.

        ``grad = ||u||^{p-2} J^T u``; the exact Hessian
        ``||u||^{p-2} (J^T J + sum_i u_i grad^2 u_i) + (p-2) ||u||^{p-4} (J^T u)(J^T u)^T``
        is available when ``residual_hess(x, w) = sum_i w_i grad^2 u_i(x)`` is given (or
        from autograd for torch). Gauss-Newton (:class:`GaussNewton`) and the Fisher term
        (:class:`FisherTerm`) need only ``u`` and ``J``.

        Parameters
        ----------
        residual : callable
            ``x -> u`` (m,).
        jac : callable or None
            ``x -> J`` (m, d). None for torch: autograd.
        x0 : array
        p : float
            The power, ``p >= 2``.
        residual_hess : callable, optional
            ``(x, w) -> sum_i w_i grad^2 u_i(x)`` (d, d).
        **kwargs
            Passed to :class:`Minimize` (``B``, ``f_star``, ``name``, ``kernels``...).
        """
        if not isinstance(p, (int, float)) or p < 2:
            raise ValueError(f"p must be a number >= 2, got {p!r}")
        p = float(p)
        torch_ = is_torch(x0)
        if jac is None and torch_:
            import torch

            jac = lambda x: torch.func.jacrev(residual)(x)  # noqa: E731

        if jac is None:
            raise TypeError("jac is required for a numpy residual")

        def fun(x):
            u = residual(x)
            return ((u * u).sum() ** (p / 2)) / p

        def fun_and_grad(x):
            u = residual(x)
            nu2 = (u * u).sum()
            J = jac(x)
            g = J.T @ u
            if p != 2:
                g = g * nu2 ** ((p - 2) / 2)
            return nu2 ** (p / 2) / p, g

        hess = None
        if residual_hess is not None:
            def hess(x):
                u = residual(x)
                J = jac(x)
                nu = (u * u).sum() ** 0.5
                Jtu = J.T @ u
                H = J.T @ J + residual_hess(x, u)
                if p != 2:
                    H = nu ** (p - 2) * H
                    if float(nu) > 0:
                        outer = (np.outer(Jtu, Jtu) if not torch_
                                 else __import__("torch").outer(Jtu, Jtu))
                        H = H + (p - 2) * nu ** (p - 4) * outer
                return H

        return cls(fun, None if torch_ else (lambda x: fun_and_grad(x)[1]), x0,
                   fun_and_grad=fun_and_grad, hess=hess, residual=residual, residual_jac=jac,
                   power=p, **kwargs)

    # -- oracles ---------------------------------------------------------------------------
    def oracles(self, backend: str = "numpy") -> dict[str, Any]:
        """The oracle table for ``backend`` (kernels of that backend override the defaults)."""
        table = dict(self._oracles)
        if backend == "numba" and "numba" not in self._kernels:
            backend = "numpy"
        table.update(self._kernels.get(backend, {}))
        own = self._kernels.get(backend, {})
        if "fun_and_grad" not in own and ("fun" in own or "grad" in own):
            f_, g_ = table["fun"], table["grad"]
            table["fun_and_grad"] = lambda x: (f_(x), g_(x))
        return table

    def fun(self, x):
        """``f(x)`` (default kernels)."""
        return self._oracles["fun"](x)

    def grad(self, x):
        """``grad f(x)`` (default kernels)."""
        return self._oracles["grad"](x)

    def hess(self, x):
        """The exact Hessian at ``x`` (needs ``hess`` or autograd)."""
        h = self._oracles.get("hess")
        if h is None:
            raise ValueError(f"problem {self.name!r} has no dense Hessian oracle")
        return h(x)

    @property
    def dtype(self):
        return self.x0.dtype

    # -- validation and certificate --------------------------------------------------------
    def check_point(self, x, who: str = "x0", oracles: dict | None = None):
        """Evaluate ``(f, g)`` at ``x`` and raise a clear error for bad shapes or values.

        Returns ``(f, g, message)`` where ``message`` is None or says what is non-finite.
        """
        if tuple(x.shape) != (self.n,):
            raise ValueError(f"{who} has shape {tuple(x.shape)}; "
                             f"the problem has dimension {self.n}")
        f, g = (oracles or self._oracles)["fun_and_grad"](x)
        if not hasattr(g, "shape") or tuple(g.shape) != (self.n,):
            shape = tuple(g.shape) if hasattr(g, "shape") else type(g).__name__
            raise ValueError(f"grad returned shape {shape} at {who}; expected ({self.n},)")
        gd = g.dtype
        real = (gd.is_floating_point and not gd.is_complex) if is_torch(g) else \
            np.issubdtype(gd, np.floating)
        if not real:
            raise TypeError(f"grad returned dtype {gd} at {who}; expected a real floating dtype "
                            "(complex gradients are not supported)")
        if getattr(f, "ndim", 0) != 0 or isinstance(f, (list, tuple)):
            raise ValueError(f"f returned {type(f).__name__} of shape "
                             f"{tuple(getattr(f, 'shape', (len(f),)))} at {who}; expected a scalar")
        fv = float(f)
        gfin = bool(np.all(np.isfinite(_np(g))))
        msg = None
        if not np.isfinite(fv):
            msg = f"f({who}) = {fv} is not finite"
        elif not gfin:
            msg = f"the gradient at {who} has non-finite entries"
        return f, g, msg

    def _validate_x0(self, x0):
        xs = _np(x0)
        if not np.all(np.isfinite(xs)):
            raise ValueError("x0 contains NaN or inf entries")
        _, _, msg = self.check_point(x0, "x0")
        if msg is not None:
            raise ValueError(f"{msg}; start from a point where f and its gradient are finite")

    def optimality(self, x):
        """The gradient ``grad f(x)`` with a graph (``create_graph``): the condition
        :mod:`neurosolve.adjoint` differentiates. ``x`` must require grad; gradients reach
        the tensors ``fun`` uses. Needs a torch ``fun``."""
        if self.array_library != "torch":
            raise TypeError("optimality needs a torch fun (autograd); this problem holds numpy "
                            "oracles, whose derivative with respect to their data is unknown")
        import torch

        with torch.enable_grad():
            f = self._oracles["fun"](x)
            if not (is_torch(f) and f.requires_grad):
                raise TypeError("fun(x) returned a value without a graph to x; the implicit "
                                "adjoint needs fun written with torch operations")
            (g,) = torch.autograd.grad(f, x, create_graph=True)
        return g

    def certificate(self, x) -> dict[str, float]:
        """Objective and gradient norms at ``x``, recomputed from scratch.

        Returns ``f``, ``grad_norm`` (the dual norm ``sqrt(g^T B^{-1} g)``, the quantity the
        solvers' ``gtol`` refers to), ``grad_norm_2`` (Euclidean), ``grad_norm_inf`` and,
        when ``f_star`` is known, ``f_gap = f - f_star``.
        """
        f, g = self._oracles["fun_and_grad"](x)
        cert = {"f": float(f),
                "grad_norm": float(self.metric.dual_norm(g)),
                "grad_norm_2": float(np.linalg.norm(_np(g))),
                "grad_norm_inf": float(np.max(np.abs(_np(g)))) if self.n else 0.0}
        if self.f_star is not None:
            cert["f_gap"] = cert["f"] - self.f_star
        return cert

    def __repr__(self):
        return (f"<Minimize {self.name!r} n={self.n} library={self.array_library} "
                f"metric={self.metric.kind}>")


def _add_autograd(base: dict, fun, residual, sample_losses):
    """Fill the missing torch oracles with autograd (gradient, Hessian, products)."""
    import torch

    if base["fun_and_grad"] is None and base["grad"] is None:
        def fun_and_grad(x):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                f = fun(xr)
                (g,) = torch.autograd.grad(f, xr)
            return f.detach(), g

        base["fun_and_grad"] = fun_and_grad
    if base["hess"] is None:
        base["hess"] = lambda x: torch.autograd.functional.hessian(fun, x.detach())
    if base["hessp"] is None:
        def hessp(x, v):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(fun(xr), xr, create_graph=True)
                (hv,) = torch.autograd.grad(g, xr, grad_outputs=v)
            return hv.detach()

        base["hessp"] = hessp
    if residual is not None:
        if base["residual_jac"] is None:
            base["residual_jac"] = lambda x: torch.func.jacrev(residual)(x.detach())
        base["residual_jvp"] = lambda x, v: torch.func.jvp(residual, (x.detach(),), (v,))[1]
        base["residual_vjp"] = lambda x, w: torch.func.vjp(residual, x.detach())[1](w)[0]
    if sample_losses is not None and base["sample_grads"] is None:
        base["sample_grads"] = lambda x: torch.func.jacrev(sample_losses)(x.detach())
