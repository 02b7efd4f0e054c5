"""Readers of the 2D hand pose datasets SIA-GCN evaluates on: the CMU Panoptic hand datasets (with
MPII+NZSL, CMU's per-image JSON) and the Large-scale Multiview 3D Hand Pose Dataset (MHP).

Their samples are 2D: the keys ``image``, ``joints_2d``, ``joints_valid`` and ``hand_valid`` of
:mod:`handgeom.datasets.sample` (one hand, in the right or the left slot), on a square crop
around the annotated joints, which fill ``CROP_FILL`` of its side as in the synthetic data. The
splits are the paper's: 70/15/15 at random (a fixed permutation of the dataset's samples).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from handgeom.datasets.real import DatasetFormatError, crop_image, load_image, read_json, read_pickle, require, to_array
from handgeom.datasets.sample import CROP_FILL
from handgeom.hand import convert_joints

__all__ = ["PanopticHands", "MHPHands", "SPLITS"]

SPLITS = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
SPLIT_SEED = 0


class Hand2DDataset(Dataset):
    """Base of the 2D readers: ``entries`` of ``(image path, joints [21, 2] in its pixels, valid
    [21], slot)``, split and cropped (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, split: str, image_size: int = 256):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetFormatError(f"{self.root}: dataset root not found (not a directory)")
        if split not in SPLITS:
            raise ValueError(f"{type(self).__name__}: split must be one of {sorted(SPLITS)}, got {split!r}")
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"{type(self).__name__}: image_size must be a positive integer, got {image_size!r}")
        self.split, self.image_size = split, int(image_size)
        entries = [e for e in self._entries() if int(e[2].sum()) >= 2]  # a crop needs two joints
        if not entries:
            raise DatasetFormatError(f"{self.root}: no annotated hand found")
        order = torch.randperm(len(entries), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        lo, hi = SPLITS[split]
        self.entries = [entries[i] for i in order[round(lo * len(entries)):round(hi * len(entries))]]

    def _entries(self) -> list[tuple[Path, torch.Tensor, torch.Tensor, int]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, joints, valid, slot = self.entries[index]
        lo, hi = joints[valid].amin(0), joints[valid].amax(0)
        centre, side = (lo + hi) / 2, max(float((hi - lo).max()) / CROP_FILL, 8.0)
        left, top = float(centre[0]) - side / 2, float(centre[1]) - side / 2
        image = crop_image(load_image(path), (left, top, left + side, top + side), self.image_size)
        joints_2d = torch.zeros(2, 21, 2)
        joints_valid = torch.zeros(2, 21, dtype=torch.bool)
        joints_2d[slot] = ((joints - torch.tensor([left, top], dtype=joints.dtype)) * (self.image_size / side)).float()
        joints_valid[slot] = valid
        return {"image": image, "joints_2d": joints_2d, "joints_valid": joints_valid,
                "hand_valid": torch.arange(2) == slot}


def _points_with_flags(value, path: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CMU's ``[21, 3]`` of (x, y, flag) as joints ``[21, 2]`` and valid ``[21]`` (flag 1, finite)."""
    array = to_array(value, (21, 3), path, name)
    valid = (array[:, 2] == 1) & torch.isfinite(array[:, :2]).all(1)
    return array[:, :2], valid


class PanopticHands(Hand2DDataset):
    """The CMU Panoptic hand datasets (Simon et al., CVPR 2017): the manually labelled MPII+NZSL
    hands and the multiview-bootstrapped Panoptic Studio hands, whichever of them ``root`` holds.

    Layout under ``root``::

        hand_labels/manual_train/<name>.jpg, <name>.json      per image: hand_pts [21, 3] (x, y, flag), is_left
        hand_labels/manual_test/...                            (the same)
        hand143_panopticdb/hands_v143_14817.json               {"root": [{img_paths, joint_self [21, 3]}, ...]}
        hand143_panopticdb/imgs/%08d.jpg

    Conventions: pixels of the image; flag 1 marks an annotated point; the points are in handgeom's
    (OpenPose) order; left hands (``is_left``) keep it and fill the left slot; the Panoptic Studio
    entries are right hands (their side is not recorded). ``manual_train`` and ``manual_test`` are
    pooled before the paper's random split.
    """

    LABELS = ("hand_labels/manual_train", "hand_labels/manual_test")
    PANOPTIC = "hand143_panopticdb/hands_v143_14817.json"

    def _entries(self):
        entries = []
        for folder in (self.root / f for f in self.LABELS):
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                record = read_json(path)
                joints, valid = _points_with_flags(require(record, "hand_pts", path), path, "['hand_pts']")
                slot = 1 if bool(require(record, "is_left", path)) else 0
                entries.append((path.with_suffix(".jpg"), joints, valid, slot))
        panoptic = self.root / self.PANOPTIC
        if panoptic.is_file():
            for i, record in enumerate(require(read_json(panoptic), "root", panoptic, kind=list)):
                where = f"['root'][{i}]"
                joints, valid = _points_with_flags(require(record, "joint_self", panoptic, where), panoptic,
                                                   f"{where}['joint_self']")
                image = require(record, "img_paths", panoptic, where, kind=str)
                entries.append((panoptic.parent / image, joints, valid, 0))
        if not entries:
            raise DatasetFormatError(f"{self.root}: neither {' nor '.join(self.LABELS)} holds a JSON file, and "
                                     f"{self.PANOPTIC} is missing")
        return entries


# MHP's fixed webcam intrinsics and distortion (k1, k2, p1, p2, k3), from its utility script
MHP_K = ((614.878, 0.0, 313.219), (0.0, 615.479, 231.288), (0.0, 0.0, 1.0))
MHP_DISTORTION = (0.092701, -0.175877, -0.0035687, -0.00302299, 0.0)
MHP_CAMERAS = 4


def _rodrigues(rvec: torch.Tensor) -> torch.Tensor:
    """OpenCV's Rodrigues vector ``[3]`` as a rotation matrix."""
    angle = float(rvec.norm())
    if angle < 1e-12:
        return torch.eye(3, dtype=rvec.dtype)
    k = rvec / angle
    cross = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=rvec.dtype)
    return torch.eye(3, dtype=rvec.dtype) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def project_distorted(points: torch.Tensor, rvec: torch.Tensor, tvec: torch.Tensor,
                      K: tuple = MHP_K, distortion: tuple = MHP_DISTORTION) -> torch.Tensor:
    """``cv2.projectPoints``: world ``points [N, 3]`` to pixels ``[N, 2]`` through ``x_c = R x + t``,
    the radial-tangential distortion ``(k1, k2, p1, p2, k3)`` and the intrinsics ``K``."""
    camera = points @ _rodrigues(rvec).T + tvec
    x, y = camera[:, 0] / camera[:, 2], camera[:, 1] / camera[:, 2]
    k1, k2, p1, p2, k3 = distortion
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([K[0][0] * xd + K[0][2], K[1][1] * yd + K[1][2]], 1)


class MHPHands(Hand2DDataset):
    """The Large-scale Multiview 3D Hand Pose Dataset (Gomez-Donoso et al. 2017): 21 captures of a
    right hand seen by four webcams, annotated in 3D; each (frame, webcam) is one sample.

    Layout under ``root``::

        annotated_frames/data_<i>/<f>_webcam_<j>.jpg     j = 1..4, 640 x 480
        annotated_frames/data_<i>/<f>_joints.txt         22 lines "NAME x y z": 21 joints, then the palm normal
        calibrations/data_<i>/webcam_<j>/rvec.pkl, tvec.pkl   OpenCV's Rodrigues rvec and tvec, pickled

    Conventions: the joints' 2D positions are their projections with the webcams' shared
    intrinsics and distortion (``cv2.projectPoints``). MHP's order (index, middle, pinky, ring,
    thumb; each ``KNU1_A`` PIP, ``KNU1_B`` MCP, ``KNU2_A`` DIP, ``KNU3_A`` tip; the thumb's base
    ``KNU1_B``; then ``PALM_POSITION``) maps to handgeom's with ``convert_joints(..., "mhp", "openpose")``. MHP
    has no wrist joint: handgeom's wrist is marked invalid (the palm centre is not the wrist).
    Points that project outside the 640 x 480 image are invalid too.
    """

    SIZE = (640, 480)

    def _entries(self):
        frames = self.root / "annotated_frames"
        if not frames.is_dir():
            raise DatasetFormatError(f"{self.root}: annotated_frames/ not found")
        entries = []
        for capture in sorted(frames.glob("data_*")):
            cameras = [self._camera(capture.name, j) for j in range(1, MHP_CAMERAS + 1)]
            for joints_file in sorted(capture.glob("*_joints.txt")):
                world = self._joints(joints_file)
                frame = joints_file.name.removesuffix("_joints.txt")
                for j, (rvec, tvec) in enumerate(cameras, start=1):
                    native = project_distorted(world, rvec, tvec)
                    inside = ((native >= 0) & (native < torch.tensor(self.SIZE, dtype=native.dtype))).all(1)
                    joints = convert_joints(native, "mhp", "openpose")
                    valid = convert_joints(inside[:, None], "mhp", "openpose")[:, 0]
                    valid[0] = False  # the palm position, not the wrist
                    entries.append((capture / f"{frame}_webcam_{j}.jpg", joints, valid, 0))
        return entries

    def _camera(self, capture: str, webcam: int) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.root / "calibrations" / capture / f"webcam_{webcam}"
        return tuple(to_array(read_pickle(folder / f"{name}.pkl", f"{name} pickle"), (3,), folder / f"{name}.pkl", name)
                     for name in ("rvec", "tvec"))

    @staticmethod
    def _joints(path: Path) -> torch.Tensor:
        """The 21 joints ``[21, 3]`` of a ``_joints.txt`` file, in MHP's order."""
        try:
            lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise DatasetFormatError(f"{path}: cannot be read ({error})") from None
        if len(lines) < 21 or any(len(line) != 4 for line in lines[:21]):
            raise DatasetFormatError(f"{path}: expected 21 lines 'NAME x y z' (then the palm normal), got "
                                     f"{len(lines)} lines")
        try:
            return torch.tensor(np.array([[float(v) for v in line[1:]] for line in lines[:21]]), dtype=torch.float64)
        except ValueError:
            raise DatasetFormatError(f"{path}: joint coordinates must be numbers") from None
