"""Solvers: frozen dataclasses of configuration implementing setup / init / step / check.

:func:`default_solver` is the one table that says which solver a problem type gets when
``neurosolve.solve(problem)`` is called without one; problem modules know no solver.
"""

from importlib import import_module

from neurosolve._lazy import lazy_getattr

__all__ = [
    "CG",
    "preconditioners",
    "DCDM",
    "ADMM",
    "SCP",
    "CvxpyReLU",
    "PatternGeneration",
    "GNSNewton",
    "LVHBA",
    "FixedPoint",
    "default_solver",
]

#: problem class (module, name) -> (solver module, solver class); the first match in
#: the problem's MRO wins
_DEFAULTS = {
    ("neurosolve.problems.linear", "LinearSystem"): ("neurosolve.solvers.cg", "CG"),
    ("neurosolve.problems.smooth", "Minimize"): ("neurosolve.solvers.gns_newton", "GNSNewton"),
    ("neurosolve.problems.fixed_point", "FixedPointProblem"):
        ("neurosolve.solvers.fixed_point", "FixedPoint"),
    ("neurosolve.problems.convex_relu", "ConvexReLU"): ("neurosolve.solvers.admm_relu", "ADMM"),
    ("neurosolve.problems.bilevel", "Bilevel"): ("neurosolve.solvers.lvhba", "LVHBA"),
}


def default_solver(problem):
    """The solver :func:`neurosolve.solve` uses for ``problem`` when none is given.

    Parameters
    ----------
    problem : Problem
        Any neurosolve problem instance.

    Returns
    -------
    Solver
        A default-configured instance: CG for a ``LinearSystem``, GNSNewton for
        ``Minimize``, FixedPoint for ``FixedPointProblem``, ADMM for ``ConvexReLU``
        (PatternGeneration when it was built with ``patterns="generate"``), LVHBA for
        ``Bilevel``.

    Raises
    ------
    TypeError
        For an object that is not a neurosolve problem.

    Examples
    --------
    >>> import numpy as np
    >>> from neurosolve.problems import LinearSystem
    >>> from neurosolve.solvers import default_solver
    >>> type(default_solver(LinearSystem(np.eye(2), np.ones(2)))).__name__
    'CG'
    """
    if getattr(problem, "generate", False) is True:
        # a ConvexReLU built with patterns="generate": its patterns come from the solve
        from neurosolve.solvers.pattern_generation import PatternGeneration

        return PatternGeneration()
    for cls in type(problem).__mro__:
        target = _DEFAULTS.get((cls.__module__, cls.__name__))
        if target is not None:
            module, name = target
            return getattr(import_module(module), name)()
    known = ", ".join(name for _, name in _DEFAULTS)
    raise TypeError(
        f"no default solver for {type(problem).__name__}; pass solver= explicitly (problem "
        f"types with a default: {known})")

__getattr__ = lazy_getattr(__name__, {
    "CG": "neurosolve.solvers.cg",
    "preconditioners": "neurosolve.solvers.preconditioners",
    "DCDM": "neurosolve.solvers.dcdm",
    "ADMM": "neurosolve.solvers.admm_relu",
    "SCP": "neurosolve.solvers.scp_relu",
    "CvxpyReLU": "neurosolve.solvers.cvx_relu",
    "PatternGeneration": "neurosolve.solvers.pattern_generation",
    "GNSNewton": "neurosolve.solvers.gns_newton",
    "LVHBA": "neurosolve.solvers.lvhba",
    "FixedPoint": "neurosolve.solvers.fixed_point",
})
