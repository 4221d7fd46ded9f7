"""Jacobian homeostasis: a loss on the antisymmetric part of the state Jacobian.

At the free fixed point ``r*`` (``beta = 0``, states held fixed) with the activation
bypassed, ``J = H'(r*) - I``. The homeostatic loss is

    L_homeo = 1/2 ||J - J^T||_F^2 / n  =  2 ||A||_F^2 / n,     A = (J - J^T)/2,

with ``n`` the number of state units (the reference code's 1/n normalization; the paper's
Eq. 12 is the unnormalized form, which matters when porting ``lambda``). Its gradient is
taken with respect to the parameters only.

Two ways to get it, both without materializing ``J``:

``method="exact"`` (dense layers)
    Only connected layer pairs contribute, block by block:
    ``sum over layer pairs {a, b} of ||H'_{ba} - H'_{ab}^T||_F^2 / n`` where ``H'_{ba}``
    is the (sum of the) weight matrices from ``a`` to ``b`` (zero when absent). For an
    MLP with reciprocal pairs this is ``sum ||W - B^T||^2 / n`` (a Kolen-Pollack-like
    weight-matching penalty, gradient ``2 (W - B^T) / n``); for the loop network it is
    ``||H'||_F^2 / n`` (plain weight decay of the recurrent weights). No probes, no
    variance, one pass over the blocks.
``method="probe"`` (any vector field)
    Per sample a Gaussian probe ``eps``: ``a = H' eps``, ``b = H' a`` (two JVPs) and
    ``l(eps) = (||a||^2 - <eps, b>) / n``, whose expectation is the loss above (the
    identity part of ``J`` cancels exactly). The estimate averages ``n_probes`` draws per
    sample over the batch; its standard error is reported. Parameter gradient (states
    fixed): ``n dl = <2a - H'^T eps, dH' eps> - <eps, dH' a>``, i.e. two "bilinear"
    terms; for dense networks each is one outer product per weight block
    (``(2a - H'^T eps)_post eps_pre^T - eps_post a_pre^T``), for other torch networks a
    double backward.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214 (Eq. 12; code
   ``homeo_loss``).
.. [2] M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
   Laplacian smoothing splines", Commun. Stat. Simul. Comput. 19(2), 1990.
.. [3] J. F. Kolen, J. B. Pollack, "Backpropagation without weight transport", IEEE ICNN
   1994.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurosolve.backends import ops as xp
from neurosolve.neural.ep.networks import DenseNetwork, LayeredNetwork

__all__ = ["HomeostasisResult", "homeostatic_loss", "exact_asymmetry", "probe_asymmetry"]


@dataclass
class HomeostasisResult:
    """Value and parameter gradient of the homeostatic loss.

    Attributes
    ----------
    value : float
        The loss (exact, or the probe mean).
    grads : dict
        Gradient with respect to each network parameter (readout excluded, zeros where
        the loss does not depend on a parameter).
    stderr : float
        Standard error of a probe estimate (0 for the exact form).
    method : str
    n : int
        The normalization (number of state units).
    samples : numpy.ndarray or None
        The individual probe values (probe method).
    """

    value: float
    grads: dict
    stderr: float
    method: str
    n: int
    samples: Any = None


def _numba_ok(M, Mt) -> bool:
    return (isinstance(M, np.ndarray) and isinstance(Mt, np.ndarray) and M.dtype == Mt.dtype
            and M.dtype in (np.float32, np.float64))


def _sumsq(D) -> float:
    """Squared Frobenius norm (real or complex), one pass over memory."""
    if xp.lib(D) == "torch":
        return float(torch_vdot(D))
    flat = D.ravel(order="K")
    return float(np.real(np.vdot(flat, flat)))


def torch_vdot(D):
    flat = D.reshape(-1)
    return (flat.conj() @ flat).real if D.is_complex() else flat @ flat


def _zeros(params):
    return {k: xp.zeros_like(v) for k, v in params.items() if not k.startswith("readout_")}


def exact_asymmetry(net: DenseNetwork, params: dict | None = None, *,
                    normalize: bool = True) -> HomeostasisResult:
    """Exact ``1/2 ||J - J^T||_F^2 / n`` of a dense network, block by block, with gradient.

    Layer pairs without connections cost nothing; a pair with only one direction (the
    loop network's ``out -> h1``) contributes ``||W||_F^2``.
    """
    if not isinstance(net, DenseNetwork):
        raise TypeError(
            f"the exact block form needs a DenseNetwork (state-independent Jacobian), got "
            f"{type(net).__name__}; use method='probe'"
        )
    params = net.params if params is None else params
    n = net.n_state if normalize else 1
    # effective block M[(post, pre)] = sum of weights pre -> post (one term in the usual case)
    blocks: dict = {}
    for c in net.internal:
        W = params[c.weight]
        W = W.T if c.transpose else W
        key = (c.post, c.pre)
        blocks[key] = W if key not in blocks else blocks[key] + W
    value = 0.0
    diff: dict = {}
    for (post, pre), M in blocks.items():
        if (post, pre) in diff:
            continue
        if post == pre:
            D = M - M.T
            value += 0.5 * _sumsq(D)
            diff[(post, pre)] = (2.0 / n) * D
            continue
        Mt = blocks.get((pre, post))
        if Mt is not None and _numba_ok(M, Mt):
            # one tiled pass for value and both gradients (numba; numpy reference in tests)
            from neurosolve.neural.ep._kernels import pair_asymmetry

            v, gM, gMt = pair_asymmetry(M, Mt, 2.0 / n)
            value += v
            diff[(post, pre)], diff[(pre, post)] = gM, gMt
            continue
        D = M - Mt.T if Mt is not None else M
        value += _sumsq(D)
        diff[(post, pre)] = (2.0 / n) * D
        diff[(pre, post)] = (-2.0 / n) * D.T  # a transposed view: no strided copy
    grads: dict = {}
    for c in net.internal:
        g = diff[(c.post, c.pre)]
        g = g.T if c.transpose else g
        grads[c.weight] = g if c.weight not in grads else grads[c.weight] + g
    for k, v in params.items():
        if not k.startswith("readout_") and k not in grads:
            grads[k] = xp.zeros_like(v)
    return HomeostasisResult(value=value / n, grads=grads, stderr=0.0, method="exact", n=net.n_state)


def probe_asymmetry(net: LayeredNetwork, r, *, params: dict | None = None, n_probes: int = 5,
                    rng: np.random.Generator | int | None = None, normalize: bool = True,
                    with_grad: bool = True) -> HomeostasisResult:
    """Monte-Carlo estimate of ``1/2 ||J - J^T||_F^2 / n`` at the states ``r`` (two JVPs).

    Parameters
    ----------
    net : LayeredNetwork
    r : array (batch, n)
        Flat free-phase activities (held fixed: no differentiation through them).
    n_probes : int
        Independent Gaussian probes per sample (reference: 5).
    rng : numpy Generator or int, optional
        Probe source (numpy draws on both backends, so they agree).
    with_grad : bool
        Also return the parameter gradient.
    """
    if not isinstance(n_probes, (int, np.integer)) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
    params = net.params if params is None else params
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    lay = net.layout
    n = net.n_state
    norm = n if normalize else 1
    if tuple(r.shape[1:]) != (n,):
        raise ValueError(f"r has shape {tuple(r.shape)}; expected (batch, {n}) flat activities")
    Bsz = r.shape[0]
    rd = lay.split(r)
    if xp.lib(r) == "torch":
        import torch

        if isinstance(r, torch.Tensor) and r.requires_grad:
            r = r.detach()
            rd = lay.split(r)
    vals = []
    grads = _zeros(params) if with_grad else {}
    total = Bsz * n_probes
    for _ in range(n_probes):
        eps = xp.randn(rng, (Bsz, n), r)
        ed = lay.split(eps)
        a = lay.join(net.jvp(params, rd, ed), like=eps)
        b = lay.join(net.jvp(params, rd, lay.split(a)), like=eps)
        ell = ((a * a).sum(1) - (eps * b).sum(1)) / norm
        vals.append(xp.to_numpy(ell))
        if with_grad:
            # n dl = <2a - H'^T eps, dH' eps> - <eps, dH' a>: two bilinear terms, block by
            # block for dense networks, double backward otherwise
            bt = lay.join(net.vjp(params, rd, ed), like=eps)
            g1 = net.bilinear_grad(params, rd, lay.split(2 * a - bt), ed)
            g2 = net.bilinear_grad(params, rd, ed, lay.split(a))
            for k in grads:
                grads[k] = grads[k] + (g1[k] - g2[k]) / (norm * total)
    s = np.concatenate(vals)
    stderr = float(np.std(s, ddof=1) / math.sqrt(s.size)) if s.size > 1 else float("nan")
    return HomeostasisResult(value=float(s.mean()), grads=grads, stderr=stderr, method="probe",
                             n=n, samples=s)


def homeostatic_loss(net: LayeredNetwork, r=None, *, method: str = "auto",
                     params: dict | None = None, n_probes: int = 5, rng: Any = None,
                     normalize: bool = True, with_grad: bool = True) -> HomeostasisResult:
    """The homeostatic loss ``1/2 ||J - J^T||_F^2 / n`` and its parameter gradient.

    Parameters
    ----------
    net : LayeredNetwork
    r : array (batch, n), optional
        Free-phase activities (``FreePhase.r``); required for ``method="probe"``.
    method : {"auto", "exact", "probe"}
        ``auto``: exact block form for dense networks, probes otherwise.
    n_probes, rng, normalize, with_grad
        See :func:`probe_asymmetry`.

    Returns
    -------
    HomeostasisResult
        Multiply ``grads`` by ``lambda`` and add them to the task gradient.

    Examples
    --------
    >>> from neurosolve.neural.ep import mlp, homeostatic_loss
    >>> sym = mlp([4, 3, 3, 2], angle=0, seed=0)
    >>> round(homeostatic_loss(sym).value, 12)
    0.0
    """
    if method not in ("auto", "exact", "probe"):
        raise ValueError(f"method must be 'auto', 'exact' or 'probe', got {method!r}")
    if method == "auto":
        method = "exact" if isinstance(net, DenseNetwork) else "probe"
    if method == "exact":
        return exact_asymmetry(net, params, normalize=normalize)
    if r is None:
        raise ValueError("method='probe' needs the free-phase activities r")
    return probe_asymmetry(net, r, params=params, n_probes=n_probes, rng=rng,
                           normalize=normalize, with_grad=with_grad)
