"""ReLU activation patterns: sampling, deduplication, exhaustive enumeration, directions.

An activation pattern of the data matrix ``X`` (n x d, bias column included) is the 0/1
vector ``1[X h >= 0]`` for some direction ``h``; ties count as active. The convex
formulation of a two-layer ReLU network has one pair of weight blocks per pattern, so
everything here returns an ``(n, P)`` 0/1 matrix ``D`` and, where known, the ``(d, P)``
matrix ``H`` of directions that generate the columns (``D[:, i] == 1[X H[:, i] >= 0]``).

Deduplication rule (used everywhere): columns are kept in order of first appearance; a
column equal to an earlier one is dropped, and so is the all-zero column (it contributes
nothing to the predictions). :func:`sample_patterns` redraws Gaussian directions, in rounds
of ``P`` candidates, until it holds ``P`` distinct patterns or ``max_rounds`` rounds have
been drawn; if the data admit fewer distinct patterns it returns all it found.

References
----------
.. [1] M. Pilanci, T. Ergen, "Neural Networks are Convex Regularizers: Exact
   Polynomial-time Convex Optimization Formulations for Two-layer Networks", ICML 2020.
.. [2] Y. Bai, T. Gautam, S. Sojoudi, "Efficient Global Optimization of Two-layer ReLU
   Networks: Quadratic-time Algorithms and Adversarial Training", SIAM J. Math. Data Sci.
   2023, arXiv:2201.01965, section 2.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "pattern_matrix",
    "dedup_patterns",
    "sample_patterns",
    "enumerate_patterns",
    "pattern_directions",
    "count_enumeration",
    "ascent_patterns",
]


def pattern_matrix(X: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``1[X H >= 0]`` as a float 0/1 matrix (ties count as active)."""
    return (np.asarray(X) @ np.asarray(H) >= 0).astype(np.float64)


def _keys(D: np.ndarray) -> list[bytes]:
    return [np.packbits(D[:, j] > 0.5).tobytes() for j in range(D.shape[1])]


def dedup_patterns(D: np.ndarray, H: np.ndarray | None = None, *, seen: set | None = None,
                   limit: int | None = None):
    """Drop repeated and all-zero columns of ``D`` (first appearance wins).

    Parameters
    ----------
    D : (n, m) 0/1 array
    H : (d, m) array, optional
        Directions generating the columns; the kept ones are returned alongside.
    seen : set, optional
        Keys of patterns already kept (updated in place), for incremental sampling.
    limit : int, optional
        Stop after this many new patterns.

    Returns
    -------
    D_kept : (n, k) array, H_kept : (d, k) array or None
    """
    seen = set() if seen is None else seen
    keep = []
    for j, key in enumerate(_keys(D)):
        if key in seen or not D[:, j].any():
            continue
        seen.add(key)
        keep.append(j)
        if limit is not None and len(keep) >= limit:
            break
    Dk = D[:, keep]
    Hk = None if H is None else H[:, keep]
    return Dk, Hk


def sample_patterns(X: np.ndarray, P: int, *, seed=0, max_rounds: int = 20):
    """Sample up to ``P`` distinct patterns ``1[X h >= 0]`` with Gaussian ``h``.

    Parameters
    ----------
    X : (n, d) array
        Data (with the bias column, if any).
    P : int
        Number of distinct patterns wanted.
    seed : int or numpy Generator
    max_rounds : int
        At most this many rounds of ``P`` Gaussian candidates are drawn.

    Returns
    -------
    D : (n, k) float array with k <= P, H : (d, k) array of generating directions.
    """
    rng = np.random.default_rng(seed)
    n, d = X.shape
    seen: set = set()
    Ds, Hs = [], []
    have = 0
    for _ in range(max_rounds):
        H = rng.standard_normal((d, P))
        Dk, Hk = dedup_patterns(pattern_matrix(X, H), H, seen=seen, limit=P - have)
        Ds.append(Dk)
        Hs.append(Hk)
        have += Dk.shape[1]
        if have >= P:
            break
    return np.concatenate(Ds, axis=1), np.concatenate(Hs, axis=1)


def count_enumeration(n: int, d: int) -> int:
    """Number of candidate patterns :func:`enumerate_patterns` examines (before dedup)."""
    return math.comb(n, d - 1) * 2 ** d if d >= 1 else 0


