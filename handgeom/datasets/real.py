"""The shared base of the readers of public hand datasets (InterHand2.6M, FreiHAND, HO-3D, DexYCB):
the frame list, image loading and the square crop around the hands, the IK fit and its cache, and
the checks that turn a missing or malformed file into a :class:`DatasetFormatError` naming the file
and the field.

A reader parses its annotation files into :class:`Annotations`: the annotated 3D joints (metres,
handgeom's joint order, right hand first) of each *fit entry* in a *fit frame* (the camera frame,
or InterHand2.6M's world frame, where one time step is seen by many cameras), and per image the
fit entry and the camera (intrinsics, and the rigid motion from the fit frame to the camera).

Each reader fits the hand model to the annotated 3D joints by IK once (:func:`fit_hands`, batched)
and caches the parsed annotations with the fitted parameters in
``<cache_dir or root>/handgeom_ik_<reader>_<split>[_<options>].pt``, so that a later construction
only lists and stats the annotation files. The cache is keyed by those files' paths, sizes and
modification times (as ``make`` judges files), the reader, its split and options and
``CACHE_VERSION``: a changed annotation file invalidates it. ``dataset.fit_error_mm`` is the fit's
mean distance between fitted and annotated joints, in mm, over all valid joints of the fitted
hands: far below a millimetre for joints made by the hand model, larger for real hands, whose
skeleton the model only approximates.

Samples are the dicts of :mod:`handgeom.datasets.sample`, with, for real data:

- ``joints_3d`` the *annotated* joints in the camera frame (OpenCV axes, metres) and ``joints_2d``
  their projection with the crop's ``K``; both 0 where ``joints_valid`` is False;
- ``verts``, ``mask``, ``depth``, ``dense`` and the hand parameters from the IK fit (the labels are
  ray cast from the fitted meshes, as DIR and IntagHand render MANO);
- the crop: the square around the projection of the fitted hands' vertices that they fill
  ``CROP_FILL`` of (:func:`~handgeom.datasets.sample.crop_camera`), black outside the image;
- for the hand-object readers (HO-3D, DexYCB) ``object_pose`` and ``object_class`` (the YCB object,
  an index in :data:`~handgeom.datasets.objects.OBJECT_CLASSES`), and with ``objects=True`` the
  object's mesh (:func:`read_object_models`) posed as ``object_verts`` and ``object_faces``, padded
  to the largest of the split's objects: it joins the crop (hands and object fill it, as in the
  synthetic scenes), the ray-cast labels (``mask`` 3) and occludes the hands.

A hand slot is filled when the hand's wrist and at least ``MIN_HAND_JOINTS`` of its joints are
valid (as the official InterHand2.6M loader, which drops a hand whose root is invalid); frames
without such a hand are skipped. Invalid joints of a filled hand are imputed during the fit
(:func:`fit_hands`). Non-finite annotated joints count as invalid.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import os
import pickle
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from handgeom.datasets.objects import OBJECT_CLASSES, pad_mesh
from handgeom.datasets.sample import (HAND_LABELS, OBJECT_LABEL, PARAM_KEYS, SIDES, crop_box, crop_camera, hand_entries,
                                      hand_model, hands_to_camera, project, render_labels)
from handgeom.hand import DEFAULT_BONE_LENGTHS, HandModel, HandParams

__all__ = ["DatasetFormatError", "Annotations", "RealHandDataset", "fit_hands", "one_hand", "read_json", "read_structured",
           "require", "to_array", "stack_arrays", "load_image", "crop_image", "object_models", "read_object_models",
           "MIN_HAND_JOINTS"]

MIN_HAND_JOINTS = 11  # valid joints (the wrist among them) that a hand needs to be fitted and used
IMPUTE_ROUNDS = 3  # refits of a partially annotated hand, each with its invalid joints set to the last fit's
FIT_CHUNK = 1024  # hands per batched IK call
CACHE_VERSION = 2  # bump when the parsing or the fit changes what a cache file holds

F64 = torch.float64


class DatasetFormatError(ValueError):
    """A dataset file is missing or does not have the documented format; the message names the
    file and the field."""


# ----------------------------------------------------------------------------------------------
# Checked access to parsed files


def read_structured(path: Path, load: Callable[[Any], Any], errors: type[Exception] | tuple, kind: str) -> Any:
    """``load(file)`` of a text annotation file, or a :class:`DatasetFormatError` for a missing,
    unreadable or malformed one (``errors``: the parser's exceptions; ``kind`` names the format)."""
    try:
        with open(path, encoding="utf-8") as f:
            return load(f)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: annotation file not found") from None
    except errors as e:
        raise DatasetFormatError(f"{path}: not valid {kind} ({str(e).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot be read ({e})") from None


class _ArrayUnpickler(pickle.Unpickler):
    """Loads only plain Python values and numpy arrays and scalars: a pickle may otherwise run any
    code while it loads."""

    ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")} | {
        (module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")} | {
        ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 store an array's bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")
        return super().find_class(module, name)


def read_pickle(path: Path, kind: str = "pickle") -> Any:
    """A pickle of plain values and numpy arrays (nothing else is loaded: a pickle may run code),
    Python 2's included (latin1), or a :class:`DatasetFormatError` naming the file."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: annotation file not found") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise DatasetFormatError(f"{path}: not a readable {kind} ({e})") from None


def read_json(path: Path) -> Any:
    """The parsed JSON file, or a :class:`DatasetFormatError` for a missing or malformed one."""
    return read_structured(path, json.load, json.JSONDecodeError, "JSON")


def require(obj: Any, key: Any, path: Path, where: str = "", kind: type | None = None) -> Any:
    """``obj[key]``, where ``obj`` is the field ``where`` (a JSON-path-like string such as
    ``"['images'][3]"``, empty for the top level) of file ``path``; with ``kind``, checked to be
    an instance of it."""
    if not isinstance(obj, Mapping):
        raise DatasetFormatError(f"{path}: field {where or '(top level)'}: expected a mapping with key {key!r}, "
                                 f"got {type(obj).__name__}")
    if key not in obj:
        raise DatasetFormatError(f"{path}: missing field {where}[{key!r}]")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise DatasetFormatError(f"{path}: field {where}[{key!r}]: expected {kind.__name__}, "
                                 f"got {type(value).__name__}")
    return value


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def to_array(value: Any, shape: tuple[int, ...], path: Path, name: str) -> torch.Tensor:
    """``value`` (nested lists or an array) as a float64 tensor of ``shape``; singleton dimensions
    may differ (``[42, 1]`` is accepted for ``(42,)``, ``[1, 21, 3]`` for ``(21, 3)``)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{path}: field {name}: expected numbers of shape {list(shape)}, "
                                 f"got {type(value).__name__} that is not a numeric array") from None
    if _squeezed(arr.shape) != _squeezed(shape):
        raise DatasetFormatError(f"{path}: field {name}: expected shape {list(shape)}, got {list(arr.shape)}")
    return torch.from_numpy(arr.reshape(shape).copy())


def stack_arrays(values: Sequence[Any], shape: tuple[int, ...], path: Path,
                 name: Callable[[int], str]) -> torch.Tensor:
    """``[len(values), *shape]`` float64 from a list of arrays, converted in one go when they
    agree; otherwise entry by entry, so that the error names the bad one with ``name(index)``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape[:1] == (len(values),) and _squeezed(arr.shape[1:]) == _squeezed(shape):
            return torch.from_numpy(arr.reshape(len(values), *shape).copy())
    except (TypeError, ValueError):
        pass
    return torch.stack([to_array(value, shape, path, name(i)) for i, value in enumerate(values)])


def object_models(root: str | os.PathLike, objects: bool, models: str | os.PathLike | None) -> Path | None:
    """The folder a hand-object reader reads the object meshes from: ``models``, by default
    ``root/models``, when ``objects``; else None."""
    return (Path(root) / "models" if models is None else Path(models)) if objects else None


def read_object_models(folder: Path, names: Sequence[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The YCB object meshes ``<folder>/<name>/textured_simple.obj`` (metres, the object's frame) as
    ``{name: (verts [V, 3] float64, faces [F, 3] int64)}``, read with trimesh, their vertices merged
    across the texture's seams (an OBJ repeats a vertex per texture coordinate) so that the mesh is
    one connected surface for the inside tests. A missing or unreadable file is a
    :class:`DatasetFormatError` naming it."""
    import trimesh

    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: folder of the YCB object models (<name>/textured_simple.obj) not found")
    meshes = {}
    for name in names:
        path = folder / name / "textured_simple.obj"
        if not path.is_file():
            raise DatasetFormatError(f"{path}: object model not found")
        try:
            loaded = trimesh.load(path, force="mesh", process=False)
        except Exception as e:  # trimesh's parsers raise many kinds
            raise DatasetFormatError(f"{path}: not a readable OBJ mesh ({e})") from None
        if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
            raise DatasetFormatError(f"{path}: holds no triangle mesh")
        mesh = trimesh.Trimesh(loaded.vertices, loaded.faces, process=True)  # merges the seams' copies
        meshes[name] = (torch.from_numpy(np.asarray(mesh.vertices, np.float64).copy()),
                        torch.from_numpy(np.asarray(mesh.faces, np.int64).copy()))
    return meshes


# ----------------------------------------------------------------------------------------------
# Images


def _pil():
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("the dataset readers load images with Pillow: pip install pillow") from e
    return Image


def load_image(path: Path):
    """The image file as an RGB ``PIL.Image`` (grey images converted)."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: image file not found") from None
    except OSError as e:  # includes PIL.UnidentifiedImageError
        raise DatasetFormatError(f"{path}: not a readable image ({e})") from None


def crop_image(img, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """``[3, size, size]`` float32 in [0, 1]: the region ``box`` (left, top, right, bottom; original
    pixels, sub-pixel) of ``img`` resized to ``size`` pixels with Pillow's bilinear filter, black
    outside the image. The box is cut at whole pixels around it first (``crop`` pads with black)
    and the fractional rest goes to ``resize``'s ``box``, so the result agrees with the crop's
    ``K`` to a fraction of a pixel (``img.crop(box)`` alone rounds the box to whole pixels)."""
    left, top, right, bottom = box
    x0, y0 = math.floor(left), math.floor(top)
    patch = img.crop((x0, y0, math.ceil(right), math.ceil(bottom)))
    out = patch.resize((size, size), _pil().BILINEAR, box=(left - x0, top - y0, right - x0, bottom - y0))
    return torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255


# ----------------------------------------------------------------------------------------------
# IK fit


def _usable(valid: torch.Tensor) -> torch.Tensor:
    """Hands ``[...]`` that can be fitted and used, from joint validity ``[..., 21]``."""
    return valid[..., 0] & (valid.sum(-1) >= MIN_HAND_JOINTS)


PALM = (0, 1, 5, 9, 13, 17)  # the wrist and each finger's first joint: rigid in the hand model


def _rest_guess(model: HandModel, joints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[N, 21, 3]``: the rest hand's joints moved rigidly (weighted Kabsch) onto the valid palm
    joints where three or more are valid, else onto all valid joints."""
    rest = model(model.rest_pose((joints.shape[0],), joints.dtype, joints.device)).joints
    palm = torch.zeros_like(valid)
    palm[:, PALM] = valid[:, PALM]
    w = torch.where((palm.sum(-1, keepdim=True) >= 3), palm, valid).to(joints.dtype).unsqueeze(-1)
    n = w.sum(-2, keepdim=True)
    rest_mean, joints_mean = (rest * w).sum(-2, keepdim=True) / n, (joints * w).sum(-2, keepdim=True) / n
    u, _, vh = torch.linalg.svd(((rest - rest_mean) * w).mT @ (joints - joints_mean))
    d = torch.linalg.det(vh.mT @ u.mT).sign()
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return (rest - rest_mean) @ (vh.mT @ fix @ u.mT).mT + joints_mean


def _first_guess(model: HandModel, joints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``joints [N, 21, 3]`` with the invalid ones guessed so that a hand of the model can meet
    them and the valid joints at once (mostly): an invalid palm joint from the rest hand moved
    rigidly onto the valid joints (:func:`_rest_guess`); along each finger's chain, an invalid
    joint between two known ones on the segment joining them, one past the chain's last known
    joint on the extension of that joint's bone (a straight finger), each at its share of the
    default bone lengths."""
    rows = torch.arange(len(joints), device=joints.device)
    guess = torch.where(valid[..., None], joints, _rest_guess(model, joints, valid))
    known = valid.clone()
    known[:, PALM] = True
    lengths = torch.tensor(DEFAULT_BONE_LENGTHS, dtype=joints.dtype, device=joints.device).view(5, 4)
    for finger in range(5):
        chain = torch.tensor([0] + list(range(4 * finger + 1, 4 * finger + 5)), device=joints.device)
        reach = torch.cat([lengths.new_zeros(1), lengths[finger].cumsum(0)])  # distance along the chain
        last = {1: torch.ones_like(rows)}  # chain position -> the last known position at or before it
        for k in (2, 3, 4):
            last[k] = torch.where(known[:, chain[k]], k, last[k - 1])
        first = {5: torch.full_like(rows, -1)}  # the first known position at or after it (-1: none)
        for k in (4, 3, 2):
            first[k] = torch.where(known[:, chain[k]], k, first[k + 1])
        for k in (2, 3, 4):
            a, b = last[k], first[k]
            start, stop = guess[rows, chain[a]], guess[rows, chain[b.clamp_min(0)]]
            share = (reach[k] - reach[a]) / (reach[b.clamp_min(0)] - reach[a]).clamp_min(1e-9)
            between = start + share[:, None] * (stop - start)
            bone = torch.nn.functional.normalize(start - guess[rows, chain[a - 1]], dim=-1)
            beyond = start + (reach[k] - reach[a])[:, None] * bone
            guessed = torch.where((b >= 0)[:, None], between, beyond)
            guess[:, chain[k]] = torch.where(known[:, chain[k], None], guess[:, chain[k]], guessed)
    return guess


def _assign(params: HandParams, index: torch.Tensor, new: HandParams) -> None:
    for f in fields(HandParams):
        getattr(params, f.name)[index] = getattr(new, f.name)


def _fit_chunk(model: HandModel, joints: torch.Tensor, valid: torch.Tensor) -> tuple[HandParams, torch.Tensor]:
    partial = (~valid.all(-1)).nonzero().squeeze(1)
    target = joints.clone()
    if len(partial):
        target[partial] = _first_guess(model, joints[partial], valid[partial])
    params = model.fit(target)
    for _ in range(IMPUTE_ROUNDS if len(partial) else 0):
        fitted = model(params[partial]).joints
        target[partial] = torch.where(valid[partial, :, None], joints[partial], fitted)
        _assign(params, partial, model.fit(target[partial]))
    return params, (model(params).joints - joints).norm(dim=-1)


def fit_hands(side: str, joints: torch.Tensor, valid: torch.Tensor,
              device: str | torch.device = "cpu") -> tuple[HandParams, torch.Tensor]:
    """IK fit of ``hand_model(side)`` to ``joints [N, 21, 3]`` (metres) with validity ``valid
    [N, 21]`` (each hand's wrist valid), in batches of ``FIT_CHUNK`` on ``device``.

    A partially annotated hand is fitted with its invalid joints set to a first guess
    (:func:`_first_guess`), then ``IMPUTE_ROUNDS`` times refitted with them set to the last fit's
    joints (alternating imputation), so that the valid joints drive the fit. Returns the
    parameters (float64, on the CPU) and the distance ``[N, 21]`` (metres) between fitted and
    given joints (meaningful where valid)."""
    model = hand_model(side)
    starts = range(0, joints.shape[0], FIT_CHUNK)
    parts, errors = [], []
    for start in tqdm(starts, desc=f"IK fit, {side} hands", disable=len(starts) < 2):
        j = joints[start:start + FIT_CHUNK].to(device=device, dtype=F64)
        params, error = _fit_chunk(model, j, valid[start:start + FIT_CHUNK].to(device))
        parts.append(params.to(device="cpu"))
        errors.append(error.cpu())
    params = HandParams(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(HandParams)})
    return params, torch.cat(errors)


# ----------------------------------------------------------------------------------------------
# Annotations and the base dataset


@dataclass
class Annotations:
    """What a reader parses from its files: ``M`` fit entries, ``C`` cameras, ``N`` images.

    joints: ``[M, 2, 21, 3]`` float64, annotated joints in metres in the fit frame (right, left;
        handgeom's joint order); joints_valid: ``[M, 2, 21]`` bool, their 3D validity;
    K: ``[C, 3, 3]`` intrinsics of the original images; R, t: ``[C, 3, 3]``, ``[C, 3]``: fit frame
        to camera, ``x -> R x + t`` (metres);
    images: ``N`` image paths relative to the dataset root; fit_index, camera_index: ``[N]`` int64;
    frame_valid: ``[N, 2, 21]`` bool, per-image validity on top of ``joints_valid`` (or None);
    extras: per-image extra sample keys, ``{key: [N, ...]}`` (``object_pose`` float32 and
        ``object_class`` int64 for the hand-object readers).
    """

    joints: torch.Tensor
    joints_valid: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    images: list[str]
    fit_index: torch.Tensor
    camera_index: torch.Tensor
    frame_valid: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        finite = torch.isfinite(self.joints).all(-1)
        self.joints = torch.where(finite[..., None], self.joints.to(F64), 0.0)
        self.joints_valid = self.joints_valid.bool() & finite

    @classmethod
    def in_camera_frame(cls, joints: torch.Tensor, joints_valid: torch.Tensor, K: torch.Tensor, images: list[str],
                        fit_index: torch.Tensor | None = None, camera_index: torch.Tensor | None = None,
                        extras: dict[str, torch.Tensor] | None = None) -> "Annotations":
        """Annotations whose joints are in the camera frame (identity ``R``, zero ``t``); the
        indices default to one fit entry and one camera per image."""
        index = torch.arange(len(images))
        c = K.shape[0]
        return cls(joints=joints, joints_valid=joints_valid, K=K, R=torch.eye(3, dtype=F64).expand(c, 3, 3).clone(),
                   t=torch.zeros(c, 3, dtype=F64), images=images,
                   fit_index=index if fit_index is None else fit_index,
                   camera_index=index if camera_index is None else camera_index, extras=extras or {})

    def state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def one_hand(joints: torch.Tensor, slot: int | torch.Tensor = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Joints ``[N, 2, 21, 3]`` and validity ``[N, 2, 21]`` of one annotated hand per image
    (``joints [N, 21, 3]``) in hand slot ``slot`` (0 right, 1 left; one for all or ``[N]``), the
    other slot empty."""
    n = joints.shape[0]
    slot = torch.as_tensor(slot).expand(n)
    rows = torch.arange(n)
    both = torch.zeros(n, 2, 21, 3, dtype=F64)
    both[rows, slot] = joints.to(F64)
    valid = torch.zeros(n, 2, 21, dtype=torch.bool)
    valid[rows, slot] = True
    return both, valid


def fit_annotations(annotations: Annotations, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The IK fit of every usable hand of the fit entries: ``{"params": {key: [M, 2, ...]},
    "fitted": [M, 2] bool, "error_mm": float}`` (rest pose, identity rotation where not fitted)."""
    valid = annotations.joints_valid
    fitted = _usable(valid)
    m = valid.shape[0]
    rest = [hand_model(side).rest_pose((m,), F64) for side in SIDES]
    params = {key: torch.stack([getattr(p, key) for p in rest], 1) for key in PARAM_KEYS}
    params["rotation"] = torch.eye(3, dtype=F64).expand(m, 2, 3, 3).clone()
    error_sum, count = 0.0, 0
    for slot, side in enumerate(SIDES):
        rows = fitted[:, slot].nonzero().squeeze(1)
        if not len(rows):
            continue
        fit, error = fit_hands(side, annotations.joints[rows, slot], valid[rows, slot], device)
        for key in PARAM_KEYS:
            params[key][rows, slot] = getattr(fit, key)
        error_sum += float(error[valid[rows, slot]].sum())
        count += int(valid[rows, slot].sum())
    return {"params": {k: v.float() for k, v in params.items()}, "fitted": fitted,
            "error_mm": 1000 * error_sum / max(count, 1)}


class RealHandDataset(Dataset, abc.ABC):
    """Base of the readers: a map-style dataset of the images of ``root`` with at least one usable
    hand, whose samples are the dicts of :mod:`handgeom.datasets.sample` (see the module docstring
    for what they hold for real data).

    Args (common to every reader):
        root: the dataset folder (layout in each reader's docstring).
        split: the reader's split name.
        image_size: side ``S`` of the square crop, pixels.
        resolution: hand mesh resolution of ``verts`` and the labels, ``"coarse"`` or ``"fine"``.
        cache_dir: folder of the IK fit cache (default: ``root``); if it cannot be written, a
            warning says so and the fit is redone next time.
        transform: ``transform(sample, index)``, applied to each sample (augmentation, e.g.
            :class:`~handgeom.datasets.Augment`).
        fit_device: device of the one-off IK fit (e.g. ``"cuda"`` for a whole dataset).

    The hand-object readers also pass ``object_models``, the folder of the YCB meshes
    (:func:`read_object_models`) that makes the samples' ``object_verts`` (None: none; see
    :func:`object_models`).

    Attributes: ``images`` (the images' paths relative to ``root``, in sample order),
    ``fit_error_mm`` (mean fitted-to-annotated joint distance, mm), ``cache_path``, ``objects``
    (``{object_class: (verts, faces)}``, padded, in the object's frame; empty without meshes).
    """

    def __init__(self, root: str | os.PathLike, split: str, image_size: int = 256, resolution: str = "coarse",
                 cache_dir: str | os.PathLike | None = None, transform: Callable[[dict, int], dict] | None = None,
                 fit_device: str | torch.device = "cpu", object_models: str | os.PathLike | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetFormatError(f"{self.root}: dataset root not found (not a directory)")
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"{type(self).__name__}: image_size must be a positive integer, got {image_size!r}")
        hand_model("right", resolution)  # checks the resolution now rather than at the first sample
        self.split, self.image_size, self.resolution, self.transform = split, int(image_size), resolution, transform
        sources = self._sources()
        folder = Path(cache_dir) if cache_dir is not None else self.root
        self.cache_path = folder / f"handgeom_ik_{self._cache_name()}.pt"
        key = self._cache_key(sources)
        cached = self._read_cache(key)
        if cached is None:
            annotations = self._parse(sources)
            fit = fit_annotations(annotations, fit_device)
            self._write_cache(key, annotations, fit)
        else:
            annotations, fit = cached
        self._index(annotations, fit)
        self.objects = {} if object_models is None else self._read_objects(Path(object_models))

    # -- what each reader provides

    @abc.abstractmethod
    def _cache_name(self) -> str:
        """The cache file's tag: the reader, its split and the options that change its frames."""

    @abc.abstractmethod
    def _sources(self) -> list[Path]:
        """The annotation files (under ``root``) whose content makes the annotations: their stats
        key the cache. Only lists them."""

    @abc.abstractmethod
    def _parse(self, sources: list[Path]) -> Annotations:
        """Reads ``sources`` (from :meth:`_sources`)."""

    # -- cache

    def _cache_key(self, sources: list[Path]) -> str:
        stats = []
        for path in sources:
            try:
                st = path.stat()
            except FileNotFoundError:
                raise DatasetFormatError(f"{path}: annotation file not found") from None
            stats.append((path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns))
        text = json.dumps([CACHE_VERSION, OBJECT_CLASSES, type(self).__name__, self._cache_name(), stats])
        return hashlib.sha256(text.encode()).hexdigest()

    def _read_cache(self, key: str) -> tuple[Annotations, dict[str, Any]] | None:
        if not self.cache_path.is_file():
            return None
        try:
            payload = torch.load(self.cache_path, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            warnings.warn(f"{self.cache_path}: unreadable IK fit cache, fitting again ({e})")
            return None
        if not isinstance(payload, dict) or payload.get("key") != key:
            return None
        return Annotations(**payload["annotations"]), payload["fit"]

    def _write_cache(self, key: str, annotations: Annotations, fit: dict[str, Any]) -> None:
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}.tmp")
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "annotations": annotations.state(), "fit": fit}, tmp)
            os.replace(tmp, self.cache_path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            warnings.warn(f"{self.cache_path}: cannot write the IK fit cache ({e}); pass a writable cache_dir")

    # -- frames

    def _index(self, annotations: Annotations, fit: dict[str, Any]) -> None:
        a = annotations
        valid = a.joints_valid[a.fit_index]
        if a.frame_valid is not None:
            valid = valid & a.frame_valid.bool()
        present = fit["fitted"][a.fit_index] & _usable(valid)
        keep = present.any(-1).nonzero().squeeze(1)
        if not len(keep):
            raise DatasetFormatError(f"{self.root}: split {self.split!r} has no image with an annotated hand")
        self.images = [a.images[i] for i in keep.tolist()]
        self.fit_index, self.camera_index = a.fit_index[keep], a.camera_index[keep]
        self.hand_valid = present[keep]
        self.joints_valid = valid[keep] & self.hand_valid[..., None]
        self.extras = {k: v[keep] for k, v in a.extras.items()}
        self.joints, self.K, self.R, self.t = a.joints, a.K, a.R, a.t
        self.params, self.fit_error_mm = fit["params"], float(fit["error_mm"])

    def _read_objects(self, folder: Path) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        if "object_class" not in self.extras:
            raise ValueError(f"{type(self).__name__}: its annotations name no objects, so it reads no object models")
        classes = sorted(set(self.extras["object_class"].tolist()))
        meshes = read_object_models(folder, [OBJECT_CLASSES[c] for c in classes])
        verts = max(v.shape[0] for v, _ in meshes.values())
        faces = max(f.shape[0] for _, f in meshes.values())
        return {c: pad_mesh(*meshes[OBJECT_CLASSES[c]], verts, faces) for c in classes}

    def __len__(self) -> int:
        return len(self.images)

    def _hand(self, entry: int, slot: int) -> HandParams:
        return HandParams(**{key: self.params[key][entry, slot].to(F64) for key in PARAM_KEYS})

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {len(self)} images")
        index %= len(self)
        entry, cam = int(self.fit_index[index]), int(self.camera_index[index])
        K, R, t = self.K[cam], self.R[cam], self.t[cam]
        present = self.hand_valid[index]
        hands = {side: hands_to_camera(self._hand(entry, slot), R, t)
                 for slot, side in enumerate(SIDES) if present[slot]}
        meshes = [(hand_model(side, self.resolution)(p).verts, hand_model(side, self.resolution).faces)
                  for side, p in hands.items()]
        labels = [HAND_LABELS[SIDES.index(side)] for side in hands]
        if self.objects:
            verts, faces = self.objects[int(self.extras["object_class"][index])]
            pose = self.extras["object_pose"][index].to(F64)
            meshes.append((verts @ pose[:, :3].T + pose[:, 3], faces))
            labels.append(OBJECT_LABEL)
        K_crop = crop_camera(K, torch.cat([v for v, _ in meshes]), self.image_size)
        image = crop_image(load_image(self.root / self.images[index]), crop_box(K, K_crop, self.image_size),
                           self.image_size)
        valid = self.joints_valid[index]
        sample = hand_entries(hands, K_crop, self.resolution, valid)
        joints = self.joints[entry] @ R.T + t  # the annotated joints in the camera frame
        sample["joints_3d"] = torch.where(valid[..., None], joints, 0.0).float()
        sample["joints_2d"] = torch.where(valid[..., None], project(joints, K_crop), 0.0).float()
        _, rendered = render_labels([meshes], [labels], K_crop[None], self.image_size, self.resolution)
        sample.update(image=image, K=K_crop.float(), **{key: value[0] for key, value in rendered.items()})
        sample.update({key: value[index] for key, value in self.extras.items()})
        if self.objects:
            sample.update(object_verts=meshes[-1][0].float(), object_faces=meshes[-1][1])
        return self.transform(sample, index) if self.transform is not None else sample
