"""Convex training of a two-layer ReLU network: the (sampled) Pilanci-Ergen program.

For data ``X`` (n x d after standardization, with a column of ones appended when
``bias=True``) and activation patterns ``D_i = diag(1[X h_i >= 0])``, ``i = 1..P``::

    min   loss( sum_i D_i X (v_i - w_i), y ) + beta sum_i (||v_i||_2 + ||w_i||_2)
    s.t.  (2 D_i - I) X v_i >= 0,   (2 D_i - I) X w_i >= 0

Every feasible point maps to a ReLU network with at most 2P neurons and the same objective
(``u = v/sqrt||v||, alpha = +sqrt||v||`` and the same with ``-`` for w), so the program's
optimum bounds the non-convex training objective of width-2P networks from above; with
all patterns it equals the global optimum of the non-convex problem (for wide enough
networks). With ``epsilon > 0`` the program is the robust counterpart of section 4 of the
paper: ``(2D_i - I) X v_i >= epsilon ||v_i||_q`` on the non-bias coordinates and the
worst-case loss over the l_inf (``q = 1``) or l_2 (``q = 2``) ball of radius epsilon.

References
----------
.. [1] Y. Bai, T. Gautam, S. Sojoudi, "Efficient Global Optimization of Two-layer ReLU
   Networks: Quadratic-time Algorithms and Adversarial Training", SIAM J. Math. Data Sci.
   2023, arXiv:2201.01965.
.. [2] M. Pilanci, T. Ergen, "Neural Networks are Convex Regularizers", ICML 2020.
.. [3] Y. Bai, T. Gautam, Y. Gai, S. Sojoudi, "Practical Convex Formulation of Robust
   One-hidden-layer Neural Network Training", ACC 2022, arXiv:2105.12237.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurosolve.backends.ops import to_numpy as _to_numpy
from neurosolve.backends import common_library, is_torch
from neurosolve.problems import relu_losses as RL
from neurosolve.problems import relu_patterns as RP

__all__ = ["ConvexReLU", "GENERATE_START", "verified_nnls"]

#: Sampled patterns a ``patterns="generate"`` program starts from.
GENERATE_START = 16


def verified_nnls(A, b, maxiter: int | None = None, start=None):
    """``min_{x >= 0} ||A x - b||``, with the residual recomputed from the returned ``x``.

    :func:`scipy.optimize.nnls` can report a residual that its own solution does not
    attain: on a degenerate cone projection here (20 x 1000, scipy 1.17.1) it reported 0
    for a solution whose residual is 0.30, while the minimum is 0.033. A dual bound or a
    projection built on the reported value would be wrong, so this returns the residual
    of the ``x`` it returns (clipped to ``x >= 0``, so any value is a valid upper bound on
    the minimum). When the two disagree, the bounded-variable least squares of
    :func:`scipy.optimize.lsq_linear` and ``x = 0`` are tried as well, and the best of
    the three is kept.

    Wide matrices (many more columns than rows, as the cone projections of the convex ReLU
    program: ``d`` rows, ``n`` columns) are solved on a working set of columns: NNLS on the
    set, then the optimality condition ``A_j^T (b - A x) <= 0`` checked on *every* column,
    the columns that violate it added, until none does (an optimum has at most as many
    nonzeros as ``A`` has rows, so the set stays small). The answer is the full problem's
    minimizer to the same tolerance, at a fraction of the cost of NNLS on all columns
    (about 0.3 ms against 5 ms on 20 x 1000).

    ``start`` (wide matrices only) is a guess of the support, such as the support of the
    answer to a nearby problem: when least squares on those columns is positive and
    satisfies the optimality condition on every column, that is the answer, without an
    NNLS; otherwise the working set starts from them. A wrong guess costs time, never
    accuracy.

    Parameters
    ----------
    A : (m, N) array
    b : (m,) array
    maxiter : int, optional
        Iteration limit of each NNLS.
    start : array of int, optional
        Column indices to start the working set from (see above).

    Returns
    -------
    x : ndarray
        A feasible point (``x >= 0``).
    residual : float
        ``||A x - b||`` for that ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> x, r = verified_nnls(np.eye(2), np.array([1.0, -1.0]))
    >>> x.tolist(), round(r, 12)
    ([1.0, 0.0], 1.0)
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, N = A.shape
    if N > max(4 * m, 64):
        return _working_set_nnls(A, b, maxiter, start=start)
    return _checked_nnls(A, b, maxiter)


def _kkt_violators(A, b, x_S, S, norms, rn):
    """Columns outside ``S`` whose gradient ``A_j^T (b - A_S x_S)`` says they would lower
    the residual (the working set's optimality test), and the gradients."""
    viol = A.T @ (b - A[:, S] @ x_S)
    viol[S] = 0.0
    return viol > 1e-11 * norms * rn, viol


