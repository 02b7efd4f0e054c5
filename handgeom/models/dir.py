"""DIR (Ren et al., ICCV 2023, "Decoupled Iterative Refinement Framework for Interacting Hands
Reconstruction from a Single RGB Image"), built from handgeom's ops and hand model.

``InteractingHandsNet(preset)(images [B, 3, S, S] in [0, 1])`` returns one dict per stage: the
initial regressor's, then each refinement stage's. A stage alternates between DIR's two spaces:

1. the visual feature map: the previous map upsampled, with a backbone skip, through a residual
   block;
2. the joint feature space: features sampled at the previous 2D joints (detached, as DIR does),
   a per-hand Conv1d with an embedding of the root-relative joints, a per-hand GCN on the hand
   skeleton, a cross-hand transformer over the 42 joint tokens, and a regressor to new hand
   parameters and offset;
3. back to the map: the joint features projected one plane per bone (DIR's
   :func:`handgeom.ops.bone_plane_projection`, 2 hands x 20 bones) and reduced by a 3x3
   convolution, the two fused in :func:`handgeom.ops.bone_plane_conv` (the planes are never
   built), then merged with the map by a residual block: the next stage's map.

Hands are handgeom :class:`~handgeom.hand.HandParams` (6D root rotation, 21 joint angles mapped
into their limits, 20 bone lengths as log-ratios to the defaults, bounded to ±ln 1.5) through
:class:`~handgeom.hand.HandModel`, where DIR uses MANO, and a weak-perspective camera per hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from handgeom._checks import Checker
from handgeom.hand import HandModel, HandParams
from handgeom.hand.skeleton import BONES, DEFAULT_BONE_LENGTHS
from handgeom.models.backbone import ResNet, conv_bn_relu, norm2d
from handgeom.models.pretrained import WEIGHTS, load_pretrained, resolve_preset
from handgeom.ops.projection import bone_plane_conv, sample_joint_features

__all__ = ["DIRConfig", "PRESETS", "InteractingHandsNet", "OFFSET_SCALE", "PARAM_SIZE", "PRETRAINED", "regressed_params",
           "decode_hand", "init_hand_regressor", "weak_perspective"]

PRETRAINED = WEIGHTS / "dir_cpu.pt"

OFFSET_SCALE = 0.15  # metres: the offset (right root - left root) is regressed divided by this
ROT, ANGLES, LENGTHS, CAMERA = 6, 21, 20, 3
PARAM_SIZE = ROT + ANGLES + LENGTHS + CAMERA  # per hand
# Bone lengths stay within 1/1.5 .. 1.5 of the defaults (a tanh of the log-ratio): unbounded, a
# regressor that cannot orient the hands yet shrinks them to points (the root-relative loss is
# smallest there) and the rotation's gradient vanishes with them.
LENGTH_RANGE = math.log(1.5)
TWO_HAND_BONES = torch.tensor(BONES + tuple((a + 21, b + 21) for a, b in BONES))  # [40, 2] over 42 joints


def regressed_params(model: HandModel, rotation: torch.Tensor, angle_logits: torch.Tensor,
                     length_logits: torch.Tensor) -> HandParams:
    """Root-relative :class:`HandParams` from a regressor's outputs ``[B, 6]``, ``[B, 21]``,
    ``[B, 20]``: the 6D rotation, joint angles mapped into ``model``'s limits by a sigmoid, bone
    lengths as bounded log-ratios to the defaults (``LENGTH_RANGE``), translation 0, scale 1."""
    lo, hi = model.limits[:, 0].to(angle_logits), model.limits[:, 1].to(angle_logits)
    defaults = torch.tensor(DEFAULT_BONE_LENGTHS, dtype=length_logits.dtype, device=length_logits.device)
    return HandParams(rotation=rotation, translation=torch.zeros_like(rotation[:, :3]),
                      bone_lengths=defaults * (LENGTH_RANGE * length_logits.tanh()).exp(),
                      angles=lo + (hi - lo) * torch.sigmoid(angle_logits), scale=torch.ones_like(rotation[:, 0]))


def weak_perspective(camera: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``points [B, N, 3]`` (root-relative) in [-1, 1] image coordinates by ``camera [B, 3]``
    (s, tx, ty): ``s * (x, y) + (tx, ty)``."""
    return camera[:, None, :1] * points[..., :2] + camera[:, None, 1:]


