"""Differentiable solves: the implicit adjoint against autograd unrolled through the same
iterations.

Run::

    pytest benchmarks/bench_implicit.py --benchmark-only --benchmark-disable-gc

Cases (float64, CPU, torch limited to one thread for both sides):

* ``poisson``: ``-div(exp(m) grad u) = 1`` (the demo's operator, CSR values that depend
  on ``m``: ``LinearSystem.from_csr`` for the implicit adjoint, a torch CSR tensor built
  from them for unrolled autograd) on a 64^2 grid, PCG with Jacobi to rtol 1e-10;
  gradient of ``sum(w * u)`` with respect to ``m``.
* ``ridge``: ridge regression n=2000, d=200 by GNS Newton (exact Hessian) to
  ``||g|| <= 1e-9``; gradient of the validation-style loss ``sum(w)`` w.r.t. ``alpha``
  and ``X``.
* ``deq``: the equilibrium cell ``z = tanh(W z + U x + c)``, d=256, batch 64, spectral
  norm of ``W`` 0.9, damped iteration (damping 0.5) to atol 1e-10; gradient of
  ``sum(z)`` with respect to ``W``, ``U``, ``c``.

Each benchmark times forward + backward of one mode; ``extra_info`` holds the forward
time alone (``adjoint=None``), ``backward_over_forward`` (backward / forward time),
``ratio_vs_unrolled`` (ours / unrolled total time; below 1 means we are faster),
``saved_bytes`` (the bytes autograd saves for backward, counted with
``torch.autograd.graph.saved_tensors_hooks``) and ``memory_ratio_vs_unrolled``, the
iteration counts and ``gradient_relative_difference`` between the two modes. The memory
case ``test_memory_flat_in_iterations`` solves the Poisson case to 1e-4 and 1e-10 and
records both modes' saved bytes: implicit stays flat, unrolled grows with the iterations.

Peer (``test_deq_vs_torchdeq``, skipped without torchdeq): the ``deq`` cell solved by
plain fixed-point iteration on both sides (damping 1 for ours, torchdeq's
``fixed_point_iter``) with each library's implicit backward; ``extra_info`` holds both
sides' residual ``max_k ||F(z_k) - z_k||`` measured by the same function,
``ratio_vs_torchdeq`` (ours / torchdeq, forward plus backward, minima) and
``gradient_relative_difference``.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import neurosolve as ns  # noqa: E402
from neurosolve.demos.implicit import diffusion_csr, diffusion_matrix, true_field  # noqa: E402
from neurosolve.problems import FixedPointProblem, LinearSystem, Minimize  # noqa: E402
from neurosolve.solvers import CG, FixedPoint, GNSNewton  # noqa: E402
from neurosolve.solvers.preconditioners import Jacobi  # noqa: E402

D = torch.float64
_RESULTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class _SavedBytes:
    """Bytes autograd saves for backward while active."""

    def __init__(self):
        self.total = 0

    def pack(self, t):
        if t.layout == torch.sparse_csr:  # numel() of a sparse tensor counts its zeros
            parts = (t.crow_indices(), t.col_indices(), t.values())
        elif t.layout == torch.sparse_coo:
            parts = (t._indices(), t._values())
        else:
            parts = (t,)
        self.total += sum(p.numel() * p.element_size() for p in parts)
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


# -- cases: each returns (params, forward(params, adjoint) -> (loss, result)) -----------

@functools.lru_cache(maxsize=None)
def _poisson_data(n=64):
    shape = (n, n)
    return shape, torch.as_tensor(true_field(shape)), torch.linspace(0, 1, n * n, dtype=D)


def poisson_case(rtol=1e-10):
    shape, m0, w = _poisson_data()
    f = torch.ones(m0.numel(), dtype=D)
    m = m0.clone().requires_grad_(True)

    def forward(adjoint):
        if adjoint == "unrolled":  # autograd through the iterations needs A on the graph
            prob = LinearSystem(diffusion_matrix(m, shape), f)
        else:
            prob = LinearSystem.from_csr(*diffusion_csr(m, shape), f)
        res = ns.solve(prob, CG(rtol=rtol, M=Jacobi(prob.A.matrix.detach())), adjoint=adjoint)
        return (w * res.x).sum(), res

    return (m,), forward


@functools.lru_cache(maxsize=None)
def _ridge_data(n=2000, d=200):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, dtype=D, generator=g), torch.randn(n, dtype=D, generator=g)


def ridge_case():
    X0, y = _ridge_data()
    X = X0.clone().requires_grad_(True)
    alpha = torch.tensor(3.0, dtype=D, requires_grad=True)

    def forward(adjoint):
        f = lambda w: 0.5 * ((X @ w - y) ** 2).sum() + 0.5 * alpha * (w @ w)  # noqa: E731
        prob = Minimize(f, x0=torch.zeros(X.shape[1], dtype=D))
        res = ns.solve(prob, GNSNewton(gtol=1e-9), adjoint=adjoint)
        return res.x.sum(), res

    return (alpha, X), forward


@functools.lru_cache(maxsize=None)
def _deq_data(d=256, batch=64):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(d, d, dtype=D, generator=g)
    W = 0.9 * W / torch.linalg.matrix_norm(W, 2)
    return (W, torch.randn(d, 32, dtype=D, generator=g) / 6,
            torch.randn(d, dtype=D, generator=g) / 4,
            torch.randn(batch, 32, dtype=D, generator=g))


def deq_case(method="damped"):
    W0, U0, c0, xin = _deq_data()
    W, U, c = (t.clone().requires_grad_(True) for t in (W0, U0, c0))

    def forward(adjoint):
        F = lambda z: torch.tanh(z @ W.T + xin @ U.T + c)  # noqa: E731
        prob = FixedPointProblem(F, torch.zeros(xin.shape[0], W.shape[0], dtype=D),
                                 batched=True)
        res = ns.solve(prob, FixedPoint(method=method, atol=1e-10, rtol=0.0, maxiter=2000),
                       adjoint=adjoint)
        return res.x.sum(), res

    return (W, U, c), forward


CASES = {"poisson": poisson_case, "ridge": ridge_case, "deq": deq_case}


def _run(case, adjoint):
    params, forward = CASES[case]()
    with _SavedBytes() as saved:
        t0 = time.perf_counter()
        loss, res = forward(adjoint)
        t1 = time.perf_counter()
    grads = torch.autograd.grad(loss, params)
    t2 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "total": t2 - t0, "saved": saved.total,
            "grads": grads, "n_iter": res.n_iter,
            "adjoint_iter": res.stats.get("adjoint", {}).get("n_iter")}


def _relative_difference(grads, reference):
    """``||grads - reference|| / ||reference||`` over a tuple of gradient tensors."""
    num = sum(float(torch.linalg.vector_norm(a - b) ** 2) for a, b in zip(grads, reference))
    den = sum(float(torch.linalg.vector_norm(b) ** 2) for b in reference)
    return (num / den) ** 0.5


def _forward_only(case):
    _, forward = CASES[case]()
    t0 = time.perf_counter()
    forward(None)
    return time.perf_counter() - t0


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["unrolled", "implicit"])
def test_gradient(benchmark, case, mode):
    if case == "ridge" and mode == "unrolled":
        pytest.skip("GNS Newton's iterations are not differentiable by autograd (host "
                    "linear algebra); the ridge case has no unrolled peer")
    benchmark.group = f"implicit-{case}"
    out = {}

    def once():
        out.update(_run(case, mode))

    benchmark.pedantic(once, rounds=2, warmup_rounds=1)
    fwd = min(_forward_only(case) for _ in range(2))
    _RESULTS[(case, mode)] = out
    info = benchmark.extra_info
    info.update(forward_s=fwd, backward_s=out["backward"], iterations=out["n_iter"],
                adjoint_iterations=out["adjoint_iter"], saved_bytes=out["saved"],
                backward_over_forward=out["backward"] / fwd)
    other = _RESULTS.get((case, "unrolled"))
    if mode == "implicit" and other is not None:
        info["ratio_vs_unrolled"] = benchmark.stats.stats.min / other["best_total"]
        info["memory_ratio_vs_unrolled"] = out["saved"] / other["saved"]
        info["gradient_relative_difference"] = _relative_difference(out["grads"], other["grads"])
    out["best_total"] = benchmark.stats.stats.min


@pytest.mark.parametrize("mode", ["unrolled", "implicit"])
def test_memory_flat_in_iterations(benchmark, mode):
    benchmark.group = "implicit-memory"
    rows = {}

    def once():
        for rtol in (1e-4, 1e-10):
            params, forward = poisson_case(rtol)
            with _SavedBytes() as saved:
                loss, res = forward(mode)
            torch.autograd.grad(loss, params)
            rows[rtol] = (res.n_iter, saved.total)

    benchmark.pedantic(once, rounds=1, warmup_rounds=0)
    (k1, b1), (k2, b2) = rows[1e-4], rows[1e-10]
    benchmark.extra_info.update(iterations=[k1, k2], saved_bytes=[b1, b2],
                                saved_growth=b2 / b1, iteration_growth=k2 / k1)


# -- peer: torchdeq's implicit backward on the same equilibrium cell --------------------

def _deq_residual(z, params):
    """``max_k ||F(z_k) - z_k||``: the same certificate measured on both sides' answers."""
    W, U, c = params
    xin = _deq_data()[3]
    with torch.no_grad():
        return float(torch.linalg.vector_norm(torch.tanh(z @ W.T + xin @ U.T + c) - z,
                                              dim=1).max())


