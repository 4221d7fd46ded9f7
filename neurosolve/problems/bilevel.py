"""Bilevel problems whose lower level has constraints coupling both levels.

.. math::

    \\min_{x \\in X,\\ y \\in Y} F(x, y) \\quad \\text{s.t.} \\quad
    y \\in \\arg\\min_{y' \\in Y} \\{ f(x, y') : g(x, y') \\le 0,\\ h(x, y') = 0 \\}

``F`` (upper objective) and ``f`` (lower objective) are plain functions ``(x, y) -> scalar``;
``g`` and ``h`` map ``(x, y)`` to vectors. Gradients and Jacobian-transpose products are
either supplied (``grad_F``, ``grad_f``, ``g_vjp``, ``h_vjp``) or derived by torch
autograd. Problems "given as arrays" use :class:`QuadraticFunction` for ``F``/``f`` and
:class:`AffineFunction` for ``g``/``h``; they need no autograd, have an exact lower-level
solver for the certificate (a QP), and, with :class:`KronIdentity` Hessians, run on
LV-HBA's fused numba kernel.

The joint feasible set ``C`` (a :mod:`neurosolve.problems.sets` object over the
concatenation ``w = (x, y)``) must contain the constraints ``g <= 0, h = 0``: LV-HBA
keeps ``(x, y)`` in ``C`` by projection. When ``g`` and ``h`` are affine and ``C`` is not
given, ``C = (X x Y) ∩ {g <= 0, h = 0}`` is built automatically; a nonlinear ``g``
needs an explicit convex ``C``, and a ``g`` that fails a convexity probe is refused.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from neurosolve.backends import common_library, is_torch
from neurosolve.problems import sets as _sets
from neurosolve.problems.bilevel_functions import (
    AffineFunction,
    KronIdentity,
    QuadraticFunction,
    _numpy,
    _vec_to,
)
from neurosolve.problems.lower_level import qp_lower_level, slsqp_lower_level

__all__ = [
    "Bilevel",
    "BilevelSolution",
    "QuadraticFunction",
    "AffineFunction",
    "KronIdentity",
]


class BilevelSolution(NamedTuple):
    """What :func:`neurosolve.solve` returns as ``Result.x`` for a :class:`Bilevel` problem.

    ``x`` and ``y`` are the upper- and lower-level variables (same library, dtype and
    device as ``x0``); ``z``, ``lam`` and ``theta`` are LV-HBA's auxiliary variables
    (multiplier estimates and the proximal lower-level iterate); ``gamma1``, ``gamma2``,
    ``c`` and ``r`` record the reformulation they belong to, so that
    ``Bilevel.certificate`` can recompute the stationarity residual from scratch. Pass a
    ``BilevelSolution`` (or a plain ``(x, y)`` tuple) as ``x0`` to warm start.
    """

    x: Any
    y: Any
    z: Any = None
    lam: Any = None
    theta: Any = None
    gamma1: float | None = None
    gamma2: float | None = None
    c: float | None = None
    r: float | None = None


# --------------------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------------------
class Oracles:
    """Values, gradients and Jacobian-transpose products for one array library.

    ``F_grad(x, y)`` and ``f_grad(x, y)`` return ``(value, grad_x, grad_y)``;
    ``cons(x, y)`` returns the stacked constraint vector ``[g; h]`` and
    ``cons_vjp(x, y, lam)`` returns ``([g; h], J_x^T lam, J_y^T lam)``. Values are 0-d
    arrays/tensors (no host sync).
    """

    def __init__(self, problem: "Bilevel", library: str):
        self.p = problem
        self.library = library
        self.n, self.m = problem.n, problem.m
        self.ncons = problem.n_ineq + problem.n_eq

    def _cat(self, x, y):
        if is_torch(x):
            import torch

            return torch.cat((x, y))
        return np.concatenate((x, y))

    def _split(self, w):
        return w[: self.n], w[self.n:]

    def _scalar_fn(self, which: str):
        p = self.p
        fn = p.F if which == "F" else p.f
        grad = p.grad_F if which == "F" else p.grad_f
        return fn, grad

    def _value_grad(self, which, x, y):
        fn, grad = self._scalar_fn(which)
        if isinstance(fn, QuadraticFunction):
            v, g = fn.value_grad(self._cat(x, y))
            return v, g[: self.n], g[self.n:]
        if grad is not None:
            gx, gy = grad(x, y)
            v = fn(x, y)
            return v, gx, gy
        return _autograd_value_grad(fn, x, y)

    def F_grad(self, x, y):
        return self._value_grad("F", x, y)

    def f_grad(self, x, y):
        return self._value_grad("f", x, y)

    def F_value(self, x, y):
        fn = self.p.F
        if isinstance(fn, QuadraticFunction):
            return fn.value_grad(self._cat(x, y))[0]
        return fn(x, y)

    def f_value(self, x, y):
        fn = self.p.f
        if isinstance(fn, QuadraticFunction):
            return fn.value_grad(self._cat(x, y))[0]
        return fn(x, y)

    def cons(self, x, y):
        parts = []
        for fn in (self.p.g, self.p.h):
            if fn is None:
                continue
            if isinstance(fn, AffineFunction):
                parts.append(fn.value(self._cat(x, y)))
            else:
                parts.append(_flat(fn(x, y)))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return self._cat(parts[0], parts[1])

    def cons_vjp(self, x, y, lam):
        """``([g; h](x, y), J_x^T lam, J_y^T lam)``."""
        p = self.p
        vals, vx, vy = [], None, None
        start = 0
        for fn, vjp, size in ((p.g, p.g_vjp, p.n_ineq), (p.h, p.h_vjp, p.n_eq)):
            if fn is None:
                continue
            lam_part = lam[start:start + size]
            start += size
            if isinstance(fn, AffineFunction):
                w = self._cat(x, y)
                val = fn.value(w)
                jt = fn.vjp(lam_part)
                ax, ay = jt[: self.n], jt[self.n:]
            elif vjp is not None:
                val = _flat(fn(x, y))
                ax, ay = vjp(x, y, lam_part)
            else:
                val, ax, ay = _autograd_vjp(fn, x, y, lam_part)
            vals.append(val)
            vx = ax if vx is None else vx + ax
            vy = ay if vy is None else vy + ay
        if not vals:
            return None, None, None
        val = vals[0] if len(vals) == 1 else self._cat(vals[0], vals[1])
        return val, vx, vy


def _flat(v):
    if is_torch(v):
        return v.reshape(-1)
    return np.atleast_1d(np.asarray(v, dtype=float)).reshape(-1)


def _autograd_value_grad(fn, x, y):
    import torch

    numpy_in = not is_torch(x)
    tx = torch.as_tensor(x, dtype=torch.float64) if numpy_in else x
    ty = torch.as_tensor(y, dtype=torch.float64) if numpy_in else y
    with torch.enable_grad():
        xr = tx.detach().requires_grad_(True)
        yr = ty.detach().requires_grad_(True)
        v = fn(xr, yr)
        if not is_torch(v):
            raise TypeError(
                "the function returned a non-tensor for torch inputs, so autograd cannot "
                "differentiate it; write it with torch operations or pass its gradient"
            )
        gx, gy = torch.autograd.grad(v.reshape(()), (xr, yr), allow_unused=True)
    gx = torch.zeros_like(tx) if gx is None else gx
    gy = torch.zeros_like(ty) if gy is None else gy
    if numpy_in:
        return np.float64(v.detach().item()), gx.numpy(), gy.numpy()
    return v.detach(), gx, gy


def _autograd_vjp(fn, x, y, lam):
    import torch

    numpy_in = not is_torch(x)
    tx = torch.as_tensor(x, dtype=torch.float64) if numpy_in else x
    ty = torch.as_tensor(y, dtype=torch.float64) if numpy_in else y
    tl = torch.as_tensor(lam, dtype=torch.float64) if numpy_in else lam
    with torch.enable_grad():
        xr = tx.detach().requires_grad_(True)
        yr = ty.detach().requires_grad_(True)
        v = fn(xr, yr)
        if not is_torch(v):
            raise TypeError(
                "the constraint function returned a non-tensor for torch inputs, so autograd "
                "cannot differentiate it; write it with torch operations or pass g_vjp/h_vjp"
            )
        v = v.reshape(-1)
        gx, gy = torch.autograd.grad(v, (xr, yr), grad_outputs=tl, allow_unused=True)
    gx = torch.zeros_like(tx) if gx is None else gx
    gy = torch.zeros_like(ty) if gy is None else gy
    if numpy_in:
        return v.detach().numpy(), gx.numpy(), gy.numpy()
    return v.detach(), gx, gy


# --------------------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------------------
class Bilevel:
    """A bilevel problem with coupled lower-level constraints (see the module docstring).

    Parameters
    ----------
    F, f : callable ``(x, y) -> scalar`` or :class:`QuadraticFunction`
        Upper and lower objectives. ``f(x, .)`` must be convex for every ``x``.
    g : callable ``(x, y) -> (l,)`` or :class:`AffineFunction`, optional
        Coupled inequality constraints ``g(x, y) <= 0`` (jointly convex).
    h : callable ``(x, y) -> (q,)`` or :class:`AffineFunction`, optional
        Coupled equality constraints ``h(x, y) = 0`` (affine).
    x0, y0 : 1-D arrays (numpy or torch)
        Starting point; they fix ``n``, ``m``, the array library, dtype and device.
    X, Y : sets, optional
        Feasible sets of ``x`` (R^n) and ``y`` (R^m); default: the whole space.
    C : set or callable projection, optional
        The joint set ``{(x, y) in X x Y : g <= 0, h = 0}`` over ``w = (x, y)``. Built
        automatically when ``g``/``h`` are affine (given as :class:`AffineFunction` or
        detected numerically); required for a nonlinear convex ``g``.
    grad_F, grad_f : callable ``(x, y) -> (grad_x, grad_y)``, optional
        Gradients; default: torch autograd (the functions must then accept tensors).
    g_vjp, h_vjp : callable ``(x, y, lam) -> (J_x^T lam, J_y^T lam)``, optional
        Jacobian-transpose products; default: torch autograd.
    lower_solver : callable ``x -> y``, optional
        An exact lower-level solver used only by :meth:`certificate`. Default: a QP
        (cvxpy + Clarabel) when ``f`` is quadratic and ``g``, ``h`` affine; SciPy's SLSQP
        for small callable problems; otherwise the lower-level gap is reported as NaN.
    name : str

    Attributes
    ----------
    n, m, n_ineq, n_eq : int
    array_library, device, dtype
    X, Y, C : ConvexSet

    Raises
    ------
    ValueError
        Shapes of ``F``, ``f``, ``g``, ``h`` or their gradients disagree with ``x0``/``y0``;
        a ``C`` that does not enforce ``g <= 0``; a ``g`` that fails the convexity probe.
    TypeError
        A function not differentiable by autograd without a supplied gradient; a ``C``
        that is not a set with a projection.

    References
    ----------
    .. [1] W. Yao, C. Yu, S. Zeng, J. Zhang, "Constrained Bi-Level Optimization: Proximal
       Lagrangian Value Function Approach and Hessian-free Algorithm", ICLR 2024,
       arXiv:2401.16164.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> from neurosolve.problems import Bilevel
    >>> prob = Bilevel(F=lambda x, y: 0.5 * ((x - 1) ** 2).sum() + 0.5 * ((y - 1) ** 2).sum(),
    ...                f=lambda x, y: 0.5 * ((y - x) ** 2).sum(),
    ...                g=lambda x, y: y - 0.5,            # y <= 0.5, coupled through f
    ...                x0=np.zeros(1), y0=np.zeros(1))
    >>> prob.C                                             # built from the affine g
    <HalfSpace dim=2>
    """

    def __init__(self, F, f, g=None, h=None, *, x0, y0, X=None, Y=None, C=None,
                 grad_F: Callable | None = None, grad_f: Callable | None = None,
                 g_vjp: Callable | None = None, h_vjp: Callable | None = None,
                 lower_solver: Callable | None = None, name: str = "bilevel",
                 _skip_checks: bool = False):
        self.name = name
        self.array_library = common_library(x0, y0, names=["x0", "y0"])
        for nm, v in (("x0", x0), ("y0", y0)):
            if not (is_torch(v) or isinstance(v, np.ndarray)):
                raise TypeError(f"{nm} must be a numpy array or torch tensor, got {type(v).__name__}")
            if v.ndim != 1:
                raise ValueError(f"{nm} must be 1-D, got shape {tuple(v.shape)}")
        if self.array_library == "torch":
            if x0.dtype != y0.dtype or not x0.is_floating_point():
                raise TypeError(f"x0 and y0 must share a floating dtype, got {x0.dtype} and {y0.dtype}")
            if x0.device != y0.device:
                raise ValueError(f"x0 is on {x0.device} but y0 on {y0.device}")
            self.device, self.dtype = str(x0.device), x0.dtype
            finite = bool(__import__("torch").isfinite(x0).all()) and bool(__import__("torch").isfinite(y0).all())
        else:
            x0 = np.asarray(x0, dtype=float)
            y0 = np.asarray(y0, dtype=float)
            self.device, self.dtype = "cpu", np.dtype(float)
            finite = bool(np.all(np.isfinite(x0)) and np.all(np.isfinite(y0)))
        if not finite:
            raise ValueError("x0 and y0 must be finite")
        self.x0, self.y0 = x0, y0
        self.n, self.m = int(x0.shape[0]), int(y0.shape[0])
        N = self.n + self.m
        if self.m == 0:
            raise ValueError("y0 is empty: the lower level needs at least one variable")

        for nm, fn in (("F", F), ("f", f)):
            if not (callable(fn) or isinstance(fn, QuadraticFunction)):
                raise TypeError(f"{nm} must be a callable (x, y) -> scalar or a QuadraticFunction")
        for nm, fn in (("g", g), ("h", h)):
            if fn is not None and not (callable(fn) or isinstance(fn, AffineFunction)):
                raise TypeError(f"{nm} must be a callable (x, y) -> vector, an AffineFunction or None")
        # array forms: convert to the problem's library
        lib = self.array_library

        def conv(fn):
            if isinstance(fn, (QuadraticFunction, AffineFunction)):
                if fn.N != N:
                    raise ValueError(
                        f"{type(fn).__name__} acts on vectors of length {fn.N}, but x0 and y0 give "
                        f"n + m = {self.n} + {self.m} = {N}"
                    )
                return fn.to(lib, self.dtype if lib == "torch" else None, self.device)
            return fn

        self.F, self.f, self.g, self.h = conv(F), conv(f), conv(g), conv(h)
        self.grad_F, self.grad_f, self.g_vjp, self.h_vjp = grad_F, grad_f, g_vjp, h_vjp
        self.lower_solver = lower_solver
        self._oracles: dict = {}

        # shapes of everything, evaluated once at (x0, y0)
        self.n_ineq = self._cons_size("g", self.g)
        self.n_eq = self._cons_size("h", self.h)
        if not _skip_checks:
            self._check_functions()

        self.X = _sets.as_set(X, self.n, name="X")
        self.Y = _sets.as_set(Y, self.m, name="Y")
        self.C = self._build_C(C, _skip_checks)

    # -- construction helpers ------------------------------------------------------------
    def _call(self, nm, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"{nm}(x0, y0) raised {type(e).__name__}: {e}. Check that {nm} accepts x of "
                f"shape ({self.n},) and y of shape ({self.m},) (the shapes of x0 and y0)"
            ) from e

    def _cons_size(self, nm, fn) -> int:
        if fn is None:
            return 0
        if isinstance(fn, AffineFunction):
            return fn.l
        v = self._call(nm, fn, self.x0, self.y0)
        shape = tuple(getattr(v, "shape", np.shape(v)))
        if len(shape) > 1:
            raise ValueError(f"{nm}(x0, y0) must return a 1-D vector, got shape {shape}")
        return int(np.prod(shape)) if shape else 1

    def _check_functions(self):
        x0, y0 = self.x0, self.y0
        O = self.oracles(self.array_library)
        for nm in ("F", "f"):
            fn = getattr(self, nm)
            if not isinstance(fn, QuadraticFunction):
                v = self._call(nm, fn, x0, y0)
                size = int(np.prod(tuple(getattr(v, "shape", np.shape(v)))))
                if size != 1:
                    raise ValueError(
                        f"{nm}(x0, y0) must return a scalar, got shape {tuple(getattr(v, 'shape', np.shape(v)))}"
                    )
            try:
                _, gx, gy = O.F_grad(x0, y0) if nm == "F" else O.f_grad(x0, y0)
            except (TypeError, RuntimeError) as e:
                gname = "grad_F" if nm == "F" else "grad_f"
                raise TypeError(
                    f"{nm} could not be differentiated by torch autograd ({type(e).__name__}: {e}); "
                    f"write {nm} with torch operations or pass {gname}=callable(x, y) -> (grad_x, grad_y)"
                ) from e
            gname = "grad_F" if nm == "F" else "grad_f"
            for part, arr, size in (("x", gx, self.n), ("y", gy, self.m)):
                if tuple(arr.shape) != (size,):
                    raise ValueError(
                        f"{gname} returned a {part}-gradient of shape {tuple(arr.shape)}; expected ({size},)"
                    )
        if self.n_ineq + self.n_eq:
            lam = _vec_to(np.ones(self.n_ineq + self.n_eq), self.array_library, self.dtype
                          if self.array_library == "torch" else None, self.device)
            try:
                val, vx, vy = O.cons_vjp(x0, y0, lam)
            except (TypeError, RuntimeError) as e:
                raise TypeError(
                    f"the constraints could not be differentiated by torch autograd ({e}); pass "
                    "g_vjp / h_vjp = callable(x, y, lam) -> (J_x^T lam, J_y^T lam)"
                ) from e
            for part, arr, size in (("x", vx, self.n), ("y", vy, self.m)):
                if tuple(arr.shape) != (size,):
                    raise ValueError(
                        f"the constraint Jacobian-transpose product (g_vjp/h_vjp) returned a "
                        f"{part}-part of shape {tuple(arr.shape)}; expected ({size},)"
                    )

    def _numpy_cons_fn(self, which: str):
        fn = self.g if which == "g" else self.h
        n = self.n

        if isinstance(fn, AffineFunction):
            A, b = fn.dense_numpy(), fn.b_numpy()
            return lambda w: A @ w - b
        if self.array_library == "torch":
            import torch

            def G(w):
                t = torch.as_tensor(w, dtype=self.dtype, device=self.device)
                return _numpy(fn(t[:n], t[n:])).reshape(-1)
            return G
        return lambda w: _numpy(fn(w[:n], w[n:])).reshape(-1)

    def _build_C(self, C, skip_checks):
        N = self.n + self.m
        has_cons = (self.n_ineq + self.n_eq) > 0
        w0 = np.concatenate((_numpy(self.x0), _numpy(self.y0)))
        rng = np.random.default_rng(0)
        scale = 1.0 + float(np.max(np.abs(w0), initial=0.0))
        pieces: dict[str, np.ndarray | None] = {}
        # affinity / convexity of callable constraints
        for which, size in (("g", self.n_ineq), ("h", self.n_eq)):
            fn = getattr(self, which)
            if fn is None:
                continue
            if isinstance(fn, AffineFunction):
                pieces[which] = (fn.dense_numpy(), fn.b_numpy())
                continue
            if skip_checks:
                pieces[which] = None
                continue
            G = self._numpy_cons_fn(which)
            info = _sets.affine_probe(G, N, w0, scale, rng) if N * size <= 4_000_000 else \
                {"affine": False, "convex_violation": 0.0}
            if info["affine"]:
                pieces[which] = (info["A"], -info["c"])
            else:
                pieces[which] = None
                if which == "h":
                    raise ValueError(
                        "h must be affine (equality constraints h(x, y) = 0 define a convex set "
                        "only when h is affine); reformulate nonlinear equalities"
                    )
                if info.get("convex_violation", 0.0) > 1e-9:
                    raise _sets.NonConvexSetError(_sets.nonaffine_message("g", info))
        if C is not None:
            S = _sets.as_set(C, N, name="C")
            if has_cons and not skip_checks:
                self._check_C_enforces(S, w0, scale, rng)
            return S
        if not has_cons:
            if isinstance(self.X, _sets.Reals) and isinstance(self.Y, _sets.Reals):
                return _sets.Reals(N)
            if all(isinstance(S, (_sets.Reals, _sets.Box)) for S in (self.X, self.Y)):
                lo = np.concatenate([getattr(S, "lower", np.full(S.dim, -np.inf)) for S in (self.X, self.Y)])
                hi = np.concatenate([getattr(S, "upper", np.full(S.dim, np.inf)) for S in (self.X, self.Y)])
                return _sets.Box(lo, hi)
            return _sets.Product(self.X, self.Y)
        if any(v is None for v in pieces.values()):
            raise ValueError("C is required: " + _sets.nonaffine_message("g", {"convex_violation": 0.0}))
        A_ub = b_ub = A_eq = b_eq = None
        if "g" in pieces:
            A_ub, b_ub = pieces["g"]
        if "h" in pieces:
            A_eq, b_eq = pieces["h"]
        box_ok = all(isinstance(S, (_sets.Reals, _sets.Box)) for S in (self.X, self.Y))
        if box_ok:
            lo = np.concatenate([getattr(S, "lower", np.full(S.dim, -np.inf)) for S in (self.X, self.Y)])
            hi = np.concatenate([getattr(S, "upper", np.full(S.dim, np.inf)) for S in (self.X, self.Y)])
            poly = _sets.Polyhedron(A_ub, b_ub, A_eq, b_eq, lo, hi, dim=N)
            return poly._fast if poly._fast is not None else poly
        poly = _sets.Polyhedron(A_ub, b_ub, A_eq, b_eq, dim=N)
        return _sets.Intersection(_sets.Product(self.X, self.Y), poly)

    def _check_C_enforces(self, S, w0, scale, rng):
        G = self._numpy_cons_fn("g") if self.g is not None else None
        H = self._numpy_cons_fn("h") if self.h is not None else None
        for k in range(3):
            w = w0 + (0.0 if k == 0 else scale) * rng.standard_normal(w0.shape[0])
            p = _numpy(S.project(w if self.array_library == "numpy" else
                                 _vec_to(w, "torch", self.dtype, self.device)))
            tol = 1e-6 * (1.0 + float(np.max(np.abs(p), initial=0.0)))
            if G is not None:
                viol = float(np.max(G(p), initial=0.0))
                if viol > tol:
                    raise ValueError(
                        f"C does not enforce g(x, y) <= 0: a point projected onto C has "
                        f"max g = {viol:.3g}. LV-HBA keeps (x, y) in C, so C must be "
                        "(X x Y) ∩ {g <= 0, h = 0}"
                    )
            if H is not None:
                viol = float(np.max(np.abs(H(p)), initial=0.0))
                if viol > tol:
                    raise ValueError(
                        f"C does not enforce h(x, y) = 0: a point projected onto C has "
                        f"max |h| = {viol:.3g}"
                    )

    # -- public API -----------------------------------------------------------------------
    def oracles(self, library: str | None = None) -> Oracles:
        """The :class:`Oracles` for ``library`` (the problem's own by default)."""
        library = library or self.array_library
        if library != self.array_library:
            raise TypeError(f"this problem's data is {self.array_library}; convert it with .to(library=...)")
        if library not in self._oracles:
            self._oracles[library] = Oracles(self, library)
        return self._oracles[library]

    @property
    def is_array_form(self) -> bool:
        """True when ``F``, ``f`` are quadratic and ``g``, ``h`` affine (or absent)."""
        return (isinstance(self.F, QuadraticFunction) and isinstance(self.f, QuadraticFunction)
                and all(fn is None or isinstance(fn, AffineFunction) for fn in (self.g, self.h)))

    def to(self, library: str | None = None, dtype=None, device: str | None = None) -> "Bilevel":
        """A copy on another array library / dtype / device (callables must support it)."""
        library = library or self.array_library
        device = device or (self.device if library == "torch" else "cpu")
        if library == "torch":
            import torch

            dt = dtype or (self.dtype if self.array_library == "torch" else torch.float64)
            x0 = _vec_to(self.x0, "torch", dt, device)
            y0 = _vec_to(self.y0, "torch", dt, device)
        else:
            x0, y0 = _numpy(self.x0), _numpy(self.y0)
        out = Bilevel(self.F, self.f, self.g, self.h, x0=x0, y0=y0, X=self.X, Y=self.Y, C=self.C,
                      grad_F=self.grad_F, grad_f=self.grad_f, g_vjp=self.g_vjp, h_vjp=self.h_vjp,
                      lower_solver=self.lower_solver, name=self.name, _skip_checks=True)
        for attr in ("meta",):
            if hasattr(self, attr):
                setattr(out, attr, getattr(self, attr))
        return out

    # -- certificate ----------------------------------------------------------------------
    def split(self, sol):
        """``(x, y)`` of a solution given as a tuple, :class:`BilevelSolution` or vector ``w``."""
        if isinstance(sol, tuple):
            return sol[0], sol[1]
        return sol[: self.n], sol[self.n:]

    def lower_level_value(self, x) -> tuple[Any, float]:
        """``(y*, v(x))``: a solution and the optimal value of the lower level at ``x``.

        Returns ``(None, nan)`` when no exact lower-level solver is available.
        """
        xn = _numpy(x)
        if self.lower_solver is not None:
            y = self.lower_solver(x)
            return y, float(_numpy(self.oracles().f_value(x, y)))
        if isinstance(self.f, QuadraticFunction) and all(
                fn is None or isinstance(fn, AffineFunction) for fn in (self.g, self.h)):
            return qp_lower_level(self, xn)
        if self.m <= 200 and (self.n_ineq + self.n_eq) <= 200:
            return slsqp_lower_level(self, xn)
        return None, float("nan")

    def certificate(self, sol) -> dict[str, float]:
        """What proves an answer, recomputed from scratch.

        Keys
        ----
        upper_objective : F(x, y)
        lower_objective : f(x, y)
        ll_value : v(x), the optimal lower-level value (exact QP / supplied / SLSQP)
        ll_gap : f(x, y) - v(x) (>= 0 for feasible y; NaN without a lower-level solver)
        constraint_violation : max(max(g, 0), |h|) at (x, y)
        set_violation : violation of C's description at (x, y) (max constraint residual)
        vgamma_gap : f(x, y) - v_gamma(x, y, z) (when ``sol`` carries z and gamma)
        vgamma_residual : accuracy of the inner solve behind vgamma_gap and stationarity
        stationarity : projected-gradient residual of the penalized reformulation
            F/c + f - v_gamma over C x Z at (x, y, z) (when ``sol`` carries z, gamma, c)
        """
        x, y = self.split(sol)
        O = self.oracles()
        out: dict[str, float] = {}
        out["upper_objective"] = float(_numpy(O.F_value(x, y)))
        fxy = float(_numpy(O.f_value(x, y)))
        out["lower_objective"] = fxy
        _, v = self.lower_level_value(x)
        out["ll_value"] = v
        out["ll_gap"] = fxy - v
        cons = O.cons(x, y)
        if cons is None:
            out["constraint_violation"] = 0.0
        else:
            cn = _numpy(cons)
            gpart, hpart = cn[: self.n_ineq], cn[self.n_ineq:]
            out["constraint_violation"] = float(max(np.max(gpart, initial=0.0),
                                                    np.max(np.abs(hpart), initial=0.0)))
        w = np.concatenate((_numpy(x), _numpy(y)))
        out["set_violation"] = float(self.C.violation(w))
        if isinstance(sol, BilevelSolution) and sol.z is not None and sol.gamma1 is not None:
            from neurosolve.problems.value_function import penalized_stationarity

            try:
                st = penalized_stationarity(self, sol)
            except _sets.EmptySetError:  # C has no point: there is no stationarity to measure
                st = {"vgamma_gap": float("nan"), "vgamma_residual": float("nan"),
                      "stationarity": float("nan")}
            out["vgamma_gap"] = st["vgamma_gap"]
            out["vgamma_residual"] = st["vgamma_residual"]
            if st.get("stationarity") is not None:
                out["stationarity"] = st["stationarity"]
        return out

    def __repr__(self):
        return (f"<Bilevel {self.name!r} n={self.n} m={self.m} ineq={self.n_ineq} eq={self.n_eq} "
                f"library={self.array_library}>")
