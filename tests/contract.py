"""The contract every solver honours, and the case type families register.

Each family lists its cases in ``tests/cases_<family>.py`` as ``CASES``, a list of
:class:`ContractCase`; ``tests/test_contract.py`` runs the same checks on all of them.
"""

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class ContractCase:
    """One (problem, solver, tolerance) case.

    Attributes
    ----------
    id : str
        Test id.
    make_problem : callable
        ``() -> problem`` (fresh each call).
    make_solver : callable
        ``() -> solver``.
    cert_key : str
        Certificate entry that must be ``<= cert_tol`` on success.
    cert_tol : float
    backend : str
        ``solve(..., backend=)``.
    warm_start : bool
        Whether "warm start from result.x (or result.state) is not slower" applies.
    tighten : callable, optional
        ``solver -> solver`` with the tolerance divided by 100 (default: ``rtol / 100``
        for solvers with an ``rtol`` field).
    new_M : callable, optional
        ``(problem, calls) -> M``: a different valid preconditioner whose applications
        append to the list ``calls``; resuming with it must use it. Only for solvers
        with an ``M`` field.
    other_problem : callable, optional
        ``() -> problem`` of the same type but a different instance (default:
        ``make_problem``, which must build a fresh instance).
    """

    id: str
    make_problem: Callable[[], Any]
    make_solver: Callable[[], Any]
    cert_key: str
    cert_tol: float
    backend: str = "auto"
    warm_start: bool = True
    solve_kwargs: dict = field(default_factory=dict)
    tighten: Callable[[Any], Any] | None = None
    new_M: Callable[[Any, list], Any] | None = None
    other_problem: Callable[[], Any] | None = None
