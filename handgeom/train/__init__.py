"""Training and evaluation: one loop (:mod:`handgeom.train.loop`) and one file per system, with its
presets, data, loss and evaluation. ``handgeom train SYSTEM`` / ``handgeom eval SYSTEM CKPT``."""

from __future__ import annotations

import importlib
from types import ModuleType

from handgeom.train.loop import TrainConfig, TrainError, evaluate_checkpoint, export_weights, load_checkpoint, train

SYSTEMS = ("dir", "handobject", "siapose", "uplift")

__all__ = ["SYSTEMS", "system", "train", "evaluate_checkpoint", "export_weights", "load_checkpoint", "TrainConfig",
           "TrainError"]


def system(name: str) -> ModuleType:
    """The system module ``handgeom.train.<name>``."""
    if name not in SYSTEMS:
        raise TrainError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    return importlib.import_module(f"handgeom.train.{name}")