def _working_set_nnls(A, b, maxiter, rounds: int = 100, start=None):
    """:func:`verified_nnls` on a growing working set of columns (see there)."""
    m, N = A.shape
    k = min(N, 2 * m + 8)
    norms = np.sqrt(np.einsum("ij,ij->j", A, A))
    floor = 1e-13 * float(np.linalg.norm(b))
    S = np.argpartition(-(A.T @ b), k - 1)[:k]  # the columns most aligned with b
    best = None
    if start is not None and len(start):
        start = np.unique(np.asarray(start, dtype=np.intp))
        start = start[(start >= 0) & (start < N)]
        xs = np.linalg.lstsq(A[:, start], b, rcond=None)[0] if len(start) else None
        if xs is not None and np.all(xs > 0):
            rn = float(np.linalg.norm(A[:, start] @ xs - b))
            if rn <= floor or not _kkt_violators(A, b, xs, start, norms, rn)[0].any():
                best, rounds = (rn, start, xs), 0  # the guess is optimal: no NNLS
        S = np.union1d(start, S[: max(k // 2, 8)])
    for _ in range(rounds):
        xs, rn = _checked_nnls(A[:, S], b, maxiter)
        if best is None or rn <= best[0]:
            best = (rn, S, xs)
        if rn <= floor:  # b lies in the cone of the set's columns
            break
        out, viol = _kkt_violators(A, b, xs, S, norms, rn)
        if not out.any():
            break
        cand = np.flatnonzero(out)
        # the set's support (at most m columns) and the most violating columns
        S = np.concatenate([S[xs > 0], cand[np.argsort(-viol[cand])[:k]]])
    x = np.zeros(N)
    x[best[1]] = best[2]
    return x, float(np.linalg.norm(A @ x - b))


def _checked_nnls(A, b, maxiter):
    """scipy's NNLS with its residual recomputed (and bvls or 0 where it misreports)."""
    from scipy.optimize import lsq_linear, nnls

    nb = float(np.linalg.norm(b))
    try:
        x, reported = nnls(A, b, maxiter=maxiter)
    except RuntimeError:  # iteration limit
        x, reported = np.zeros(A.shape[1]), -1.0
    x = np.maximum(x, 0.0)
    r = float(np.linalg.norm(A @ x - b))
    if reported >= 0 and r <= reported + 1e-10 * nb and r <= nb:
        return x, r
    best = (r, x) if r <= nb else (nb, np.zeros(A.shape[1]))
    try:
        alt = np.maximum(lsq_linear(A, b, bounds=(0.0, np.inf), method="bvls").x, 0.0)
        ra = float(np.linalg.norm(A @ alt - b))
        if ra < best[0]:
            best = (ra, alt)
    except (ValueError, np.linalg.LinAlgError):
        pass
    return best[1], best[0]


class ConvexReLU:
    """The convex (sampled or exact) training program of a two-layer ReLU network.

    Parameters
    ----------
    X : array of shape (n, d_in)
        Training inputs (numpy array or torch tensor; the solution comes back in the same
        library and device).
    y : array of shape (n,) or (n, c)
        Targets. ``squared``: real values (2-D for several outputs). ``logistic`` and
        ``hinge``: binary labels in {-1, +1} or {0, 1} (0 is read as -1); class labels
        with ``one_vs_all=True``; or a 2-D +-1 matrix (one column per output).
    beta : float
        Weight-decay strength (> 0). The regularizer ``beta (||v_i|| + ||w_i||)`` is the
        weight decay ``beta/2 (||u_j||^2 + alpha_j^2)`` of the recovered network.
    loss : {"squared", "logistic", "hinge"}
        ``squared``: ``1/2 (z - y)^2``; ``logistic``: ``log(1 + exp(-y z))`` with +-1
        labels (the authors' BCE is this loss on ``2 z``); ``hinge``: ``max(0, 1 - y z)``.
    patterns : int, array, "all" or "from_network"
        An int ``P``: sample ``P`` distinct patterns from Gaussian directions (redrawing up
        to ``max_rounds`` rounds; fewer if the data admit fewer, see
        :mod:`neurosolve.problems.relu_patterns`). A 0/1 array of shape (n, P): use these
        patterns (duplicates and all-zero columns are dropped). ``"all"``: enumerate every
        pattern exactly (small d only). ``"from_network"``: the patterns of the hidden
        neurons of ``network``.
    network : optional
        With ``patterns="from_network"``: a torch module whose first ``nn.Linear`` is the
        hidden layer, a :class:`~neurosolve.neural.relu_network.ReLUNetwork`, or a pair
        ``(W, b)`` of hidden weights (m, d_in) and biases (m,) acting on the raw inputs.
    bias : bool
        Append a column of ones (the hidden biases; regularized like the other weights).
    standardize : bool
        Center (when ``bias``) and scale each input column by its training mean and
        standard deviation; the recovered network applies the same transform to new data.
    seed : int
        Seed of the pattern sampling.
    epsilon : float
        Radius of the adversarial ball (0: the ordinary program). Measured in the raw
        input units; the bias column is never perturbed.
    attack_norm : {"inf", 2}
        Norm of the adversarial ball.
    reduction : {"sum", "mean"}
        Sum or average the per-sample losses.
    one_vs_all : bool, optional
        Read ``y`` as class labels and train one output per class against the rest (two
        classes give one output). Must be asked for: non-binary labels with a binary loss
        raise ``ValueError``.
    max_rounds : int
        Sampling rounds for ``patterns=P``.

    Attributes
    ----------
    n, d, P, c : int
        Samples, features (bias included), patterns and outputs.
    D : array (n, P)
        The 0/1 pattern matrix (same library as X).
    x_shape : tuple
        Shape of a solution: ``(2, P, d)`` (``x[0][i] = v_i``, ``x[1][i] = w_i``), or
        ``(2, P, d, c)`` with several outputs.

    Raises
    ------
    ValueError
        Mismatched lengths of X and y, NaN/inf in X or y, beta <= 0, non-binary labels
        for a binary loss, unknown loss, bad pattern matrix, negative epsilon.
    TypeError
        X and y from different array libraries, or a non-array input.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((60, 3)); y = np.sign(X[:, 0] * X[:, 1])
    >>> prob = ns.problems.ConvexReLU(X, y, beta=0.1, patterns=8, seed=0)
    >>> res = ns.solve(prob)
    >>> net = prob.network(res)          # numpy predictor; net.to_torch() is an nn.Module
    >>> bool(abs(res.certificate["nc_objective"] - res.certificate["objective"]) < 1e-2)
    True
    """

    def __init__(self, X: Any, y: Any, beta: float, *, loss: str = "squared",
                 patterns: Any = 16, network: Any = None, bias: bool = True,
                 standardize: bool = True, seed: int = 0, epsilon: float = 0.0,
                 attack_norm: Any = "inf", reduction: str = "sum",
                 one_vs_all: bool | None = None, max_rounds: int = 20):
        self.array_library = common_library(X, y, names=("X", "y"))
        for name, a in (("X", X), ("y", y)):
            if not (is_torch(a) or isinstance(a, np.ndarray)):
                if isinstance(a, (list, tuple)):
                    continue
                raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
        self.device = str(X.device) if is_torch(X) else "cpu"
        self._torch_dtype = X.dtype if is_torch(X) else None
        for name, a in (("X", X), ("y", y)):
            kind = np.asarray(_to_numpy(a)).dtype.kind
            if kind == "c":
                raise TypeError(f"{name} is complex; the convex ReLU program is real: pass the "
                                "real data (e.g. np.real(...) if the imaginary part is rounding)")
            if kind not in "biuf":
                raise TypeError(f"{name} must be numeric, got dtype {np.asarray(_to_numpy(a)).dtype}")
        Xn = np.asarray(_to_numpy(X), dtype=np.float64)
        yn = np.asarray(_to_numpy(y))
        if Xn.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n samples, d features), got shape {Xn.shape}")
        if yn.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D (n,) or 2-D (n, c), got shape {yn.shape}")
        if yn.shape[0] != Xn.shape[0]:
            raise ValueError(
                f"X and y must have the same number of samples: X has {Xn.shape[0]} rows, "
                f"y has {yn.shape[0]}"
            )
        if Xn.shape[0] < 1:
            raise ValueError("X must have at least one sample")
        if not np.all(np.isfinite(Xn)):
            raise ValueError("X contains NaN or inf entries; clean or impute the data first")
        if yn.dtype.kind in "fc" and not np.all(np.isfinite(yn)):
            raise ValueError("y contains NaN or inf entries")
        if not isinstance(beta, (int, float, np.floating, np.integer)) or not np.isfinite(beta) \
                or beta <= 0:
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        if loss not in RL.LOSSES:
            raise ValueError(f"loss must be one of {RL.LOSSES}, got {loss!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not isinstance(epsilon, (int, float, np.floating)) or not np.isfinite(epsilon) \
                or epsilon < 0:
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        if attack_norm in ("inf", np.inf, float("inf")):
            self.attack_norm, self.q = "inf", 1
        elif attack_norm in (2, "2"):
            self.attack_norm, self.q = 2, 2
        else:
            raise ValueError(f"attack_norm must be 'inf' or 2, got {attack_norm!r}")
        self.loss = loss
        self.beta = float(beta)
        self.epsilon = float(epsilon)
        self.reduction = reduction
        self.bias = bool(bias)
        self.standardize = bool(standardize)
        self.seed = seed
        n, d_in = Xn.shape
        self.n, self.d_in = n, d_in
        self.w = 1.0 if reduction == "sum" else 1.0 / n

        # ---- targets
        self.classes = None
        self.task = "regression"
        Y = self._targets(yn, loss, one_vs_all)
        self._y_direct = loss == "squared" and not one_vs_all
        self.c = Y.shape[1]
        self.Y_np = Y

        # ---- features
        if standardize:
            mean = Xn.mean(axis=0) if bias else np.zeros(d_in)
            std = Xn.std(axis=0)
            self._std_kept = std > 1e-12 * max(1.0, np.abs(Xn).max())
            std = np.where(self._std_kept, std, 1.0)
        else:
            mean, std = np.zeros(d_in), np.ones(d_in)
            self._std_kept = np.zeros(d_in, dtype=bool)
        self.mean, self.scale = mean, std
        Xt = self.transform_numpy(Xn)
        self.X_raw_np = Xn
        self.Xt_np = Xt
        self.d = Xt.shape[1]
        # feature scale of the robust terms (0 on the bias coordinate)
        sc = 1.0 / std
        self.sc_np = np.concatenate([sc, [0.0]]) if bias else sc

        # ---- patterns
        self._H = None
        self.generate = False
        #: the certificate's global check counts a pattern as violating above
        #: beta (1 + global_tol); a PatternGeneration solve sets its violation_tol here
        self.global_tol = 1e-3
        if isinstance(patterns, str):
            if patterns == "all":
                n_cand = RP.count_enumeration(Xt.shape[0], Xt.shape[1])
                if n_cand > 20_000:
                    import warnings

                    # each candidate is one small null-space solve; the program then has up
                    # to one (d x c) block per distinct pattern
                    warnings.warn(
                        f"patterns='all' examines {n_cand:,} candidate patterns for n="
                        f"{Xt.shape[0]}, d={Xt.shape[1]} (up to {n_cand:,} patterns, about "
                        f"{n_cand * Xt.shape[0] / 8e6:,.0f} MB as a 0/1 matrix, and minutes of "
                        "enumeration); consider patterns=<int> (sampled) instead",
                        RuntimeWarning, stacklevel=2)
                D = RP.enumerate_patterns(Xt)
            elif patterns == "generate":
                if epsilon > 0:
                    raise ValueError("patterns='generate' is for epsilon = 0 programs (the "
                                     "global optimality condition is not derived for the robust "
                                     "program); use patterns=<int> with epsilon > 0")
                D, self._H = RP.sample_patterns(Xt, GENERATE_START, seed=seed,
                                                max_rounds=max_rounds)
                self.generate = True
            elif patterns == "from_network":
                if network is None:
                    raise ValueError("patterns='from_network' needs network=... (a torch module, "
                                     "a ReLUNetwork or a pair (W, b))")
                Wh, bh = _hidden_layer(network, d_in)
                Hraw = (Wh * std[None, :]).T  # act on standardized features
                hb = bh + Wh @ mean
                if bias:
                    H = np.vstack([Hraw, hb[None, :]])
                elif np.any(hb != 0):
                    raise ValueError("the network has hidden biases but bias=False")
                else:
                    H = Hraw
                D, self._H = RP.dedup_patterns(RP.pattern_matrix(Xt, H), H)
            else:
                raise ValueError(
                    f"patterns must be an int, a 0/1 array, 'all', 'generate' or 'from_network', "
                    f"got {patterns!r}"
                )
        elif isinstance(patterns, (int, np.integer)) and not isinstance(patterns, bool):
            if patterns < 1:
                raise ValueError(f"patterns must be >= 1, got {patterns}")
            D, self._H = RP.sample_patterns(Xt, int(patterns), seed=seed, max_rounds=max_rounds)
        else:
            Dm = np.asarray(_to_numpy(patterns), dtype=np.float64)
            if Dm.ndim != 2 or Dm.shape[0] != n:
                raise ValueError(f"a pattern matrix must have shape (n={n}, P), got {Dm.shape}")
            if not np.all((Dm == 0) | (Dm == 1)):
                raise ValueError("a pattern matrix must contain only 0 and 1")
            D, _ = RP.dedup_patterns(Dm)
        if D.shape[1] == 0:
            raise ValueError("no usable activation pattern (all candidate patterns were empty)")

        # ---- arrays in the input's library
        self.X = X
        self.y = y  # the raw inputs, kept so that torch_data() can differentiate through them
        if self.array_library == "torch":
            import torch

            dt = X.dtype if X.dtype in (torch.float32, torch.float64) else torch.float64
            kw = dict(dtype=dt, device=X.device)
            self.Xt = torch.as_tensor(Xt, **kw)
            self.Y = torch.as_tensor(Y, **kw)
            self.sc = torch.as_tensor(self.sc_np, **kw)
        else:
            self.Xt, self.Y, self.sc = Xt, Y, self.sc_np
        self._set_patterns(D)

    def _set_patterns(self, D: np.ndarray) -> None:
        self.D_np = np.ascontiguousarray(D, dtype=np.float64)
        self.P = self.D_np.shape[1]
        if self.array_library == "torch":
            import torch

            self.D = torch.as_tensor(self.D_np, dtype=self.Xt.dtype, device=self.Xt.device)
        else:
            self.D = self.D_np

    def with_patterns(self, D: Any) -> "ConvexReLU":
        """The same data, loss and options on another pattern matrix ``D`` ((n, P) 0/1;
        repeated and all-zero columns dropped). The copy is an ordinary sampled program
        (no pattern generation)."""
        import copy

        Dm = np.asarray(_to_numpy(D), dtype=np.float64)
        if Dm.ndim != 2 or Dm.shape[0] != self.n or not np.all((Dm == 0) | (Dm == 1)):
            raise ValueError(f"D must be a 0/1 matrix of shape (n={self.n}, P), got {Dm.shape}")
        Dm, _ = RP.dedup_patterns(Dm)
        if Dm.shape[1] == 0:
            raise ValueError("D has no usable pattern (all columns are zero)")
        out = copy.copy(self)
        out._H = None
        out.generate = False
        out._set_patterns(Dm)
        return out

    def adopt_patterns(self, D: np.ndarray) -> None:
        """Replace this problem's patterns in place (what a pattern-generation solve does
        at its end, so that ``problem.certificate(result.x)`` and ``problem.network`` refer
        to the generated program)."""
        self._H = None
        self._set_patterns(np.asarray(D, dtype=np.float64))

    # ------------------------------------------------------------------------------------
    def _targets(self, yn, loss, one_vs_all):
        binary_loss = loss in ("logistic", "hinge")
        if one_vs_all:
            if yn.ndim != 1:
                raise ValueError("one_vs_all=True needs a 1-D vector of class labels y")
            classes = np.unique(yn)
            if classes.size < 2:
                raise ValueError("one_vs_all=True needs at least two classes in y")
            self.classes = classes
            if classes.size == 2:
                self.task = "binary"
                return np.where(yn == classes[1], 1.0, -1.0)[:, None]
            self.task = "multiclass"
            return np.where(yn[:, None] == classes[None, :], 1.0, -1.0)
        if yn.dtype.kind not in "biuf":
            raise ValueError(f"y must be numeric, got dtype {yn.dtype}; for class labels pass "
                             "one_vs_all=True")
        Y = yn.astype(np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
            if not binary_loss and np.all(np.isin(np.unique(Y), (-1.0, 1.0))):
                # +-1 targets with the squared loss: a classifier (predict by sign)
                self.task, self.classes = "binary", np.array([-1.0, 1.0])
        if binary_loss:
            vals = np.unique(Y)
            if np.all(np.isin(vals, (-1.0, 1.0))):
                pass
            elif np.all(np.isin(vals, (0.0, 1.0))):
                Y = 2.0 * Y - 1.0
            else:
                shown = ", ".join(f"{v:g}" for v in vals[:6]) + (" ..." if vals.size > 6 else "")
                raise ValueError(
                    f"loss={loss!r} needs binary labels in {{-1, +1}} or {{0, 1}}; y has values "
                    f"{{{shown}}}. For more than two classes pass one_vs_all=True; for real "
                    "targets use loss='squared'"
                )
            self.task = "binary" if Y.shape[1] == 1 else "multilabel"
            self.classes = np.array([-1.0, 1.0]) if Y.shape[1] == 1 else None
        return np.ascontiguousarray(Y)

    def transform_numpy(self, Xraw) -> np.ndarray:
        """The design matrix of new raw inputs: standardized columns plus the bias column."""
        Xs = (np.asarray(Xraw, dtype=np.float64) - self.mean) / self.scale
        if self.bias:
            Xs = np.hstack([Xs, np.ones((Xs.shape[0], 1))])
        return Xs

    @property
    def x_shape(self) -> tuple:
        return (2, self.P, self.d) if self.c == 1 else (2, self.P, self.d, self.c)

    @property
    def robust(self) -> bool:
        return self.epsilon > 0

    @property
    def dtype(self):
        return self.Xt.dtype

    @property
    def directions(self) -> np.ndarray:
        """(d, P) directions h_i with ``D[:, i] = 1[X h_i >= 0]`` (computed by LP if unknown)."""
        if self._H is None:
            self._H = RP.pattern_directions(self.Xt_np, self.D_np)
        return self._H

    def __repr__(self):
        rob = f", epsilon={self.epsilon:g} (l_{self.attack_norm})" if self.robust else ""
        return (f"ConvexReLU(n={self.n}, d={self.d}, P={self.P}, c={self.c}, loss={self.loss!r}, "
                f"beta={self.beta:g}{rob})")

    # ------------------------------------------------------------------------------------
    # variables
    def zeros(self):
        """A zero solution in the problem's array library."""
        x = np.zeros(self.x_shape)
        return self._from_numpy(x)

    def _from_numpy(self, a):
        if self.array_library == "torch":
            import torch

            return torch.as_tensor(a, dtype=self.Xt.dtype, device=self.Xt.device)
        return a

    def _vw(self, x) -> tuple[np.ndarray, np.ndarray]:
        """numpy (P, d, c) blocks v and w of a solution x."""
        xa = np.asarray(_to_numpy(x), dtype=np.float64)
        if xa.shape == (2, self.P, self.d) and self.c == 1:
            xa = xa[..., None]
        if xa.shape != (2, self.P, self.d, self.c):
            raise ValueError(f"x must have shape {self.x_shape}, got {xa.shape}")
        return xa[0], xa[1]

    def split(self, x):
        """``(v, w)`` of a solution, each of shape (P, d) or (P, d, c)."""
        return x[0], x[1]

    def convex_output(self, x) -> np.ndarray:
        """``sum_i D_i X (v_i - w_i)`` on the training data, shape (n, c) (numpy)."""
        v, w = self._vw(x)
        Z = np.einsum("nd,pdc->npc", self.Xt_np, v - w)
        return (Z * self.D_np[:, :, None]).sum(axis=1)

    def _bnorm(self, v, w) -> np.ndarray:
        """Per-sample dual norms ``||b_k||_q`` of the input gradients (n, c)."""
        B = np.einsum("np,pdc->ndc", self.D_np, (v - w) * self.sc_np[None, :, None])
        return np.abs(B).sum(1) if self.q == 1 else np.sqrt((B * B).sum(1))

    def objective(self, x) -> float:
        """The convex objective (worst-case loss when epsilon > 0) of x."""
        v, w = self._vw(x)
        z = self.convex_output(x)
        reg = self.beta * (np.linalg.norm(v, axis=1).sum() + np.linalg.norm(w, axis=1).sum())
        return float(self._loss(z, v, w)) + float(reg)

    def _loss(self, z, v=None, w=None):
        if self.robust:
            return RL.robust_loss_value(self.loss, z, self.Y_np, self._bnorm(v, w), self.epsilon,
                                        self.w)
        return RL.loss_value(self.loss, z, self.Y_np, self.w)

    def is_trivial(self, x, tol: float = 1e-6) -> bool:
        """True when the network of x outputs (numerically) zero on the training data:
        ``max |z| <= tol max(1, max |y|)``. For a robust program this signals an epsilon
        so large that no neuron can stay on one side of every sample's ball."""
        z = self.convex_output(x)
        return float(np.abs(z).max(initial=0.0)) <= tol * max(1.0, float(np.abs(self.Y_np).max()))

    def cone_violation(self, x) -> tuple[float, float]:
        """Largest violation ``max(0, -((2D_i - I) X v_i - eps ||v_i||_q))`` and its ratio to
        ``max |X v_i|`` (the relative violation)."""
        v, w = self._vw(x)
        E = 2.0 * self.D_np - 1.0
        worst, scale = 0.0, 0.0
        for blk in (v, w):
            XV = np.einsum("nd,pdc->npc", self.Xt_np, blk)
            G = E[:, :, None] * XV
            if self.robust:
                nb = (np.abs(blk * self.sc_np[None, :, None]).sum(1) if self.q == 1
                      else np.sqrt(((blk * self.sc_np[None, :, None]) ** 2).sum(1)))
                G = G - self.epsilon * nb[None]
            worst = max(worst, float(np.maximum(-G, 0).max(initial=0.0)))
            scale = max(scale, float(np.abs(XV).max(initial=0.0)))
        return worst, (worst / scale if scale > 0 else 0.0)

    # ------------------------------------------------------------------------------------
    # duality
    def _cone_dual_norms(self, lam: np.ndarray, x=None, max_rows: int | None = None) -> np.ndarray:
        """Upper bounds on ``c_g = max_{u in K_g, ||u|| <= 1} -lam^T F_g u`` for every block
        g and output, shape (2, P, c).

        ``c_g = ||Pi_{K_g}(a_g)|| = min_{mu >= 0} ||a_g + G_g^T mu||`` (Moreau), computed by
        non-negative least squares. Any ``mu >= 0`` gives an upper bound, so for large n the
        NNLS is restricted to ``max_rows`` candidate constraints (those ``a_g`` violates
        most and, for a nonzero block of ``x``, those closest to active): the bound stays
        valid and is exact when the optimal multipliers live on the candidates.
        """
        X, D = self.Xt_np, self.D_np
        n, d = X.shape
        max_rows = max_rows or 20 * d
        E = 2.0 * D - 1.0
        out = np.zeros((2, self.P, self.c))
        full = slice(None)
        # the multipliers' supports of the last call, keyed by (sign, output, pattern):
        # successive dual points are close, so they are the next call's first guess
        supports = self.__dict__.setdefault("_cone_supports", {})
        if x is not None:
            v, w = self._vw(x)
            XV = np.einsum("nd,pdc->npc", X, np.stack([v, w]).reshape(-1, d, self.c))
        for o in range(self.c):
            A = X.T @ (D * lam[:, o:o + 1])  # (d, P): X^T D_i lam
            for i in range(self.P):
                Gt = (X * E[:, i:i + 1]).T  # (d, n): G_i^T
                for sgn, a in ((0, -A[:, i]), (1, A[:, i])):
                    if not np.any(a):
                        continue
                    if n <= max_rows:
                        cols = full
                    else:
                        ga = Gt.T @ a
                        cand = np.argpartition(ga, max_rows // 2)[: max_rows // 2]
                        if x is not None:
                            gv = np.abs(XV[:, sgn * self.P + i, o])
                            if gv.max() > 0:
                                near = np.argpartition(gv, max_rows // 2)[: max_rows // 2]
                                cand = np.union1d(cand, near)
                        cols = cand
                    if cols is full:  # start from the support this cone had last time
                        key = (sgn, o, np.packbits(D[:, i] > 0).tobytes())
                        start = supports.get(key)
                        if start is None and x is not None:
                            # none yet: where the block of x is nonzero and optimal, the
                            # projection is along it, so its active rows are the guess
                            gv = np.abs(XV[:, sgn * self.P + i, o])
                            if gv.max() > 0:
                                k = min(d, n)
                                start = np.argpartition(gv, k - 1)[:k]
                        mu, rn = verified_nnls(Gt, -a, maxiter=50 * d + 500, start=start)
                        supports[key] = np.flatnonzero(mu > 0)
                    else:
                        _, rn = verified_nnls(Gt[:, cols], -a, maxiter=50 * d + 500)
                    out[sgn, i, o] = rn
        return out

    def dual_bound(self, x) -> tuple[float, float]:
        """A lower bound on the program's optimum from the gradient of the loss at x.

        ``lam = grad loss(z(x))`` (moved into the conjugate's domain) is scaled by the best
        ``t`` in ``[0, min(1, beta / max_g c_g)]`` per output, where ``c_g`` is the dual
        constraint of block g, ``max_{u in K_g, ||u|| <= 1} -lam^T F_g u``, computed
        exactly by NNLS over all n rows: ``t lam`` is then dual feasible and
        ``-loss*(t lam) <= p*`` (weak duality) at any x. For the hinge loss, whose
        subgradient at the kink is not the optimal dual, the bound of
        :meth:`_hinge_kink_multipliers` is computed as well and the better one kept.
        Returns ``(dual_value, t_min)``. Not available for robust programs (returns nan).
        """
        if self.robust:
            return float("nan"), float("nan")
        z = self.convex_output(x)
        lam = RL.dual_domain(self.loss, RL.loss_grad(self.loss, z, self.Y_np, self.w),
                             self.Y_np, self.w)
        cmax = self._cone_dual_norms(lam, x, max_rows=self.n).max(axis=(0, 1))  # per output
        best = self._scaled_dual(lam, cmax)
        if self.loss == "hinge":
            lam_k = self._hinge_kink_multipliers(x, z)
            if lam_k is not None:
                cmax = self._cone_dual_norms(lam_k, x, max_rows=self.n).max(axis=(0, 1))
                other = self._scaled_dual(lam_k, cmax)
                if other[0] > best[0]:
                    best = other
        return best

    def _hinge_kink_multipliers(self, x, z, tol: float = 1e-5, max_unknowns: int = 4000):
        """A hinge-loss dual point for x that resolves the kink (None when x has no margin
        at 1): the subgradient ``-w y s`` takes ``s = 1`` below the kink and 0 above it,
        but the optimal ``s`` of samples with margin ``y z = 1`` (within ``tol``) lies
        anywhere in [0, 1]. They are chosen, with multipliers ``mu >= 0`` of the rows each
        nonzero block holds at its hyperplane, by bounded least squares on the blocks'
        stationarity ``w F_g^T (y s) + G_g^T mu_g = beta u_g / ||u_g||``. Any ``s`` in
        [0, 1] is a valid dual point (its dual constraints are computed exactly by the
        caller), so this only decides how tight the bound is."""
        from scipy.optimize import lsq_linear

        X, D, Y, w, beta = self.Xt_np, self.D_np, self.Y_np, self.w, self.beta
        E = 2.0 * D - 1.0
        U = np.stack(self._vw(x))  # (2, P, d, c)
        lam = np.zeros_like(Y)
        found = False
        for o in range(self.c):
            m = Y[:, o] * z[:, o]
            kink = np.flatnonzero(np.abs(m - 1.0) <= tol)
            if not kink.size:
                lam[:, o] = -w * Y[:, o] * (m < 1.0)
                continue
            s = (m < 1.0 - tol).astype(float)
            norms = np.linalg.norm(U[..., o], axis=2)
            top = norms.max(initial=0.0)
            blocks = [(a, i) for a in range(2) for i in range(self.P)
                      if top > 0 and norms[a, i] > 1e-6 * top]
            tight = {}
            for b in blocks:
                g = E[:, b[1]] * (X @ U[b][..., o])
                tight[b] = np.flatnonzero(g <= tol * np.abs(g).max())
            nmu = sum(t.size for t in tight.values())
            if not blocks or kink.size + nmu > max_unknowns:
                return None
            A = np.zeros((len(blocks) * self.d, kink.size + nmu))
            rhs = np.zeros(len(blocks) * self.d)
            off = kink.size
            for j, b in enumerate(blocks):
                F = (1.0 if b[0] == 0 else -1.0) * D[:, b[1], None] * X
                rows = slice(j * self.d, (j + 1) * self.d)
                A[rows, :kink.size] = w * (F[kink] * Y[kink, o, None]).T
                t = tight[b]
                A[rows, off:off + t.size] = (E[t, b[1], None] * X[t]).T
                off += t.size
                rhs[rows] = beta * U[b][..., o] / norms[b] - w * F.T @ (Y[:, o] * s)
            lb = np.zeros(A.shape[1])
            ub = np.concatenate([np.ones(kink.size), np.full(nmu, np.inf)])
            sol = lsq_linear(A, rhs, bounds=(lb, ub), method="bvls")
            s[kink] = sol.x[:kink.size]
            lam[:, o] = -w * Y[:, o] * s
            found = True
        return lam if found else None

    def _scaled_dual(self, lam, cmax) -> tuple[float, float]:
        """``(-loss*(t lam), min t)`` with the best ``t`` per output in
        ``[0, min(1, beta / cmax)]``, where ``cmax`` (per output) bounds the dual
        constraints of ``lam`` from above: a lower bound on the optimum."""
        tmax = np.where(cmax <= self.beta, 1.0, self.beta / np.maximum(cmax, 1e-300))
        t = RL.best_dual_scale(self.loss, lam, self.Y_np, self.w, tmax)
        return RL.loss_conjugate_neg(self.loss, lam * t[None, :], self.Y_np, self.w), float(t.min())

    @property
    def certifies_gap(self) -> bool:
        """Whether :meth:`certificate` computes the duality gap (epsilon = 0 and
        ``n P c <= 4e6``, the size up to which its NNLS is cheap)."""
        return not self.robust and self.n * self.P * self.c <= 4_000_000

    def project_feasible(self, x):
        """The Euclidean projection of every block of ``x`` onto its pattern cone
        ``{u : (2 D_i - I) X u >= 0}`` (Moreau: ``u + G^T mu`` with ``mu`` the NNLS
        solution of ``min_{mu >= 0} ||u + G^T mu||``; blocks already feasible are kept).
        A feasible point's objective is an upper bound on the program's optimum. Same
        library and shape as ``x``; epsilon = 0 programs only."""
        if self.robust:
            raise ValueError("project_feasible is for epsilon = 0 programs")
        v, w = self._vw(x)
        B = np.concatenate([v, w]).copy()  # (2P, d, c)
        X, E = self.Xt_np, 2.0 * self.D_np - 1.0
        for g in range(2 * self.P):
            i = g % self.P
            Gt = (X * E[:, i:i + 1]).T
            for o in range(self.c):
                r = Gt.T @ B[g, :, o]
                if r.min(initial=0.0) >= 0:
                    continue
                mu, _ = verified_nnls(Gt, -B[g, :, o], maxiter=50 * self.n)
                B[g, :, o] = B[g, :, o] + Gt @ mu
                r = Gt.T @ B[g, :, o]
                if r.min(initial=0.0) < -1e-12 * max(1.0, float(np.abs(r).max())):
                    B[g, :, o] = 0.0  # NNLS did not reach the cone: 0 is always feasible
        out = np.stack([B[: self.P], B[self.P:]])
        if self.c == 1:
            out = out[..., 0]
        return self._from_numpy(out)

    def beta_max(self) -> float:
        """Smallest beta for which x = 0 is optimal (every neuron pruned)."""
        if self.robust:
            raise ValueError("beta_max is only available for epsilon = 0")
        lam = np.asarray(RL.loss_grad(self.loss, np.zeros_like(self.Y_np), self.Y_np, self.w))
        return float(self._cone_dual_norms(lam, max_rows=self.n).max(initial=0.0))

    # ------------------------------------------------------------------------------------
    def network(self, x_or_result, *, prune_tol: float = 1e-8):
        """The ReLU network of a convex solution (section 2.3 of the paper), pruned.

        Each nonzero block ``v_i`` becomes a neuron ``u = v_i / sqrt(||v_i||)`` with output
        weight ``+sqrt(||v_i||)``, each ``w_i`` one with ``-sqrt(||w_i||)``; blocks with
        norm below ``prune_tol`` times the largest are dropped.

        Parameters
        ----------
        x_or_result : array or Result
        prune_tol : float

        Returns
        -------
        neurosolve.neural.relu_network.ReLUNetwork
            A numpy predictor (``net(X)``, ``net.predict(X)``) on raw inputs;
            ``net.to_torch()`` gives the same network as a ``torch.nn.Module``.
        """
        from neurosolve.neural.relu_network import ReLUNetwork

        x = getattr(x_or_result, "x", x_or_result)
        v, w = self._vw(x)
        norms = np.concatenate([np.linalg.norm(v, axis=1), np.linalg.norm(w, axis=1)])  # (2P, c)
        blocks = np.concatenate([v, w])  # (2P, d, c)
        top = norms.max(initial=0.0)
        U, A = [], []
        for g in range(2 * self.P):
            for o in range(self.c):
                nr = norms[g, o]
                if nr <= prune_tol * top or nr == 0:
                    continue
                r = np.sqrt(nr)
                U.append(blocks[g, :, o] / r)
                a = np.zeros(self.c)
                a[o] = r if g < self.P else -r
                A.append(a)
        U = np.array(U).reshape(-1, self.d)
        A = np.array(A).reshape(-1, self.c)
        return ReLUNetwork(U=U, alpha=A, mean=self.mean, scale=self.scale, bias=self.bias,
                           task=self.task, classes=self.classes)

    # ------------------------------------------------------------------------------------
    # differentiable evaluation (torch): used by solve(..., adjoint="implicit")
    def torch_data(self):
        """``(Xt, Y)``: the design matrix and targets recomputed in torch from the raw ``X``
        and ``y`` given at construction, so that autograd sees them (standardization
        included; the statistics' masks and the patterns ``D`` are held fixed).

        Only for problems built from torch tensors. Labels of a binary loss are constants.
        """
        import torch

        if self.array_library != "torch":
            raise TypeError("torch_data() needs a problem built from torch tensors X, y")
        dt, dev = self.Xt.dtype, self.Xt.device
        X = self._design_torch(self.X)
        if self._y_direct:  # squared loss on the given targets: differentiable in y
            Y = torch.as_tensor(self.y).to(dtype=dt, device=dev).reshape(self.n, -1)
        else:
            Y = torch.as_tensor(self.Y_np, dtype=dt, device=dev)
        return X, Y

    def _design_torch(self, Xraw):
        """The design matrix of raw inputs in torch, standardized with statistics computed
        in torch from the training ``X`` (so gradients reach it); columns whose training
        standard deviation was floored to 1 stay unscaled."""
        import torch

        dt, dev = self.Xt.dtype, self.Xt.device
        X = torch.as_tensor(Xraw).to(dtype=dt, device=dev)
        if self.standardize:
            train = torch.as_tensor(self.X).to(dtype=dt, device=dev)
            mean = train.mean(dim=0) if self.bias else torch.zeros_like(train[0])
            std = torch.where(torch.as_tensor(self._std_kept, device=dev),
                              train.std(dim=0, correction=0), torch.ones_like(train[0]))
            X = (X - mean) / std
        if self.bias:
            X = torch.cat([X, torch.ones_like(X[:, :1])], dim=1)
        return X

    def _blocks_torch(self, x):
        x = x if x.ndim == 4 else x[..., None]
        if tuple(x.shape) != (2, self.P, self.d, self.c):
            raise ValueError(f"x must have shape {self.x_shape}, got {tuple(x.shape)}")
        return x[0], x[1]

    def outputs(self, x, X=None):
        """Outputs of the fitted network of ``x`` (torch; differentiable in ``x`` and, through
        :meth:`torch_data`, in the training ``X`` and ``y``).

        ``X=None``: on the training data, ``sum_i D_i X (v_i - w_i)`` (equal to the ReLU
        network's outputs where the cone constraints hold). Otherwise on new raw inputs
        ``X`` (n', d_in): ``sum_i relu(X v_i) - relu(X w_i)`` after the training
        standardization. Shape (n, c), or (n,) for one output.
        """
        import torch

        v, w = self._blocks_torch(x)
        Xt, _ = self.torch_data()
        if X is None:
            D = torch.as_tensor(self.D_np, dtype=Xt.dtype, device=Xt.device)
            Z = (torch.einsum("nd,pdc->npc", Xt, v - w) * D[:, :, None]).sum(1)
        else:
            Xn = torch.as_tensor(X).to(dtype=Xt.dtype, device=Xt.device)
            if Xn.ndim != 2 or Xn.shape[1] != self.d_in:
                raise ValueError(f"X must have shape (n, {self.d_in}), got {tuple(Xn.shape)}")
            Xn = self._design_torch(Xn)
            Z = (torch.relu(torch.einsum("nd,pdc->npc", Xn, v))
                 - torch.relu(torch.einsum("nd,pdc->npc", Xn, w))).sum(1)
        return Z[:, 0] if self.c == 1 else Z

    def value(self, x):
        """The convex objective of ``x`` as a differentiable torch scalar (loss plus
        ``beta sum ||v_i|| + ||w_i||``; epsilon = 0 programs). With ``x`` from
        ``solve(prob, adjoint="implicit")`` its gradient with respect to the training
        ``X`` and ``y`` is the derivative of the optimal value (patterns held fixed).

        Examples
        --------
        >>> import torch, neurosolve as ns
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.randn(30, 2, generator=g, dtype=torch.float64, requires_grad=True)
        >>> y = (X[:, 0] * X[:, 1]).detach()
        >>> prob = ns.problems.ConvexReLU(X, y, beta=0.2, patterns=6, seed=0)
        >>> res = ns.solve(prob, ns.solvers.ADMM(rtol=1e-7), adjoint="implicit")
        >>> prob.value(res.x).backward()
        >>> tuple(X.grad.shape)
        (30, 2)
        """
        import torch

        if self.robust:
            raise NotImplementedError("value() is for epsilon = 0 programs")
        v, w = self._blocks_torch(x)
        _, Y = self.torch_data()
        Z = self.outputs(x).reshape(self.n, self.c)
        reg = (torch.linalg.vector_norm(v, dim=1).sum() + torch.linalg.vector_norm(w, dim=1).sum())
        return RL.loss_value(self.loss, Z, Y, self.w) + self.beta * reg

    def nc_objective(self, net) -> float:
        """Non-convex training objective of a network on this problem's data and loss
        (weight decay measured in the problem's standardized coordinates). With
        epsilon > 0: the worst-case loss of the network linearized at each sample (exact
        when no neuron changes activity on the ball, which the robust constraints
        guarantee)."""
        H = self.Xt_np @ net.U.T
        act = (H >= 0).astype(np.float64)
        z = np.maximum(H, 0.0) @ net.alpha
        reg = 0.5 * self.beta * (np.sum(net.U**2) + np.sum(net.alpha**2))
        if self.robust:
            Usc = net.U * self.sc_np[None, :]
            # b_k = sum_j act_kj alpha_jo Usc_j  -> (n, d, c)
            B = np.einsum("nm,mo,md->ndo", act, net.alpha, Usc)
            bn = np.abs(B).sum(1) if self.q == 1 else np.sqrt((B * B).sum(1))
            return float(RL.robust_loss_value(self.loss, z, self.Y_np, bn, self.epsilon, self.w)) \
                + float(reg)
        return float(RL.loss_value(self.loss, z, self.Y_np, self.w)) + float(reg)

    def accuracy(self, z: np.ndarray, Y: np.ndarray | None = None, margin: float = 0.0) -> float:
        """Classification accuracy of outputs z against +-1 targets (argmax for multiclass)."""
        Y = self.Y_np if Y is None else Y
        if self.task == "multiclass":
            return float(np.mean(np.argmax(z, 1) == np.argmax(Y, 1)))
        return float(np.mean(Y * z > margin))

    def certified_accuracy(self, x, tol: float = 1e-9) -> float:
        """Fraction of training samples certifiably robust: ``y z - eps ||b||_q > tol``."""
        v, w = self._vw(x)
        z = self.convex_output(x)
        return float(np.mean(self.Y_np * z - self.epsilon * self._bnorm(v, w) > tol))

    def witness_bound(self, lam, mu) -> float:
        """The dual bound of a supplied dual point, verified here: ``lam`` (n, c) is moved
        into the loss conjugate's domain, ``mu`` ((n, 2 P c) cone multipliers, columns
        ordered block-major as ADMM stores them) is clipped at 0, each block's dual
        constraint is bounded by ``||-F_g^T lam + G_g^T mu_g||`` (valid for any
        ``mu >= 0``), and the best feasible scaling gives ``-loss*(t lam) <= p*``."""
        X, D, Y, w = self.Xt_np, self.D_np, self.Y_np, self.w
        n, d, P, c = self.n, self.d, self.P, self.c
        lam = RL.dual_domain(self.loss, np.asarray(_to_numpy(lam), dtype=np.float64).reshape(n, c),
                             Y, w)
        mu = np.maximum(np.asarray(_to_numpy(mu), dtype=np.float64).reshape(n, 2 * P * c), 0.0)
        E = 2.0 * D - 1.0
        E2 = np.repeat(np.concatenate([E, E], 1), c, axis=1)
        h = (X.T @ (D[:, :, None] * lam[:, None, :]).reshape(n, P * c)).reshape(d, P, c)
        A = -np.concatenate([h, -h], 1).reshape(d, -1) + X.T @ (E2 * mu)
        cmax = np.sqrt((A * A).sum(0)).reshape(2 * P, c).max(axis=0)
        return self._scaled_dual(lam, cmax)[0]

    def certificate(self, x, dual: Any = None) -> dict[str, float]:
        """What proves a solution, recomputed from scratch (numpy, float64).

        Returns
        -------
        dict
            ``objective`` (convex objective; worst-case loss when robust),
            ``nc_objective`` (non-convex objective of the recovered, pruned network),
            ``cone_violation`` and ``relative_cone_violation`` (see :meth:`cone_violation`),
            ``dual_objective`` and ``duality_gap`` (``objective - dual`` with the better
            of the dual point of :meth:`dual_bound` and, when a solver supplies one, the
            witness ``dual = (lam, mu)`` verified by :meth:`witness_bound`; so the gap
            bounds the suboptimality of x up to its cone violation; nan when robust, or
            when n P c > 4e6 and no witness is given), ``relative_gap`` (gap over ``max(1, |objective|)``),
            ``active_neurons``, ``train_accuracy`` (classification) and, when robust,
            ``certified_accuracy``. ``global``: ``"sampled"`` (optimality is claimed for
            the sampled program only), and for a ``patterns="generate"`` program, from
            :meth:`global_check` recomputed here: ``"exact"`` (no pattern of the whole
            arrangement violates the dual condition), ``"no_violation_found"`` (none among
            the ascent's candidates) or ``"sampled"`` (a violating pattern exists), with
            ``global_ratio`` and ``global_gap`` (objective minus the global lower bound,
            over ``max(1, |objective|)``: a bound on the suboptimality against every
            network of any width when the search is exact).
        """
        obj = self.objective(x)
        viol, rviol = self.cone_violation(x)
        net = self.network(x)
        cert = {"objective": obj, "nc_objective": self.nc_objective(net),
                "cone_violation": viol, "relative_cone_violation": rviol}
        witness = dual
        if self.certifies_gap:
            dual, _ = self.dual_bound(x)
        else:
            dual = float("nan")
        if witness is not None and not self.robust:
            wb = self.witness_bound(*witness)
            dual = wb if not np.isfinite(dual) else max(dual, wb)
        gap = obj - dual
        cert["dual_objective"] = dual
        cert["duality_gap"] = gap
        cert["relative_gap"] = gap / max(1.0, abs(obj)) if np.isfinite(gap) else float("nan")
        cert["active_neurons"] = float(net.width)
        cert["global"] = "sampled"
        if self.generate:
            g = self.global_check(x, tol=self.global_tol)
            cert["global_ratio"] = g["ratio"]
            cert["global_gap"] = (obj - g["lower_bound"]) / max(1.0, abs(obj))
            if g["violators"].shape[1] == 0 and g["undecided"] == 0:
                cert["global"] = "exact" if g["search"] == "exact" else "no_violation_found"
        if self.task != "regression":
            cert["train_accuracy"] = self.accuracy(self.convex_output(x))
        if self.robust:
            cert["certified_accuracy"] = self.certified_accuracy(x)
        return cert

    # ------------------------------------------------------------------------------------
    def optimality_check(self, network, *, patterns: Any = "auto", samples: int = 2000,
                         seed: int = 0) -> dict[str, Any]:
        """Global-optimality check of a given network (section 9 of the spec / [2]).

        With ``lam = grad loss(net(X))`` the network is a global minimizer of the
        non-convex training problem (for any width) iff
        ``max_{||u|| <= 1} |lam^T (X u)_+| <= beta``; the maximum is taken pattern by
        pattern (exactly, by NNLS over each pattern cone). ``patterns="all"`` enumerates
        every pattern (exact; small d), an int samples that many (a probabilistic check),
        ``"auto"`` enumerates when feasible and samples otherwise.

        Returns
        -------
        dict
            ``ratio`` (max over patterns of ``c_i / beta``; <= 1 certifies optimality),
            ``lower_bound`` (a lower bound on the global optimum: the dual value at
            ``t lam``, ``t = min(1, 1/ratio)``; exact only when patterns are enumerated),
            ``objective`` (the network's), ``gap`` (``objective - lower_bound``),
            ``exact`` (whether all patterns were used), ``n_patterns``.
        """
        if self.robust:
            raise ValueError("optimality_check is for epsilon = 0 programs")
        X = self.Xt_np
        if patterns == "auto":
            patterns = "all" if RP.count_enumeration(self.n, self.d) <= 200_000 else samples
        if patterns == "all":
            D = RP.enumerate_patterns(X)
            exact = True
        else:
            D, _ = RP.sample_patterns(X, int(patterns), seed=seed)
            exact = False
        z = np.maximum(X @ network.U.T, 0.0) @ network.alpha
        lam = np.asarray(RL.loss_grad(self.loss, z, self.Y_np, self.w), dtype=np.float64)
        sub = _Sub(self, D)
        cmax = float(ConvexReLU._cone_dual_norms(sub, lam, max_rows=self.n).max(initial=0.0))
        ratio = cmax / self.beta
        t = 1.0 if ratio <= 1 else 1.0 / ratio
        lb = RL.loss_conjugate_neg(self.loss, t * lam, self.Y_np, self.w)
        obj = self.nc_objective(network)
        return {"ratio": ratio, "lower_bound": lb, "objective": obj, "gap": obj - lb,
                "exact": exact, "n_patterns": int(D.shape[1])}


    def global_check(self, x, *, search: str = "auto", starts: int = 256, seed: int = 0,
                     tol: float = 1e-3, max_candidates: int = 200_000,
                     max_nnls: int | None = None) -> dict[str, Any]:
        """Is ``x`` globally optimal over *all* activation patterns? (Pilanci-Ergen dual
        condition, [2]_ theorem 1 / section 9 of the convex ReLU notes.)

        With ``lam = grad loss(z(x))`` (the dual point of the sampled program), ``x`` is
        optimal for the program over every pattern, and its network a global minimizer of
        the non-convex training problem, when ``max_{||u|| <= 1} |lam^T (X u)_+| <= beta``.
        The maximum is taken pattern by pattern, exactly on each pattern's cone (NNLS),
        over a candidate set: every pattern of the hyperplane arrangement
        (``search="exact"``, small d) or the patterns met by multi-start ascent
        (``"ascent"``; :func:`~neurosolve.problems.relu_patterns.ascent_patterns`, started
        from ``starts`` Gaussian directions, the current neurons and up to ``starts`` data
        points).
        Candidates whose unconstrained bound ``||X^T D_i lam|| <= beta`` cannot violate
        and are not solved.

        Parameters
        ----------
        x : array
            A solution of this (sampled) program.
        search : {"auto", "exact", "ascent"}
            ``auto``: exact when the enumeration examines at most ``max_candidates``
            candidates.
        starts, seed : int
            Random starts of the ascent.
        tol : float
            A pattern violates when its value exceeds ``beta (1 + tol)``.
        max_nnls : int, optional
            At most this many candidates are solved exactly (largest upper bound first)
            when no violator is proven by its direction; the rest stay ``undecided``.
            Default: all of them for ``search="exact"``, 400 for the ascent.

        Returns
        -------
        dict
            ``search`` (what ran), ``ratio`` (largest value over ``beta`` found among the
            program's own patterns and the candidates -- exact when no violator is found;
            <= 1 + tol with ``search="exact"`` proves global optimality up to the accuracy
            of x), ``lower_bound`` (the dual objective at ``t lam``,
            ``t = min(1, 1/ratio)``: a lower bound on the global optimum when the search
            is exact), ``violators`` ((n, k) patterns not in this program whose value
            exceeds ``beta (1 + tol)``, largest first), ``n_candidates``, ``undecided``
            (candidates that might violate but were not solved; the ratio counts their
            upper bounds).
        """
        if self.robust:
            raise ValueError("global_check is for epsilon = 0 programs")
        if search not in ("auto", "exact", "ascent"):
            raise ValueError(f"search must be 'auto', 'exact' or 'ascent', got {search!r}")
        X = self.Xt_np
        n, d = X.shape
        if search == "auto":
            search = "exact" if RP.count_enumeration(n, d) <= max_candidates else "ascent"
        z = self.convex_output(x)
        lam = np.asarray(RL.loss_grad(self.loss, z, self.Y_np, self.w), dtype=np.float64)
        if search == "exact":
            Dc = RP.enumerate_patterns(X, max_candidates=max_candidates)
            Hc = None
        else:
            v, w = self._vw(x)
            H0 = np.concatenate([v, w]).transpose(1, 0, 2).reshape(d, -1)  # current neurons
            H0 = H0[:, np.linalg.norm(H0, axis=0) > 0]
            # data points as directions too: 1[X x_k >= 0] activates the samples like x_k
            rows = np.random.default_rng(seed).choice(n, size=min(n, starts), replace=False)
            H0 = np.hstack([H0, X[rows].T])
            found = [RP.ascent_patterns(X, lam[:, o], starts=starts, seed=seed, H0=H0)
                     for o in range(self.c)]
            Dc = np.concatenate([f[0] for f in found], axis=1)
            Hc = np.concatenate([f[1] for f in found], axis=1)
        have = set(RP._keys(self.D_np))
        Dc_all = Dc
        keys = RP._keys(Dc)
        new = [j for j, k in enumerate(keys) if k not in have]
        Dc = Dc[:, new]
        keys = [keys[j] for j in new]
        # bounds on each candidate's value max_{u in K_i, ||u|| <= 1} |lam_o^T D_i X u|:
        # above, the unconstrained ||X^T D_i lam_o||; below, the value at the direction that
        # generated the pattern (it lies in the cone)
        upper = np.linalg.norm(np.einsum("nd,np,nc->pdc", X, Dc, lam), axis=1).max(axis=1)
        if Hc is not None:
            Hn = Hc[:, new]
            lower = np.abs(np.einsum("nk,nc->kc", np.maximum(X @ Hn, 0.0), lam)).max(axis=1)
        else:
            lower = np.zeros(Dc.shape[1])
        thr = self.beta * (1 + tol)
        values = lower.copy()
        certain = lower > thr
        undecided = 0
        if not certain.any():
            # no violator proven by a direction: solve the candidates that might violate,
            # the most promising first, at most max_nnls of them
            need = np.flatnonzero(upper > thr)
            need = need[np.argsort(-upper[need])]
            budget = (need.size if search == "exact" else 400) if max_nnls is None else max_nnls
            todo, rest = need[:budget], need[budget:]
            if todo.size:
                exact = ConvexReLU._cone_dual_norms(_Sub(self, Dc[:, todo]), lam, max_rows=n)
                values[todo] = exact.max(axis=(0, 2))
            values = np.where(upper > thr, values, upper)
            values[rest] = upper[rest]  # only bounded above: the ratio stays an upper bound
            undecided = int(rest.size)
        # the program's own patterns (their values are about beta at an optimum)
        own = ConvexReLU._cone_dual_norms(self, lam, x, max_rows=n).max(initial=0.0)
        ratio = float(max(values.max(initial=0.0), own)) / self.beta
        t = 1.0 if ratio <= 1.0 else 1.0 / ratio
        lb = float(RL.loss_conjugate_neg(self.loss, t * lam, self.Y_np, self.w))
        order = np.argsort(-values)
        unsolved = set(rest.tolist()) if undecided else set()
        viol = [j for j in order if values[j] > thr and j not in unsolved]
        return {"search": search, "ratio": ratio, "lower_bound": lb,
                "violators": Dc[:, viol], "n_candidates": int(Dc_all.shape[1]),
                "undecided": undecided}


class _Sub:
    """A view of a problem with another pattern matrix (for the optimality check)."""

    def __init__(self, prob, D):
        self.Xt_np, self.D_np, self.P, self.c = prob.Xt_np, D, D.shape[1], prob.c
        self._cone_supports = prob.__dict__.setdefault("_cone_supports", {})


def _hidden_layer(network, d_in):
    """(W (m, d_in), b (m,)) of a network's hidden layer, on raw inputs."""
    from neurosolve.neural.relu_network import ReLUNetwork

    if isinstance(network, ReLUNetwork):
        return network.raw_first_layer()
    if isinstance(network, (tuple, list)) and len(network) == 2:
        W = np.asarray(_to_numpy(network[0]), dtype=np.float64)
        b = np.asarray(_to_numpy(network[1]), dtype=np.float64).reshape(-1)
    elif hasattr(network, "modules"):
        import torch

        lin = next((m for m in network.modules() if isinstance(m, torch.nn.Linear)), None)
        if lin is None:
            raise ValueError("network has no torch.nn.Linear layer")
        W = lin.weight.detach().cpu().double().numpy()
        b = (lin.bias.detach().cpu().double().numpy() if lin.bias is not None
             else np.zeros(W.shape[0]))
    else:
        raise TypeError("network must be a torch module, a ReLUNetwork or a pair (W, b)")
    if W.ndim != 2 or W.shape[1] != d_in or b.shape != (W.shape[0],):
        raise ValueError(f"the network's hidden layer must have weights (m, {d_in}) and biases "
                         f"(m,), got {W.shape} and {b.shape}")
    return W, b
