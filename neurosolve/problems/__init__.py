"""Problem types and galleries. Each problem validates its data and certifies answers."""

from neurosolve._lazy import lazy_getattr

__all__ = [
    "LinearSystem",
    "Nullspace",
    "poisson",
    "ConvexReLU",
    "Minimize",
    "smooth_gallery",
    "Bilevel",
    "bilevel_gallery",
    "sets",
    "FixedPointProblem",
]

__getattr__ = lazy_getattr(__name__, {
    "LinearSystem": "neurosolve.problems.linear",
    "Nullspace": "neurosolve.problems.linear",
    "poisson": "neurosolve.problems.poisson",
    "ConvexReLU": "neurosolve.problems.convex_relu",
    "Minimize": "neurosolve.problems.smooth",
    "smooth_gallery": "neurosolve.problems.smooth_gallery",
    "Bilevel": "neurosolve.problems.bilevel",
    "bilevel_gallery": "neurosolve.problems.bilevel_gallery",
    "sets": "neurosolve.problems.sets",
    "FixedPointProblem": "neurosolve.problems.fixed_point",
})
