"""Shipped and trained weights: ``load_pretrained(name or path)``, ``available_pretrained()``.

Each model is two files in ``neurosolve/neural/weights/``: ``NAME.pt`` (a plain state dict,
loaded with ``torch.load(..., weights_only=True)``, which cannot execute code) and
``NAME.json``, the manifest: architecture, training grid, data recipe, seed, steps, final
loss, measured iterations and the exact command that regenerates the file. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import torch

from neurosolve.neural.dcdm_net import DCDMNet

__all__ = ["load_pretrained", "available_pretrained", "save_pretrained", "manifest", "WEIGHTS_DIR"]

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"


def available_pretrained(directory: str | pathlib.Path | None = None) -> list[str]:
    """Names of the shipped models (those with both ``NAME.pt`` and ``NAME.json``).

    Examples
    --------
    >>> from neurosolve.neural import available_pretrained
    >>> isinstance(available_pretrained(), list)
    True
    """
    d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json") if (d / f"{p.stem}.pt").exists())


def manifest(name: str, directory: str | pathlib.Path | None = None) -> dict:
    """The JSON manifest of a shipped model."""
    d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
    path = d / f"{name}.json"
    if not path.exists():
        names = ", ".join(available_pretrained(d)) or "none"
        raise ValueError(f"no pretrained model named {name!r}; available: {names}")
    return json.loads(path.read_text())


def load_pretrained(name: str | pathlib.Path, *, device: str | torch.device = "cpu",
                    directory: str | pathlib.Path | None = None,
                    model: torch.nn.Module | None = None) -> torch.nn.Module:
    """Load a shipped or trained network (float32, eval mode), with its manifest attached.

    Parameters
    ----------
    name : str or path
        One of :func:`available_pretrained`; or a path: a ``NAME.pt`` with its
        ``NAME.json`` manifest beside it (what ``neurosolve train dcdm --name`` and
        :func:`save_pretrained` write), a training checkpoint (``checkpoint.pt`` of
        :func:`~neurosolve.neural.train_preconditioner` or ``neurosolve train dcdm --out``),
        or the folder that holds ``checkpoint.pt``.
    device : str or torch.device
    directory : path, optional
        Look names up here instead of the package's ``weights/`` folder.
    model : torch.nn.Module, optional
        Load the weights into this module (your own architecture). Without it the file
        must describe a :class:`~neurosolve.neural.DCDMNet` (a manifest or a checkpoint
        written for one).

    Returns
    -------
    torch.nn.Module
        With ``.manifest`` (the JSON manifest, or the checkpoint's settings and step) and
        ``.pretrained_name``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the available ones), a missing file, or a file
        that needs ``model=``.

    Examples
    --------
    >>> from neurosolve.neural import load_pretrained, available_pretrained
    >>> net = load_pretrained(available_pretrained()[0])
    >>> net.training
    False
    """
    path = _as_path(name, directory)
    if path is None:
        d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
        info = manifest(str(name), d)
        weights = d / f"{name}.pt"
        label = str(name)
    else:
        weights, info, label = _read_path(path)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state.get("model"), dict):  # a training checkpoint
        info = dict(info, **_checkpoint_info(state, weights))
        state = state["model"]
    if model is None:
        arch = info.get("architecture")
        if arch is None:
            raise ValueError(f"{weights} does not say which network it holds (no manifest or "
                             "net_config): pass model= (a module of the architecture it was "
                             "trained with)")
        if info.get("kind") == "learned_mg_smoother":  # LearnedMG's network (nmg2d, nmg3d)
            from neurosolve.neural.mg_smoother import SmootherWeightNet

            model = SmootherWeightNet(**arch)
        else:
            model = DCDMNet(**{k: arch[k] for k in ("dim", "variant", "channels", "levels",
                                                    "blocks_per_level", "input_norm",
                                                    "geometry") if k in arch})
    elif not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state.items()})
    model = model.float().to(device)
    model.eval()
    model.manifest = info
    model.pretrained_name = label
    return model


def _as_path(name, directory) -> pathlib.Path | None:
    """``name`` as a file or folder path, or None for a model name."""
    if isinstance(name, pathlib.PurePath):
        return pathlib.Path(name)
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name or a path, got {type(name).__name__}")
    if name.endswith(".pt") or "/" in name or "\\" in name:
        return pathlib.Path(name)
    if name in available_pretrained(directory):  # a shipped name wins over a local folder
        return None
    return pathlib.Path(name) if pathlib.Path(name).exists() else None


def _read_path(path: pathlib.Path) -> tuple[pathlib.Path, dict, str]:
    if path.is_dir():
        if not (path / "checkpoint.pt").exists():
            raise ValueError(f"{path} is a folder without checkpoint.pt; pass the .pt file")
        path = path / "checkpoint.pt"
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    side = path.with_suffix(".json")
    info = json.loads(side.read_text()) if side.exists() else {}
    return path, info, path.stem


def _checkpoint_info(state: dict, path: pathlib.Path) -> dict:
    info: dict[str, Any] = {"checkpoint": str(path), "step": int(state.get("step", 0))}
    for key in ("config", "run"):
        if key in state:
            info[key] = json.loads(state[key])
    if "net_config" in state:
        info["architecture"] = json.loads(state["net_config"])
    return info


def save_pretrained(model: DCDMNet, name: str, info: dict[str, Any], *,
                    directory: str | pathlib.Path | None = None, half: bool = True) -> pathlib.Path:
    """Write ``NAME.pt`` (state dict, float16 by default to keep the file small) and
    ``NAME.json`` (``info`` plus the architecture).

    With ``half=True`` the network is evaluated with float16-rounded weights afterwards
    (:func:`load_pretrained` upcasts them to float32), so measure iterations on the
    reloaded model.
    """
    d = pathlib.Path(directory) if directory is not None else WEIGHTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().cpu().to(dtype).contiguous() for k, v in model.state_dict().items()}
    torch.save(state, d / f"{name}.pt")
    info = dict(info)
    info["architecture"] = model.config() | {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "stored_dtype": str(dtype).replace("torch.", ""),
    }
    (d / f"{name}.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return d / f"{name}.pt"
