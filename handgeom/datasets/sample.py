"""The sample every handgeom dataset and reader returns, and the camera and label code they share.

A sample is a ``dict[str, Tensor]`` with these keys (``H = W = image_size``; two hand slots, right
first; metres, camera frame with OpenCV axes: x right, y down, z forward; pixels with the centre of
pixel ``(row i, col j)`` at ``(j + 0.5, i + 0.5)``):

=================  ===================  =====================================================
key                shape, dtype         content
=================  ===================  =====================================================
``image``          [3, H, W] float32    RGB in [0, 1]
``mask``           [H, W] int64         0 background, 1 right hand, 2 left hand, 3 object
``depth``          [H, W] float32       camera-frame z of the first surface hit, 0 on background
``dense``          [3, H, W] float32    DIR's dense correspondence target: each hand vertex's fixed
                                        colour code (:func:`dense_code`) interpolated by the hit's
                                        barycentric weights, 0 off the hands
``K``              [3, 3] float32       intrinsics of the crop
``joints_3d``      [2, 21, 3] float32   handgeom (OpenPose) joint order
``joints_2d``      [2, 21, 2] float32   ``joints_3d`` projected with ``K``, pixels
``joints_valid``   [2, 21] bool         annotated joints (all of a valid synthetic hand)
``verts``          [2, V, 3] float32    ``HandModel(params)`` vertices (coarse: V = 330)
``hand_valid``     [2] bool             which hand slots hold a hand
``rotation``       [2, 3, 3] float32    :class:`~handgeom.hand.HandParams` fields per hand:
``translation``    [2, 3] float32       ``HandModel(side)(params)`` gives ``verts`` and, for
``bone_lengths``   [2, 20] float32      synthetic data, ``joints_3d`` (real data: the IK fit of
                                        the annotated ``joints_3d``, see :mod:`.real`)
``angles``         [2, 21] float32
``scale``          [2] float32
``object_verts``   [Vo, 3] float32      the posed object (hand-object samples; the readers' with
``object_faces``   [Fo, 3] int64        ``objects=True``), of a fixed size: the procedural
                                        objects all have 960 faces; other meshes are padded by
                                        copies of vertex 0 and faces ``(0, 0, 0)``, which no mesh
                                        query sees (zero area, on the surface)
``object_pose``    [3, 4] float32       ``[R | t]``: object frame to camera
``object_class``   [] int64             index in :data:`handgeom.datasets.objects.OBJECT_CLASSES`
=================  ===================  =====================================================

An empty hand slot holds the rest pose at the origin, zero joints and vertices, and
``hand_valid`` False. Fixed shapes mean that ``torch.utils.data.default_collate`` batches samples.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from handgeom.hand import HandModel, HandParams
from handgeom.hand.kinematics import rotation_matrix
from handgeom.render import Fragments, cast, interpolate, pinhole_rays, vertex_normals

__all__ = ["SIDES", "PARAM_KEYS", "HAND_LABELS", "OBJECT_LABEL", "project", "crop_camera", "crop_box", "hands_to_camera",
           "dense_code", "render_labels", "hand_entries", "hand_params", "hand_model", "seeded_generator"]

SIDES = ("right", "left")
PARAM_KEYS = ("rotation", "translation", "bone_lengths", "angles", "scale")
HAND_LABELS = (1, 2)  # mask values of the right and left hand
OBJECT_LABEL = 3
CROP_FILL = 0.8  # the hands fill this fraction of the square crop's side (InterHand2.6M-style crops)


def seeded_generator(*keys: int) -> torch.Generator:
    """A torch generator seeded from non-negative integer ``keys`` (e.g. dataset, seed, index) by
    NumPy's SeedSequence, so that nearby keys give unrelated streams: the randomness of one sample
    is a pure function of its keys."""
    state = np.random.SeedSequence(list(keys)).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@lru_cache(maxsize=None)
def hand_model(side: str, resolution: str = "coarse") -> HandModel:
    """The shared (read-only) hand model of each side and resolution."""
    return HandModel(side, resolution)


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of camera-frame ``points [..., 3]`` to pixels ``[..., 2]``."""
    uvw = points @ K.to(points).transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:]


