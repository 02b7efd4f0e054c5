"""Reader of HO-3D v2/v3 (Hampali et al., CVPR 2020): a right hand manipulating a YCB object."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from handgeom.datasets.objects import OBJECT_CLASSES, YCB_OBJECTS
from handgeom.datasets.real import (Annotations, DatasetFormatError, RealHandDataset, object_models, one_hand,
                                    read_pickle, require, to_array)
from handgeom.hand import convert_joints
from handgeom.hand.kinematics import axis_angle_to_matrix

__all__ = ["HO3D"]

OPENGL_TO_OPENCV = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)  # flips y and z


def _load_meta(path: Path) -> dict:
    meta = read_pickle(path, "meta pickle")
    if not isinstance(meta, dict):
        raise DatasetFormatError(f"{path}: expected a dict of annotations, got {type(meta).__name__}")
    return meta


class HO3D(RealHandDataset):
    """HO-3D v2 or v3 (same meta format; v3's images are jpg).

    Layout under ``root``::

        <split>/<SEQ>/meta/<id>.pkl   per frame: handJoints3D [21, 3], camMat [3, 3], objRot, objTrans, objName
        <split>/<SEQ>/rgb/<id>.jpg    (or .png)
        <split>.txt                   optional "SEQ/id" lines; without it, every meta file of the split
        models/<objName>/textured_simple.obj   the YCB-Video meshes (objects=True; see models)

    Conventions: 3D values in metres in the OpenGL camera frame (y up, the hand at negative z),
    turned to OpenCV axes by negating y and z; ``handJoints3D`` is in MANO's joint order (wrist;
    index, middle, pinky, ring, thumb, three joints each; then the five tips), converted with
    ``convert_joints(.., "mano", "openpose")``. Right hands only (slot 0).

    A frame whose meta has no annotation (``objRot`` or ``handJoints3D`` missing or None) is
    skipped. The evaluation split's public meta files hold only the root joint: reading them raises
    a :class:`~handgeom.datasets.real.DatasetFormatError` (use a split with full 21-joint annotations).

    Extra sample keys: ``object_pose [3, 4]``, ``[R | t]`` from the object's frame to the camera
    (OpenCV axes, metres), from ``objRot`` (axis-angle) and ``objTrans``; ``object_class``, the
    YCB object ``objName`` names; with ``objects=True`` its mesh, posed (``object_verts``,
    ``object_faces``), from ``models/<objName>/textured_simple.obj``.

    Args: see :class:`~handgeom.datasets.real.RealHandDataset`; ``split`` names the folder
    (``"train"``, or ``"evaluation"`` where full annotations exist); ``objects`` reads the object
    meshes from ``models`` (default ``root/models``: the YCB-Video models, which HO-3D uses).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size: int = 256,
                 resolution: str = "coarse", cache_dir: str | os.PathLike | None = None,
                 transform: Callable[[dict], dict] | None = None, fit_device: str | torch.device = "cpu",
                 objects: bool = False, models: str | os.PathLike | None = None):
        super().__init__(root, split, image_size, resolution, cache_dir, transform, fit_device,
                         object_models(root, objects, models))

    def _cache_name(self) -> str:
        return f"ho3d_{self.split}"

    def _sources(self) -> list[Path]:
        folder = self.root / self.split
        if not folder.is_dir():
            raise DatasetFormatError(f"{folder}: split folder not found")
        listing = self.root / f"{self.split}.txt"
        if not listing.is_file():
            metas = sorted(folder.glob("*/meta/*.pkl"))
            if not metas:
                raise DatasetFormatError(f"{folder}: no <SEQ>/meta/<id>.pkl annotation files")
            return metas
        lines = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        for n, line in enumerate(lines, 1):
            if len(line.split("/")) != 2:
                raise DatasetFormatError(f"{listing}: line {n}: expected 'SEQ/id', got {line!r}")
        return [listing] + [folder / seq / "meta" / f"{frame}.pkl"
                            for seq, frame in (line.split("/") for line in lines)]

    def _parse(self, sources: list[Path]) -> Annotations:
        joints, K, poses, classes, images = [], [], [], [], []
        for path in sources:
            if path.suffix != ".pkl":
                continue
            meta = _load_meta(path)
            hand = meta.get("handJoints3D")
            if hand is not None and np.size(hand) == 3:
                raise DatasetFormatError(f"{path}: field ['handJoints3D']: holds only the root joint (shape [3], as "
                                         f"in the evaluation split's public annotations); HO3D needs [21, 3]")
            if hand is None or meta.get("objRot") is None:
                continue
            hand = to_array(hand, (21, 3), path, "['handJoints3D']")
            joints.append(convert_joints(hand, "mano", "openpose") * OPENGL_TO_OPENCV)
            K.append(to_array(require(meta, "camMat", path), (3, 3), path, "['camMat']"))
            rot = axis_angle_to_matrix(to_array(meta["objRot"], (3,), path, "['objRot']"))
            trans = to_array(require(meta, "objTrans", path), (3,), path, "['objTrans']")
            poses.append(torch.cat([rot, trans[:, None]], 1) * OPENGL_TO_OPENCV[:, None])
            name = str(require(meta, "objName", path))
            if name not in YCB_OBJECTS:
                raise DatasetFormatError(f"{path}: field ['objName']: {name!r} is not a YCB-Video object "
                                         f"({', '.join(YCB_OBJECTS)})")
            classes.append(OBJECT_CLASSES.index(name))
            rgb = path.parent.parent / "rgb" / f"{path.stem}.jpg"
            images.append((rgb if rgb.is_file() else rgb.with_suffix(".png")).relative_to(self.root).as_posix())
        if not joints:
            raise DatasetFormatError(f"{self.root / self.split}: no annotated frame "
                                     f"(every meta file lacks objRot or handJoints3D)")
        both, valid = one_hand(torch.stack(joints))
        return Annotations.in_camera_frame(both, valid, torch.stack(K), images,
                                           extras={"object_pose": torch.stack(poses).float(),
                                                   "object_class": torch.tensor(classes)})
