"""Training right-hand sides for DCDM: biased spectral sampling.

Plain random vectors are dominated by high-frequency modes that CG removes quickly; DCDM is
trained on vectors whose energy sits mostly in the *low* end of the spectrum of ``A``
(Kaneda et al. 2023, section 5). Two generators are offered:

* :func:`lanczos_ritz` + :class:`RitzSampler`: the paper's recipe for any SPD/SPSD matrix.
  ``m`` Lanczos steps with full re-orthogonalization from ``v = A g`` give Ritz pairs; each
  sample is ``b = sum_j c_j q_j`` with ``c_j ~ N(0, 1)``, the lowest ``m/2 + theta``
  coefficients multiplied by ``factor`` (9 in the paper), normalized to unit norm. Ritz
  values below ``null_tol * max`` (the null space of a Neumann problem) are dropped.
* :class:`FilterSampler`: the same biased distribution for *any* grid matrix, on the fly:
  ``b = h(A) g`` for white noise ``g`` on the fluid cells, with ``h`` a Chebyshev
  approximation of a smoothed step (``factor`` below the ``low_fraction`` quantile of the
  spectrum, 1 above). Ritz vectors from ``m << n`` Lanczos steps cluster at the two ends
  of the spectrum and leave the middle almost unsampled; this generator covers it all
  (measured in ``docs/dcdm.md``: Ritz-mixture training failed on unseen obstacles,
  filtered-noise mixtures did not).
* :class:`BoxSampler`: the same biased distribution for the empty box, on the fly and
  without a basis on disk: the eigenvectors of the 5/7-point Laplacian on a box are DCT-II
  modes (homogeneous Neumann walls) or DST-I modes (Dirichlet), so a sample is one inverse
  transform, ``O(n log n)``.

:class:`MixtureSampler` draws from several samplers (several geometries) so a network can be
trained on a family of matrices. Every sampler is deterministic given its seed and the
sample index: ``sample(batch, step)`` returns the same vectors however often it is called.

References
----------
.. [1] A. Kaneda, O. Akar, J. Chen, V. Kala, D. Hyde, J. Teran, "A Deep Conjugate Direction
   Method for Iteratively Solving Linear Systems", ICML 2023, arXiv:2205.10763.
.. [2] C. C. Paige, "Computational variants of the Lanczos method for the eigenproblem",
   IMA J. Appl. Math. 10, 1972 (full re-orthogonalization).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = [
    "lanczos_ritz",
    "RitzSampler",
    "BoxSampler",
    "MixtureSampler",
    "FilterSampler",
    "box_eigenvalues",
    "smooth_envelope",
    "DataBatch",
]


@dataclass
class DataBatch:
    """A batch of training vectors and the geometry each belongs to.

    Attributes
    ----------
    b : numpy.ndarray, shape (batch, *grid), float32
        Unit-norm right-hand sides (zero in non-fluid cells).
    geometry : numpy.ndarray of int, shape (batch,)
        Index of the matrix each vector was drawn for (into the sampler's ``matrices``).
    """

    b: np.ndarray
    geometry: np.ndarray


def _rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(step)])


def _matvec_of(A: Any):
    if hasattr(A, "dot") and not callable(getattr(A, "matvec", None)):
        return lambda v: A @ v
    if hasattr(A, "matvec"):
        return A.matvec
    if callable(A):
        return A
    raise TypeError(f"A must be a matrix, a LinearOperator or a callable, got {type(A).__name__}")


def lanczos_ritz(A: Any, m: int, *, seed: int = 0, null_tol: float = 1e-8,
                 dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Ritz pairs of an SPD/SPSD ``A`` from ``m`` Lanczos steps with full re-orthogonalization.

    Parameters
    ----------
    A : sparse matrix, array or LinearOperator of shape (n, n)
        Symmetric positive (semi-)definite. Empty rows (non-fluid cells) are fine: every
        Lanczos vector is zero there because the start vector is ``A g``.
    m : int
        Lanczos steps (stops early if the Krylov space becomes invariant).
    seed : int
        Seed of the Gaussian start ``g``.
    null_tol : float
        Ritz values below ``null_tol * max(theta)`` are treated as the null space and dropped.

    Returns
    -------
    theta : numpy.ndarray, shape (k,)
        Ritz values in ascending order (k <= m).
    Q : numpy.ndarray, shape (n, k)
        Orthonormal Ritz vectors (columns), in the same order.

    Notes
    -----
    Each step orthogonalizes the new vector twice against all previous ones (classical
    Gram-Schmidt, "twice is enough"), so the basis stays orthonormal to rounding and no
    spurious copies of converged Ritz values appear. Cost ``O(m^2 n)`` flops and ``m n``
    floats of memory.
    """
    with _single_thread_blas():
        return _lanczos_ritz(A, m, seed, null_tol, dtype)


class _single_thread_blas:
    """Limit BLAS to one thread (when threadpoolctl is installed): the many small
    matrix-vector products of the re-orthogonalization run up to 15x slower with two
    spinning OpenBLAS threads on a busy machine."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional
            self._ctx = None
            return self
        self._ctx = threadpool_limits(1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.restore_original_limits()
        return False


def _lanczos_ritz(A, m, seed, null_tol, dtype):
    mv = _matvec_of(A)
    n = int(A.shape[0])
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    m = int(min(m, n))
    rng = np.random.default_rng(seed)
    v = np.asarray(mv(rng.standard_normal(n)), dtype=np.float64)
    nv = np.linalg.norm(v)
    if nv == 0:
        raise ValueError("A g = 0 for a random g: the matrix is zero")
    W = np.zeros((m, n), dtype=np.float64)
    alphas = np.zeros(m)
    betas = np.zeros(m)
    W[0] = v / nv
    k = m
    for j in range(m):
        w = np.asarray(mv(W[j]), dtype=np.float64)
        alphas[j] = W[j] @ w
        for _ in range(2):
            w -= W[: j + 1].T @ (W[: j + 1] @ w)
        beta = np.linalg.norm(w)
        if j + 1 == m:
            break
        if beta <= 1e-12 * max(1.0, abs(alphas[j])):
            k = j + 1
            break
        betas[j] = beta
        W[j + 1] = w / beta
    T_diag, T_off = alphas[:k], betas[: k - 1]
    from scipy.linalg import eigh_tridiagonal

    theta, Y = eigh_tridiagonal(T_diag, T_off)
    keep = theta > null_tol * max(float(theta.max()), 0.0)
    theta, Y = theta[keep], Y[:, keep]
    Q = W[:k].T @ Y
    return theta, np.ascontiguousarray(Q.astype(dtype, copy=False))


def smooth_envelope(rng, grid: Sequence[int], batch: int, strength: float,
                    scale: float = 0.1) -> np.ndarray:
    """Random positive amplitude fields ``exp(s z)``, one per sample (shape (batch, *grid)).

    ``z`` is a smooth unit-variance Gaussian field (DCT modes damped as
    ``exp(-lambda / (scale * lambda_max))``), ``s ~ U(0, strength)`` per sample. Multiplying
    a sample by it makes its amplitude vary across the domain (quiet and loud regions, as
    the residuals inside a solve), so a network cannot learn that a quiet region means a
    solid obstacle. ``strength = 0`` gives ones.
    """
    from scipy import fft

    grid = tuple(int(g) for g in grid)
    if strength <= 0:
        return np.ones((batch, *grid))
    lam = box_eigenvalues(grid, "neumann")
    damp = np.exp(-lam / (scale * float(lam.max())))
    c = rng.standard_normal((batch, *grid)) * damp
    z = fft.idctn(c, type=2, norm="ortho", axes=tuple(range(1, len(grid) + 1)))
    z /= z.reshape(batch, -1).std(axis=1).reshape(-1, *([1] * len(grid))) + 1e-300
    s = rng.uniform(0.0, strength, size=(batch,) + (1,) * len(grid))
    return np.exp(s * z)


def _biased_coefficients(rng, n_modes: int, cut: int, factor: float, batch: int) -> np.ndarray:
    c = rng.standard_normal((batch, n_modes))
    c[:, :cut] *= factor
    return c


@dataclass
class RitzSampler:
    """Biased samples ``b = Q c`` from precomputed Ritz vectors (the paper's generator).

    Parameters
    ----------
    theta : array of shape (k,)
        Ritz values, ascending.
    Q : array of shape (n, k)
        Ritz vectors.
    grid : tuple of int
        Grid shape of the vectors (``prod(grid) == n``).
    shift : int or None
        The paper's ``theta``: the lowest ``k/2 + shift`` coefficients get ``factor`` times
        the amplitude. Default: ``0.05 k`` (``cut = 0.55 k``, the paper's 5,500 of 10,000).
    factor : float
        Amplitude of the low-end coefficients (9 in the paper).
    seed : int
    """

    theta: np.ndarray
    Q: np.ndarray
    grid: tuple
    shift: int | None = None
    factor: float = 9.0
    seed: int = 0
    matrices: list = field(default_factory=list)

    def __post_init__(self):
        self.grid = tuple(int(s) for s in self.grid)
        k = self.Q.shape[1]
        if int(np.prod(self.grid)) != self.Q.shape[0]:
            raise ValueError(f"grid {self.grid} has {int(np.prod(self.grid))} cells but Q has "
                             f"{self.Q.shape[0]} rows")
        shift = int(round(0.05 * k)) if self.shift is None else int(self.shift)
        self.cut = int(min(max(k // 2 + shift, 0), k))

    @classmethod
    def from_matrix(cls, A, grid, m: int, *, shift: int | None = None, factor: float = 9.0,
                    seed: int = 0, dtype=np.float32) -> "RitzSampler":
        """Run :func:`lanczos_ritz` on ``A`` and wrap the result."""
        theta, Q = lanczos_ritz(A, m, seed=seed, dtype=dtype)
        s = cls(theta, Q, grid, shift=shift, factor=factor, seed=seed)
        s.matrices = [A]
        return s

    def sample(self, batch: int, step: int = 0) -> DataBatch:
        """``batch`` unit-norm vectors, deterministic in ``(seed, step)``."""
        rng = _rng(self.seed, step)
        c = _biased_coefficients(rng, self.Q.shape[1], self.cut, self.factor, batch)
        B = (c.astype(self.Q.dtype) @ self.Q.T).astype(np.float64)
        B /= np.linalg.norm(B, axis=1, keepdims=True)
        return DataBatch(B.reshape(batch, *self.grid).astype(np.float32),
                         np.zeros(batch, dtype=np.int64))


def box_eigenvalues(shape: Sequence[int], bc: str = "neumann") -> np.ndarray:
    """Eigenvalues of the unscaled 5/7-point Laplacian on a box, as a grid of mode indices.

    ``bc="neumann"``: walls on every side (DCT-II modes, ``2 - 2 cos(pi k / N)`` per axis;
    mode 0 is the constant null vector). ``bc="dirichlet"``: ``p = 0`` just outside every
    side (DST-I modes, ``2 - 2 cos(pi (k+1) / (N+1))``).
    """
    if bc not in ("neumann", "dirichlet"):
        raise ValueError(f"bc must be 'neumann' or 'dirichlet', got {bc!r}")
    lam = 0.0
    for ax, N in enumerate(shape):
        k = np.arange(N)
        lam1 = 2 - 2 * np.cos(np.pi * k / N) if bc == "neumann" else \
            2 - 2 * np.cos(np.pi * (k + 1) / (N + 1))
        sh = [1] * len(shape)
        sh[ax] = N
        lam = lam + lam1.reshape(sh)
    return np.asarray(lam)


@dataclass
class BoxSampler:
    """Biased spectral samples on an empty box, on the fly (inverse DCT/DST per sample).

    Same distribution as :class:`RitzSampler` with the exact eigenvectors of the box: the
    modes are ranked by eigenvalue, the lowest ``low_fraction`` of them get ``factor``
    times the amplitude, the constant (Neumann null) mode gets none.

    Parameters
    ----------
    grid : tuple of int
    bc : {"neumann", "dirichlet"}
        Solid walls (the paper's training matrix, singular) or ``p = 0`` outside.
    low_fraction : float
        Fraction of the modes amplified (0.55 in the paper).
    factor : float
        Amplification (9 in the paper).
    seed : int
    envelope : float
        Strength of a random smooth amplitude modulation (:func:`smooth_envelope`);
        0 = off (the paper's stationary samples).
    """

    grid: tuple
    bc: str = "neumann"
    low_fraction: float = 0.55
    factor: float = 9.0
    seed: int = 0
    envelope: float = 0.0

    def __post_init__(self):
        self.grid = tuple(int(s) for s in self.grid)
        if not 0.0 <= self.low_fraction <= 1.0:
            raise ValueError(f"low_fraction must lie in [0, 1], got {self.low_fraction!r}")
        lam = box_eigenvalues(self.grid, self.bc)
        order = np.argsort(lam, axis=None, kind="stable")
        amp = np.ones(lam.size)
        cut = int(round(self.low_fraction * lam.size))
        amp[order[:cut]] = self.factor
        if self.bc == "neumann":
            amp[0] = 0.0  # the constant mode: null space of the singular Neumann matrix
        self.amplitude = amp.reshape(self.grid)
        self.eigenvalues = lam

    def sample(self, batch: int, step: int = 0) -> DataBatch:
        """``batch`` unit-norm vectors, deterministic in ``(seed, step)``."""
        from scipy import fft

        rng = _rng(self.seed, step)
        c = rng.standard_normal((batch, *self.grid)) * self.amplitude
        axes = tuple(range(1, len(self.grid) + 1))
        if self.bc == "neumann":
            B = fft.idctn(c, type=2, norm="ortho", axes=axes)
        else:
            B = fft.idstn(c, type=1, norm="ortho", axes=axes)
        if self.envelope > 0:
            B = B * smooth_envelope(rng, self.grid, batch, self.envelope)
            if self.bc == "neumann":
                B -= B.mean(axis=axes, keepdims=True)
        B /= np.sqrt((B.reshape(batch, -1) ** 2).sum(axis=1)).reshape(-1, *([1] * len(self.grid)))
        return DataBatch(B.astype(np.float32), np.zeros(batch, dtype=np.int64))


def _chebyshev_coefficients(h, degree: int, lmax: float) -> np.ndarray:
    """Chebyshev coefficients of ``h`` on ``[0, lmax]`` (interpolation at Chebyshev nodes)."""
    k = np.arange(degree + 1)
    nodes = np.cos(np.pi * (k + 0.5) / (degree + 1))
    vals = h(0.5 * lmax * (nodes + 1.0))
    c = np.array([2.0 / (degree + 1) * np.sum(vals * np.cos(np.pi * j * (k + 0.5) / (degree + 1)))
                  for j in range(degree + 1)])
    c[0] *= 0.5
    return c


class FilterSampler:
    """Biased spectral samples ``b = h(A) g`` for any grid matrix, on the fly.

    ``g`` is white noise on the fluid cells (rows with a nonzero diagonal); ``h(lambda)``
    is ``factor`` well below ``cut`` and 1 well above it (a logistic step of width
    ``width * lmax``), applied with a degree-``degree`` Chebyshev expansion on
    ``[0, lmax]``, ``lmax`` the Gershgorin bound. ``cut`` is the ``low_fraction``
    quantile of the empty box's spectrum (the density of states of a 5/7-point stencil
    barely depends on the geometry). Null-space components (constants on closed Neumann
    regions) are removed when ``nullspace`` is given; samples have unit norm.

    Parameters
    ----------
    A : scipy sparse matrix, shape (n, n)
    grid : tuple of int
    nullspace : neurosolve.problems.Nullspace, optional
    low_fraction, factor : float
        As :class:`BoxSampler` (0.55 and 9 in the paper).
    degree : int
        Chebyshev degree (``degree`` sparse products per batch).
    width : float
        Relative width of the smoothed step.
    seed : int
    envelope : float
        Strength of a random smooth amplitude modulation (:func:`smooth_envelope`).
    """

    def __init__(self, A, grid, *, nullspace=None, low_fraction: float = 0.55,
                 factor: float = 9.0, degree: int = 60, width: float = 0.03, seed: int = 0,
                 envelope: float = 0.0):
        import scipy.sparse as sp

        self.A = sp.csr_matrix(A)
        self.grid = tuple(int(s) for s in grid)
        n = int(np.prod(self.grid))
        if self.A.shape != (n, n):
            raise ValueError(f"A has shape {self.A.shape}; the grid {self.grid} needs ({n}, {n})")
        self.nullspace = nullspace
        self.seed = seed
        self.factor = factor
        self.envelope = float(envelope)
        absA = abs(self.A)
        self.lmax = float(np.max(absA.sum(axis=1))) or 1.0
        lam = np.sort(box_eigenvalues(self.grid, "neumann").ravel())
        self.cut = float(lam[min(int(low_fraction * lam.size), lam.size - 1)])
        w = width * self.lmax

        def h(x):
            return 1.0 + (factor - 1.0) / (1.0 + np.exp((x - self.cut) / w))

        self.h = h
        self.coef = _chebyshev_coefficients(h, int(degree), self.lmax)
        self.fluid = (np.diff(self.A.indptr) > 0) & (self.A.diagonal() != 0)

    def apply(self, G: np.ndarray) -> np.ndarray:
        """``h(A) G`` for a block ``G`` of shape (n, k) (Clenshaw recurrence)."""
        a = 2.0 / self.lmax
        A = self.A

        def t(v):  # the map [0, lmax] -> [-1, 1]: (2 A / lmax - I) v
            return a * (A @ v) - v

        b1 = np.zeros_like(G)
        b2 = np.zeros_like(G)
        for c in self.coef[:0:-1]:
            b1, b2 = c * G + 2.0 * t(b1) - b2, b1
        return self.coef[0] * G + t(b1) - b2

    def sample(self, batch: int, step: int = 0) -> DataBatch:
        """``batch`` unit-norm vectors, deterministic in ``(seed, step)``."""
        rng = _rng(self.seed, step)
        G = rng.standard_normal((self.A.shape[0], batch)) * self.fluid[:, None]
        B = self.apply(G)
        if self.envelope > 0:
            B = B * smooth_envelope(rng, self.grid, batch, self.envelope).reshape(batch, -1).T
        if self.nullspace is not None:
            B = np.stack([self.nullspace.project(B[:, i]) for i in range(batch)], axis=1)
        B /= np.linalg.norm(B, axis=0, keepdims=True)
        return DataBatch(np.ascontiguousarray(B.T).reshape(batch, *self.grid).astype(np.float32),
                         np.zeros(batch, dtype=np.int64))


@dataclass
class MixtureSampler:
    """Draw each sample from one of several samplers (several matrices / geometries).

    Parameters
    ----------
    samplers : list
        :class:`RitzSampler` or :class:`BoxSampler` instances on the same grid shape.
    weights : list of float, optional
        Relative frequencies (default uniform).
    seed : int
    """

    samplers: list
    weights: Sequence[float] | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.samplers:
            raise ValueError("MixtureSampler needs at least one sampler")
        grids = {tuple(s.grid) for s in self.samplers}
        if len(grids) != 1:
            raise ValueError(f"all samplers must share one grid shape, got {sorted(grids)}")
        self.grid = grids.pop()
        w = np.ones(len(self.samplers)) if self.weights is None else np.asarray(self.weights, float)
        if w.shape != (len(self.samplers),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be non-negative, one per sampler, not all zero")
        self.p = w / w.sum()

    def sample(self, batch: int, step: int = 0) -> DataBatch:
        rng = _rng(self.seed, step)
        which = rng.choice(len(self.samplers), size=batch, p=self.p)
        out = np.empty((batch, *self.grid), dtype=np.float32)
        for g in np.unique(which):
            idx = np.nonzero(which == g)[0]
            out[idx] = self.samplers[g].sample(len(idx), step * 7919 + int(g)).b
        return DataBatch(out, which.astype(np.int64))
