"""Convolutional vector field with holomorphic softmax pooling (torch only).

Layers ``conv1 ... convK`` (the last is the output layer) with states of shape
``(C_l, H / 2^l, W / 2^l)``. Connections, per layer ``l``:

* forward  ``H_l += pool(conv(r_{l-1}, W_l)) + b_l`` (3x3 SAME convolution, then 2x2
  softmax pooling; ``r_0`` is the input);
* feedback ``H_{l-1} += d/dr_{l-1} sum( pool(conv(r_{l-1}, B_l)) * r_l )``
  ``= conv^T( pool'(conv(r_{l-1}, B_l))^T r_l , B_l)`` with an untied kernel ``B_l`` of
  the same shape as ``W_l``.

With ``B_l = W_l`` this is the gradient of an energy, so the Jacobian is symmetric; with
``B_l != W_l`` it is asymmetric through the kernels *and* through pooling derivatives taken
at different pre-activations. Because ``H'`` depends on the state (pooling curvature), the
homeostatic loss has no closed form here: use the probe estimator.

Softmax pooling (temperature 1) over each 2x2 window, ``p = sum v e^v / sum e^v``, is a
holomorphic substitute for max pooling; the exponent is shifted by the (detached) maximum
of the *real* part, never by a complex max. It is shift-equivariant
(``pool(v + b) = pool(v) + b``), so putting the bias before or after pooling is the same.

The Jacobian blocks are those of a chain: ``(l, l-1)`` and ``(l-1, l)`` off-diagonal plus
a state-dependent diagonal block from the feedback's pooling curvature (symmetric).
JVPs/VJPs come from torch.autograd (reverse mode and double backward) on these
explicit, holomorphic formulas.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214 (``cnn_discrete_vf``).
.. [2] A. Laborieux, F. Zenke, "Holomorphic equilibrium propagation computes exact
   gradients through finite size oscillations", NeurIPS 2022, arXiv:2209.00530.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from neurosolve.neural.ep.activations import get_activation
from neurosolve.neural.ep.networks import LayeredNetwork, Layout, lecun_normal

__all__ = ["ConvNetwork", "conv_net", "softmax_pool", "softmax_pool_vjp"]


def _windows(v):
    B, C, H, W = v.shape
    return v.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(
        B, C, H // 2, W // 2, 4)


def _weights(win):
    w0 = win.detach()  # the shift is a constant (detach also drops forward-mode tangents)
    m = (w0.real if w0.is_complex() else w0).amax(dim=-1, keepdim=True)
    e = (win - m).exp()
    return e / e.sum(dim=-1, keepdim=True)


def softmax_pool(v):
    """2x2 stride-2 softmax pooling ``sum v e^v / sum e^v`` (holomorphic)."""
    win = _windows(v)
    return (win * _weights(win)).sum(-1)


def softmax_pool_vjp(v, w):
    """Transpose action of the pooling Jacobian at ``v`` on ``w`` (holomorphic, no conj):
    ``dp/dv_i = s_i (1 + v_i - p)``."""
    win = _windows(v)
    s = _weights(win)
    p = (win * s).sum(-1, keepdim=True)
    g = s * (1 + win - p) * w[..., None]
    B, C, h, wd, _ = g.shape
    return g.reshape(B, C, h, wd, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(B, C, 2 * h, 2 * wd)


def _cast(W, like):
    return W if W.dtype == like.dtype else W.to(like.dtype)


class ConvNetwork(LayeredNetwork):
    """Layered convolutional vector field (see the module docstring). Build with
    :func:`conv_net`."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], params: dict, *,
                 activation="dsilu", loss: str = "xent", n_classes: int = 10, kernel: int = 3):
        C0, H0, W0 = (int(s) for s in input_shape)
        K = len(channels)
        if H0 % (2 ** K) or W0 % (2 ** K):
            raise ValueError(f"input height/width {H0}x{W0} must be divisible by 2^{K}")
        names = [f"conv{i}" for i in range(1, K + 1)]
        shapes = [(int(c), H0 // 2 ** (i + 1), W0 // 2 ** (i + 1)) for i, c in enumerate(channels)]
        self.layout = Layout(names, shapes)
        self.channels = tuple(int(c) for c in channels)
        self.kernel = int(kernel)
        self.pad = self.kernel // 2
        self.activation = get_activation(activation)
        if loss != "xent":
            raise ValueError("ConvNetwork supports loss='xent' only")
        self.loss = loss
        self.n_classes = int(n_classes)
        self.output_layer = names[-1]
        self.input_shape = (C0, H0, W0)
        self.params = dict(params)
        self.names = names

    def _conv(self, x, W):
        import torch.nn.functional as Fn

        return Fn.conv2d(x, _cast(W, x), padding=self.pad)

    def _conv_t(self, y, W):
        import torch.nn.functional as Fn

        return Fn.conv_transpose2d(y, _cast(W, y), padding=self.pad)

    def input_drive(self, params, x) -> dict:
        ext = {}
        first = self.names[0]
        ext[first] = softmax_pool(self._conv(x, params[f"W_input_{first}"])) + \
            params[f"b_{first}"][None, :, None, None]
        for n in self.names[1:]:
            shp = (x.shape[0],) + self.layout.shapes[n]
            ext[n] = params[f"b_{n}"][None, :, None, None].expand(shp)
        return ext

    def _internal_drive(self, params, r):
        h: dict = {}
        for lo, hi in zip(self.names[:-1], self.names[1:]):
            f = softmax_pool(self._conv(r[lo], params[f"W_{lo}_{hi}"]))
            h[hi] = f if hi not in h else h[hi] + f
            Bk = params[f"B_{hi}_{lo}"]
            v = self._conv(r[lo], Bk)
            fb = self._conv_t(softmax_pool_vjp(v, r[hi]), Bk)
            h[lo] = fb if lo not in h else h[lo] + fb
        return h

    def drive(self, params, r, ext):
        h = self._internal_drive(params, r)
        for k, v in ext.items():
            h[k] = h[k] + _cast(v, h[k]) if k in h else v
        return h

    def forward_state(self, params, x):
        ext = self.input_drive(params, x)
        u = {self.names[0]: ext[self.names[0]]}
        for lo, hi in zip(self.names[:-1], self.names[1:]):
            rl = self.activation(u[lo])
            u[hi] = softmax_pool(self._conv(rl, params[f"W_{lo}_{hi}"])) + ext[hi]
        return self.layout.join(u)

    def reciprocal_pairs(self):
        return [(f"W_{lo}_{hi}", f"B_{hi}_{lo}") for lo, hi in zip(self.names[:-1], self.names[1:])]

    def check_input(self, x, y=None):
        import torch

        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ConvNetwork runs on torch tensors; x is {type(x).__name__}")
        super().check_input(x, y)

    def __repr__(self):
        return (f"ConvNetwork(input={self.input_shape}, channels={self.channels}, "
                f"activation={self.activation.name}, n={self.n_state})")


def conv_net(input_shape: Sequence[int] = (1, 8, 8), channels: Sequence[int] = (16, 32, 32), *,
             n_classes: int = 10, activation="dsilu", angle: float = 0.0, seed: int = 0,
             forward_scale: float = 1.0, feedback_scale: float = 1.0,
             dtype: Any = None, device: str = "cpu") -> ConvNetwork:
    """Build a :class:`ConvNetwork` (torch).

    Parameters
    ----------
    input_shape : (C, H, W)
        ``H`` and ``W`` divisible by ``2^len(channels)`` (each layer pools by 2).
    channels : sequence of int
        Channels per layer; the paper's CIFAR net is (128, 256, 512, 512) on 32x32.
    angle : float
        Feedback kernels ``sin(a) B_init + cos(a) W`` (0: energy-based, symmetric Jacobian).
    forward_scale, feedback_scale : float
        Multiply the forward kernels (input one included) and the feedback kernels after
        initialization (and after the rotation by ``angle``). With LeCun init and ``dsilu``
        each layer's input-to-input variation shrinks about 6-10x (slope about 0.3 at rest
        and the pooling's averaging), so on a 3-layer net the output layer barely depends
        on the input and nothing trains. Equal gains of about 1.5 (the digits study's
        setting) restore the signal with ``rho(H' D)`` near 0.6. A forward gain of 2-4
        with a feedback gain below 1 also trains BP, but the homeostatic loss then spends
        itself on equalizing the two kernels' magnitudes (it shrinks the forward ones), and
        unequal scales make the angle-0 network no longer energy-based.
    dtype, device
        torch dtype (default float64) and device.

    Examples
    --------
    >>> from neurosolve.neural.ep import conv_net
    >>> net = conv_net((1, 8, 8), (4, 4, 4), angle=45, seed=0)
    >>> net.n_state
    84
    """
    import torch

    rng = np.random.default_rng(seed)
    k = 3
    chans = [int(input_shape[0])] + [int(c) for c in channels]
    names = ["input"] + [f"conv{i}" for i in range(1, len(channels) + 1)]
    params: dict = {}
    a = math.radians(angle)
    for i in range(1, len(chans)):
        lo, hi = names[i - 1], names[i]
        fan = chans[i - 1] * k * k
        W = lecun_normal(rng, (chans[i], chans[i - 1], k, k), fan)
        params[f"W_{lo}_{hi}"] = W
        params[f"b_{hi}"] = np.zeros(chans[i])
        if i >= 2:
            Bi = lecun_normal(rng, (chans[i], chans[i - 1], k, k), fan)
            params[f"B_{hi}_{lo}"] = math.sin(a) * Bi + math.cos(a) * W
    for name, f in (("forward_scale", forward_scale), ("feedback_scale", feedback_scale)):
        if not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
            raise ValueError(f"{name} must be a finite positive number, got {f!r}")
    for key in params:
        if key.startswith("W_"):
            params[key] = forward_scale * params[key]
        elif key.startswith("B_"):
            params[key] = feedback_scale * params[key]
    H = int(input_shape[1]) // 2 ** len(channels)
    Wd = int(input_shape[2]) // 2 ** len(channels)
    n_out = chans[-1] * H * Wd
    params["readout_W"] = lecun_normal(rng, (n_classes, n_out), n_out)
    params["readout_b"] = np.zeros(n_classes)
    tp = {key: torch.as_tensor(v, dtype=dtype or torch.float64, device=device)
          for key, v in params.items()}
    return ConvNetwork(input_shape, channels, tp, activation=activation, n_classes=n_classes)
