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
    """

    id: str
    make_problem: Callable[[], Any]
    make_solver: Callable[[], Any]
    cert_key: str
    cert_tol: float
    backend: str = "auto"
    warm_start: bool = True
    solve_kwargs: dict = field(default_factory=dict)
