"""Training the smoother weights of :class:`~neurosolve.solvers.preconditioners.LearnedMG`.

:class:`~neurosolve.neural.mg_smoother.SmootherWeightNet` (re-exported here) maps a
level's cell features to relaxation weights in
``[0.1, 1.9]`` (and interpolation strength factors); :class:`LearnedVCycles` runs GMG's
V-cycle in torch with them (the
hierarchy, transfers and coarsest pseudo-inverse read off the numba GMG, so the two agree
to rounding); :func:`train_learned_mg` trains the network with the error-energy loss
through :func:`~neurosolve.neural.train_preconditioner`. The loss is the A-norm error
after one preconditioned steepest-descent step (the energy loss with the optimal step
length, so it is invariant to the scale of the V-cycle, as PCG is).

References
----------
.. [1] A. Katrutsa, T. Daulbaev, I. Oseledets, "Black-box learning of multigrid
   parameters", J. Comput. Appl. Math. 368 (2020), arXiv:1711.03825.
.. [2] D. Greenfeld, M. Galun, R. Kimmel, I. Yavneh, R. Basri, "Learning to Optimize
   Multigrid PDE Solvers", ICML 2019, arXiv:1902.10248.
"""

from __future__ import annotations

import numpy as np
import torch

from neurosolve.neural.mg_smoother import SmootherWeightNet, load_smoother
from neurosolve.solvers.preconditioners.gmg import GMG
from neurosolve.solvers.preconditioners.learned_mg import level_outputs

__all__ = ["SmootherWeightNet", "LearnedVCycles", "train_learned_mg", "load_smoother"]


# --------------------------------------------------------------------------------------------
# the same V-cycle in torch (for training)
# --------------------------------------------------------------------------------------------
class _TorchLevel:
    pass


def _tensor_weights(L, C, base):
    """The interpolation of one transfer as index lists: per (fine cell, coarse parent)
    pair with a nonzero linear weight on a usable parent, ``rows`` (fine flat index),
    ``cols`` (coarse flat index) and the signed weight ``w``; ``base`` is the coarse-cell
    weight GMG uses (strength or usable indicator). ``P_iJ = w c_J / sum |w| c_K``."""
    ti, wi, tj, wj, tk, wk = L.tables
    n0, n1, n2 = L.d.shape
    I, J, Kk = np.meshgrid(np.arange(n0), np.arange(n1), np.arange(n2), indexing="ij")
    fine = (L.d > 0).reshape(-1)
    rows, cols, vals = [], [], []
    for a in range(2):
        for b in range(2):
            for c in range(2):
                w = (wi[I, a] * wj[J, b] * wk[Kk, c]).reshape(-1)
                col = np.ravel_multi_index((ti[I, a], tj[J, b], tk[Kk, c]), C.d.shape).reshape(-1)
                keep = fine & (w != 0) & (base.reshape(-1)[col] > 0)
                rows.append(np.flatnonzero(keep))
                cols.append(col[keep])
                vals.append(w[keep])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _torch_hierarchy(gmg: GMG, dtype, device):
    """The GMG hierarchy as torch tensors: per level the CSR matrix, diagonal, colour masks
    and the interpolation as (fine, coarse, weight) index lists with GMG's coarse-cell
    weights, so learned factors on those weights stay differentiable."""
    import scipy.sparse as sp

    from neurosolve.backends import stencil_kernels as K
    from neurosolve.operators import scipy_to_torch_csr
    from neurosolve.solvers.preconditioners.gmg import usable_cells

    out = []
    levels = gmg._levels
    for li, L in enumerate(levels):
        T = _TorchLevel()
        indptr, indices, data = K.stencil_csr(L.d, L.cx, L.cy, L.cz)
        n = L.d.size
        A = sp.csr_matrix((data, indices, indptr), shape=(n, n))
        T.A = scipy_to_torch_csr(A, dtype=dtype, device=device)
        T.d = torch.as_tensor(L.d.reshape(-1), dtype=dtype, device=device)
        T.inv_d = torch.as_tensor(L.inv_d.reshape(-1), dtype=dtype, device=device)
        i, j, k = np.indices(L.d.shape)
        T.colors = [torch.as_tensor(((i + j + k) % 2 == c).reshape(-1) & (L.d.reshape(-1) > 0),
                                    device=device) for c in (0, 1)]
        T.shape = L.d.shape
        T.active = torch.as_tensor(L.d.reshape(-1) > 0, device=device)
        if li < len(levels) - 1:
            C = levels[li + 1]
            base = L.cw if L.cw is not None else usable_cells(C)
            rows, cols, w = _tensor_weights(L, C, base)
            T.n = n
            T.rows = torch.as_tensor(rows, device=device)
            T.cols = torch.as_tensor(cols, device=device)
            T.w = torch.as_tensor(w, dtype=dtype, device=device)
            T.base = torch.as_tensor(base.reshape(-1), dtype=dtype, device=device)
        out.append(T)
    idx = torch.as_tensor(gmg._coarse_idx, device=device)
    pinv = torch.as_tensor(gmg._coarse_pinv, dtype=dtype, device=device)
    return out, idx, pinv


