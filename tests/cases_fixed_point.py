"""Contract cases for the fixed-point family, and the fixed-point test problems.

``PROBLEMS`` maps a name to a factory of every :class:`FixedPointProblem` the fixed-point
tests use; ``tests/test_anderson_safeguards.py`` runs damped and Anderson iteration on
each of them.
"""

import numpy as np
from contract import ContractCase

from neurosolve.problems import FixedPointProblem
from neurosolve.solvers import FixedPoint


def _affine(batched=False):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 6))
    W *= 0.6 / np.linalg.norm(W, 2)
    c = rng.standard_normal(6)
    if batched:
        C = np.stack([c, 2 * c, -c])
        return FixedPointProblem(lambda Z: np.tanh(Z @ W.T + C), np.zeros((3, 6)), batched=True)
    return FixedPointProblem(lambda z: np.tanh(W @ z + c), np.zeros(6))


def linear_map(rng, n=12, rho=0.8, complex_=False):
    """``(A, b)`` with spectral radius ``rho`` (the affine map ``z -> A z + b``)."""
    A = rng.standard_normal((n, n))
    if complex_:
        A = A + 1j * rng.standard_normal((n, n))
    A *= rho / np.max(np.abs(np.linalg.eigvals(A)))
    b = rng.standard_normal(n) + (1j * rng.standard_normal(n) if complex_ else 0)
    return A, b


def _linear(complex_=False, library="numpy", seed=1):
    A, b = linear_map(np.random.default_rng(seed), complex_=complex_)
    if library == "torch":
        import torch

        At, bt = torch.as_tensor(A), torch.as_tensor(b)
        return FixedPointProblem(lambda z: At @ z + bt, torch.zeros_like(bt))
    return FixedPointProblem(lambda z: A @ z + b, np.zeros_like(b))


def _spectrum(seed=2):
    """Symmetric linear map with eigenvalues spread over [-0.95, 0.97] (n = 40)."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    A = Q @ np.diag(np.linspace(-0.95, 0.97, 40)) @ Q.T
    b = rng.standard_normal(40)
    return FixedPointProblem(lambda z: A @ z + b, np.zeros(40))


def _batched_linear(seed=3):
    rng = np.random.default_rng(seed)
    rows = [linear_map(rng, n=6, rho=0.3 + 0.15 * i) for i in range(5)]
    As = np.stack([a for a, _ in rows])
    bs = np.stack([b for _, b in rows])
    return FixedPointProblem(lambda Z: np.einsum("bij,bj->bi", As, Z) + bs, np.zeros((5, 6)),
                             batched=True)


def ghost(c=1e-3, n=1, seed=0):
    """A fixed-point map whose damped iteration passes a bottleneck (saddle-node "ghost").

    In rotated coordinates ``y = Q^T z`` the first coordinate moves by
    ``0.25 ((y0 - 1)^2 + c) (3 - y0)`` per unit step: the residual is small but never zero
    near ``y0 = 1`` and vanishes at ``y0 = 3``; the other ``n - 1`` coordinates contract
    (factors 0.3..0.8) and are coupled to ``y0``. Damped iteration from ``0`` creeps
    through the bottleneck and converges; plain Anderson mixing, a secant method on the
    residual, is drawn to the small-residual point near ``y0 = 1`` and stalls there.
    """
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0] if n > 1 else np.eye(1)
    lam = np.linspace(0.3, 0.8, n - 1)

    def F(z):
        y = Q.T @ z
        x = y[0]
        out = np.empty_like(y)
        out[0] = x + 0.25 * ((x - 1) ** 2 + c) * (3 - x) + 0.1 * np.sum(np.sin(y[1:]) ** 2)
        out[1:] = lam * y[1:] + 0.2 * np.tanh(x)
        return Q @ out

    return FixedPointProblem(F, np.zeros(n), name=f"ghost(c={c:g}, n={n})")


#: every fixed-point test problem, by name
PROBLEMS = {
    "affine-tanh": _affine,
    "affine-tanh-batched": lambda: _affine(True),
    "linear": _linear,
    "linear-complex": lambda: _linear(complex_=True),
    "linear-torch": lambda: _linear(library="torch"),
    "linear-complex-torch": lambda: _linear(complex_=True, library="torch"),
    "spectrum-40": _spectrum,
    "batched-linear": _batched_linear,
    "cos": lambda: FixedPointProblem(np.cos, np.zeros(1)),
    "ghost-1d": lambda: ghost(1e-3, 1),
    "ghost-5d": lambda: ghost(1e-3, 5),
}


CASES = [
    ContractCase("fixed-point-damped", _affine, lambda: FixedPoint(rtol=1e-8, atol=1e-10),
                 "relative_residual", 1e-7),
    ContractCase("fixed-point-anderson", _affine,
                 lambda: FixedPoint(method="anderson", rtol=1e-8, atol=1e-10),
                 "relative_residual", 1e-7),
    ContractCase("fixed-point-batched", lambda: _affine(True),
                 lambda: FixedPoint(rtol=1e-8, atol=1e-10), "relative_residual", 1e-7),
    ContractCase("fixed-point-anderson-batched", lambda: _affine(True),
                 lambda: FixedPoint(method="anderson", rtol=1e-8, atol=1e-10),
                 "relative_residual", 1e-7),
    ContractCase("fixed-point-anderson-ghost", lambda: ghost(1e-3, 5),
                 lambda: FixedPoint(method="anderson", rtol=1e-8, atol=1e-10),
                 "relative_residual", 1e-7),
]
