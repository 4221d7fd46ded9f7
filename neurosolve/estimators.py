"""scikit-learn estimators for convex training of two-layer ReLU networks.

:class:`ConvexReLUClassifier` and :class:`ConvexReLURegressor` wrap the convex program
:class:`neurosolve.problems.ConvexReLU` and a neurosolve solver (ADMM by default) behind
the scikit-learn estimator interface: ``fit`` builds the program on the (validated)
training data and solves it, the recovered, pruned ReLU network predicts, and the
solver's :class:`~neurosolve.core.Result` with its certificate (objective, cone
violation, duality gap) stays on the fitted estimator. They work in ``Pipeline``,
``GridSearchCV``, ``clone`` and ``pickle`` like any scikit-learn estimator.

Importing this module imports scikit-learn; ``import neurosolve`` alone does not (the two
names are loaded lazily on first use).

References
----------
.. [1] M. Pilanci, T. Ergen, "Neural Networks are Convex Regularizers: Exact
   Polynomial-time Convex Optimization Formulations for Two-layer Networks", ICML 2020.
.. [2] Y. Bai, T. Gautam, S. Sojoudi, "Efficient Global Optimization of Two-layer ReLU
   Networks: Quadratic-time Algorithms and Adversarial Training", SIAM J. Math. Data Sci.
   2023, arXiv:2201.01965.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = ["ConvexReLUClassifier", "ConvexReLURegressor"]


def _validate_data(estimator, X, y="no_validation", **kwargs):
    """``sklearn.utils.validation.validate_data`` (>= 1.6) or the older method form."""
    if _sk_validate_data is not None:
        return _sk_validate_data(estimator, X, y, **kwargs)
    return estimator._validate_data(X, y, **kwargs)  # pragma: no cover


class _ConvexReLUBase(BaseEstimator):
    """What the classifier and the regressor share: building and solving the program."""

    # the loss of the program (the regressor is always "squared")
    def _loss(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return int(rs)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    def _make_solver(self, problem, seed: int):
        from neurosolve.core import Solver
        from neurosolve.solvers import default_solver

        overrides = {}
        if self.rtol is not None:
            overrides["rtol"] = self.rtol
        if self.max_iter is not None:
            overrides["maxiter"] = self.max_iter
        if self.solver is None:
            # ADMM (PatternGeneration for patterns="generate"), seeded like the patterns
            solver = default_solver(problem)
            if "seed" in {f.name for f in dataclasses.fields(solver)}:
                solver = dataclasses.replace(solver, seed=seed)
        elif isinstance(self.solver, Solver):
            solver = self.solver
        else:
            raise TypeError(f"solver must be None or a neurosolve Solver instance (e.g. "
                            f"neurosolve.solvers.ADMM(...)), got {type(self.solver).__name__}")
        names = {f.name for f in dataclasses.fields(solver)}
        missing = sorted(set(overrides) - names)
        if missing:
            raise ValueError(
                f"{type(solver).__name__} has no option {missing[0]!r}; leave "
                f"{'rtol' if missing[0] == 'rtol' else 'max_iter'}=None and configure the "
                "solver instance itself (solver=...)")
        return dataclasses.replace(solver, **overrides) if overrides else solver

    def _fit_program(self, X, Y, *, one_vs_all: bool):
        """Build and solve the program; set the fitted attributes; return self."""
        import neurosolve as ns
        from neurosolve.problems import ConvexReLU

        seed = self._seed()
        prob = ConvexReLU(X, Y, self.beta, loss=self._loss(), patterns=self.patterns,
                          bias=self.bias, standardize=self.standardize, seed=seed,
                          reduction=self.reduction, one_vs_all=one_vs_all)
        solver = self._make_solver(prob, seed)
        res = ns.solve(prob, solver, backend=self.backend)
        # the solver's working state (factorizations, kernels) is dropped: it is only
        # good for warm-starting this very problem and would bloat the fitted estimator
        self.result_ = dataclasses.replace(res, state=None)
        self.certificate_ = dict(res.certificate)
        self.status_ = res.status
        self.n_iter_ = int(res.n_iter)
        self.network_ = prob.network(res)
        self.n_patterns_ = int(np.shape(res.x)[1])  # x has shape (2, P, d[, c])
        if not res.success:
            warnings.warn(
                f"{type(self).__name__}: the solver ({type(solver).__name__}) stopped with "
                f"status {res.status.name} after {res.n_iter} iterations: {res.message} "
                "The fitted network is the last iterate; raise max_iter or loosen rtol "
                "(status_ and certificate_ say how far it is from optimal).",
                ConvergenceWarning, stacklevel=3)
        return self

    def _decision(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=np.float64)
        return self.network_.decision_function(X)


_COMMON_PARAMS = """\
    patterns : int, "all" or "generate", default=16
        Number ``P`` of activation patterns sampled from Gaussian directions (the network
        has at most ``2 P`` hidden neurons per output); ``"all"`` to enumerate every
        pattern of the training data (exact global optimum; small feature counts only);
        ``"generate"`` to add violating patterns round by round (the default solver is
        then ``PatternGeneration``). See :class:`neurosolve.problems.ConvexReLU`.
    bias : bool, default=True
        Give the hidden neurons biases (a column of ones, regularized like the weights).
    standardize : bool, default=True
        Center and scale each feature by its training statistics inside the program; the
        fitted network applies the same transform to new data.
    reduction : {"mean", "sum"}, default="mean"
        Average (default: ``beta`` keeps its meaning across data-set sizes, e.g. the
        folds of a cross-validation) or sum the per-sample losses.
    rtol : float, default=None
        Relative tolerance of the solver's stopping rule; ``None`` keeps the solver's
        default (ADMM: 1e-4).
    max_iter : int, default=None
        Iteration cap of the solver; ``None`` keeps the solver's default (ADMM: 20000).
        A fit that stops before the stopping rule is met emits a
        :class:`~sklearn.exceptions.ConvergenceWarning`.
    random_state : int, RandomState instance or None, default=0
        Seeds the pattern sampling (and the solver's random choices when ``solver`` is
        None). An int gives reproducible fits.
    solver : neurosolve Solver, default=None
        The solver instance, e.g. ``neurosolve.solvers.ADMM(u_step="cg")`` or
        ``neurosolve.solvers.CvxpyReLU()``; ``None``: the program's default solver
        (``ADMM()``; see :func:`neurosolve.solvers.default_solver`). ``rtol`` and
        ``max_iter``, when not None, replace the instance's ``rtol`` and ``maxiter``
        (``ValueError`` if it has no such option).
    backend : {"auto", "numpy", "numba", "torch"}, default="auto"
        Kernels the solver runs (see :func:`neurosolve.solve`)."""

_COMMON_ATTRS = """\
    network_ : neurosolve.neural.relu_network.ReLUNetwork
        The recovered, pruned two-layer ReLU network on raw inputs (``network_.to_torch()``
        gives it as a ``torch.nn.Module``).
    result_ : neurosolve.Result
        The solver's result (``x``, ``status``, ``message``, ``n_iter``, ``history``,
        ``certificate``, ``stats``); its ``state`` is dropped (None).
    certificate_ : dict
        ``result_.certificate``: ``objective``, ``nc_objective`` (the network's
        non-convex training objective), ``cone_violation``, ``relative_cone_violation``,
        ``dual_objective``, ``duality_gap``, ``relative_gap``, ``active_neurons`` (and
        ``train_accuracy`` for classifiers), recomputed from the solution.
    status_ : neurosolve.Status
        Why the solve ended (``Status.CONVERGED`` when the stopping rule was met and the
        certificate confirmed it).
    n_iter_ : int
        Solver iterations.
    n_patterns_ : int
        Activation patterns in the program (may be fewer than ``patterns``).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit (only when X has string column names)."""

_REFERENCES = """\
    References
    ----------
    .. [1] M. Pilanci, T. Ergen, "Neural Networks are Convex Regularizers: Exact
       Polynomial-time Convex Optimization Formulations for Two-layer Networks",
       ICML 2020.
    .. [2] Y. Bai, T. Gautam, S. Sojoudi, "Efficient Global Optimization of Two-layer
       ReLU Networks: Quadratic-time Algorithms and Adversarial Training", SIAM J. Math.
       Data Sci. 2023, arXiv:2201.01965."""


def _proba_available(self) -> bool:
    if self.loss != "logistic":
        raise AttributeError(
            f"predict_proba is available only with loss='logistic', not loss={self.loss!r}: "
            "the squared and hinge losses are not likelihoods, so their decision values are "
            "no probabilities. Use decision_function, or wrap the estimator in "
            "sklearn.calibration.CalibratedClassifierCV to calibrate them.")
    return True


class ConvexReLUClassifier(ClassifierMixin, _ConvexReLUBase):
    __doc__ = f"""Two-layer ReLU network classifier trained to the global optimum of a
    convex program.

    ``fit`` solves the convex reformulation of weight-decay-regularized training of a
    one-hidden-layer ReLU network over ``patterns`` sampled activation patterns
    ([1]_, solved by the ADMM of [2]_ by default) and keeps the recovered network. Two
    classes give one output (positive: ``classes_[1]``); more classes are trained one
    versus all, one output per class, and predicted by the largest output.

    Parameters
    ----------
    beta : float, default=1e-3
        Regularization strength (> 0): the weight decay
        ``beta/2 (||u_j||^2 + alpha_j^2)`` of the network, i.e. the group-lasso weight
        of the convex program. Larger values give fewer active neurons.
    loss : {{"logistic", "squared", "hinge"}}, default="logistic"
        Training loss on +-1 targets ``y`` and outputs ``z``: ``log(1 + exp(-y z))``,
        ``1/2 (z - y)^2`` or ``max(0, 1 - y z)``.
{_COMMON_PARAMS}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (sorted), as given in ``y``.
{_COMMON_ATTRS}

    See Also
    --------
    ConvexReLURegressor : the same model for real targets.
    neurosolve.problems.ConvexReLU : the convex program.

    Notes
    -----
    ``predict_proba`` (and ``predict_log_proba``) exist only for ``loss="logistic"``,
    where the model *is* a likelihood: two classes give ``P(classes_[1]) =
    sigmoid(z)``; with one-vs-all outputs the per-class sigmoids are normalized to sum
    to one (as scikit-learn's one-vs-rest logistic regression does), which keeps the
    ranking of ``decision_function``. For ``"squared"`` and ``"hinge"`` accessing
    ``predict_proba`` raises ``AttributeError`` (so ``hasattr`` is False); use
    ``sklearn.calibration.CalibratedClassifierCV`` for probabilities.

    The sampled program's optimum bounds the training objective of a network of that
    width from above; ``patterns="all"`` makes it the global optimum of non-convex
    training [1]_.

{_REFERENCES}

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve import ConvexReLUClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, (80, 2))
    >>> y = np.where(X[:, 0] * X[:, 1] > 0, "same", "opposite")  # XOR: not linear
    >>> clf = ConvexReLUClassifier(beta=1e-3, patterns=8, rtol=1e-3).fit(X, y)
    >>> clf.classes_
    array(['opposite', 'same'], dtype='<U8')
    >>> bool(clf.score(X, y) > 0.9)
    True
    >>> clf.predict([[0.5, 0.5], [-0.5, 0.5]])
    array(['same', 'opposite'], dtype='<U8')
    >>> proba = clf.predict_proba([[0.5, 0.5], [-0.5, 0.5]])
    >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1.0))
    ((2, 2), True)
    >>> clf.status_.name, sorted(clf.certificate_)[:3]
    ('CONVERGED', ['active_neurons', 'cone_violation', 'dual_objective'])
    """

    def __init__(self, beta=1e-3, *, loss="logistic", patterns=16, bias=True,
                 standardize=True, reduction="mean", rtol=None, max_iter=None,
                 random_state=0, solver=None, backend="auto"):
        self.beta = beta
        self.loss = loss
        self.patterns = patterns
        self.bias = bias
        self.standardize = standardize
        self.reduction = reduction
        self.rtol = rtol
        self.max_iter = max_iter
        self.random_state = random_state
        self.solver = solver
        self.backend = backend

    def _loss(self) -> str:
        return self.loss

    def fit(self, X, y):
        """Solve the convex training program on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Class labels (any hashable, sortable labels: ints, strings, ...).

        Returns
        -------
        self : ConvexReLUClassifier
            The fitted estimator.

        Warns
        -----
        sklearn.exceptions.ConvergenceWarning
            When the solver stops before its stopping rule is met (the message carries
            the status and the solver's message).
        """
        X, y = _validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but "
                f"the data contain only 1 class: {self.classes_[0]!r}")
        return self._fit_program(X, y_idx.reshape(-1), one_vs_all=True)

    def decision_function(self, X):
        """Network outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
            Two classes: one output, positive for ``classes_[1]``. More classes: one
            output per class (one versus all).
        """
        return self._decision(X)

    def predict(self, X):
        """Class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Entries of ``classes_``: by the sign of the output for two classes, the
            largest output otherwise.
        """
        Z = self._decision(X)
        idx = np.argmax(Z, axis=1) if Z.ndim == 2 else (Z > 0).astype(np.intp)
        return self.classes_[idx]

    @available_if(_proba_available)
    def predict_proba(self, X):
        """Class probabilities of the logistic model (``loss="logistic"`` only).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; rows sum to one. Two classes:
            ``[1 - sigmoid(z), sigmoid(z)]``; more: the per-class sigmoids normalized.
        """
        return np.exp(self.predict_log_proba(X))

    @available_if(_proba_available)
    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba` (``loss="logistic"`` only).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        Z = self._decision(X)
        if Z.ndim == 1:
            # log sigmoid(-z), log sigmoid(z), computed without overflow
            return -np.logaddexp(0.0, np.column_stack([Z, -Z]))
        L = -np.logaddexp(0.0, -Z)  # log sigmoid of each one-vs-all output
        return L - np.logaddexp.reduce(L, axis=1, keepdims=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.input_tags.sparse = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"binary_only": False}


class ConvexReLURegressor(RegressorMixin, _ConvexReLUBase):
    __doc__ = f"""Two-layer ReLU network regressor trained to the global optimum of a
    convex program.

    ``fit`` solves the convex reformulation of weight-decay-regularized least-squares
    training of a one-hidden-layer ReLU network over ``patterns`` sampled activation
    patterns ([1]_, solved by the ADMM of [2]_ by default) and keeps the recovered
    network. 2-D targets give one output per column.

    Parameters
    ----------
    beta : float, default=1e-3
        Regularization strength (> 0): the weight decay
        ``beta/2 (||u_j||^2 + alpha_j^2)`` of the network, i.e. the group-lasso weight
        of the convex program. Larger values give fewer active neurons.
{_COMMON_PARAMS}

    Attributes
    ----------
{_COMMON_ATTRS}

    See Also
    --------
    ConvexReLUClassifier : the same model for class labels.
    neurosolve.problems.ConvexReLU : the convex program.

    Notes
    -----
    The loss is ``1/2 (z - y)^2`` (averaged or summed by ``reduction``); the program
    does not rescale the targets, so for targets of very different magnitudes scale
    them (e.g. ``sklearn.compose.TransformedTargetRegressor``) or adapt ``beta``.

{_REFERENCES}

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve import ConvexReLURegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-2, 2, (100, 1))
    >>> y = np.abs(X[:, 0]) - 1.0                  # |x| - 1: two ReLU neurons
    >>> reg = ConvexReLURegressor(beta=1e-4, patterns=8, rtol=1e-3).fit(X, y)
    >>> bool(reg.score(X, y) > 0.99)
    True
    >>> bool(np.allclose(reg.predict([[-1.5], [0.0], [1.5]]), [0.5, -1.0, 0.5], atol=0.2))
    True
    >>> reg.status_.name, bool(reg.certificate_["relative_cone_violation"] < 1e-3)
    ('CONVERGED', True)
    """

    def __init__(self, beta=1e-3, *, patterns=16, bias=True, standardize=True,
                 reduction="mean", rtol=None, max_iter=None, random_state=0, solver=None,
                 backend="auto"):
        self.beta = beta
        self.patterns = patterns
        self.bias = bias
        self.standardize = standardize
        self.reduction = reduction
        self.rtol = rtol
        self.max_iter = max_iter
        self.random_state = random_state
        self.solver = solver
        self.backend = backend

    def _loss(self) -> str:
        return "squared"

    def fit(self, X, y):
        """Solve the convex least-squares training program on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Real targets.

        Returns
        -------
        self : ConvexReLURegressor
            The fitted estimator.

        Warns
        -----
        sklearn.exceptions.ConvergenceWarning
            When the solver stops before its stopping rule is met.
        """
        X, y = _validate_data(self, X, y, dtype=np.float64, multi_output=True,
                              y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_2d = y.ndim == 2
        return self._fit_program(X, y, one_vs_all=False)

    def predict(self, X):
        """Network outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The shape of the training targets.
        """
        Z = self._decision(X)
        return Z.reshape(-1, 1) if (self._y_2d and Z.ndim == 1) else Z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.sparse = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}
