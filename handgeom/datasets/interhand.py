"""Reader of InterHand2.6M (v1.0; Moon et al., ECCV 2020): single and interacting hands seen by
many calibrated cameras."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from handgeom.datasets.real import (Annotations, DatasetFormatError, RealHandDataset, read_json, require,
                                    stack_arrays, to_array)
from handgeom.hand import convert_joints

__all__ = ["InterHand26M"]

SPLITS = ("train", "val", "test")
HAND_TYPES = ("right", "left", "interacting")
SLOTS_KEPT = {"right": (True, False), "left": (False, True)}  # the hand slots that a one-hand frame keeps


def _two_hands(x: torch.Tensor) -> torch.Tensor:
    """``[..., 42, D]`` in InterHand2.6M's joint order (right hand 0-20, left 21-41; per finger tip
    to root, wrist last) to ``[..., 2, 21, D]`` in handgeom's order."""
    return torch.stack([convert_joints(x[..., :21, :], "interhand", "openpose"),
                        convert_joints(x[..., 21:, :], "interhand", "openpose")], -3)


class InterHand26M(RealHandDataset):
    """InterHand2.6M v1.0 (the 5 or 30 fps release: same format).

    Layout under ``root``::

        annotations/<split>/InterHand2.6M_<split>_data.json      COCO-style images and annotations
        annotations/<split>/InterHand2.6M_<split>_camera.json    per capture: campos, camrot, focal, princpt
        annotations/<split>/InterHand2.6M_<split>_joint_3d.json  per capture and frame_idx: world_coord, joint_valid
        images/<split>/<file_name of data.json>                  e.g. Capture0/<seq>/cam400002/image0123.jpg

    (``_MANO_NeuralAnnot.json`` is not read: the hand parameters come from the IK fit.)

    Conventions: ``world_coord`` is 42 joints in mm in the world frame, right hand 0-20 then left
    21-41, each hand per finger (thumb, index, middle, ring, pinky) tip to root, wrist last
    (converted with ``convert_joints(.., "interhand", "openpose")``). A camera maps world to its
    frame by ``Xc = camrot (Xw - campos)`` (campos in mm), OpenCV axes, and projects with
    ``focal`` and ``princpt``. The IK fit is done once per time step in the world frame (a time
    step is seen by all cameras) and moved to each camera.

    Joint validity: ``joint_3d.json``'s ``joint_valid`` (whether the 3D joint was annotated, per
    time step) is the fit's, and a joint of an image is valid when it is valid there *and* in
    ``data.json``'s per-image ``joint_valid`` (which InterWild reads as truncation: the joint is
    not usable in that view). With ``hand_type_valid``, a ``"right"`` or ``"left"`` frame keeps
    only that hand. A hand whose wrist (root) is invalid is dropped, as in the official loader.

    Args: see :class:`~handgeom.datasets.real.RealHandDataset`; ``split`` is ``"train"``, ``"val"``
    or ``"test"``; ``interacting_only`` keeps only images whose hand type is ``"interacting"``
    with ``hand_type_valid`` (IntagHand's selection).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 256,
                 resolution: str = "coarse", cache_dir: str | os.PathLike | None = None,
                 transform: Callable[[dict], dict] | None = None, fit_device: str | torch.device = "cpu",
                 interacting_only: bool = False):
        if split not in SPLITS:
            raise ValueError(f"InterHand26M: split must be one of {SPLITS}, got {split!r}")
        self.interacting_only = bool(interacting_only)
        super().__init__(root, split, image_size, resolution, cache_dir, transform, fit_device)

    def _cache_name(self) -> str:
        return f"interhand_{self.split}" + ("_interacting" if self.interacting_only else "")

    def _sources(self) -> list[Path]:
        folder = self.root / "annotations" / self.split
        return [folder / f"InterHand2.6M_{self.split}_{kind}.json" for kind in ("data", "camera", "joint_3d")]

    def _parse(self, sources: list[Path]) -> Annotations:
        data_path, camera_path, joints_path = sources
        data = read_json(data_path)
        images, anns = require(data, "images", data_path, kind=list), require(data, "annotations", data_path, kind=list)
        ann_of = {require(a, "image_id", data_path, f"['annotations'][{i}]"): (i, a) for i, a in enumerate(anns)}
        steps: dict[tuple[str, str], int] = {}  # (capture, frame_idx) -> fit entry
        cameras: dict[tuple[str, str], int] = {}  # (capture, camera) -> camera index
        files, fit_index, camera_index, ann_rows, valid, side_mask = [], [], [], [], [], []
        for n, image in enumerate(images):
            where = f"['images'][{n}]"
            image_id = require(image, "id", data_path, where)
            if image_id not in ann_of:
                raise DatasetFormatError(f"{data_path}: field {where}['id']: no annotation has image_id {image_id!r}")
            i, ann = ann_of[image_id]
            hand_type = self._hand_type(ann, data_path, f"['annotations'][{i}]")
            if self.interacting_only and hand_type != "interacting":
                continue
            capture = str(require(image, "capture", data_path, where))
            step = (capture, str(require(image, "frame_idx", data_path, where)))
            camera = (capture, str(require(image, "camera", data_path, where)))
            fit_index.append(steps.setdefault(step, len(steps)))
            camera_index.append(cameras.setdefault(camera, len(cameras)))
            files.append(f"images/{self.split}/{require(image, 'file_name', data_path, where)}")
            ann_rows.append(i)
            valid.append(require(ann, "joint_valid", data_path, f"['annotations'][{i}]"))
            side_mask.append(SLOTS_KEPT.get(hand_type, (True, True)))
        if not files:
            which = " of hand type 'interacting'" if self.interacting_only else ""
            raise DatasetFormatError(f"{data_path}: no images{which}")
        frame_valid = stack_arrays(valid, (42,), data_path, lambda k: f"['annotations'][{ann_rows[k]}]['joint_valid']")
        joints, joints_valid = self._joints(joints_path, list(steps))
        K, R, t = self._cameras(camera_path, list(cameras))
        frame_valid = _two_hands(frame_valid[..., None] > 0)[..., 0] & torch.tensor(side_mask)[..., None]
        return Annotations(joints=joints, joints_valid=joints_valid, K=K, R=R, t=t, images=files,
                           fit_index=torch.tensor(fit_index), camera_index=torch.tensor(camera_index),
                           frame_valid=frame_valid)

    @staticmethod
    def _hand_type(ann: dict, path: Path, where: str) -> str | None:
        """The annotation's hand type when ``hand_type_valid``, else None."""
        if not require(ann, "hand_type_valid", path, where):
            return None
        hand_type = require(ann, "hand_type", path, where)
        if hand_type not in HAND_TYPES:
            raise DatasetFormatError(f"{path}: field {where}['hand_type']: expected one of {HAND_TYPES}, "
                                     f"got {hand_type!r}")
        return hand_type

    @staticmethod
    def _joints(path: Path, steps: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """World joints ``[S, 2, 21, 3]`` (metres, handgeom's order) and validity of the time steps."""
        table = read_json(path)
        entries = [require(require(table, capture, path), frame, path, f"[{capture!r}]") for capture, frame in steps]
        name = [f"[{c!r}][{f!r}]" for c, f in steps]
        world = stack_arrays([require(e, "world_coord", path, w) for e, w in zip(entries, name)], (42, 3), path,
                             lambda k: f"{name[k]}['world_coord']")
        valid = stack_arrays([require(e, "joint_valid", path, w) for e, w in zip(entries, name)], (42,), path,
                             lambda k: f"{name[k]}['joint_valid']")
        return _two_hands(world / 1000), _two_hands(valid[..., None] > 0)[..., 0]

    @staticmethod
    def _cameras(path: Path, cameras: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Intrinsics ``[C, 3, 3]`` and world-to-camera ``R [C, 3, 3]``, ``t [C, 3]`` (metres)."""
        table = read_json(path)
        K, R, t = [], [], []
        for capture, camera in cameras:
            entry = require(table, capture, path)
            rot, campos, focal, princpt = (_camera_field(path, entry, capture, key, camera, shape) for key, shape in
                                           (("camrot", (3, 3)), ("campos", (3,)), ("focal", (2,)), ("princpt", (2,))))
            K.append(torch.tensor([[focal[0], 0.0, princpt[0]], [0.0, focal[1], princpt[1]], [0.0, 0.0, 1.0]],
                                  dtype=torch.float64))
            R.append(rot)
            t.append(-rot @ campos / 1000)
        return torch.stack(K), torch.stack(R), torch.stack(t)


def _camera_field(path: Path, entry: dict, capture: str, key: str, camera: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``camera.json[capture][key][camera]`` as an array of ``shape``."""
    where = f"[{capture!r}][{key!r}]"
    value = require(require(entry, key, path, f"[{capture!r}]"), camera, path, where)
    return to_array(value, shape, path, f"{where}[{camera!r}]")
