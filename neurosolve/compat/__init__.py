"""Drop-ins for scipy: :func:`cg` (``scipy.sparse.linalg.cg``: ``(x, info)``) and
:func:`minimize` (``scipy.optimize.minimize``: an ``OptimizeResult``; methods that are
not ours are delegated to scipy unchanged)."""

from neurosolve._lazy import lazy_getattr

__all__ = ["cg", "minimize"]

__getattr__ = lazy_getattr(__name__, {
    "cg": "neurosolve.compat.linear",
    "minimize": "neurosolve.compat.optimize",
})
