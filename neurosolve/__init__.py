"""neurosolve: numerical solvers with neural components, behind one interface.

``solve(problem, solver)`` returns a :class:`Result`; each method family adds a
convenience function (``neurosolve.cg``, ``neurosolve.minimize``). Heavy dependencies
(torch, cvxpy, pyamg) are imported only when a feature needs them.
"""

from neurosolve._lazy import lazy_getattr
from neurosolve.core import (
    Context,
    IterView,
    Problem,
    Result,
    SolveError,
    Solver,
    State,
    Status,
    Stop,
    solve,
)

# installs the resolver of solve(..., adjoint=...); imports no torch
from neurosolve import adjoint  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "solve",
    "Result",
    "Status",
    "Stop",
    "State",
    "Context",
    "Problem",
    "Solver",
    "SolveError",
    "IterView",
    "adjoint",
    "implicit_root",
    "implicit_fixed_point",
    "backend_for",
    "cg",
    "minimize",
    "compat",
    "problems",
    "solvers",
    "operators",
    "neural",
    "backends",
    "ConvexReLUClassifier",
    "ConvexReLURegressor",
    "sweep",
]

__getattr__ = lazy_getattr(__name__, {
    "backend_for": "neurosolve.backends",
    "implicit_root": "neurosolve.adjoint",
    "implicit_fixed_point": "neurosolve.adjoint",
    "cg": "neurosolve.convenience",
    "minimize": "neurosolve.minimize_fn",
    "compat": "neurosolve.compat",
    "problems": "neurosolve.problems",
    "solvers": "neurosolve.solvers",
    "operators": "neurosolve.operators",
    "neural": "neurosolve.neural",
    "backends": "neurosolve.backends",
    "ConvexReLUClassifier": "neurosolve.estimators",
    "ConvexReLURegressor": "neurosolve.estimators",
    "sweep": "neurosolve.sweeps",
})
