"""Layered recurrent networks as vector fields, with block-sparse state Jacobians.

A network here is a *vector field* on the pre-activations ``u = (u_1, ..., u_L)`` of its
layers (the output layer last):

    F(u) = H(phi(u), x) - u,         H_l(r, x) = sum over connections (pre -> l) of op(r_pre)

plus, on the output layer during a nudged phase, ``-beta * c(r_out)`` with
``c = dL/dr_out`` (see :mod:`neurosolve.neural.ep.estimators`). Its fixed point solves
``u = H(phi(u), x)``.

Sparse-Jacobian view
--------------------
Only layers joined by a connection interact, so the state Jacobian ``H'(r) = dH/dr`` is
*block sparse*: for the MLP its only nonzero blocks are ``W_{l -> l+1}`` (below the
diagonal) and ``B_{l+1 -> l}`` (above it), i.e. block tridiagonal with zero diagonal
blocks; for the "loop" network it is a block 3-cycle. Everything the estimators and the
homeostatic loss need is written block by block and matrix-free:

* ``jvp(params, r, v)``  = ``H'(r) v``,  one pass over the connections;
* ``vjp(params, r, w)``  = ``H'(r)^T w``, the same pass with transposed blocks;
* ``param_vjp(params, r, x, w)`` = ``(dH/dtheta)^T w``, per connection an outer product
  (``w_post^T r_pre``: the local learning rule of Scellier et al. 2018).

``J`` is never materialized during learning; :func:`dense_jacobian` in
:mod:`~neurosolve.neural.ep.diagnostics` builds it only for small diagnostic nets.
The dense networks run on numpy (float64 / complex128) and torch (any device and dtype)
with the same code; the convolutional network (:class:`ConvNetwork`) is torch-only and
takes its JVPs/VJPs from torch.autograd.

State layout: the relaxation works on a flat array of shape ``(batch, n)``;
:class:`Layout` splits it into per-layer views and joins it back.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
.. [2] B. Scellier, A. Goyal, J. Binas, T. Mesnard, Y. Bengio, "Generalization of
   equilibrium propagation to vector field dynamics", arXiv:1808.04873, 2018.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from neurosolve.backends import is_torch
from neurosolve.backends import ops as xp
from neurosolve.neural.ep.activations import Activation, get_activation

__all__ = [
    "Layout",
    "Connection",
    "LayeredNetwork",
    "DenseNetwork",
    "mlp",
    "loop_mlp",
    "lecun_normal",
    "rotate_feedback",
    "one_hot",
]


# --------------------------------------------------------------------------------------
# state layout
# --------------------------------------------------------------------------------------
class Layout:
    """Where each layer lives in the flat state of shape ``(batch, n)``.

    Parameters
    ----------
    names : sequence of str
        Layer names, in state order (output layer last).
    shapes : sequence of tuple
        Per-sample shape of each layer (``(n_l,)`` for dense, ``(C, H, W)`` for conv).
    """

    def __init__(self, names: Sequence[str], shapes: Sequence[tuple]):
        if len(names) != len(shapes) or len(set(names)) != len(names):
            raise ValueError("names must be unique and match shapes one to one")
        self.names = tuple(names)
        self.shapes = {n: tuple(int(s) for s in sh) for n, sh in zip(names, shapes)}
        self.sizes = {n: int(np.prod(sh)) for n, sh in self.shapes.items()}
        self.offsets = {}
        off = 0
        for n in self.names:
            self.offsets[n] = off
            off += self.sizes[n]
        self.n = off

    def split(self, u) -> dict:
        """Per-layer views of a flat ``(batch, n)`` state (no copy)."""
        B = u.shape[0]
        return {n: u[:, self.offsets[n]:self.offsets[n] + self.sizes[n]].reshape(
            (B,) + self.shapes[n]) for n in self.names}

    def join(self, d: dict, like=None):
        """The flat ``(batch, n)`` state from per-layer arrays; missing layers are zero."""
        ref = like if like is not None else next(v for v in d.values() if v is not None)
        B = ref.shape[0]
        parts = []
        for n in self.names:
            v = d.get(n)
            if v is None:
                if is_torch(ref):
                    import torch

                    v = torch.zeros((B, self.sizes[n]), dtype=ref.dtype, device=ref.device)
                else:
                    v = np.zeros((B, self.sizes[n]), dtype=ref.dtype)
            parts.append(v.reshape(B, self.sizes[n]))
        return xp.concat(parts, axis=1)

    def slice(self, name: str) -> slice:
        return slice(self.offsets[name], self.offsets[name] + self.sizes[name])


def one_hot(y, n_classes: int, like):
    """One-hot float targets from integer labels (or pass float targets through)."""
    if is_torch(like):
        import torch

        yt = torch.as_tensor(y, device=like.device)
        if yt.ndim == 2:
            return yt.to(_real_dtype(like))
        out = torch.zeros((yt.shape[0], n_classes), dtype=_real_dtype(like), device=like.device)
        out[torch.arange(yt.shape[0], device=like.device), yt.long()] = 1.0
        return out
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(_real_dtype(like), copy=False)
    out = np.zeros((y.shape[0], n_classes), dtype=_real_dtype(like))
    out[np.arange(y.shape[0]), y.astype(int)] = 1.0
    return out


def _real_dtype(like):
    if is_torch(like):
        return like.real.dtype if like.is_complex() else like.dtype
    return np.real(np.zeros(1, dtype=like.dtype)).dtype


def _softmax(z):
    """Holomorphic softmax over the last axis: shift by the max of the REAL part only."""
    if is_torch(z):
        m = xp.real(z).max(dim=-1, keepdim=True).values.detach()
        e = (z - m).exp()
        return e / e.sum(dim=-1, keepdim=True)
    m = np.max(np.real(z), axis=-1, keepdims=True)
    e = np.exp(z - m)
    return e / e.sum(axis=-1, keepdims=True)


def _logsumexp(z):
    if is_torch(z):
        import torch

        return torch.logsumexp(z, dim=-1)
    m = np.max(z, axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


# --------------------------------------------------------------------------------------
# initialization
# --------------------------------------------------------------------------------------
def lecun_normal(rng: np.random.Generator, shape: tuple, fan_in: int) -> np.ndarray:
    """Truncated (at 2 sigma) normal with variance ``1/fan_in`` (Flax's LeCun normal)."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    return z / 0.87962566103423978 / math.sqrt(fan_in)


def rotate_feedback(B_init, W, angle_deg: float):
    """``sin(a) B_init + cos(a) W^T``: the asymmetry knob of the reference code.

    ``angle=0`` gives symmetric feedback ``B = W^T``; ``angle=90`` independent feedback.
    """
    a = math.radians(angle_deg)
    return math.sin(a) * B_init + math.cos(a) * W.T


# --------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------
class LayeredNetwork:
    """Base class: a layered vector field with a readout. Subclasses define the blocks.

    Attributes
    ----------
    layout : Layout
    activation : Activation
    loss : {"xent", "mse"}
        ``xent``: softmax cross-entropy of a trainable linear readout on the output
        activities (nudge ``c = R^T (softmax(R r_out + b) - y)``); ``mse``:
        ``0.5 ||r_out - y||^2`` (nudge ``c = r_out - y``).
    n_classes : int
    params : dict of arrays
        Current parameters (network and ``readout_*``); functions take ``params``
        explicitly so gradients and trainers can pass other values.
    library : {"numpy", "torch"}
    """

    layout: Layout
    activation: Activation
    loss: str
    n_classes: int
    params: dict
    output_layer: str
    input_shape: tuple

    # -- to implement -------------------------------------------------------------------
    def input_drive(self, params, x) -> dict:
        """State-independent part of ``H`` (input connections, biases), per layer."""
        raise NotImplementedError

    def drive(self, params, r: dict, ext: dict) -> dict:
        """``H(r, x)`` per layer given ``ext = input_drive(params, x)`` (no nudge)."""
        raise NotImplementedError

    def forward_state(self, params, x):
        """A flat feed-forward initial state (feedback switched off)."""
        raise NotImplementedError

    # -- generic autodiff versions (torch) ----------------------------------------------
    # Used by networks whose Jacobian depends on the state (the convolutional one): plain
    # torch.autograd reverse mode (VJPs) and double backward (JVPs, Jacobian-penalty
    # gradients). Dense networks override all four with block-by-block matrix products.
    def _leaf(self, d: dict) -> dict:
        return {k: v.detach().clone().requires_grad_(True) for k, v in d.items()}

    def jvp(self, params, r: dict, v: dict) -> dict:
        """``H'(r) v`` (``r`` held fixed). Dense networks override.

        Computed as the derivative of ``u -> H'(r)^T u`` (a reverse-mode product, linear in
        ``u``) in the direction ``v``: two backward passes. (torch's forward-mode AD would do
        it in one pass but costs seconds of one-time initialization per process.)
        """
        import torch

        names = self.layout.names
        with torch.enable_grad():
            rl = self._leaf({n: r[n] for n in names})
            out = self._internal_drive(params, rl)
            keys = [n for n in names if n in out]
            us = [torch.zeros_like(out[n], requires_grad=True) for n in keys]
            g = torch.autograd.grad([out[n] for n in keys], [rl[n] for n in names],
                                    grad_outputs=us, create_graph=True, allow_unused=True)
            pairs = [(gi, v[n]) for gi, n in zip(g, names) if gi is not None]
            jv = torch.autograd.grad([p for p, _ in pairs], us,
                                     grad_outputs=[t.detach() for _, t in pairs], allow_unused=True)
        return {n: (t.detach() if t is not None else torch.zeros_like(out[n]))
                for n, t in zip(keys, jv)}

    def vjp(self, params, r: dict, w: dict) -> dict:
        """``H'(r)^T w`` (reverse mode, real states). Dense networks override."""
        import torch

        names = self.layout.names
        with torch.enable_grad():
            rl = self._leaf({n: r[n] for n in names})
            out = self._internal_drive(params, rl)
            keys = [n for n in names if n in out and w.get(n) is not None]
            g = torch.autograd.grad([out[n] for n in keys], [rl[n] for n in names],
                                    grad_outputs=[w[n] for n in keys], allow_unused=True)
        return {n: (gi if gi is not None else torch.zeros_like(r[n])) for n, gi in zip(names, g)}

    def param_vjp(self, params, r: dict, x, w: dict) -> dict:
        """``(dH/dtheta)^T w``, summed over the batch, for every non-readout parameter."""
        import torch

        keys = [k for k in params if not k.startswith("readout_")]
        names = self.layout.names
        with torch.enable_grad():
            pl = self._leaf({k: params[k] for k in keys})
            p = dict(params)
            p.update(pl)
            h = self.drive(p, {n: r[n].detach() for n in names}, self.input_drive(p, x))
            outs = [n for n in names if n in h and w.get(n) is not None]
            g = torch.autograd.grad([h[n] for n in outs], [pl[k] for k in keys],
                                    grad_outputs=[w[n] for n in outs], allow_unused=True)
        return {k: (gi if gi is not None else torch.zeros_like(params[k])) for k, gi in zip(keys, g)}

    def bilinear_grad(self, params, r: dict, w: dict, v: dict) -> dict:
        """``d/dtheta sum_b <w_b, H'(r_b) v_b>`` with ``r, w, v`` held fixed.

        The building block of parameter gradients of Jacobian penalties (homeostasis,
        contraction). Generic version: ``<H'^T w, v>`` by reverse mode with a graph, then
        reverse mode again (double backward). Dense networks override it with per-block
        outer products.
        """
        import torch

        keys = [k for k in params if not k.startswith("readout_")]
        names = self.layout.names
        with torch.enable_grad():
            pl = self._leaf({k: params[k] for k in keys})
            p = dict(params)
            p.update(pl)
            rl = self._leaf({n: r[n] for n in names})
            out = self._internal_drive(p, rl)
            outs = [n for n in names if n in out and w.get(n) is not None]
            gr = torch.autograd.grad([out[n] for n in outs], [rl[n] for n in names],
                                     grad_outputs=[w[n].detach() for n in outs],
                                     create_graph=True, allow_unused=True)
            s = sum((gi * v[n].detach()).sum() for n, gi in zip(names, gr) if gi is not None)
            g = torch.autograd.grad(s, [pl[k] for k in keys], allow_unused=True)
        return {k: (gi if gi is not None else torch.zeros_like(params[k])) for k, gi in zip(keys, g)}

    def _internal_drive(self, params, r):
        """``H(r)`` without the state-independent part (its Jacobian is ``H'``)."""
        raise NotImplementedError

    # -- readout / loss ------------------------------------------------------------------
    def logits(self, params, r_out):
        """Readout of the output activities (flattened)."""
        r = r_out.reshape(r_out.shape[0], -1)
        if self.loss == "mse":
            return r
        return xp.mm(r, params["readout_W"]) + xp.as_dtype(params["readout_b"], r)

    def nudge(self, params, r_out, y1h):
        """``c = dL/dr_out`` per sample, holomorphic in ``r_out`` (shape of ``r_out``)."""
        r = r_out.reshape(r_out.shape[0], -1)
        if self.loss == "mse":
            c = r - xp.as_dtype(y1h, r)
        else:
            p = _softmax(self.logits(params, r_out))
            c = xp.mm_t(p - xp.as_dtype(y1h, p), params["readout_W"])
        return c.reshape(r_out.shape)

    def loss_terms(self, params, r_out, y1h):
        """Per-sample loss, predictions, and the batch-mean readout gradient."""
        r = r_out.reshape(r_out.shape[0], -1)
        z = self.logits(params, r_out)
        B = r.shape[0]
        if self.loss == "mse":
            diff = r - y1h
            loss = 0.5 * (diff * diff).sum(-1) if is_torch(diff) else 0.5 * np.sum(diff * diff, -1)
            return loss, z, {}
        lse = _logsumexp(z)
        loss = lse - (z * y1h).sum(-1)
        p = _softmax(z)
        e = p - y1h
        grads = {"readout_W": e.T @ r / B, "readout_b": e.sum(0) / B}
        return loss, z, grads

    # -- conveniences --------------------------------------------------------------------
    @property
    def n_state(self) -> int:
        return self.layout.n

    @property
    def library(self) -> str:
        return "torch" if is_torch(next(iter(self.params.values()))) else "numpy"

    def check_input(self, x, y=None):
        """Validate a batch: ``x`` of shape ``(B, *input_shape)``, labels of length B."""
        if xp.lib(x) != self.library:
            raise TypeError(f"x is a {xp.lib(x)} array but the network's parameters are "
                            f"{self.library}; convert one of them")
        shp = tuple(x.shape)
        if len(shp) != 1 + len(self.input_shape) or shp[1:] != tuple(self.input_shape):
            raise ValueError(f"x has shape {shp}; expected (batch, {', '.join(map(str, self.input_shape))})")
        if shp[0] == 0:
            raise ValueError("x is an empty batch (0 samples); pass at least one sample")
        xd = xp.to_numpy(x) if not is_torch(x) else None
        if xd is not None and not np.issubdtype(xd.dtype, np.floating):
            raise TypeError(f"x must have a real floating dtype, got {xd.dtype}")
        if is_torch(x) and not (x.dtype.is_floating_point and not x.dtype.is_complex):
            raise TypeError(f"x must have a real floating dtype, got {x.dtype}")
        finite = bool(np.isfinite(xd).all()) if xd is not None else bool(
            __import__("torch").isfinite(x).all())
        if not finite:
            raise ValueError("x contains NaN or inf entries")
        if y is not None:
            ys = tuple(np.shape(y)) if not is_torch(y) else tuple(y.shape)
            if len(ys) == 0 or ys[0] != shp[0] or len(ys) > 2 or (
                    len(ys) == 2 and ys[1] != self.n_classes):
                raise ValueError(f"y has shape {ys}; expected ({shp[0]},) labels or "
                                 f"({shp[0]}, {self.n_classes}) targets (len(y) == len(x))")
            if len(ys) == 1:
                yv = xp.to_numpy(y)
                integral = yv.dtype != bool and (np.issubdtype(yv.dtype, np.integer) or (
                    np.issubdtype(yv.dtype, np.floating) and bool(np.all(yv == np.round(yv)))))
                if not integral:
                    raise ValueError(f"y must hold integer class labels in [0, "
                                     f"{self.n_classes}), got dtype {yv.dtype}")
                if yv.size and (yv.min() < 0 or yv.max() >= self.n_classes):
                    raise ValueError(f"y labels must be in [0, {self.n_classes}), got values in "
                                     f"[{yv.min():g}, {yv.max():g}]")

    def copy(self) -> "LayeredNetwork":
        new = copy.copy(self)
        new.params = {k: (v.clone() if is_torch(v) else np.array(v, copy=True))
                      for k, v in self.params.items()}
        return new

    def to(self, library: str = None, dtype: Any = None, device: str | None = None):
        """A copy with parameters in another array library / dtype / device."""
        new = copy.copy(self)
        lib = library or self.library
        out = {}
        for k, v in self.params.items():
            a = xp.to_numpy(v)
            if lib == "torch":
                import torch

                out[k] = torch.as_tensor(a, dtype=dtype or torch.float64, device=device or "cpu")
            elif lib == "numpy":
                out[k] = np.asarray(a, dtype=dtype or np.float64)
            else:
                raise ValueError(f"library must be 'numpy' or 'torch', got {library!r}")
        new.params = out
        return new

    def reciprocal_pairs(self) -> list[tuple[str, str]]:
        """``(forward weight, feedback weight)`` names of reciprocal connection pairs."""
        return []


# --------------------------------------------------------------------------------------
# dense networks
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connection:
    """A dense connection ``pre -> post``: ``H_post += W_eff r_pre (+ b)``.

    ``W_eff = params[weight]`` of shape ``(n_post, n_pre)``, or its transpose when
    ``transpose`` (tied feedback reusing a forward matrix). ``pre == "input"`` marks the
    input drive.
    """

    pre: str
    post: str
    weight: str
    bias: str | None = None
    transpose: bool = False
    kind: str = "forward"


class DenseNetwork(LayeredNetwork):
    """A layered network of dense connections (MLP, loop), numpy or torch.

    Use :func:`mlp` or :func:`loop_mlp` to build one. The state Jacobian ``H'`` is the
    block matrix of connection weights (state independent), so JVP/VJP are one matrix
    product per connection, and the exact Jacobian asymmetry is a sum over layer pairs
    (:func:`~neurosolve.neural.ep.homeostasis.exact_asymmetry`).
    """

    def __init__(self, layer_sizes: dict, connections: Sequence[Connection], params: dict,
                 *, n_in: int, activation="sigmoid", loss: str = "xent", n_classes: int = 10):
        if loss not in ("xent", "mse"):
            raise ValueError(f"loss must be 'xent' or 'mse', got {loss!r}")
        names = list(layer_sizes)
        self.layout = Layout(names, [(layer_sizes[n],) for n in names])
        self.connections = tuple(connections)
        self.internal = tuple(c for c in self.connections if c.pre != "input")
        self.inputs = tuple(c for c in self.connections if c.pre == "input")
        for c in self.connections:
            if c.post not in layer_sizes or (c.pre != "input" and c.pre not in layer_sizes):
                raise ValueError(f"connection {c.pre}->{c.post} names an unknown layer")
            if c.weight not in params:
                raise ValueError(f"connection {c.pre}->{c.post}: missing parameter {c.weight!r}")
        self.activation = get_activation(activation)
        self.loss = loss
        self.n_classes = int(n_classes)
        self.output_layer = names[-1]
        self.input_shape = (int(n_in),)
        if loss == "mse" and layer_sizes[names[-1]] != n_classes:
            raise ValueError("loss='mse' needs the output layer size to equal n_classes")
        self.params = dict(params)

    # -- blocks --------------------------------------------------------------------------
    @staticmethod
    def _apply(c: Connection, W, r):
        return xp.mm_t(r, W) if c.transpose else xp.mm(r, W)

    @staticmethod
    def _apply_t(c: Connection, W, w):
        return xp.mm(w, W) if c.transpose else xp.mm_t(w, W)

    def input_drive(self, params, x) -> dict:
        ext: dict = {}
        for c in self.inputs:
            t = self._apply(c, params[c.weight], x)
            ext[c.post] = t if c.post not in ext else ext[c.post] + t
        for c in self.connections:
            if c.bias is not None:
                b = params[c.bias]
                if c.post in ext:
                    ext[c.post] = ext[c.post] + b
                else:
                    shape = (x.shape[0], b.shape[0])
                    ext[c.post] = b.expand(shape) if is_torch(b) else np.broadcast_to(b, shape)
        return ext

    def _internal_drive(self, params, r):
        h: dict = {}
        for c in self.internal:
            t = self._apply(c, params[c.weight], r[c.pre])
            h[c.post] = t if c.post not in h else h[c.post] + t
        return h

    def drive(self, params, r, ext):
        h = self._internal_drive(params, r)
        for k, v in ext.items():
            h[k] = h[k] + xp.as_dtype(v, h[k]) if k in h else v
        return h

    def jvp(self, params, r, v):
        """``H' v``: one matrix product per internal connection (``r`` unused: ``H'``
        is state independent)."""
        return self._internal_drive(params, v)

    def vjp(self, params, r, w):
        """``H'^T w``: the transposed blocks."""
        g: dict = {}
        for c in self.internal:
            wp = w.get(c.post)
            if wp is None:
                continue
            t = self._apply_t(c, params[c.weight], wp)
            g[c.pre] = t if c.pre not in g else g[c.pre] + t
        return g

    def param_vjp(self, params, r, x, w):
        grads = {k: None for k in params if not k.startswith("readout_")}
        for c in self.connections:
            wp = w.get(c.post)
            if wp is None:
                continue
            src = x if c.pre == "input" else r[c.pre]
            G = wp.T @ src
            if c.transpose:
                G = G.T
            grads[c.weight] = G if grads[c.weight] is None else grads[c.weight] + G
            if c.bias is not None:
                gb = wp.sum(0)
                grads[c.bias] = gb if grads[c.bias] is None else grads[c.bias] + gb
        for k, v in grads.items():
            if v is None:
                grads[k] = xp.zeros_like(params[k])
        return grads

    def bilinear_grad(self, params, r, w, v):
        """``d/dtheta sum_b <w_b, H' v_b>``: per block ``w_post^T v_pre`` (no autodiff)."""
        grads = {k: xp.zeros_like(p) for k, p in params.items() if not k.startswith("readout_")}
        for c in self.internal:
            wp, vp = w.get(c.post), v.get(c.pre)
            if wp is None or vp is None:
                continue
            G = wp.T @ vp
            grads[c.weight] = grads[c.weight] + (G.T if c.transpose else G)
        return grads

    def forward_state(self, params, x):
        """Feed-forward pass through the forward connections only (a warm start)."""
        ext = self.input_drive(params, x)
        u: dict = {}
        r: dict = {}
        for n in self.layout.names:
            h = ext.get(n)
            for c in self.internal:
                if c.post == n and c.kind == "forward" and c.pre in r:
                    t = self._apply(c, params[c.weight], r[c.pre])
                    h = t if h is None else h + t
            if h is None:
                shape = (x.shape[0], self.layout.sizes[n])
                h = x.new_zeros(shape) if is_torch(x) else np.zeros(shape, dtype=x.dtype)
            u[n] = h
            r[n] = self.activation(h)
        return self.layout.join(u)

    def reciprocal_pairs(self):
        fwd = {(c.pre, c.post): c for c in self.internal if c.kind == "forward" and not c.transpose}
        out = []
        for c in self.internal:
            if c.kind == "feedback" and not c.transpose and (c.post, c.pre) in fwd:
                out.append((fwd[(c.post, c.pre)].weight, c.weight))
        return out

    def block_structure(self) -> list[tuple[str, str, str]]:
        """The nonzero Jacobian blocks ``(post, pre, parameter)``: the sparsity pattern."""
        return [(c.post, c.pre, c.weight) for c in self.internal]

    def __repr__(self):
        sizes = ", ".join(f"{n}={self.layout.sizes[n]}" for n in self.layout.names)
        conns = ", ".join(f"{c.pre}->{c.post}" for c in self.connections)
        return (f"DenseNetwork({sizes}; {conns}; activation={self.activation.name}, "
                f"loss={self.loss}, library={self.library})")


def _finish_params(params: dict, library: str, dtype, device):
    if library == "numpy":
        return {k: np.asarray(v, dtype=dtype or np.float64) for k, v in params.items()}
    if library == "torch":
        import torch

        return {k: torch.as_tensor(v, dtype=dtype or torch.float64, device=device or "cpu")
                for k, v in params.items()}
    raise ValueError(f"library must be 'numpy' or 'torch', got {library!r}")


def _readout(rng, params, n_out, n_classes, loss):
    if loss == "xent":
        params["readout_W"] = lecun_normal(rng, (n_classes, n_out), n_out)
        params["readout_b"] = np.zeros(n_classes)


def mlp(sizes: Sequence[int], *, n_classes: int | None = None, activation="sigmoid",
        angle: float = 90.0, tied: bool = False, loss: str = "xent", seed: int = 0,
        recurrent_scale: float = 1.0,
        library: str = "numpy", dtype: Any = None, device: str | None = None) -> DenseNetwork:
    """MLP with reciprocal (untied) feedback: ``in -> h1 <-> h2 <-> ... <-> out``.

    Parameters
    ----------
    sizes : sequence of int
        ``[n_in, n_h1, ..., n_out]`` (at least one hidden layer). The paper's ``mlp_2-256``
        is ``[784, 256, 256, 10]``.
    n_classes : int, optional
        Readout classes (default ``n_out``).
    activation : str or Activation
        Default ``sigmoid`` = ``sigmoid(4z - 2)``.
    angle : float
        Asymmetry knob in degrees: each feedback matrix is ``sin(a) B_init + cos(a) W^T``
        (0 symmetric at init, 90 independent).
    tied : bool
        Share the weights (feedback is exactly ``W^T`` forever: an energy-based network).
    loss : {"xent", "mse"}
    seed : int
        Initialization seed (LeCun normal kernels, zero biases).
    recurrent_scale : float
        Multiplies every hidden-to-hidden / hidden-to-output kernel (forward and feedback)
        after initialization, scaling the loop gain ``rho(H' D)`` by the same factor
        (LeCun init gives about 0.85 for the sigmoid net at rest, close to instability).
        1 reproduces the reference initialization.
    library, dtype, device
        numpy (default float64) or torch (default float64 on CPU).

    Returns
    -------
    DenseNetwork

    Examples
    --------
    >>> from neurosolve.neural.ep import mlp
    >>> net = mlp([64, 32, 32, 10], angle=90, seed=0)
    >>> net.n_state, sorted(p for p in net.params if p.startswith("B_"))
    (74, ['B_h2_h1', 'B_out_h2'])
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 3 or min(sizes) < 1:
        raise ValueError(f"sizes must be [n_in, hidden..., n_out] with positive entries, got {sizes}")
    n_classes = int(n_classes or sizes[-1])
    rng = np.random.default_rng(seed)
    L = len(sizes) - 1
    names = [f"h{i}" for i in range(1, L)] + ["out"]
    layer_sizes = dict(zip(names, sizes[1:]))
    params: dict = {}
    conns = []
    prev = "input"
    for i, n in enumerate(names):
        wname = f"W_{prev}_{n}"
        params[wname] = lecun_normal(rng, (sizes[i + 1], sizes[i]), sizes[i])
        params[f"b_{n}"] = np.zeros(sizes[i + 1])
        conns.append(Connection(prev, n, wname, bias=f"b_{n}", kind="forward"))
        prev = n
    for i in range(1, L):
        lo, hi = names[i - 1], names[i]
        W = params[f"W_{lo}_{hi}"]
        if tied:
            conns.append(Connection(hi, lo, f"W_{lo}_{hi}", transpose=True, kind="feedback"))
        else:
            Binit = lecun_normal(rng, (sizes[i], sizes[i + 1]), sizes[i + 1])
            params[f"B_{hi}_{lo}"] = rotate_feedback(Binit, W, angle)
            conns.append(Connection(hi, lo, f"B_{hi}_{lo}", kind="feedback"))
    if recurrent_scale != 1.0:
        for k in params:
            if (k.startswith("W_") and not k.startswith("W_input")) or k.startswith("B_"):
                params[k] = recurrent_scale * params[k]
    _readout(rng, params, sizes[-1], n_classes, loss)
    return DenseNetwork(layer_sizes, conns, _finish_params(params, library, dtype, device),
                        n_in=sizes[0], activation=activation, loss=loss, n_classes=n_classes)


def loop_mlp(sizes: Sequence[int] = (784, 256, 256, 10), *, n_classes: int | None = None,
             activation="sigmoid", loss: str = "xent", seed: int = 0, library: str = "numpy",
             dtype: Any = None, device: str | None = None) -> DenseNetwork:
    """The "loop" network without reciprocal pairs: ``in -> h1 -> h2 -> out -> h1``.

    The Jacobian is a block 3-cycle (``H'`` has blocks where ``H'^T`` has zeros), so the
    asymmetry ``1/2 ||J - J^T||_F^2`` equals ``||H'||_F^2``: the homeostatic loss reduces
    to weight decay of the recurrent weights.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) != 4 or min(sizes) < 1:
        raise ValueError(f"sizes must be [n_in, n_h1, n_h2, n_out], got {sizes}")
    n_classes = int(n_classes or sizes[-1])
    rng = np.random.default_rng(seed)
    names = ["h1", "h2", "out"]
    layer_sizes = dict(zip(names, sizes[1:]))
    params: dict = {}
    conns = []
    prev = "input"
    for i, n in enumerate(names):
        wname = f"W_{prev}_{n}"
        params[wname] = lecun_normal(rng, (sizes[i + 1], sizes[i]), sizes[i])
        params[f"b_{n}"] = np.zeros(sizes[i + 1])
        conns.append(Connection(prev, n, wname, bias=f"b_{n}", kind="forward"))
        prev = n
    params["B_out_h1"] = lecun_normal(rng, (sizes[1], sizes[3]), sizes[3])
    conns.append(Connection("out", "h1", "B_out_h1", kind="feedback"))
    _readout(rng, params, sizes[-1], n_classes, loss)
    return DenseNetwork(layer_sizes, conns, _finish_params(params, library, dtype, device),
                        n_in=sizes[0], activation=activation, loss=loss, n_classes=n_classes)