def _interpolation_values(T, factor):
    """``P``'s entries for the index lists of level ``T``, with the coarse weights
    ``base * factor`` (factor None: 1), renormalized per fine row."""
    cw = T.base if factor is None else T.base * factor.reshape(-1)
    cwc = cw.index_select(0, T.cols)
    den = torch.zeros(T.n, dtype=cw.dtype, device=cw.device).index_add(0, T.rows, T.w.abs() * cwc)
    return T.w * cwc / den.index_select(0, T.rows)


def _torch_vcycle(levels, idx, pinv, omegas, factors, nu, b):
    """One V-cycle on a batch ``b`` of shape ``(batch, n)``; differentiable in ``omegas``
    (per level ``(n,)``) and ``factors`` (per transfer ``(m,)`` or None)."""

    def mv(A, x):  # (batch, n) -> (batch, n)
        return (A @ x.T).T

    def smooth(T, om, bb, x, colors):
        for _ in range(nu):
            for c in colors:
                gs = (bb - mv(T.A, x) + T.d * x) * T.inv_d
                x = torch.where(T.colors[c], (1.0 - om) * x + om * gs, x)
        return x

    def cycle(level, bb):
        T = levels[level]
        if level == len(levels) - 1:
            x = torch.zeros_like(bb)
            if idx.numel():
                x = x.index_copy(1, idx, bb.index_select(1, idx) @ pinv.T)
            return x
        C = levels[level + 1]
        om = omegas[level].reshape(1, -1)
        p = _interpolation_values(T, factors[level])
        x = smooth(T, om, bb, torch.zeros_like(bb), (0, 1))
        r = bb - mv(T.A, x)
        m = C.d.numel()
        rc = torch.zeros(bb.shape[0], m, dtype=bb.dtype, device=bb.device).index_add(
            1, T.cols, r.index_select(1, T.rows) * p)
        xc = cycle(level + 1, torch.where(C.active, rc, torch.zeros_like(rc)))
        x = x.index_add(1, T.rows, xc.index_select(1, T.cols) * p)
        return smooth(T, om, bb, x, (1, 0))

    return cycle(0, b)


class LearnedVCycles(torch.nn.Module):
    """The torch V-cycles of several geometries sharing one weight network; maps
    ``(batch, 1, *grid)`` to the same shape (``forward(r, geometry=indices)``)."""

    def __init__(self, weight_net, gmgs, dtype=torch.float64):
        super().__init__()
        self.weight_net = weight_net
        self.gmgs = gmgs
        self.nu = gmgs[0].nu
        self._hier = [_torch_hierarchy(g, dtype, "cpu") for g in gmgs]

    def _apply_one(self, g, r):
        levels, idx, pinv = self._hier[g]
        out = level_outputs(self.weight_net, self.gmgs[g]._levels, self.gmgs[g].grid.ndim)
        om = [torch.ones(L.d.size, dtype=r.dtype) if o is None else o[0].to(r.dtype)
              for o, L in zip(out[:-1], self.gmgs[g]._levels)]  # None: plain Gauss-Seidel
        interp = out[-1] is not None and out[-1].shape[0] > 1
        fac = [o[1].to(r.dtype) for o in out[1:]] if interp else [None] * len(om)
        return _torch_vcycle(levels, idx, pinv, om, fac, self.nu, r)

    def forward(self, r, geometry=None):
        flat = r.reshape(r.shape[0], -1)
        if geometry is None:
            return self._apply_one(0, flat).reshape(r.shape)
        geometry = np.asarray(geometry)
        out = torch.zeros_like(flat)
        for g in np.unique(geometry):
            sel = torch.as_tensor(np.flatnonzero(geometry == g))
            out = out.index_copy(0, sel, self._apply_one(int(g), flat.index_select(0, sel)))
        return out.reshape(r.shape)


def _lmg_energy_loss(batch):
    """The A-norm error after one preconditioned steepest-descent step, over the initial
    one: ``1 - (z.r)^2 / ((z.A z)(e.A e))`` with ``r = A e`` and ``z = M r`` (each sample
    with its own V-cycle). Invariant to the scale of ``M``, as PCG is: a V-cycle that
    overshoots as a stationary iteration (common with high-contrast coefficients) is not
    penalized for the overshoot, only for the directions it gets wrong."""
    tiny = torch.finfo(batch.b.dtype).tiny
    e0 = batch.b
    r0 = batch.apply_A(e0)
    z = batch.module(r0, geometry=batch.geometry)
    zr = (z * r0).flatten(1).sum(1)
    zAz = (z * batch.apply_A(z)).flatten(1).sum(1).clamp_min(tiny)
    eAe = (e0 * r0).flatten(1).sum(1).clamp_min(tiny)
    return 1.0 - zr * zr / (zAz * eAe)


