"""Differentiable solves: implicit adjoints through :func:`neurosolve.solve`.

``solve(problem, solver, adjoint="implicit")`` returns a result whose ``x`` is attached
to the autograd graph of the problem's torch tensors by the implicit function theorem:
``backward`` solves one adjoint system ``(dG/dx)^T lam = -g`` of the problem's optimality
condition ``G(x) = 0`` (with a solver of the forward's family) and never differentiates
the iterations, so memory does not grow with their number. For users' own solvers,
:func:`implicit_root` and :func:`attach` do the same for any root.

==================  ==========================================
``adjoint=``        what flows
==================  ==========================================
``None``            nothing: iterations under ``no_grad``
``"implicit"``      the implicit gradient (:class:`Implicit`)
``"unrolled"``      autograd through every iteration
==================  ==========================================

References
----------
.. [1] M. Blondel, Q. Berthet, M. Cuturi, R. Frostig, S. Hoyer, F. Llinares-Lopez,
   F. Pedregosa, J.-P. Vert, "Efficient and Modular Implicit Differentiation", NeurIPS
   2022, arXiv:2105.15183.
"""

from neurosolve.adjoint.attach import resolve as _resolve
from neurosolve.adjoint.config import Implicit, ImplicitDiffError
from neurosolve.adjoint.root import attach, implicit_fixed_point, implicit_root
from neurosolve.adjoint.rules import linear_vjp
from neurosolve.core import register_adjoint_resolver

register_adjoint_resolver(_resolve)

__all__ = ["Implicit", "ImplicitDiffError", "implicit_root", "implicit_fixed_point", "attach",
           "linear_vjp"]
