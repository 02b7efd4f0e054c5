"""A hand-object reconstruction network from one RGB crop (Liu, Jiang, Zhang, Wei, Hua and Chen,
NUIST: dual-stream features, D-BFAM and CFSM), built from handgeom's ops and hand model.

``HandObjectNet(preset)(images, template, object_class)`` returns two dicts: the initial
estimate and the refined one. The modules, in order:

1. Dual-stream extraction: two ResNets (:class:`~handgeom.models.backbone.ResNet`), one for the
   hand and one for the object, each merged to a stride-16 map with its own segmentation head
   (hand mask, object mask). From each map an attention-pooled vector regresses the initial hand
   (handgeom :class:`~handgeom.hand.HandParams` and a weak-perspective camera, as the DIR
   network's) and the initial object pose (6D rotation, translation relative to the hand root)
   of the given template mesh.
2. D-BFAM, the dual-branch feature augmentation: 30 graph nodes, the 21 hand joints and the 9
   object keypoints (the template's box corners and centre), with features sampled from their
   branch's map at their projections (detached positions). A contact graph links every hand node
   to every object node with the weight ``exp(-d^2 / 2 sigma^2)`` of their predicted 3D distance
   (``sigma`` learned), row-normalized with the identity, and a GCN runs on it (local contact);
   then a GCN on the hand skeleton (the global topology constraint, the DIR network's
   :class:`~handgeom.models.dir.SkeletonGCN`). The nodes guide their branch's map: projected back
   one plane per bone (hand bones; the box's 12 edges for the object) and reduced by a 3x3
   convolution, fused in :func:`handgeom.ops.bone_plane_conv`, merged by a residual block.
3. CFSM, the cross-feature supplementation: the hand map's pixels attend to the object map's and
   the reverse (each residual, pre-LayerNorm, with an embedding of the pixel position).
4. Decoders: the refined hand parameters and object pose, as residual updates of the initial ones
   from the supplemented maps and the graph nodes.

The object is given by class and template, as in HO3D and DexYCB evaluation: the class embedding
and the template's box extents condition the object branch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from handgeom._checks import Checker
from handgeom.datasets.objects import OBJECT_CLASSES
from handgeom.hand import HandModel
from handgeom.hand.kinematics import rotation_6d_to_matrix
from handgeom.hand.skeleton import BONES
from handgeom.models.backbone import ResNet, conv_bn_relu
from handgeom.models.dir import (OFFSET_SCALE, PARAM_SIZE, AttentionPool, Residual, SkeletonGCN, decode_hand,
                                 init_hand_regressor, weak_perspective)
from handgeom.models.pretrained import WEIGHTS, load_pretrained, resolve_preset
from handgeom.ops.projection import bone_plane_conv, sample_joint_features

__all__ = ["HandObjectConfig", "PRESETS", "HandObjectNet", "box_keypoints", "contact_adjacency", "BOX_EDGES"]

PRETRAINED = {True: WEIGHTS / "handobject_cpu.pt", False: WEIGHTS / "handobject_cpu_nosdf.pt"}
OBJECT_RAW = 9  # 6D rotation, translation / OFFSET_SCALE
# the box's 12 edges over the 9 keypoints (corner k has the bits (x, y, z) of k; the centre is 8)
BOX_EDGES = torch.tensor([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit])


def box_keypoints(template: torch.Tensor) -> torch.Tensor:
    """The 8 corners of each template's bounding box (corner ``k`` takes the box's upper bound on
    the axes of the bits of ``k``: x 1, y 2, z 4) and its centre: ``[B, V, 3] -> [B, 9, 3]``.
    (A padded template's copies of vertex 0 lie inside its box: they change nothing.)"""
    lo, hi = template.amin(1), template.amax(1)
    bits = torch.tensor([[(k >> axis) & 1 for axis in range(3)] for k in range(8)], dtype=template.dtype,
                        device=template.device)
    corners = lo[:, None] + bits * (hi - lo)[:, None]
    return torch.cat([corners, ((lo + hi) / 2)[:, None]], 1)


def contact_adjacency(hand: torch.Tensor, obj: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The contact graph of ``hand [B, 21, 3]`` joints and ``obj [B, 9, 3]`` keypoints:
    ``[B, 30, 30]``, the identity plus ``exp(-|h_i - o_j|^2 / 2 sigma^2)`` between every hand node
    ``i`` and object node ``j`` (both ways), each row normalized to sum 1."""
    n_hand = hand.shape[1]
    weight = torch.exp(-torch.cdist(hand, obj).square() / (2 * sigma * sigma))  # [B, 21, 9]
    adjacency = torch.diag_embed(torch.ones(hand.shape[0], n_hand + obj.shape[1], dtype=hand.dtype, device=hand.device))
    adjacency[:, :n_hand, n_hand:] = weight
    adjacency[:, n_hand:, :n_hand] = weight.transpose(1, 2)
    return adjacency / adjacency.sum(-1, keepdim=True)


@dataclass(frozen=True)
class HandObjectConfig:
    """An architecture: presets are data (see :data:`PRESETS`)."""

    depth: int = 50  # ResNet depth of each stream (the paper's MCS-ResNet50)
    width: int = 64  # ResNet width (64: the standard ResNet)
    image_size: int = 256
    channels: int = 256  # the streams' merged maps
    node_dim: int = 128  # graph node features
    gcn_layers: int = 2  # per graph (contact, skeleton)
    heads: int = 4  # cross-attention heads
    plane_channels: int = 32  # channels of each bone plane
    contact_sigma: float = 0.03  # metres: the contact graph's initial length scale
    resolution: str = "coarse"  # hand mesh
    norm: str = "batch"  # "batch" (the paper's) or "group" (batch-independent; see backbone.norm2d)


PRESETS = {
    "paper": HandObjectConfig(),
    # trains on 2 CPU cores: two narrow ResNet-18 streams on 128x128 crops, the paper's structure otherwise
    "cpu": HandObjectConfig(depth=18, width=24, image_size=128, channels=64, node_dim=64, heads=4, plane_channels=8,
                            norm="group"),
    # smoke tests
    "tiny": HandObjectConfig(depth=18, width=8, image_size=64, channels=16, node_dim=16, heads=2, gcn_layers=1,
                             plane_channels=2, norm="group"),
}


class GraphConv(nn.Module):
    """Residual GCN layers on a given (batched, row-normalized) adjacency: ``X' = X + relu(LN(A X W))``."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = x + F.relu(norm(adjacency @ linear(x)))
        return x


class CrossAttention(nn.Module):
    """``x + Attention(LN(x), LN(y), LN(y))``: one branch's tokens querying the other's."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(y)
        return x + self.attention(self.norm_q(x), kv, kv, need_weights=False)[0]


class Branch(nn.Module):
    """One stream: a ResNet, its stride-16 merged map, its segmentation head, its attention pool,
    and its guidance by the graph nodes (planes of ``bones``, fused conv, residual merge)."""

    def __init__(self, cfg: HandObjectConfig, bones: torch.Tensor):
        super().__init__()
        c = cfg.channels
        self.backbone = ResNet(cfg.depth, cfg.width, norm=cfg.norm)
        chans = self.backbone.channels
        self.merge = Residual(chans[3] + chans[2], c, cfg.norm)
        self.seg = nn.Sequential(conv_bn_relu(c, c // 2, norm=cfg.norm), nn.Conv2d(c // 2, 1, 1))
        self.pool = AttentionPool(c, cfg.norm)
        self.node_in = nn.Linear(c, cfg.node_dim)
        self.register_buffer("bones", bones, persistent=False)
        self.plane_features = nn.Linear(cfg.node_dim, cfg.plane_channels)
        self.reduce = conv_bn_relu(len(bones) * cfg.plane_channels, c, norm=cfg.norm)
        self.fuse = Residual(2 * c, c, cfg.norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x)
        top = F.interpolate(maps[3], size=maps[2].shape[-2:], mode="bilinear", align_corners=False)
        return self.merge(torch.cat([top, maps[2]], 1))

    def guided(self, x: torch.Tensor, uv: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """The map guided by its graph nodes ``[B, N, D]`` at ``uv [B, N, 2]``: the first 3x3
        convolution of ``reduce`` fused with the projection (the planes are never built)."""
        conv = self.reduce[0]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # the op's dtypes
        planes = bone_plane_conv(uv.to(dtype), self.plane_features(nodes).to(dtype), self.bones, conv.weight.to(dtype),
                                 size=tuple(x.shape[-2:]), radius=1.0).to(x.dtype)
        return self.fuse(torch.cat([x, self.reduce[1:](planes)], 1))


class HandObjectNet(nn.Module):
    """The hand-object network (see the module docstring).

    Args:
        preset: ``"paper"`` (two ResNet-50 streams, 256², batch norm), ``"cpu"`` (two narrow
            ResNet-18 streams on 128² with group norm), ``"tiny"`` (smoke tests), or a
            :class:`HandObjectConfig`.

    ``forward(images [B, 3, S, S] in [0, 1], template [B, Vo, 3], object_class [B])``: the
    object's template mesh in its own frame (metres; padded templates as the datasets give them)
    and its class index in :data:`~handgeom.datasets.objects.OBJECT_CLASSES`. Returns a list of
    two dicts, the initial estimate and the refined one, each with the hand's ``joints [B, 21, 3]``
    and ``verts [B, V, 3]`` (root-relative metres, camera orientation), ``joints_uv`` and
    ``verts_uv`` in [-1, 1] (weak perspective), ``camera [B, 3]``, ``params`` (a
    :class:`~handgeom.hand.HandParams`), ``raw [B, 50]``; and the object's ``object_rotation
    [B, 3, 3]``, ``object_translation [B, 3]`` (its frame's origin relative to the hand root),
    ``object_verts [B, Vo, 3]`` (the posed template, root-relative), ``object_keypoints
    [B, 9, 3]``, ``object_uv [B, 9, 2]`` and ``object_raw [B, 9]``. The last dict also holds
    ``hand_seg`` and ``object_seg`` ``[B, 1, h, w]`` mask logits at stride 16.
    """

    def __init__(self, preset: str | HandObjectConfig = "cpu"):
        super().__init__()
        cfg = self.config = resolve_preset("HandObjectNet", preset, PRESETS)
        if cfg.channels % cfg.heads:
            raise ValueError(f"HandObjectNet: channels ({cfg.channels}) must be a multiple of heads ({cfg.heads})")
        self.image_size = cfg.image_size
        c, d = cfg.channels, cfg.node_dim
        self.hand_model = HandModel("right", cfg.resolution)
        self.hand = Branch(cfg, torch.tensor(BONES))
        self.object = Branch(cfg, BOX_EDGES)
        self.object_code = nn.Embedding(len(OBJECT_CLASSES), c)
        self.object_extent = nn.Linear(3, c)
        self.hand_initial = nn.Linear(c + 2, PARAM_SIZE)
        init_hand_regressor(self.hand_initial)
        self.object_initial = nn.Linear(2 * c + 2, OBJECT_RAW)
        nn.init.zeros_(self.object_initial.weight)
        with torch.no_grad():  # the identity rotation at the hand root
            self.object_initial.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 0]))
        # D-BFAM
        self.node_type = nn.Parameter(torch.zeros(2, d))  # hand, object
        self.node_position = nn.Linear(3, d)
        self.node_code = nn.Linear(c, d)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(cfg.contact_sigma)))
        self.contact = GraphConv(d, cfg.gcn_layers)
        self.topology = SkeletonGCN(d, cfg.gcn_layers)
        # CFSM
        self.pixel_position = nn.Linear(2, c)
        self.hand_queries, self.object_queries = CrossAttention(c, cfg.heads), CrossAttention(c, cfg.heads)
        # decoders: residual updates, starting as the identity
        self.hand_update = nn.Linear(c + 2 + 21 * d + PARAM_SIZE, PARAM_SIZE)
        self.object_update = nn.Linear(c + 2 + 9 * d + c + OBJECT_RAW, OBJECT_RAW)
        self.hand_pool, self.object_pool = AttentionPool(c, cfg.norm), AttentionPool(c, cfg.norm)
        for layer in (self.hand_update, self.object_update):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def pretrained(cls, sdf_loss: bool = True, device: torch.device | str | None = None,
                   path: str | Path | None = None) -> "HandObjectNet":
        """The network shipped with handgeom: the ``cpu`` preset trained on
        :class:`~handgeom.datasets.SyntheticHandObject` with the SDF penetration loss
        (``handgeom/weights/handobject_cpu.pt``), or without it (``sdf_loss=False``: the
        ablation's other model), or the weights at ``path`` (``handgeom export handobject``); in
        eval mode, with its training record as ``net.record``. It expects ``net.image_size``
        square crops in [0, 1]."""
        return load_pretrained(cls, PRETRAINED[bool(sdf_loss)] if path is None else Path(path), "handobject", device)

    def _check(self, images: torch.Tensor, template: torch.Tensor, object_class: torch.Tensor) -> None:
        ck = Checker("HandObjectNet")
        ck.tensor(images, "images", ("B", 3, "H", "W"), kind=None)
        if images.dtype != self.mean.dtype and not torch.is_autocast_enabled(images.device.type):
            ck.fail(f"images must have the network's dtype {self.mean.dtype} (in [0, 1]), got {images.dtype}", TypeError)
        ck.tensor(template, "template", ("B", "V", 3), kind=None)
        if not template.is_floating_point() or template.shape[1] == 0:
            ck.fail(f"template must be a floating-point [B, V >= 1, 3] mesh, got {template.dtype} {tuple(template.shape)}")
        ck.tensor(object_class, "object_class", ("B",), kind=None)
        if object_class.dtype != torch.int64:
            ck.fail(f"object_class must be int64 class indices, got {object_class.dtype}", TypeError)
        if object_class.numel() and not bool(((object_class >= 0) & (object_class < len(OBJECT_CLASSES))).all()):
            ck.fail(f"object_class must index OBJECT_CLASSES (0 to {len(OBJECT_CLASSES) - 1}), got {object_class.tolist()}")
        if not (bool(torch.isfinite(images).all()) and bool(torch.isfinite(template).all())):
            ck.fail("images and template must be finite")
        h, w = images.shape[-2:]
        if h % 32 or w % 32 or min(h, w) < 32:
            ck.fail(f"images must be at least 32 pixels and a multiple of 32 (the backbone's stride) on each side, "
                    f"got {h}x{w} (this network was built for {self.image_size})")

    def decode(self, raw: torch.Tensor, object_raw: torch.Tensor, template: torch.Tensor, keypoints: torch.Tensor) -> dict:
        """Both meshes from the regressed vectors: the hand (``raw [B, 50]``, see
        :func:`~handgeom.models.dir.decode_hand`) and the object pose (``object_raw [B, 9]``) of
        ``template`` and its ``keypoints`` (:func:`box_keypoints`)."""
        out = decode_hand(self.hand_model, raw)
        rotation = rotation_6d_to_matrix(object_raw[:, :6])
        translation = object_raw[:, 6:] * OFFSET_SCALE
        pose = lambda x: x @ rotation.transpose(1, 2) + translation[:, None]
        out.update(raw=raw, object_raw=object_raw, object_rotation=rotation, object_translation=translation,
                   object_verts=pose(template), object_keypoints=pose(keypoints))
        out["object_uv"] = weak_perspective(out["camera"], out["object_keypoints"])
        return out

    def forward(self, images: torch.Tensor, template: torch.Tensor, object_class: torch.Tensor) -> list[dict]:
        self._check(images, template, object_class)
        x = (images - self.mean) / self.std
        fh, fo = self.hand.features(x), self.object.features(x)
        seg = {"hand_seg": self.hand.seg(fh), "object_seg": self.object.seg(fo)}  # each stream's own head
        keypoints = box_keypoints(template)
        code = self.object_code(object_class) + self.object_extent((keypoints[:, 7] - keypoints[:, 0]) / OFFSET_SCALE)
        hand_pooled = self.hand.pool(fh)
        raw = self.hand_initial(hand_pooled)
        object_raw = self.object_initial(torch.cat([self.object.pool(fo), code], 1))
        initial = self.decode(raw, object_raw, template, keypoints)

        # D-BFAM: the graph nodes at the detached initial estimate
        hand_xyz, object_xyz = initial["joints"].detach(), initial["object_keypoints"].detach()
        hand_uv, object_uv = initial["joints_uv"].detach(), initial["object_uv"].detach()
        nodes = torch.cat([self.hand.node_in(sample_joint_features(fh, hand_uv)) + self.node_type[0],
                           self.object.node_in(sample_joint_features(fo, object_uv)) + self.node_type[1]
                           + self.node_code(code)[:, None]], 1)
        nodes = nodes + self.node_position(torch.cat([hand_xyz, object_xyz], 1) / OFFSET_SCALE)
        nodes = self.contact(nodes, contact_adjacency(hand_xyz, object_xyz, self.log_sigma.exp()))
        hand_nodes, object_nodes = self.topology(nodes[:, :21]), nodes[:, 21:]
        fh, fo = self.hand.guided(fh, hand_uv, hand_nodes), self.object.guided(fo, object_uv, object_nodes)

        # CFSM: each branch's pixels query the other's
        b, c, h, w = fh.shape
        ys, xs = torch.meshgrid(*((torch.arange(n, device=x.device, dtype=fh.dtype) + 0.5) * 2 / n - 1 for n in (h, w)),
                                indexing="ij")
        position = self.pixel_position(torch.stack([xs, ys], -1).reshape(1, h * w, 2))
        th, to = fh.flatten(2).transpose(1, 2) + position, fo.flatten(2).transpose(1, 2) + position
        th, to = self.hand_queries(th, to), self.object_queries(to, th)
        fh, fo = (t.transpose(1, 2).reshape(b, c, h, w) for t in (th, to))

        raw = raw + self.hand_update(torch.cat([self.hand_pool(fh), hand_nodes.flatten(1), raw], 1))
        object_raw = object_raw + self.object_update(torch.cat([self.object_pool(fo), object_nodes.flatten(1), code,
                                                                object_raw], 1))
        return [initial, {**self.decode(raw, object_raw, template, keypoints), **seg}]
