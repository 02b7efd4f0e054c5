"""Reader of DexYCB (Chao et al., CVPR 2021): one hand grasping YCB objects, eight calibrated
RealSense cameras."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from handgeom.datasets.objects import OBJECT_CLASSES, YCB_OBJECTS
from handgeom.datasets.real import (Annotations, DatasetFormatError, RealHandDataset, object_models, one_hand,
                                    read_structured, require, to_array)

__all__ = ["DexYCB"]

# The benchmark's setups and splits (dex-ycb-toolkit's dex_ycb.py): the subjects and cameras, by
# index in sorted order, and which of each subject's sequences (by index in sorted order) they use.
# s0: seen subjects, views and objects; s1: unseen subjects; s2: unseen views; s3: unseen objects.
_ALL_SUBJECTS, _ALL_SERIALS = tuple(range(10)), tuple(range(8))
SPLITS: dict[tuple[str, str], tuple[tuple[int, ...], tuple[int, ...], Callable[[int], bool]]] = {
    ("s0", "train"): (_ALL_SUBJECTS, _ALL_SERIALS, lambda q: q % 5 != 4),
    ("s0", "val"): ((0, 1), _ALL_SERIALS, lambda q: q % 5 == 4),
    ("s0", "test"): (tuple(range(2, 10)), _ALL_SERIALS, lambda q: q % 5 == 4),
    ("s1", "train"): ((0, 1, 2, 3, 4, 5, 9), _ALL_SERIALS, lambda q: True),
    ("s1", "val"): ((6,), _ALL_SERIALS, lambda q: True),
    ("s1", "test"): ((7, 8), _ALL_SERIALS, lambda q: True),
    ("s2", "train"): (_ALL_SUBJECTS, tuple(range(6)), lambda q: True),
    ("s2", "val"): (_ALL_SUBJECTS, (6,), lambda q: True),
    ("s2", "test"): (_ALL_SUBJECTS, (7,), lambda q: True),
    ("s3", "train"): (_ALL_SUBJECTS, _ALL_SERIALS, lambda q: q // 5 not in (3, 7, 11, 15, 19)),
    ("s3", "val"): (_ALL_SUBJECTS, _ALL_SERIALS, lambda q: q // 5 in (3, 19)),
    ("s3", "test"): (_ALL_SUBJECTS, _ALL_SERIALS, lambda q: q // 5 in (7, 11, 15)),
}
SUBJECT_DIR = re.compile(r"\d{8}-")  # subject folders start with their capture date, e.g. 20200709-subject-01
SLOT = {"right": 0, "left": 1}
INTRINSICS_SUFFIX = "_640x480.yml"


def _read_yaml(path: Path) -> Any:
    return read_structured(path, yaml.safe_load, yaml.YAMLError, "YAML")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


class DexYCB(RealHandDataset):
    """DexYCB, one of its benchmark setups and splits (``SPLITS``).

    Layout under ``root`` (the toolkit's ``$DEX_YCB_DIR``)::

        <subject>/<sequence>/meta.yml                   mano_sides, ycb_ids, ycb_grasp_ind, ...
        <subject>/<sequence>/<serial>/labels_%06d.npz   joint_3d [1, 21, 3], pose_y [O, 3, 4], ...
        <subject>/<sequence>/<serial>/color_%06d.jpg
        calibration/intrinsics/<serial>_640x480.yml     color: {fx, fy, ppx, ppy}
        models/<name>/textured_simple.obj               the YCB meshes (objects=True)

    Subjects, sequences and serials are indexed in sorted order, as the toolkit's fixed lists.

    Conventions: ``joint_3d`` in metres in the camera frame (OpenCV axes), handgeom's (OpenPose)
    joint order; one hand per sequence, in slot 0 or 1 by ``mano_sides[0]``. Frames whose
    ``joint_3d`` is all -1 (no hand) are skipped, as the toolkit's evaluation does.

    Extra sample keys: ``object_pose [3, 4]``, ``[R | t]`` from the grasped object's frame
    (``pose_y[ycb_grasp_ind]``) to the camera; ``object_class``, the grasped object
    (``ycb_ids[ycb_grasp_ind]``, 1-based in :data:`~handgeom.datasets.objects.YCB_OBJECTS`); with
    ``objects=True`` its mesh, posed (``object_verts``, ``object_faces``), from
    ``models/<name>/textured_simple.obj``.

    Needs PyYAML. Args: see :class:`~handgeom.datasets.real.RealHandDataset`; ``split`` is
    ``"train"``, ``"val"`` or ``"test"`` and ``setup`` one of ``"s0"`` to ``"s3"``; ``objects``
    reads the object meshes from ``models`` (default ``root/models``, as DexYCB ships them).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 256,
                 resolution: str = "coarse", cache_dir: str | os.PathLike | None = None,
                 transform: Callable[[dict], dict] | None = None, fit_device: str | torch.device = "cpu",
                 setup: str = "s0", objects: bool = False, models: str | os.PathLike | None = None):
        if (setup, split) not in SPLITS:
            raise ValueError(f"DexYCB: (setup, split) must be one of {sorted(SPLITS)}, got {(setup, split)}")
        self.setup = setup
        super().__init__(root, split, image_size, resolution, cache_dir, transform, fit_device,
                         object_models(root, objects, models))

    def _cache_name(self) -> str:
        return f"dexycb_{self.setup}_{self.split}"

    def _sources(self) -> list[Path]:
        subjects = [p for p in _subdirs(self.root) if SUBJECT_DIR.match(p.name)]
        if not subjects:
            raise DatasetFormatError(f"{self.root}: no subject folders (named like 20200709-subject-01)")
        subject_ind, serial_ind, use_sequence = SPLITS[(self.setup, self.split)]
        metas, intrinsics, labels = [], {}, []
        for subject in (subjects[i] for i in subject_ind if i < len(subjects)):
            for q, sequence in enumerate(_subdirs(subject)):
                if not use_sequence(q):
                    continue
                metas.append(sequence / "meta.yml")
                serials = _subdirs(sequence)
                for serial in (serials[c] for c in serial_ind if c < len(serials)):
                    intrinsics[serial.name] = self.root / "calibration" / "intrinsics" / (serial.name + INTRINSICS_SUFFIX)
                    labels += sorted(serial.glob("labels_*.npz"))
        if not labels:
            raise DatasetFormatError(f"{self.root}: no <subject>/<sequence>/<serial>/labels_*.npz files in "
                                     f"setup {self.setup!r}, split {self.split!r}")
        return metas + list(intrinsics.values()) + labels

    def _parse(self, sources: list[Path]) -> Annotations:
        metas = {p.parent: self._meta(p) for p in sources if p.name == "meta.yml"}
        calibration = [p for p in sources if p.parent.name == "intrinsics"]
        serials = {p.name.removesuffix(INTRINSICS_SUFFIX): k for k, p in enumerate(calibration)}
        K = torch.stack([self._intrinsics(p) for p in calibration])
        joints, slots, cameras, poses, classes, images = [], [], [], [], [], []
        for path in (p for p in sources if p.suffix == ".npz"):
            side, grasp, cls = metas[path.parent.parent]
            label = self._labels(path)
            hand = to_array(require(label, "joint_3d", path), (21, 3), path, "['joint_3d']")
            if (hand == -1).all():
                continue
            pose_y = require(label, "pose_y", path)
            if np.ndim(pose_y) != 3 or not 0 <= grasp < len(pose_y):
                raise DatasetFormatError(f"{path}: field ['pose_y']: expected [O, 3, 4] with O > ycb_grasp_ind = "
                                         f"{grasp}, got shape {list(np.shape(pose_y))}")
            poses.append(to_array(pose_y[grasp], (3, 4), path, f"['pose_y'][{grasp}]"))
            joints.append(hand)
            classes.append(cls)
            slots.append(SLOT[side])
            cameras.append(serials[path.parent.name])
            images.append(path.with_name(path.name.replace("labels_", "color_")).with_suffix(".jpg")
                          .relative_to(self.root).as_posix())
        if not joints:
            raise DatasetFormatError(f"{self.root}: no frame with an annotated hand (every joint_3d is -1) in "
                                     f"setup {self.setup!r}, split {self.split!r}")
        both, valid = one_hand(torch.stack(joints), torch.tensor(slots))
        return Annotations.in_camera_frame(both, valid, K, images, camera_index=torch.tensor(cameras),
                                           extras={"object_pose": torch.stack(poses).float(),
                                                   "object_class": torch.tensor(classes)})

    @staticmethod
    def _meta(path: Path) -> tuple[str, int, int]:
        """The sequence's hand side, grasped object index and its class in ``OBJECT_CLASSES``."""
        meta = _read_yaml(path)
        sides = require(meta, "mano_sides", path, kind=list)
        if not sides or sides[0] not in SLOT:
            raise DatasetFormatError(f"{path}: field ['mano_sides']: expected ['right'] or ['left'], got {sides!r}")
        grasp = require(meta, "ycb_grasp_ind", path)
        if not isinstance(grasp, int):
            raise DatasetFormatError(f"{path}: field ['ycb_grasp_ind']: expected an integer, got {grasp!r}")
        ids = require(meta, "ycb_ids", path, kind=list)
        if not 0 <= grasp < len(ids) or type(ids[grasp]) is not int or not 1 <= ids[grasp] <= len(YCB_OBJECTS):
            raise DatasetFormatError(f"{path}: field ['ycb_ids']: expected ids 1 to {len(YCB_OBJECTS)} with one at "
                                     f"ycb_grasp_ind = {grasp}, got {ids!r}")
        return sides[0], grasp, OBJECT_CLASSES.index(YCB_OBJECTS[ids[grasp] - 1])

    @staticmethod
    def _intrinsics(path: Path) -> torch.Tensor:
        color = require(_read_yaml(path), "color", path)
        fx, fy, cx, cy = (float(to_array(require(color, key, path, "['color']"), (), path, f"['color'][{key!r}]"))
                          for key in ("fx", "fy", "ppx", "ppy"))
        return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)

    @staticmethod
    def _labels(path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path) as npz:
                return {key: npz[key] for key in npz.files if key in ("joint_3d", "pose_y")}
        except FileNotFoundError:
            raise DatasetFormatError(f"{path}: annotation file not found") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DatasetFormatError(f"{path}: not a readable .npz file ({e})") from None
