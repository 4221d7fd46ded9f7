"""scipy-compatible return conventions (``(x, info)``, ``OptimizeResult``-like objects)."""

from neurosolve._lazy import lazy_getattr

__all__ = ["cg", "minimize"]

__getattr__ = lazy_getattr(__name__, {
    "cg": "neurosolve.compat.linear",
    "minimize": "neurosolve.compat.optimize",
})
