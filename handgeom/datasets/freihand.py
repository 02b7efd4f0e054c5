"""Reader of FreiHAND (Zimmermann et al., ICCV 2019): single right hands, one camera per sample."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from handgeom.datasets.real import (Annotations, DatasetFormatError, RealHandDataset, one_hand, read_json,
                                    stack_arrays)

__all__ = ["FreiHAND"]

VERSIONS = ("gs", "hom", "sample", "auto")  # the training images' four versions, in id order
PREFIX = {"train": "training", "training": "training", "evaluation": "evaluation"}


class FreiHAND(RealHandDataset):
    """FreiHAND, the training set or the evaluation set with its released ground truth.

    Layout under ``root``::

        training_xyz.json, training_K.json      lists of N [21, 3] joints and [3, 3] intrinsics
        training/rgb/%08d.jpg                   N images per version
        evaluation_xyz.json, evaluation_K.json  (split "evaluation")
        evaluation/rgb/%08d.jpg

    Conventions: joints in metres in the camera frame (OpenCV axes), already in handgeom's
    (OpenPose) order; right hands only (slot 0), all joints valid. The training images come in four
    versions (``VERSIONS``: green screen, and three backgrounds/colour variants); image
    ``idx + N * version`` shows annotation ``idx`` (``N`` = 32560 in the release). The evaluation
    set has one version (``"gs"``).

    Args: see :class:`~handgeom.datasets.real.RealHandDataset`; ``split`` is ``"train"`` (or
    ``"training"``) or ``"evaluation"``; ``versions`` selects image versions by name (default:
    all those of the split), the dataset listing them version after version.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 256,
                 resolution: str = "coarse", cache_dir: str | os.PathLike | None = None,
                 transform: Callable[[dict], dict] | None = None, fit_device: str | torch.device = "cpu",
                 versions: Sequence[str] | None = None):
        if split not in PREFIX:
            raise ValueError(f"FreiHAND: split must be one of {tuple(PREFIX)}, got {split!r}")
        self.prefix = PREFIX[split]
        available = VERSIONS if self.prefix == "training" else VERSIONS[:1]
        self.versions = tuple(versions) if versions is not None else available
        if not self.versions or not set(self.versions) <= set(available):
            raise ValueError(f"FreiHAND: versions of split {split!r} must be among {available}, got {self.versions}")
        super().__init__(root, split, image_size, resolution, cache_dir, transform, fit_device)

    def _cache_name(self) -> str:
        return f"freihand_{self.prefix}_{'-'.join(self.versions)}"

    def _sources(self) -> list[Path]:
        return [self.root / f"{self.prefix}_xyz.json", self.root / f"{self.prefix}_K.json"]

    def _parse(self, sources: list[Path]) -> Annotations:
        tables = []
        for path, shape in zip(sources, ((21, 3), (3, 3))):
            table = read_json(path)
            if not isinstance(table, list) or not table:
                raise DatasetFormatError(f"{path}: expected a non-empty list of {list(shape)} arrays, "
                                         f"got {type(table).__name__}" + (" (empty)" if table == [] else ""))
            tables.append(stack_arrays(table, shape, path, lambda i: f"[{i}]"))
        xyz, K = tables
        if len(K) != len(xyz):
            raise DatasetFormatError(f"{sources[1]}: {len(K)} entries, but {sources[0].name} has {len(xyz)}")
        n = len(xyz)
        joints, valid = one_hand(xyz)
        offsets = [n * VERSIONS.index(v) for v in self.versions]
        index = torch.arange(n).repeat(len(offsets))
        images = [f"{self.prefix}/rgb/{offset + i:08d}.jpg" for offset in offsets for i in range(n)]
        return Annotations.in_camera_frame(joints, valid, K, images, fit_index=index, camera_index=index)