def decode_hand(model: HandModel, raw: torch.Tensor) -> dict:
    """One hand from its regressed vector ``raw [B, PARAM_SIZE]`` (6D rotation, angle logits,
    bone-length logits, camera): ``params``, root-relative ``joints`` and ``verts``, the positive
    weak-perspective ``camera`` ``[B, 3]`` and the projected ``joints_uv`` and ``verts_uv``."""
    params = regressed_params(model, raw[:, :ROT], raw[:, ROT:ROT + ANGLES], raw[:, ROT + ANGLES:-CAMERA])
    hand = model(params)
    camera = torch.cat([raw[:, -CAMERA:-2].exp(), raw[:, -2:]], -1)  # (s, tx, ty), a positive scale
    return {"params": params, "joints": hand.joints, "verts": hand.verts, "camera": camera,
            "joints_uv": weak_perspective(camera, hand.joints), "verts_uv": weak_perspective(camera, hand.verts)}


def init_hand_regressor(layer: nn.Linear) -> None:
    """An initial regressor from ``[C + 2]`` (:class:`AttentionPool`) to ``PARAM_SIZE`` that starts
    with mid-range angles, the back of the hand to the camera, at the attention's centroid."""
    nn.init.normal_(layer.weight, std=1e-3)
    with torch.no_grad():
        layer.bias.zero_()
        layer.bias[:ROT] = torch.tensor([1.0, 0.0, 0.0, 0.0, -1.0, 0.0])
        layer.bias[-CAMERA] = math.log(6.0)  # weak-perspective scale 6: a 0.2 m hand spans most of [-1, 1]
        layer.weight[-2:, -2:] = torch.eye(2)  # the root's image position: the attention's centroid


@dataclass(frozen=True)
class DIRConfig:
    """An architecture: presets are data (see :data:`PRESETS`)."""

    depth: int = 50  # ResNet depth
    width: int = 64  # ResNet width (64: the standard ResNet)
    image_size: int = 256
    stages: int = 2  # refinement stages, at strides 16, 8, ...
    channels: int = 256  # the refined maps' channels
    joint_dim: int = 128  # joint feature size in the GCN and the transformer
    gcn_layers: int = 4
    heads: int = 4
    blocks: int = 3  # transformer blocks
    plane_channels: int = 64  # channels of each bone plane
    resolution: str = "coarse"  # hand mesh
    norm: str = "batch"  # "batch" (the paper's) or "group" (batch-independent; see backbone.norm2d)


PRESETS = {
    "paper": DIRConfig(),
    # trains on 2 CPU cores: a narrow ResNet-18 on 128x128 crops, the paper's structure otherwise
    "cpu": DIRConfig(depth=18, width=32, image_size=128, stages=2, channels=64, joint_dim=64, heads=4, blocks=2,
                     plane_channels=16, norm="group"),
    # smoke tests: seconds per step on one core
    "tiny": DIRConfig(depth=18, width=8, image_size=64, stages=2, channels=16, joint_dim=16, heads=2, blocks=1,
                      gcn_layers=2, plane_channels=4, norm="group"),
}