def enumerate_patterns(X: np.ndarray, *, max_candidates: int = 2_000_000, tol: float = 1e-10):
    """All distinct activation patterns ``1[X h >= 0]``, ``h`` in R^d (exact enumeration).

    Every open cell of the central hyperplane arrangement ``{h : x_k^T h = 0}`` has an
    extreme ray on which ``d - 1`` of the hyperplanes meet. For each ``(d-1)``-subset of
    rows with a one-dimensional null space this visits the ray ``h0`` (both signs) and
    every activity assignment of the rows that vanish on it; in general position this is
    every cell. Degenerate subsets (null space of dimension > 1) are skipped, and 50 d
    random directions are added as a safety net, so on degenerate data the result may
    miss cells: it is exact for data in general position.

    The cost grows like ``C(n, d-1) 2^d``: meant for small d (say d <= 4 with the bias
    column) and modest n.

    Returns
    -------
    D : (n, k) float array (directions: :func:`pattern_directions`).
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    total = count_enumeration(n, d)
    if total > max_candidates:
        raise ValueError(
            f"exhaustive enumeration would examine {total} candidate patterns for n={n}, d={d} "
            f"(more than max_candidates={max_candidates}); use a sampled number of patterns "
            "(patterns=P) instead"
        )
    scale = np.linalg.norm(X, axis=1).max() or 1.0
    Ds = []
    seen: set = set()
    for rows in itertools.combinations(range(n), d - 1):
        if rows:
            _, s, vt = np.linalg.svd(X[list(rows)], full_matrices=True)
            if s[-1] <= tol * scale:
                continue  # degenerate subset: its null space is not a single ray
            h0 = vt[-1]
        else:
            h0 = np.ones(1)
        for sgn in (1.0, -1.0):
            z = X @ (sgn * h0)
            tied = np.nonzero(np.abs(z) <= 1e-9 * scale)[0]
            if tied.size > 12:
                continue
            base = (z > 0).astype(np.float64)
            cands = []
            for bits in itertools.product((0.0, 1.0), repeat=tied.size):
                col = base.copy()
                col[tied] = bits
                cands.append(col)
            Dk, _ = dedup_patterns(np.stack(cands, axis=1), seen=seen)
            if Dk.shape[1]:
                Ds.append(Dk)
    rng = np.random.default_rng(0)
    Dk, _ = dedup_patterns(pattern_matrix(X, rng.standard_normal((d, 50 * d))), seen=seen)
    Ds.append(Dk)
    return np.concatenate(Ds, axis=1)


def pattern_directions(X: np.ndarray, D: np.ndarray) -> np.ndarray:
    """For each column of ``D``, a direction ``h`` with ``1[X h >= 0] == D[:, i]``.

    Solves the linear program ``max t  s.t.  (2 D_i - 1) * (X h) >= t,  |h|_inf <= 1`` per
    pattern (scipy's HiGHS). A ``ValueError`` is raised when ``t < 0`` (the column is not
    an activation pattern of ``X``); with ``t == 0`` the pattern is realized only with
    ties and ``h`` may reproduce it only up to the tied rows.
    """
    from scipy.optimize import linprog

    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    H = np.zeros((d, D.shape[1]))
    for i in range(D.shape[1]):
        e = 2.0 * D[:, i] - 1.0
        # variables (h, t); minimize -t subject to -(e * X) h + t <= 0
        A = np.hstack([-(e[:, None] * X), np.ones((n, 1))])
        c = np.zeros(d + 1)
        c[-1] = -1.0
        bounds = [(-1.0, 1.0)] * d + [(None, 1.0)]
        res = linprog(c, A_ub=A, b_ub=np.zeros(n), bounds=bounds, method="highs")
        if res.status != 0:
            raise ValueError(f"could not find a direction for pattern {i}: {res.message}")
        h, t = res.x[:d], res.x[-1]
        if t < -1e-9:
            raise ValueError(
                f"column {i} of the pattern matrix is not an activation pattern of X "
                f"(no h gives 1[X h >= 0] equal to it; best margin {t:.2e})"
            )
        H[:, i] = h
    return H


def ascent_patterns(X: np.ndarray, lam: np.ndarray, *, starts: int = 256, iters: int = 30,
                    seed=0, H0: np.ndarray | None = None) -> np.ndarray:
    """Candidate patterns for ``max_{||u|| <= 1} |lam^T (X u)_+|`` by multi-start ascent.

    From each start ``u`` (Gaussian directions, plus the columns of ``H0``), and for both
    signs ``s = +-1``, iterate ``u <- g / ||g||`` with ``g = X^T (1[X u >= 0] * s lam)``,
    the maximizer over the unit ball of the linear piece that is active at ``u``; the
    objective is not monotone along these steps, so every pattern visited is kept as a
    candidate. The caller evaluates each candidate
    exactly (the maximum over its cone, by NNLS). A heuristic: it finds violating patterns
    but cannot prove that none exists (for that, :func:`enumerate_patterns`).

    Parameters
    ----------
    X : (n, d) array
    lam : (n,) array
        The dual vector (the loss gradient at the current solution).
    starts, iters : int
        Number of random starts and ascent steps per start.
    seed : int or numpy Generator
    H0 : (d, k) array, optional
        Extra starting directions (e.g. the current neurons).

    Returns
    -------
    D : (n, k) 0/1 array of distinct candidate patterns
    H : (d, k) unit directions with ``D[:, i] == 1[X H[:, i] >= 0]`` (each lies in its
        pattern's cone, so ``|lam^T (X h_i)_+|`` is a lower bound on that pattern's value).
    """
    X = np.asarray(X, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64).reshape(-1)
    n, d = X.shape
    rng = np.random.default_rng(seed)
    U0 = rng.standard_normal((d, starts))
    if H0 is not None and H0.size:
        U0 = np.hstack([U0, np.asarray(H0, dtype=np.float64).reshape(d, -1)])
    found: list[np.ndarray] = []
    dirs: list[np.ndarray] = []
    for s in (1.0, -1.0):
        U = U0 / np.maximum(np.linalg.norm(U0, axis=0, keepdims=True), 1e-300)
        prev = None
        for _ in range(iters):
            A = (X @ U >= 0).astype(np.float64)           # (n, k) current patterns
            found.append(A)
            dirs.append(U)
            if prev is not None and np.array_equal(A, prev):
                break
            prev = A
            G = X.T @ (A * (s * lam)[:, None])            # (d, k)
            nrm = np.linalg.norm(G, axis=0, keepdims=True)
            U = np.where(nrm > 0, G / np.maximum(nrm, 1e-300), U)
    D, H = dedup_patterns(np.concatenate(found, axis=1), np.concatenate(dirs, axis=1))
    return D, H
