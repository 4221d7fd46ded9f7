"""Solvers: frozen dataclasses of configuration implementing init / step / check."""

from neurosolve._lazy import lazy_getattr

__all__ = [
    "CG",
    "preconditioners",
    "DCDM",
    "ADMM",
    "SCP",
    "CvxpyReLU",
    "GNSNewton",
    "LVHBA",
    "FixedPoint",
]

__getattr__ = lazy_getattr(__name__, {
    "CG": "neurosolve.solvers.cg",
    "preconditioners": "neurosolve.solvers.preconditioners",
    "DCDM": "neurosolve.solvers.dcdm",
    "ADMM": "neurosolve.solvers.admm_relu",
    "SCP": "neurosolve.solvers.scp_relu",
    "CvxpyReLU": "neurosolve.solvers.cvx_relu",
    "GNSNewton": "neurosolve.solvers.gns_newton",
    "LVHBA": "neurosolve.solvers.lvhba",
    "FixedPoint": "neurosolve.solvers.fixed_point",
})
