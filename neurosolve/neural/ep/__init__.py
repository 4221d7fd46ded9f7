"""Generalized holomorphic equilibrium propagation with Jacobian homeostasis.

"Sparse-Jacobian EP": layered recurrent networks relax to a fixed point of a vector field
whose state Jacobian is block sparse (only connected layers interact). Gradient
estimators (BP adjoint, N-point Cauchy EP with real or complex nudges, exact EP response)
and the homeostatic (Jacobian-asymmetry) loss are computed block by block and matrix-free
with JVPs/VJPs; the Jacobian is materialized only by small-network diagnostics.

Modules: :mod:`~.activations`, :mod:`~.networks` (dense MLP / loop), :mod:`~.conv`
(convolutional network with softmax pooling, torch), :mod:`~.estimators`,
:mod:`~.homeostasis`, :mod:`~.diagnostics`, :mod:`~.trainer`, :mod:`~.data`.

References
----------
.. [1] A. Laborieux, F. Zenke, "Improving equilibrium propagation without weight symmetry
   through Jacobian homeostasis", ICLR 2024, arXiv:2309.02214.
"""

from neurosolve.neural.ep.activations import (
    Activation, dsilu, get_activation, hard_sigmoid, logistic, sigmoid, tanh,
)
from neurosolve.neural.ep.networks import (
    Connection, DenseNetwork, LayeredNetwork, Layout, lecun_normal, loop_mlp, mlp, one_hot,
    rotate_feedback,
)
from neurosolve.neural.ep.conv import ConvNetwork, conv_net, softmax_pool, softmax_pool_vjp
from neurosolve.neural.ep.estimators import (
    METHODS, FreePhase, GradientEstimate, PhaseReport, assemble_gradient, bp_adjoint,
    cauchy_response, default_phase_solver, estimate_gradient, exact_response, free_phase,
    nudge_points, nudged_phase, relaxation_map,
)
from neurosolve.neural.ep.homeostasis import (
    HomeostasisResult, exact_asymmetry, homeostatic_loss, probe_asymmetry,
)
from neurosolve.neural.ep.diagnostics import (
    asymmetry_ratio, dense_jacobian, jac_sym, layer_cosines, spectral_radius, weight_angle,
)
from neurosolve.neural.ep.trainer import (
    SGD, AdamW, TrainConfig, TrainResult, evaluate, plot_histories, plot_training, train,
)
from neurosolve.neural.ep.data import load_digits_split
from neurosolve.problems.fixed_point import FixedPointProblem
from neurosolve.solvers.fixed_point import FixedPoint

__all__ = [
    "Activation", "sigmoid", "dsilu", "tanh", "hard_sigmoid", "logistic", "get_activation",
    "Layout", "Connection", "LayeredNetwork", "DenseNetwork", "mlp", "loop_mlp",
    "lecun_normal", "rotate_feedback", "one_hot",
    "ConvNetwork", "conv_net", "softmax_pool", "softmax_pool_vjp",
    "METHODS", "PhaseReport", "FreePhase", "GradientEstimate", "default_phase_solver",
    "relaxation_map", "free_phase", "nudged_phase", "exact_response", "bp_adjoint",
    "cauchy_response", "assemble_gradient", "estimate_gradient", "nudge_points",
    "HomeostasisResult", "homeostatic_loss", "exact_asymmetry", "probe_asymmetry",
    "layer_cosines", "dense_jacobian", "jac_sym", "asymmetry_ratio", "weight_angle",
    "spectral_radius",
    "SGD", "AdamW", "TrainConfig", "TrainResult", "train", "evaluate", "plot_histories", "plot_training",
    "load_digits_split",
    "FixedPointProblem", "FixedPoint",
]
