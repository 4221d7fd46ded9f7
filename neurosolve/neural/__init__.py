"""Neural components: networks, adapters, training loops and shipped weights (torch)."""

from neurosolve._lazy import lazy_getattr

__all__ = [
    "TorchPreconditioner",
    "DCDMNet",
    "train_preconditioner",
    "training_data",
    "TrainingData",
    "LossBatch",
    "dcdm_loss",
    "energy_loss",
    "load_pretrained",
    "save_pretrained",
    "available_pretrained",
    "ep",
]

__getattr__ = lazy_getattr(__name__, {
    "TorchPreconditioner": "neurosolve.neural.adapter",
    "DCDMNet": "neurosolve.neural.dcdm_net",
    "train_preconditioner": "neurosolve.neural.training",
    "training_data": "neurosolve.neural.training",
    "TrainingData": "neurosolve.neural.training",
    "LossBatch": "neurosolve.neural.training",
    "dcdm_loss": "neurosolve.neural.training",
    "energy_loss": "neurosolve.neural.training",
    "load_pretrained": "neurosolve.neural.pretrained",
    "save_pretrained": "neurosolve.neural.pretrained",
    "available_pretrained": "neurosolve.neural.pretrained",
    "ep": "neurosolve.neural.ep",
})