def _deq_forward(side, params):
    """Plain fixed-point iteration on both sides (torchdeq's ``fixed_point_iter`` is
    undamped, so ours runs damping 1), implicit backward by fixed-point iteration on both
    sides, tolerance 1e-11 for ours against torchdeq's 1e-10 on its own norm, so that our
    answer is at least as accurate (the residuals are recorded)."""
    W, U, c = params
    xin = _deq_data()[3]
    F = lambda z: torch.tanh(z @ W.T + xin @ U.T + c)  # noqa: E731
    z0 = torch.zeros(xin.shape[0], W.shape[0], dtype=D)
    if side == "ours":
        prob = FixedPointProblem(F, z0, batched=True)
        res = ns.solve(prob, FixedPoint(method="damped", damping=1.0, atol=1e-11, rtol=0.0,
                                        maxiter=2000),
                       adjoint=ns.adjoint.Implicit(rtol=1e-10))
        return res.x, int(res.n_iter)
    from torchdeq import get_deq

    deq = get_deq(core="indexing", ift=True, f_solver="fixed_point_iter",
                  b_solver="fixed_point_iter", f_max_iter=2000, b_max_iter=2000, f_tol=1e-10,
                  b_tol=1e-10, f_stop_mode="abs", b_stop_mode="abs")
    zs, info = deq(F, z0)
    return zs[-1], int(info["nstep"].max())