class Residual(nn.Module):
    """Two 3x3 conv-norm layers with a (projected) skip connection."""

    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, cout, norm=norm), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  norm2d(cout, norm))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class AttentionPool(nn.Module):
    """A spatial attention map (conv-BN-ReLU-conv-sigmoid), the feature vector it pools, and its
    centroid ``(x, y)`` in [-1, 1]: ``[B, C + 2]``. The centroid (handgeom's addition to DIR) tells
    the regressor where the hand is, which pooled features only encode weakly."""

    def __init__(self, channels: int, norm: str = "batch"):
        super().__init__()
        self.attention = nn.Sequential(conv_bn_relu(channels, channels // 2, 1, norm=norm), nn.Conv2d(channels // 2, 1, 1),
                                       nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attention(x)
        h, w = x.shape[-2:]
        ys, xs = torch.meshgrid(*((torch.arange(n, device=x.device, dtype=x.dtype) + 0.5) * 2 / n - 1 for n in (h, w)),
                                indexing="ij")
        pooled = torch.cat([(a * x).sum((2, 3)), (a * torch.stack([xs, ys])).sum((2, 3))], 1)
        return pooled / a.sum((2, 3)).clamp_min(1e-6)


def skeleton_adjacency() -> torch.Tensor:
    """``[21, 21]`` bool: identity plus the bones, both ways."""
    adj = torch.eye(21, dtype=torch.bool)
    for a, b in BONES:
        adj[a, b] = adj[b, a] = True
    return adj


class SkeletonGCN(nn.Module):
    """GCN layers on the hand skeleton with per-node weights and a learnable adjacency over the
    identity and the bones, softmax-normalized per node: ``X' = relu(softmax(L) (X W_n) + b)``."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.register_buffer("mask", skeleton_adjacency(), persistent=False)
        self.logits = nn.Parameter(torch.zeros(layers, 21, 21))
        self.weight = nn.Parameter(torch.randn(layers, 21, dim, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(layers, 21, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 21, D]
        for layer, norm in enumerate(self.norms):
            adjacency = self.logits[layer].masked_fill(~self.mask, float("-inf")).softmax(-1)
            h = torch.einsum("bnd,nde->bne", x, self.weight[layer])
            x = x + F.relu(norm(adjacency @ h + self.bias[layer]))
        return x


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention and MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class RefinementStage(nn.Module):
    """One DIR stage (see the module docstring)."""

    def __init__(self, cfg: DIRConfig, prev_channels: int, skip_channels: int, radius: float):
        super().__init__()
        c, d = cfg.channels, cfg.joint_dim
        self.radius = radius
        self.merge = Residual(prev_channels + skip_channels, c, cfg.norm)
        self.joint_in = nn.ModuleList(nn.Conv1d(c, d, 1) for _ in range(2))
        self.position = nn.Linear(3, d)
        self.gcn = nn.ModuleList(SkeletonGCN(d, cfg.gcn_layers) for _ in range(2))
        self.token = nn.Parameter(torch.zeros(42, d))  # learned positional embedding
        self.cross = nn.Linear(3, d)  # cross-hand position: the root-relative joints +- offset / 2
        self.transformer = nn.Sequential(*(TransformerBlock(d, cfg.heads) for _ in range(cfg.blocks)))
        self.regress = nn.ModuleList(nn.Linear(21 * d + PARAM_SIZE, PARAM_SIZE) for _ in range(2))
        self.regress_offset = nn.Linear(42 * d + 3, 3)
        for layer in (*self.regress, self.regress_offset):  # a stage starts as the identity update
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.plane_features = nn.Linear(d, cfg.plane_channels)
        self.reduce = nn.Sequential(conv_bn_relu(40 * cfg.plane_channels, c, norm=cfg.norm), nn.Conv2d(c, c, 1))
        self.fuse = Residual(2 * c, c, cfg.norm)


class InteractingHandsNet(nn.Module):
    """DIR's interacting-hands network on handgeom's hand model.

    Args:
        preset: ``"paper"`` (ResNet-50, 256², 2 refinement stages, batch norm), ``"cpu"`` (a
            narrow ResNet-18 on 128² with group norm, see :data:`PRESETS`), ``"tiny"`` (smoke
            tests), or a :class:`DIRConfig`.

    ``forward(images [B, 3, S, S] in [0, 1])`` returns a list with one dict per stage (the initial
    regressor first). Each holds ``joints [B, 2, 21, 3]`` and ``verts [B, 2, V, 3]`` (root-relative
    metres, camera orientation, right hand first), ``joints_uv [B, 2, 21, 2]`` and ``verts_uv`` in
    [-1, 1] (weak-perspective projection), ``camera [B, 2, 3]`` (s, tx, ty per hand), ``offset``
    ``[B, 3]`` (right root - left root, metres), ``params`` (``[right, left]``
    :class:`HandParams`, batch ``[B]``) and ``raw`` ``[B, 2, 50]`` (the regressed parameter
    vectors). The last dict also holds ``seg`` ``[B, 3, h, w]`` logits (background, right, left)
    and ``dense`` ``[B, 3, h, w]``, at the last map's stride.
    """

    def __init__(self, preset: str | DIRConfig = "cpu"):
        super().__init__()
        preset = resolve_preset("InteractingHandsNet", preset, PRESETS)
        cfg = self.config = preset
        if not 1 <= cfg.stages <= 3:
            raise ValueError(f"InteractingHandsNet: stages must be 1 to 3 (strides 16, 8, 4), got {cfg.stages}")
        if cfg.joint_dim % cfg.heads:
            raise ValueError(f"InteractingHandsNet: joint_dim ({cfg.joint_dim}) must be a multiple of heads ({cfg.heads})")
        self.image_size = cfg.image_size
        self.backbone = ResNet(cfg.depth, cfg.width, norm=cfg.norm)
        chans = self.backbone.channels  # strides 4, 8, 16, 32
        top = chans[3]
        self.hands = nn.ModuleList(HandModel(side, cfg.resolution) for side in ("right", "left"))
        self.pool = nn.ModuleList(AttentionPool(top, cfg.norm) for _ in range(2))
        self.initial = nn.ModuleList(nn.Linear(top + 2, PARAM_SIZE) for _ in range(2))
        self.initial_offset = nn.Linear(top, 3)
        for layer in self.initial:
            init_hand_regressor(layer)
        nn.init.zeros_(self.initial_offset.weight)
        nn.init.zeros_(self.initial_offset.bias)
        radii = [1.0, 2.0, 2.0]  # DIR: 1 px at stride 16, 2 px at stride 8
        prev = top
        self.stages = nn.ModuleList()
        for k in range(cfg.stages):
            self.stages.append(RefinementStage(cfg, prev, chans[2 - k], radii[k]))
            prev = cfg.channels
        half = cfg.channels // 2
        self.seg_head = nn.Sequential(conv_bn_relu(cfg.channels, half, norm=cfg.norm), nn.Conv2d(half, 3, 1))
        self.dense_head = nn.Sequential(conv_bn_relu(cfg.channels, half, norm=cfg.norm), nn.Conv2d(half, 3, 1))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bones", TWO_HAND_BONES, persistent=False)

    @classmethod
    def pretrained(cls, device: torch.device | str | None = None, path: str | Path | None = None) -> "InteractingHandsNet":
        """The network shipped with handgeom (``handgeom/weights/dir_cpu.pt``: the ``cpu`` preset
        trained on :class:`~handgeom.datasets.SyntheticInteractingHands`), or the weights at
        ``path`` (written by ``handgeom export dir``), in eval mode, with its training record as
        ``net.record``. It expects ``net.image_size`` square crops in [0, 1]."""
        return load_pretrained(cls, PRETRAINED if path is None else Path(path), "dir", device)

    def _check(self, images: torch.Tensor) -> None:
        ck = Checker("InteractingHandsNet")
        ck.tensor(images, "images", ("B", 3, "H", "W"), kind=None)
        if not images.is_floating_point():
            ck.fail(f"images must be floating point in [0, 1] (uint8 images: divide by 255), got {images.dtype}",
                    TypeError)
        if images.dtype != self.mean.dtype and not torch.is_autocast_enabled(images.device.type):
            ck.fail(f"images must have the network's dtype {self.mean.dtype}, got {images.dtype}", TypeError)
        if not bool(torch.isfinite(images).all()):
            ck.fail("images must be finite (in [0, 1])")
        h, w = images.shape[-2:]
        if h % 32 or w % 32 or min(h, w) < 32:
            ck.fail(f"images must be at least 32 pixels and a multiple of 32 (the backbone's stride) on each side, "
                    f"got {h}x{w} (this network was built for {self.image_size})")

    def hand_output(self, raw: torch.Tensor, offset: torch.Tensor) -> dict:
        """Decodes ``raw [B, 2, 50]`` parameter vectors and the normalized ``offset [B, 3]``."""
        hands = [decode_hand(model, raw[:, slot]) for slot, model in enumerate(self.hands)]
        out = {k: torch.stack([h[k] for h in hands], 1) for k in ("joints", "verts", "camera", "joints_uv", "verts_uv")}
        return {**out, "raw": raw, "offset": offset * OFFSET_SCALE, "params": [h["params"] for h in hands]}

    def reduce_planes(self, stage: RefinementStage, uv: torch.Tensor, feats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``stage.reduce`` of the joint features' bone planes: its first 3x3 convolution fused with
        the projection (:func:`handgeom.ops.bone_plane_conv`, which never builds the 40 planes), then
        the rest of ``stage.reduce`` (norm, ReLU, 1x1 convolution) with its own weights."""
        first, rest = stage.reduce[0], stage.reduce[1:]
        conv = first[0]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # the op's dtypes
        reduced = bone_plane_conv(uv.to(dtype), feats.to(dtype), self.bones, conv.weight.to(dtype),
                                  None if conv.bias is None else conv.bias.to(dtype),
                                  size=tuple(x.shape[-2:]), radius=stage.radius).to(x.dtype)
        return rest(first[1:](reduced))

    def forward(self, images: torch.Tensor) -> list[dict]:
        self._check(images)
        maps = self.backbone((images - self.mean) / self.std)
        top = maps[3]
        raw = torch.stack([head(pool(top)) for head, pool in zip(self.initial, self.pool)], 1)
        offset = self.initial_offset(top.mean((2, 3)))
        outputs = [self.hand_output(raw, offset)]
        x = top
        for k, stage in enumerate(self.stages):
            prev = outputs[-1]
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = stage.merge(torch.cat([x, maps[2 - k]], 1))
            uv = prev["joints_uv"].detach().flatten(1, 2)  # [B, 42, 2]
            sampled = sample_joint_features(x, uv)  # [B, 42, C]
            rel = prev["joints"].detach()  # [B, 2, 21, 3]
            feats = torch.stack([stage.joint_in[s](sampled[:, 21 * s:21 * (s + 1)].transpose(1, 2)).transpose(1, 2)
                                 + stage.position(rel[:, s] / OFFSET_SCALE) for s in range(2)], 1)
            feats = torch.stack([stage.gcn[s](feats[:, s]) for s in range(2)], 1)  # [B, 2, 21, D]
            half = (prev["offset"].detach() / 2)[:, None, None]  # right root at +offset/2, left at -offset/2
            cross = torch.stack([rel[:, 0] + half[:, 0], rel[:, 1] - half[:, 0]], 1) / OFFSET_SCALE
            tokens = (feats + stage.cross(cross)).flatten(1, 2) + stage.token
            tokens = stage.transformer(tokens)  # [B, 42, D]
            per_hand = tokens.reshape(-1, 2, 21 * tokens.shape[-1])
            raw = prev["raw"] + torch.stack([stage.regress[s](torch.cat([per_hand[:, s], prev["raw"][:, s]], 1))
                                             for s in range(2)], 1)
            offset = prev["offset"] / OFFSET_SCALE + stage.regress_offset(torch.cat([tokens.flatten(1), prev["offset"] / OFFSET_SCALE], 1))
            out = self.hand_output(raw, offset)
            x = stage.fuse(torch.cat([x, self.reduce_planes(stage, out["joints_uv"].flatten(1, 2),
                                                            stage.plane_features(tokens), x)], 1))
            outputs.append(out)
        outputs[-1]["seg"] = self.seg_head(x)
        outputs[-1]["dense"] = self.dense_head(x)
        return outputs