def _lmg_pcg_loss(steps: int):
    """``(e_K.A e_K / e_0.A e_0)^(1/K)`` after ``K`` PCG iterations from ``x0 = 0`` on
    ``A x = A e_0`` (each sample with its own V-cycle as the preconditioner): what PCG
    does with the cycle, not only its first step."""

    def loss(batch):
        tiny = torch.finfo(batch.b.dtype).tiny

        def dot(u, v):
            return (u * v).flatten(1).sum(1).view(-1, *([1] * (u.dim() - 1)))

        e = batch.b
        r = batch.apply_A(e)
        eAe0 = dot(e, r).clamp_min(tiny)
        z = batch.module(r, geometry=batch.geometry)
        p = z
        rz = dot(r, z)
        for k in range(steps):
            Ap = batch.apply_A(p)
            alpha = rz / dot(p, Ap).clamp_min(tiny)
            e = e - alpha * p
            if k == steps - 1:
                break
            r = r - alpha * Ap
            z = batch.module(r, geometry=batch.geometry)
            rz_new = dot(r, z)
            p = z + rz_new / rz.clamp_min(tiny) * p
            rz = rz_new
        ratio = (dot(e, batch.apply_A(e)) / eAe0).flatten().clamp_min(tiny)
        return ratio ** (1.0 / steps)

    loss.__name__ = f"pcg{steps}_energy"
    return loss


def train_learned_mg(grids, *, dim: int | None = None, channels: int = 8, layers: int = 2,
                     interpolation: bool = False, learned_finest: bool = True,
                     pcg_steps: int = 1, nu: int = 2,
                     steps: int = 200, batch: int = 4, lr: float = 3e-3,
                     lr_final: float = 3e-4, seed: int = 0, progress: bool = True,
                     init=None, **kwargs):
    """Train a :class:`SmootherWeightNet` on gallery grids (one or a list, same shape).

    The V-cycles run in float64 torch; the loss is the A-norm error ratio after one
    preconditioned steepest-descent step (``pcg_steps=1``) or, per step, after
    ``pcg_steps`` PCG iterations, on spectrally biased errors
    (:func:`~neurosolve.neural.training_data`), through
    :func:`~neurosolve.neural.train_preconditioner` (checkpoints, resume, ``max_minutes``,
    progress bar, data parallelism: pass them in ``kwargs``).

    Parameters
    ----------
    grids : CellGrid or list of CellGrid
        Training geometries, one grid shape.
    dim, channels, layers, interpolation, learned_finest
        The :class:`SmootherWeightNet`.
    pcg_steps : int
        PCG iterations inside the loss (1: one steepest-descent step).
    nu : int
        Smoothing sweeps of the V-cycle.
    steps, batch, lr, lr_final, seed, progress, **kwargs
        As in :func:`~neurosolve.neural.train_preconditioner` (training runs on the CPU:
        the V-cycle hierarchy is built there).
    init : SmootherWeightNet, str or path, optional
        Start from these weights instead of GMG (zero output layer): a network, a shipped
        model's name (``"nmg3d"``) or a ``smoother.pt``, of the same architecture. Used to
        fine-tune a model trained on small grids on larger ones.

    Returns
    -------
    (SmootherWeightNet, TrainResult)
    """
    from neurosolve.neural.training import train_preconditioner, training_data

    grids = list(grids) if isinstance(grids, (list, tuple)) else [grids]
    dim = dim or grids[0].ndim
    torch.manual_seed(seed)
    net = SmootherWeightNet(dim=dim, channels=channels, layers=layers,
                            interpolation=interpolation, learned_finest=learned_finest).double()
    init_name = None
    if init is not None:
        start = init if isinstance(init, SmootherWeightNet) else load_smoother(init)
        shapes = lambda c: {k: v for k, v in c.items() if k != "learned_finest"}  # noqa: E731
        if shapes(start.config()) != shapes(net.config()):
            raise ValueError(f"init has the architecture {start.config()}, the network to "
                             f"train {net.config()}; pass the same --dim, --channels, --layers "
                             "and --interpolation (only learned_finest may differ)")
        net.load_state_dict({k: v.double() for k, v in start.state_dict().items()})
        init_name = str(init) if not isinstance(init, SmootherWeightNet) else "module"
    gmgs = [GMG(g, nu=nu) for g in grids]
    for i, gm in enumerate(gmgs):
        if len(gm.levels) < 2:
            raise ValueError(f"grids[{i}] ({'x'.join(map(str, grids[i].shape))}) fits GMG's "
                             "coarsest level, so its V-cycle has no smoother to learn; train "
                             "on larger grids (e.g. 32^2 or 16^3 and up)")
    module = LearnedVCycles(net, gmgs)
    kwargs.setdefault("device", "cpu")  # the hierarchy's tensors are built on the CPU
    loss = _lmg_energy_loss if pcg_steps == 1 else _lmg_pcg_loss(pcg_steps)
    res = train_preconditioner(module, training_data(grids, seed=seed), loss=loss,
                               steps=steps, batch=batch, lr=lr, lr_final=lr_final, seed=seed,
                               progress=progress, dtype=torch.float64,
                               config={"kind": "learned_mg", **net.config(), "nu": nu,
                                       "pcg_steps": pcg_steps, "init": init_name},
                               **kwargs)
    net.float().eval()
    return net, res