@pytest.mark.parametrize("side", ["torchdeq", "ours"])
def test_deq_vs_torchdeq(benchmark, side):
    pytest.importorskip("torchdeq")
    benchmark.group = "implicit-deq-vs-torchdeq"
    W0, U0, c0, _ = _deq_data()
    out = {}

    def once():
        params = [t.clone().requires_grad_(True) for t in (W0, U0, c0)]
        t0 = time.perf_counter()
        z, n_iter = _deq_forward(side, params)
        t1 = time.perf_counter()
        grads = torch.autograd.grad(z.sum(), params)
        out.update(forward=t1 - t0, backward=time.perf_counter() - t1, grads=grads,
                   n_iter=n_iter, residual=_deq_residual(z.detach(), params))

    benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    info = benchmark.extra_info
    info.update(forward_s=out["forward"], backward_s=out["backward"],
                iterations=out["n_iter"], residual=out["residual"])
    out["best_total"] = benchmark.stats.stats.min
    _RESULTS[("deq-peer", side)] = out
    peer = _RESULTS.get(("deq-peer", "torchdeq"))
    if side == "ours" and peer is not None:
        info["ratio_vs_torchdeq"] = out["best_total"] / peer["best_total"]
        info["gradient_relative_difference"] = _relative_difference(out["grads"], peer["grads"])


def _jaxopt_runner():
    """A jitted value-and-gradient of ``sum(z*)`` through jaxopt's ``FixedPointIteration``
    with ``implicit_diff=True`` (its ``custom_fixed_point``), backward by GMRES. jaxopt's
    ``tol`` bounds the l2 norm of the whole batch's residual; 8e-11 = 1e-11 sqrt(64) is the
    batch-norm equivalent of our per-sample 1e-11 (both residuals are recorded)."""
    import os

    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1")
    from functools import partial

    import jax
    import jax.numpy as jnp
    from jaxopt import FixedPointIteration
    from jaxopt.linear_solve import solve_gmres

    jax.config.update("jax_enable_x64", True)
    W, U, c, xin = (jnp.asarray(t.numpy()) for t in _deq_data())

    def T(z, W, U, c):
        return jnp.tanh(z @ W.T + xin @ U.T + c)

    fpi = FixedPointIteration(fixed_point_fun=T, maxiter=2000, tol=8e-11, implicit_diff=True,
                              implicit_diff_solve=partial(solve_gmres, tol=1e-10))

    def loss(W, U, c):
        run = fpi.run(jnp.zeros((xin.shape[0], W.shape[0])), W, U, c)
        return run.params.sum(), (run.params, run.state.iter_num)

    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

    def once():
        (_, (z, n_iter)), grads = vg(W, U, c)
        jax.block_until_ready(grads)
        return (torch.as_tensor(np.asarray(z)), int(n_iter),
                [torch.as_tensor(np.asarray(a)) for a in grads])

    return once


@pytest.mark.parametrize("side", ["jaxopt", "ours"])
def test_deq_vs_jaxopt(benchmark, side):
    pytest.importorskip("jaxopt")
    benchmark.group = "implicit-deq-vs-jaxopt"
    W0, U0, c0, _ = _deq_data()
    out = {}
    if side == "jaxopt":
        run = _jaxopt_runner()

        def once():
            z, n_iter, grads = run()
            out.update(grads=grads, n_iter=n_iter,
                       residual=_deq_residual(z, (W0, U0, c0)))
    else:
        def once():
            params = [t.clone().requires_grad_(True) for t in (W0, U0, c0)]
            z, n_iter = _deq_forward("ours", params)
            grads = torch.autograd.grad(z.sum(), params)
            out.update(grads=grads, n_iter=n_iter, residual=_deq_residual(z.detach(), params))

    benchmark.pedantic(once, rounds=5, warmup_rounds=1)  # the warm-up compiles jax's side
    benchmark.extra_info.update(iterations=out["n_iter"], residual=out["residual"])
    out["best_total"] = benchmark.stats.stats.min
    _RESULTS[("deq-jaxopt", side)] = out
    peer = _RESULTS.get(("deq-jaxopt", "jaxopt"))
    if side == "ours" and peer is not None:
        benchmark.extra_info["ratio_vs_jaxopt"] = out["best_total"] / peer["best_total"]
        benchmark.extra_info["gradient_relative_difference"] = _relative_difference(
            out["grads"], peer["grads"])
