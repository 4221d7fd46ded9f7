"""Preconditioners for (P)CG: each an SPD :class:`~neurosolve.operators.LinearOperator`
approximating ``A^{-1}``, usable as ``CG(M=...)``.

* :class:`Jacobi` -- diagonal scaling (numpy and torch, any device);
* :class:`IC0` -- incomplete Cholesky with zero fill (numba);
* :class:`SSOR` -- symmetric successive over-relaxation (numba);
* :class:`AMG` -- a pyamg smoothed-aggregation or Ruge-Stueben V-cycle;
* :class:`GMG` -- geometric multigrid V-cycle for :mod:`neurosolve.problems.poisson` grids;
* :class:`LearnedMG` -- GMG with per-cell smoother weights from a trained network.

Every preconditioner treats empty rows (the solid and air cells of a Poisson grid) as
identity rows and offers :meth:`~Preconditioner.as_scipy` for use with
:func:`scipy.sparse.linalg.cg`.
"""

from neurosolve.solvers.preconditioners.base import Preconditioner
from neurosolve.solvers.preconditioners.jacobi import Jacobi
from neurosolve.solvers.preconditioners.ic0 import IC0
from neurosolve.solvers.preconditioners.ssor import SSOR
from neurosolve.solvers.preconditioners.amg import AMG
from neurosolve.solvers.preconditioners.gmg import GMG
from neurosolve.solvers.preconditioners.learned_mg import LearnedMG

__all__ = ["Preconditioner", "Jacobi", "IC0", "SSOR", "AMG", "GMG", "LearnedMG"]
