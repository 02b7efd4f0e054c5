"""Losses that compose handgeom's ops: the occupancy-network hand-hand intersection loss, the
training loss of the DIR interacting-hands network (with the physical terms), the hand-object
network's (with the exact SDF penetration and the contact attraction), and SiaPose's heatmap
losses.

(The exact signed-distance penetration loss is the op :func:`handgeom.ops.penetration_loss`.)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

from handgeom._checks import Checker
from handgeom.hand.skeleton import bone_ends
from handgeom.models.occupancy import HAND_CULL_MARGIN, HandOccupancyNet
from handgeom.ops.mesh import penetration_loss, signed_distance, surface_points

__all__ = ["intersection_loss", "hand_query_points", "mirror", "default_occupancy_net", "DIR_WEIGHTS", "dir_targets",
           "dir_loss", "edge_length_loss", "normal_loss", "mesh_edges", "placed_meshes", "mutual_penetration",
           "HANDOBJECT_WEIGHTS", "object_template", "handobject_targets", "hand_object_penetration",
           "contact_loss", "handobject_loss", "SIAPOSE_WEIGHTS", "single_hand_2d", "heatmap_targets", "heatmap_loss", "siapose_loss"]

_DENSE_FRACTIONS = torch.arange(1, 6) / 6  # 5 points inside each bone


def mirror(x: torch.Tensor) -> torch.Tensor:
    """``x [..., 3]`` with its x coordinate negated: a left hand becomes a right hand."""
    return x * x.new_tensor([-1.0, 1.0, 1.0])


def hand_query_points(joints: torch.Tensor, points: Literal["sparse", "dense"]) -> torch.Tensor:
    """The points of a hand tested for intersection: its 21 joints (``"sparse"``), or the joints
    plus 5 evenly spaced points inside each of the 20 bones (``"dense"``, 121 points)."""
    if points == "sparse":
        return joints
    start, end = bone_ends(joints)  # [B, 20, 3]
    f = _DENSE_FRACTIONS.to(joints)[None, None, :, None]
    on_bones = start[:, :, None] + f * (end - start)[:, :, None]
    return torch.cat([joints, on_bones.flatten(1, 2)], 1)


@lru_cache(maxsize=4)
def default_occupancy_net(device: str = "cpu") -> HandOccupancyNet:
    """The shipped :meth:`HandOccupancyNet.pretrained`, loaded once per device."""
    return HandOccupancyNet.pretrained(device)


def intersection_loss(joints_left: torch.Tensor, joints_right: torch.Tensor, net: HandOccupancyNet | None = None,
                      points: Literal["sparse", "dense", "mesh"] = "sparse", both: bool = True,
                      truncate: bool = False, verts_left: torch.Tensor | None = None,
                      verts_right: torch.Tensor | None = None, cull_margin: float | None = HAND_CULL_MARGIN,
                      reduction: Literal["mean", "sum", "none"] = "mean") -> torch.Tensor:
    r"""Hand-hand intersection loss of "Two Hands Are Better Than One":

    .. math::
        \sum_i O(x^L_i \mid X^R)^2 + \alpha \sum_i O(\mathrm{flip}(x^R)_i \mid \mathrm{flip}(X^L))^2

    with :math:`O` the occupancy probability of a right hand (the network knows only right
    hands: the mirrored right hand's points are tested against the mirrored left hand) and
    :math:`\alpha` = 1 if ``both`` else 0.

    Args:
        joints_left, joints_right: ``[B, 21, 3]`` metres, one world frame.
        net: a :class:`HandOccupancyNet`; default the shipped one (frozen, eval mode: each sum
            and its gradients come from one fused pass, :func:`handgeom.ops.conditioned_mlp_penalty`).
        points: the tested points: ``"sparse"`` the 21 joints, ``"dense"`` joints and 5 points
            per bone (121), ``"mesh"`` the hand meshes' vertices ``verts_left`` / ``verts_right``
            ``[B, V, 3]``.
        truncate: keep only probabilities above 0.5 (the paper's variant).
        cull_margin: points farther than this (metres) outside the other hand's joint box count as
            outside without querying the network (see ``HandOccupancyNet.forward``): the default
            culls no point of the hand model's volume, and it bounds the query to where the
            network was trained (its box grown by 1 cm, and a 40 cm cube around it, sparsely);
            ``None`` queries the network everywhere.
        reduction: over the batch, of the per-pair sums.

    Returns:
        The loss (``[B]`` for ``reduction="none"``; the mean of an empty batch is 0); differentiable
        in both hands' joints (and vertices). Floating-point inputs of one dtype; NaN joints or
        vertices give a NaN loss.
    """
    ck = Checker("intersection_loss")
    ck.tensor(joints_left, "joints_left", ("B", 21, 3))
    ck.tensor(joints_right, "joints_right", ("B", 21, 3), like=joints_left)
    ck.choice(points, "points", ("sparse", "dense", "mesh"))
    ck.choice(reduction, "reduction", ("mean", "sum", "none"))
    if net is None:
        net = default_occupancy_net(str(joints_left.device))

    def tested(joints, verts, name):
        if points != "mesh":
            return hand_query_points(joints, points)
        if verts is None:
            ck.fail(f"points='mesh' needs {name} of shape [B, V, 3]")
        return ck.tensor(verts, name, ("B", None, 3), like=joints_left)

    loss = net.penalty(tested(joints_left, verts_left, "verts_left"), joints_right, cull_margin, truncate)
    if both:
        loss = loss + net.penalty(mirror(tested(joints_right, verts_right, "verts_right")), mirror(joints_left),
                                  cull_margin, truncate)
    return loss if reduction == "none" else loss.sum() if reduction == "sum" or len(loss) == 0 else loss.mean()


# ---- DIR (Ren et al., ICCV 2023): interacting-hands reconstruction --------------------------------

#: DIR's loss weights (its training code's), plus the physical terms it names as future work, off.
DIR_WEIGHTS = {"joints_3d": 10.0, "verts_3d": 10.0, "joints_2d": 10.0, "verts_2d": 10.0, "edge": 1.0,
               "normal": 0.1, "offset": 10.0, "seg": 0.1, "dense": 1.0, "occupancy": 0.0, "penetration": 0.0}
SEG_CLASS_WEIGHTS = (0.1, 0.45, 0.45)  # background, right, left
DIR_LENGTH = 0.15  # metres: 3D terms are taken on coordinates divided by this


def dir_targets(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DIR's targets from a batch of samples (:mod:`handgeom.datasets.sample`): root-relative
    joints and vertices (the wrist as root), normalized 2D joints and vertices in [-1, 1], the
    offset (right root - left root) and the segmentation classes (object pixels are background)."""
    size = batch["image"].shape[-1]
    root = batch["joints_3d"][:, :, :1]
    uvw = batch["verts"] @ batch["K"][:, None].transpose(-1, -2)
    verts_2d = uvw[..., :2] / uvw[..., 2:].clamp_min(1e-9)
    mask = batch["mask"]
    return {"joints": batch["joints_3d"] - root, "verts": batch["verts"] - root,
            "joints_uv": batch["joints_2d"] / size * 2 - 1, "verts_uv": verts_2d / size * 2 - 1,
            "offset": batch["joints_3d"][:, 0, 0] - batch["joints_3d"][:, 1, 0],
            "seg": torch.where(mask <= 2, mask, torch.zeros_like(mask)), "dense": batch["dense"],
            "hand_valid": batch["hand_valid"], "joints_valid": batch["joints_valid"]}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean of ``values [B, ...]`` where ``mask`` (broadcast from the left) holds;
    then the mean over the samples that have any: a mean of per-sample losses, so that a batch
    split across data-parallel processes gives the same gradient as the whole batch (exactly when
    every process has as many samples with the term, e.g. every hand present)."""
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values).flatten(1)
    count = mask.sum(1)
    kept = torch.where(mask > 0, values.flatten(1), torch.zeros_like(values.flatten(1)))  # NaN * 0 would leak
    per_sample = kept.sum(1) / count.clamp_min(1)
    present = (count > 0).to(values.dtype)
    return (per_sample * present).sum() / present.sum().clamp_min(1)


def _loss_weights(where: str, defaults: dict[str, float], weights: dict[str, float] | None) -> dict[str, float]:
    """``defaults`` updated by ``weights``, which must name known terms with non-negative weights."""
    w = {**defaults, **(weights or {})}
    unknown = set(w) - set(defaults)
    if unknown:
        raise ValueError(f"{where}: unknown loss terms {sorted(unknown)}; known: {sorted(defaults)}")
    negative = {k: v for k, v in w.items() if not v >= 0}
    if negative:
        raise ValueError(f"{where}: loss weights must be non-negative, got {negative}")
    return w


class _Terms(dict):
    """A loss's terms, each summed over the estimates it is added for."""

    def add(self, name: str, value: torch.Tensor) -> None:
        self[name] = self.get(name, 0.0) + value

    def total(self, w: dict[str, float], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The sum of the terms of positive weight in ``w``, weighted, and every term detached
        (a term of weight 0 is still reported in the logs)."""
        total = sum((w[k] * v for k, v in self.items() if w[k] > 0), torch.zeros((), device=device))
        return total, {k: v.detach().to(total.dtype) for k, v in self.items()}


def _smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _masked_mean(F.smooth_l1_loss(pred, target, reduction="none"), mask)


def _pose_terms(out: dict, targets: dict, joint: torch.Tensor, hand: torch.Tensor) -> dict[str, torch.Tensor]:
    """One estimate's SmoothL1 terms of the root-relative 3D joints and vertices (metres /
    ``DIR_LENGTH``) and of the normalized 2D joints, where ``joint`` and ``hand`` are valid."""
    return {"joints_3d": _smooth_l1(out["joints"] / DIR_LENGTH, targets["joints"] / DIR_LENGTH, joint),
            "verts_3d": _smooth_l1(out["verts"] / DIR_LENGTH, targets["verts"] / DIR_LENGTH, hand),
            "joints_2d": _smooth_l1(out["joints_uv"], targets["joints_uv"], joint)}


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """The unique undirected edges ``[E, 2]`` of a triangle mesh."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values
    return torch.unique(edges, dim=0)


def edge_length_loss(pred: torch.Tensor, target: torch.Tensor, edges: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``| |e_pred| - |e_gt| |`` over the mesh edges (metres / ``DIR_LENGTH``)."""
    length = lambda v: (v[..., edges[:, 0], :] - v[..., edges[:, 1], :]).norm(dim=-1)
    return _masked_mean((length(pred) - length(target)).abs() / DIR_LENGTH, mask)


def normal_loss(pred: torch.Tensor, target: torch.Tensor, faces: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``|cos(e_pred, n_gt)|`` over the faces' edges: predicted edges perpendicular to the
    ground truth's face normals (the normal consistency term of Wang et al.'s Pixel2Mesh, as DIR)."""
    tri = lambda v: v[..., faces, :]  # [..., F, 3, 3]
    t = tri(target)
    normal = F.normalize(torch.linalg.cross(t[..., 1, :] - t[..., 0, :], t[..., 2, :] - t[..., 0, :]), dim=-1)
    p = tri(pred)
    cos = torch.stack([F.normalize(p[..., (k + 1) % 3, :] - p[..., k, :], dim=-1) for k in range(3)], -2)
    return _masked_mean((cos * normal.unsqueeze(-2)).sum(-1).abs(), mask)


def mutual_penetration(verts_right: torch.Tensor, faces_right: torch.Tensor, verts_left: torch.Tensor,
                       faces_left: torch.Tensor) -> torch.Tensor:
    """``[B]``: the exact penetration of two hands into each other, each hand's mean over its
    vertices of ``max(-sdf, 0)`` (metres) in the other mesh (:func:`handgeom.ops.penetration_loss`),
    summed over both ways; differentiable in both meshes' vertices (computed in float32)."""
    right, left = verts_right.float(), verts_left.float()
    return (penetration_loss(right, left, faces_left, reduction="none").mean(1)
            + penetration_loss(left, right, faces_right, reduction="none").mean(1))


def placed_meshes(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both predicted hands in one frame: the right hand root at the origin, the left at
    ``-offset``: ``(verts_right, verts_left)`` ``[B, V, 3]``."""
    return out["verts"][:, 0], out["verts"][:, 1] - out["offset"][:, None]


def dir_loss(outputs: list[dict[str, torch.Tensor]], targets: dict[str, torch.Tensor], faces: tuple[torch.Tensor, torch.Tensor],
             weights: dict[str, float] | None = None, occupancy_net: HandOccupancyNet | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DIR's training loss summed over its stages, and each term (weighted sums over stages).

    Terms (``DIR_WEIGHTS``): SmoothL1 of root-relative 3D joints and vertices (divided by 0.15 m),
    of normalized 2D joints and vertices, mesh edge length, normal consistency, SmoothL1 of the
    offset (/0.15 m), segmentation cross-entropy (class weights 0.1/0.45/0.45) and SmoothL1 of the
    dense map on hand pixels (both on the last stage, upsampled to the image), plus the physical
    terms: the occupancy intersection loss of "Two Hands Are Better Than One" (eq. 1, on the mesh
    vertices) and the exact SDF penetration of each predicted hand's vertices into the other
    (:func:`handgeom.ops.penetration_loss`, both ways, mean per vertex, metres), both on the last
    stage's meshes placed by the predicted offset. A term with weight 0 is still computed and
    returned (detached), so that training logs report it. Every term is a mean over samples of a
    per-sample loss (see ``_masked_mean``), so data-parallel training equals one process.

    ``faces``: the right and left hand models' faces; ``targets``: :func:`dir_targets`.
    """
    w = _loss_weights("dir_loss", DIR_WEIGHTS, weights)
    hand, joint = targets["hand_valid"], targets["joints_valid"]
    both = hand.all(1)
    edges = [mesh_edges(f) for f in faces]
    terms = _Terms()
    for out in outputs:
        for name, value in _pose_terms(out, targets, joint, hand).items():
            terms.add(name, value)
        terms.add("verts_2d", _smooth_l1(out["verts_uv"], targets["verts_uv"], hand))
        terms.add("edge", sum(edge_length_loss(out["verts"][:, s], targets["verts"][:, s], edges[s], hand[:, s])
                        for s in range(2)) / 2)
        terms.add("normal", sum(normal_loss(out["verts"][:, s], targets["verts"][:, s], faces[s], hand[:, s])
                          for s in range(2)) / 2)
        terms.add("offset", _smooth_l1(out["offset"] / DIR_LENGTH, targets["offset"] / DIR_LENGTH, both))
    last = outputs[-1]
    size = targets["seg"].shape[-2:]
    seg = F.interpolate(last["seg"], size=size, mode="bilinear", align_corners=False)
    class_weight = seg.new_tensor(SEG_CLASS_WEIGHTS)[targets["seg"]]  # weighted cross-entropy, per sample
    terms.add("seg", _masked_mean(F.cross_entropy(seg, targets["seg"], reduction="none") * class_weight
                            / class_weight.flatten(1).mean(1)[:, None, None], torch.ones_like(class_weight[:, 0, 0])))
    dense = F.interpolate(last["dense"], size=size, mode="bilinear", align_corners=False)
    on_hands = (targets["seg"] > 0)[:, None].expand_as(dense)
    terms.add("dense", _smooth_l1(dense, targets["dense"], on_hands))
    right, left = placed_meshes(last)
    pair = both.to(right.dtype)
    with torch.set_grad_enabled(torch.is_grad_enabled() and w["occupancy"] > 0):
        occ = intersection_loss(last["joints"][:, 1] - last["offset"][:, None], last["joints"][:, 0], occupancy_net,
                                points="mesh", verts_left=left, verts_right=right, reduction="none")
        terms.add("occupancy", (occ * pair).sum() / pair.sum().clamp_min(1))
    with torch.set_grad_enabled(torch.is_grad_enabled() and w["penetration"] > 0):
        pen = mutual_penetration(right, faces[0], left, faces[1])
        terms.add("penetration", (pen.to(pair) * pair).sum() / pair.sum().clamp_min(1))
    return terms.total(w, right.device)


# ---- hand-object reconstruction (HandObjectNet) ---------------------------------------------------

#: The hand-object network's loss weights. ``penetration`` is the exact SDF loss (both ways);
#: ``--loss penetration=0`` trains the ablation's model without it.
HANDOBJECT_WEIGHTS = {"joints_3d": 10.0, "verts_3d": 10.0, "joints_2d": 10.0, "object": 10.0, "seg": 0.5,
                      "penetration": 100.0, "contact": 10.0}
CONTACT_DISTANCE = 0.01  # metres: hand vertices this close to the object are attracted (ObMan's 1 cm)


def object_template(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The object's template mesh in its own frame, ``[B, Vo, 3]``: the posed ``object_verts``
    moved back by ``object_pose`` (``R^T (v - t)``)."""
    pose = batch["object_pose"]
    return (batch["object_verts"] - pose[:, None, :, 3]) @ pose[:, :, :3]


def handobject_targets(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The hand-object network's inputs and targets from a batch of hand-object samples (the hand
    in slot 0): root-relative joints, vertices and posed object vertices (the wrist as root),
    normalized 2D joints in [-1, 1], the template (:func:`object_template`) and which of its
    vertices are real (not padding copies of vertex 0), the hand and object masks."""
    size = batch["image"].shape[-1]
    root = batch["joints_3d"][:, 0, :1]
    template = object_template(batch)
    real = (template != template[:, :1]).any(-1)
    real[:, 0] = True
    return {"image": batch["image"], "template": template, "object_class": batch["object_class"],
            "joints": batch["joints_3d"][:, 0] - root, "verts": batch["verts"][:, 0] - root,
            "joints_uv": batch["joints_2d"][:, 0] / size * 2 - 1, "joints_valid": batch["joints_valid"][:, 0],
            "hand_valid": batch["hand_valid"][:, 0], "object_verts": batch["object_verts"] - root,
            "object_faces": batch["object_faces"], "object_real": real,
            "hand_mask": (batch["mask"] == 1).float(), "object_mask": (batch["mask"] == 3).float()}


def hand_object_penetration(hand_verts: torch.Tensor, hand_faces: torch.Tensor, object_verts: torch.Tensor,
                            object_faces: torch.Tensor, object_real: torch.Tensor) -> torch.Tensor:
    """``[B]``: the exact SDF penetration both ways, in metres, differentiable in both meshes:
    the mean over the hand's vertices and face centroids of ``max(-sdf, 0)`` in the object, plus
    the mean over the object's real vertices (``object_real [B, Vo]``) of the same in the hand
    (:func:`handgeom.ops.penetration_loss`, computed in float32)."""
    hand, obj = hand_verts.float(), object_verts.float()
    into_object = penetration_loss(surface_points(hand, hand_faces, 1), obj, object_faces, reduction="none").mean(1)
    into_hand = penetration_loss(obj, hand, hand_faces, reduction="none")
    real = object_real.to(into_hand.dtype)
    return into_object + (into_hand * real).sum(1) / real.sum(1).clamp_min(1)


def contact_loss(hand_verts: torch.Tensor, object_verts: torch.Tensor, object_faces: torch.Tensor,
                 distance: float = CONTACT_DISTANCE) -> torch.Tensor:
    """``[B]``: ObMan's attraction: the mean of ``t tanh(d / t)`` (``t = distance``) over the hand
    vertices outside the object within ``distance`` of its surface (``d``: their distance to it),
    0 for a hand with none; differentiable in both meshes (float32)."""
    sdf, _, _ = signed_distance(hand_verts.float(), object_verts.float(), object_faces)
    near = ((sdf > 0) & (sdf < distance)).detach()
    pulled = torch.where(near, distance * torch.tanh(sdf / distance), torch.zeros_like(sdf))
    return pulled.sum(1) / near.sum(1).clamp_min(1)


def handobject_loss(outputs: list[dict[str, torch.Tensor]], targets: dict[str, torch.Tensor], hand_faces: torch.Tensor,
                    weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The hand-object network's loss summed over its estimates, and each term.

    Terms (:data:`HANDOBJECT_WEIGHTS`), on every estimate: SmoothL1 of the root-relative hand
    joints and vertices (metres / 0.15), of the normalized 2D joints, and the object pose as the
    vertex-space SmoothL1 of the posed template (/ 0.15, real vertices); on the refined estimate:
    the two masks' binary cross-entropy (each stream's head, upsampled to the image), the exact
    SDF penetration both ways (:func:`hand_object_penetration`) and the contact attraction
    (:func:`contact_loss`). A term with weight 0 is computed and returned (detached) for the logs.
    ``targets``: :func:`handobject_targets`.
    """
    w = _loss_weights("handobject_loss", HANDOBJECT_WEIGHTS, weights)
    hand, joint = targets["hand_valid"], targets["joints_valid"]
    terms = _Terms()
    for out in outputs:
        for name, value in _pose_terms(out, targets, joint, hand).items():
            terms.add(name, value)
        terms.add("object", _smooth_l1(out["object_verts"] / DIR_LENGTH, targets["object_verts"] / DIR_LENGTH,
                                 targets["object_real"]))
    last = outputs[-1]
    size = targets["hand_mask"].shape[-2:]
    bce = lambda logits, mask: F.binary_cross_entropy_with_logits(
        F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0], mask, reduction="none").mean((1, 2))
    terms.add("seg", (bce(last["hand_seg"], targets["hand_mask"]) + bce(last["object_seg"], targets["object_mask"])).mean())
    with torch.set_grad_enabled(torch.is_grad_enabled() and w["penetration"] > 0):
        pen = hand_object_penetration(last["verts"], hand_faces, last["object_verts"], targets["object_faces"],
                                      targets["object_real"])
        terms.add("penetration", _masked_mean(pen[:, None], hand))
    with torch.set_grad_enabled(torch.is_grad_enabled() and w["contact"] > 0):
        terms.add("contact", _masked_mean(contact_loss(last["verts"], last["object_verts"], targets["object_faces"])[:, None], hand))
    return terms.total(w, last["joints"].device)


# ---- SiaPose (SIA-GCN, BMVC 2020): 2D hand pose from heatmaps -------------------------------------

SIAPOSE_WEIGHTS = {"preliminary": 1.0, "refined": 1.0}


def single_hand_2d(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(joints_2d [B, 21, 2], valid [B, 21])`` of the one hand of each sample of a single-hand
    batch (its slot by ``hand_valid``: the right slot, or the left when only it holds a hand)."""
    slot = (batch["hand_valid"][:, 1] & ~batch["hand_valid"][:, 0]).long()
    rows = torch.arange(slot.shape[0], device=slot.device)
    valid = batch["joints_valid"][rows, slot] & batch["hand_valid"][rows, slot, None]
    return batch["joints_2d"][rows, slot], valid


def heatmap_targets(joints_2d: torch.Tensor, size: tuple[int, int], stride: int, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian heatmaps ``[B, K, H, W]`` with peak 1 at each joint: ``joints_2d [B, K, 2]`` image
    pixels (centres at +0.5) map to heatmap pixels ``p / stride - 0.5`` (centres at integers, as
    :func:`~handgeom.models.siagcn.heatmap_keypoints` reads them); ``sigma`` in heatmap pixels
    (SIA-GCN: 1)."""
    height, width = size
    centre = joints_2d / stride - 0.5
    ys = torch.arange(height, dtype=joints_2d.dtype, device=joints_2d.device)
    xs = torch.arange(width, dtype=joints_2d.dtype, device=joints_2d.device)
    dx2 = (xs - centre[..., :1]) ** 2  # [B, K, W]
    dy2 = (ys - centre[..., 1:]) ** 2  # [B, K, H]
    return torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma ** 2))


def heatmap_loss(heatmaps: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Squared error summed over each valid joint's map, averaged over the valid joints of the
    batch (``valid [B, K]``); 0 without one."""
    per_joint = (heatmaps - targets).pow(2).sum((-2, -1))
    return (per_joint * valid).sum() / valid.sum().clamp_min(1)


def siapose_loss(outputs: dict, targets: torch.Tensor, valid: torch.Tensor,
                 weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SiaPose's loss and its terms: :func:`heatmap_loss` of the preliminary estimator's every
    stage (summed: CPM's intermediate supervision) and of the refined heatmaps, each weighed by
    ``weights`` (default :data:`SIAPOSE_WEIGHTS`). A zero weight leaves its term out of the
    graph (reported, but no gradient, not even zeros): the stage-wise phases train one part."""
    weights = {**SIAPOSE_WEIGHTS, **(weights or {})}
    terms = {"preliminary": sum(heatmap_loss(h, targets, valid) for h in outputs["stages"]),
             "refined": heatmap_loss(outputs["heatmaps"], targets, valid)}
    total = sum(weights[k] * v for k, v in terms.items() if weights[k] > 0)
    if not torch.is_tensor(total):  # every weight zero
        total = outputs["heatmaps"].sum() * 0
    return total, {k: v.detach() for k, v in terms.items()}
