"""Array library, device and kernel selection.

Two questions, answered separately and without global state:

1. *Which array library and device?* Read off the inputs: numpy in, numpy out; a
   torch tensor in (CPU or CUDA), a torch tensor out. Mixing libraries raises
   ``TypeError``; moving data between them is the caller's job.
2. *Which kernels?* ``backend="auto" | "numpy" | "numba" | "torch"`` passed to
   :func:`neurosolve.solve`. ``auto`` picks torch for torch inputs and, for numpy
   inputs, numba where the solver has numba kernels, numpy otherwise.

The chosen :class:`Backend` carries ``ops``, a small set of array operations with one
meaning across libraries, so a solver written against ``ctx.xp`` runs everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from neurosolve.backends.ops import NumpyOps, TorchOps, is_torch, ops_for

__all__ = [
    "Backend",
    "array_library",
    "common_library",
    "resolve_backend",
    "backend_for",
    "is_torch",
    "NumpyOps",
    "TorchOps",
    "ops_for",
]

BACKENDS = ("numpy", "numba", "torch")


def array_library(obj: Any) -> str | None:
    """``"torch"`` for tensors, ``"numpy"`` for numpy arrays / scipy matrices, else None."""
    if obj is None:
        return None
    if is_torch(obj):
        return "torch"
    import numpy as np

    if isinstance(obj, np.ndarray) or np.isscalar(obj):
        return "numpy"
    mod = type(obj).__module__ or ""
    if mod.startswith("scipy.sparse"):
        return "numpy"
    lib = getattr(obj, "array_library", None)  # neurosolve operators and problems
    if isinstance(lib, str):
        return lib
    return None


def common_library(*objs: Any, names: Iterable[str] | None = None) -> str:
    """The one array library shared by ``objs`` (default numpy); mixing raises TypeError."""
    names = list(names) if names is not None else [f"argument {i}" for i in range(len(objs))]
    seen: dict[str, str] = {}
    for name, obj in zip(names, objs):
        lib = array_library(obj)
        if lib is not None:
            seen.setdefault(lib, name)
    if len(seen) > 1:
        detail = ", ".join(f"{n} is {lib}" for lib, n in seen.items())
        raise TypeError(
            f"inputs mix array libraries ({detail}); convert them to one library "
            "(e.g. torch.as_tensor(...) or tensor.cpu().numpy()) before solving"
        )
    return next(iter(seen), "numpy")


@dataclass(frozen=True)
class Backend:
    """The kernels chosen for one solve.

    Attributes
    ----------
    name : {"numpy", "numba", "torch"}
        Which kernels run.
    library : {"numpy", "torch"}
        The array library of the data.
    device : str
        ``"cpu"`` or a torch device string such as ``"cuda:0"``.
    ops : NumpyOps or TorchOps
        Array operations with one meaning across libraries.
    """

    name: str
    library: str
    device: str
    ops: Any

    @property
    def use_numba(self) -> bool:
        return self.name == "numba"


def backend_for(requested: str, library: str, device: str = "cpu",
                available: Iterable[str] = BACKENDS) -> Backend:
    """Resolve a requested backend name against the data's library and the solver's kernels.

    Parameters
    ----------
    requested : {"auto", "numpy", "numba", "torch"}
    library : {"numpy", "torch"}
        The array library of the inputs.
    device : str
        The inputs' device.
    available : iterable of str
        Kernels the solver implements.
    """
    available = tuple(available)
    if requested not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be one of 'auto', 'numpy', 'numba', 'torch', got {requested!r}")
    if requested == "auto":
        if library == "torch":
            name = "torch"
        elif "numba" in available:
            name = "numba"
        else:
            name = "numpy"
    else:
        name = requested
    if library == "torch" and name != "torch":
        raise TypeError(
            f"backend={name!r} cannot run on torch tensors (device {device}); use backend='torch' "
            "or pass numpy arrays"
        )
    if library == "numpy" and name == "torch":
        raise TypeError(
            "backend='torch' needs torch tensors as inputs; convert with torch.as_tensor(...) "
            "(neurosolve never moves data between libraries for you)"
        )
    if name not in available and not (name == "numpy" and "numba" in available):
        raise ValueError(
            f"this solver has no {name!r} kernels; available: {', '.join(available)}"
        )
    return Backend(name=name, library=library, device=device, ops=ops_for(library, name))


def resolve_backend(requested: str, solver: Any, problem: Any, x0: Any = None) -> Backend:
    """Backend for ``solver`` on ``problem`` (its ``array_library``/``device``) and ``x0``."""
    plib = getattr(problem, "array_library", None) or "numpy"
    xlib = array_library(x0)
    if xlib is not None and xlib != plib:
        raise TypeError(
            f"x0 is a {xlib} array but the problem's data is {plib}; convert x0 to {plib}"
        )
    device = str(getattr(problem, "device", "cpu")) if plib == "torch" else "cpu"
    if is_torch(x0) and str(x0.device) != device:
        raise ValueError(
            f"x0 is on {x0.device} but the problem's data is on {device}; move one of them"
        )
    return backend_for(requested, plib, device, getattr(solver, "backends", BACKENDS))