def crop_camera(K: torch.Tensor, points: torch.Tensor, size: int, fill: float = CROP_FILL,
                centre_shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Intrinsics ``[3, 3]`` of the square ``size``-pixel crop, from a camera with intrinsics ``K``,
    in which the camera-frame ``points [N, 3]`` (the hands' vertices) fill ``fill`` of the side of
    the bounding square of their projection, centred (``centre_shift``: offset of the crop centre
    in units of the square's side). The crop-and-resize is ``K_crop = A K`` with ``A`` a scale and a
    shift, so images cropped with :func:`crop_box` agree with it."""
    uv = project(points.double(), K.double())
    lo, hi = uv.amin(0), uv.amax(0)
    side = float((hi - lo).max()) / fill
    centre = (lo + hi) / 2 + torch.tensor(centre_shift, dtype=torch.float64) * side
    s = size / side
    A = torch.tensor([[s, 0.0, size / 2 - s * float(centre[0])], [0.0, s, size / 2 - s * float(centre[1])],
                      [0.0, 0.0, 1.0]], dtype=torch.float64)
    return A @ K.double()


def crop_box(K: torch.Tensor, K_crop: torch.Tensor, size: int) -> tuple[float, float, float, float]:
    """The ``(left, top, right, bottom)`` box, in the pixels of the camera with intrinsics ``K``,
    that a crop with intrinsics ``K_crop = A K`` (from :func:`crop_camera`) covers: the box to cut
    and resize to ``size`` pixels, at sub-pixel precision (``PIL.Image.crop`` rounds the box to
    whole pixels; see ``handgeom.datasets.real.crop_image``)."""
    A = K_crop.double() @ torch.linalg.inv(K.double())
    s, left, top = float(A[0, 0]), -float(A[0, 2]) / float(A[0, 0]), -float(A[1, 2]) / float(A[1, 1])
    return left, top, left + size / s, top + size / s


def hands_to_camera(params: HandParams, R: torch.Tensor, t: torch.Tensor) -> HandParams:
    """Hand parameters in a frame moved by ``x -> R x + t`` (world to camera): the rotation
    becomes a matrix; joints and vertices of the result are those of ``params`` moved."""
    R = R.to(params.translation)
    return HandParams(rotation=R @ rotation_matrix(params.rotation), translation=params.translation @ R.T + t.to(R),
                      bone_lengths=params.bone_lengths, angles=params.angles, scale=params.scale)


@lru_cache(maxsize=None)
def dense_code(resolution: str = "coarse") -> torch.Tensor:
    """``[V, 3]`` in [0, 1]: each vertex's rest-pose position, normalized per axis over the rest
    hand's bounding box. The same code for both hands (the left hand is the right's mirror image,
    vertex for vertex), so it names a point of the hand surface, as DIR's dense map does."""
    model = hand_model("right", resolution)
    rest = model(model.rest_pose((), torch.float64)).verts
    lo, hi = rest.amin(0), rest.amax(0)
    return ((rest - lo) / (hi - lo)).float()


def render_labels(scenes: list[list[tuple[torch.Tensor, torch.Tensor]]], labels: list[list[int]], K: torch.Tensor,
                  size: int, resolution: str = "coarse", albedo: list[list[torch.Tensor]] | None = None
                  ) -> tuple[Fragments, dict[str, torch.Tensor]]:
    """Ray casts a batch of camera-frame ``scenes`` (each a list of ``(verts, faces)`` meshes, one
    ``labels[b]`` value each: 1 right, 2 left, 3 object; the meshes' sizes equal scene by scene,
    see :func:`~handgeom.render.cast`), scene ``b`` through each pixel centre of its crop ``K[b]``
    (``K [B, 3, 3]``; in float32), and returns the fragments and the ``mask``, ``depth`` and
    ``dense`` entries of the samples, stacked (``[B, ...]``); with ``albedo`` (per-vertex ``[V_m,
    3]`` colours of each mesh of each scene) also ``"normals"`` and ``"albedo"`` ``[n, 3]``, the
    interpolated vertex normals and colours at ``frags.hits`` (for shading), in the same pass."""
    scenes = [[(v.float(), f) for v, f in scene] for scene in scenes]
    batch = len(scenes)
    dirs = pinhole_rays(K, size, size).reshape(batch, -1, 3)
    frags = cast(scenes, torch.zeros(3), dirs)
    label = torch.tensor([[0, *lab] for lab in labels])
    mask = label.gather(1, (frags.mesh + 1).view(batch, -1)).view(batch, size, size)
    depth = torch.where(frags.hit, frags.t, torch.zeros_like(frags.t)).view(batch, size, size)
    code = dense_code(resolution)
    attributes = [[code if lab in HAND_LABELS else torch.zeros(v.shape[0], 3) for (v, _), lab in zip(scene, labs)]
                  for scene, labs in zip(scenes, labels, strict=True)]
    if albedo is not None:
        attributes = [[torch.cat([a, vertex_normals(v, f), c.to(a)], 1) for a, (v, f), c in zip(attrs, scene, colours, strict=True)]
                      for attrs, scene, colours in zip(attributes, scenes, albedo, strict=True)]
    values = interpolate(attributes, frags)
    dense = torch.zeros(batch * size * size, 3)
    dense[frags.hits] = values[:, :3]
    entries = {"mask": mask, "depth": depth, "dense": dense.view(batch, size * size, 3).transpose(1, 2).reshape(batch, 3, size, size)}
    if albedo is not None:
        entries.update(normals=values[:, 3:6], albedo=values[:, 6:])
    return frags, entries


def hand_entries(hands: dict[str, HandParams], K: torch.Tensor, resolution: str = "coarse",
                 joints_valid: torch.Tensor | None = None,
                 posed: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """The hand keys of a sample (``joints_3d``, ``joints_2d``, ``joints_valid``, ``verts``,
    ``hand_valid`` and the parameters) from camera-frame parameters of the hands present
    (``{"right": params, "left": params}``, unbatched). ``posed`` may give each hand's
    ``(joints, verts)`` when the caller has them already (the model's output for ``params``)."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("joints_3d", "joints_2d", "verts", "hand_valid", *PARAM_KEYS)}
    for side in SIDES:
        model = hand_model(side, resolution)
        present = side in hands
        params = hands[side] if present else model.rest_pose((), torch.float64)
        params = HandParams(rotation=rotation_matrix(params.rotation), translation=params.translation,
                            bone_lengths=params.bone_lengths, angles=params.angles, scale=params.scale).to(torch.float64)
        if not present:
            joints, verts = torch.zeros(21, 3, dtype=torch.float64), torch.zeros(model.num_verts, 3, dtype=torch.float64)
        elif posed is not None and side in posed:
            joints, verts = posed[side]
        else:
            hand = model(params)
            joints, verts = hand.joints, hand.verts
        out["joints_3d"].append(joints)
        out["joints_2d"].append(project(joints, K) if present else torch.zeros(21, 2, dtype=torch.float64))
        out["verts"].append(verts)
        out["hand_valid"].append(torch.tensor(present))
        for key in PARAM_KEYS:
            out[key].append(getattr(params, key))
    sample = {k: torch.stack(v) for k, v in out.items()}
    sample = {k: v if v.dtype == torch.bool else v.float() for k, v in sample.items()}
    valid = sample["hand_valid"][:, None].expand(2, 21)
    sample["joints_valid"] = valid.clone() if joints_valid is None else joints_valid.bool() & valid
    return sample


def hand_params(sample: dict[str, torch.Tensor], slot: int) -> HandParams:
    """The :class:`HandParams` of hand slot ``slot`` (0 right, 1 left) of a sample or a batch."""
    return HandParams(rotation=sample["rotation"][..., slot, :, :], translation=sample["translation"][..., slot, :],
                      bone_lengths=sample["bone_lengths"][..., slot, :], angles=sample["angles"][..., slot, :],
                      scale=sample["scale"][..., slot])
