"""What every network's constructor and ``Net.pretrained()`` share: its preset by name, and
shipped weights (``handgeom export SYSTEM CKPT --to PATH``: a training record and a state dict,
float16 storage) read into it."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def resolve_preset(owner: str, preset, presets: dict):
    """``presets[preset]`` for a preset name, ``preset`` itself for a config; an unknown name is a
    ``ValueError`` that names ``owner`` and the known presets."""
    if not isinstance(preset, str):
        return preset
    if preset not in presets:
        raise ValueError(f"{owner}: unknown preset {preset!r}; known: {sorted(presets)}")
    return presets[preset]


def load_pretrained(cls: type[nn.Module], path: Path, system: str, device: torch.device | str | None,
                    kind: str | None = None, where: str = "pretrained") -> nn.Module:
    """``cls(preset)`` with the weights at ``path``, the preset their record names, in eval mode on
    ``device``, with the record as ``net.record``. A missing file is a ``FileNotFoundError``, a file
    that holds no exported weights of ``system`` (and, given ``kind``, of the record's model kind, for
    systems that train several networks) a ``ValueError``, both naming the path."""
    where = f"{cls.__name__}.{where}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {path} is missing; train with `handgeom train {system}` and write it with "
                                f"`handgeom export {system} CKPT --to {path}`")
    try:
        shipped = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError):  # not a torch file, or one with code in it
        shipped = None
    if not isinstance(shipped, dict) or {"record", "state_dict"} - set(shipped) or shipped["record"].get("system") != system:
        raise ValueError(f"{where}: {path} holds no exported {system} weights (a dict with 'record' and 'state_dict'); "
                         f"export a checkpoint with `handgeom export {system} CKPT --to PATH`")
    model = shipped["record"].get("model", {})
    if kind is not None and model.get("kind", system) != kind:
        raise ValueError(f"{where}: {path} holds {model.get('kind', system)} weights, not {kind} weights")
    net = cls(model["preset"])
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in shipped["state_dict"].items()})
    net.record = shipped["record"]
    return net.eval().to(device)
