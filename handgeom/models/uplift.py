"""The two-hand estimators of "Two Hands Are Better Than One" (Ivashechkin, Mendez and Bowden,
IROS 2023), on handgeom's hand model.

- :class:`TwoHandUplift`: the paper's MLP from the 2D keypoints of both hands (42 x 2, normalized
  by the crop to [-1, 1]) to two 3D hands.
- :class:`SkeletonRefiner`: the 3D-to-3D variant with which the paper fine-tuned other methods: it
  takes another method's two 3D skeletons and returns refined ones.

Both are three sub-modules, as the paper describes, each a residual MLP applied to one hand's
*view* of the pair (its own keypoints, then the other hand's):

- joint angles: the 6D global rotation and the 21 joint angles (mapped into the hand model's
  limits); the left hand is predicted as a mirrored right hand: its view is mirrored (x -> -x), the
  same weights predict a right hand, and the output is that hand mirrored back, which is exactly
  ``HandModel("left")`` with the rotation ``M R M`` (``M = diag(-1, 1, 1)``);
- bone lengths: 20 log-ratios to the default lengths, bounded (as DIR's regressor, see
  :func:`handgeom.models.dir.regressed_params`);
- the relative offset (right root - left root): each hand's view gives a vector and the offset is
  their antisymmetric combination ``(o_R - M o_L) / 2``, so that mirroring and swapping the inputs
  mirrors and swaps the outputs exactly.

The hands go through :class:`~handgeom.hand.HandModel`, so skeletons and meshes come out. Outputs
(as :class:`~handgeom.models.InteractingHandsNet`'s): ``joints [B, 2, 21, 3]`` and ``verts
[B, 2, V, 3]`` root-relative (the wrist), metres, the inputs' camera orientation, right hand first;
``offset [B, 3]`` metres; ``params``: ``[right, left]`` :class:`~handgeom.hand.HandParams`.
:func:`handgeom.losses.placed_meshes` places both hands in one frame.

Sizes (:data:`PRESETS`): ``cpu`` 0.48 M parameters (width 256, one residual block of two
layers per sub-module; trains on 2 CPU cores in minutes and wrote the shipped weights),
``paper`` 9.6 M (width 880, two blocks: the paper's 9.5 M), ``tiny`` for smoke tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from handgeom._checks import Checker
from handgeom.hand import HandModel
from handgeom.hand.kinematics import rotation_6d_to_matrix
from handgeom.models.dir import regressed_params
from handgeom.models.pretrained import WEIGHTS, load_pretrained, resolve_preset

__all__ = ["UpliftConfig", "PRESETS", "TwoHandUplift", "SkeletonRefiner", "POSITION_SCALE", "PRETRAINED",
           "swap_mirror_keypoints"]

POSITION_SCALE = 0.15  # metres: 3D inputs and the offset are divided by this (a hand's span)
PRETRAINED = {False: WEIGHTS / "two_hand_uplift.pt", True: WEIGHTS / "two_hand_uplift_intersection.pt"}
REFINER = WEIGHTS / "skeleton_refiner.pt"
ROT, ANGLES, LENGTHS = 6, 21, 20
BACK_TO_CAMERA = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # the 6D rotation the angle head starts at (as DIR's)


@dataclass(frozen=True)
class UpliftConfig:
    """An architecture (presets are data, :data:`PRESETS`)."""

    width: int = 512  # hidden width of each sub-module
    blocks: int = 2  # residual blocks (two layers each) per sub-module
    resolution: str = "coarse"  # the hand model's mesh


PRESETS = {"paper": UpliftConfig(880, 2), "cpu": UpliftConfig(256, 1), "tiny": UpliftConfig(32, 1)}


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _mlp(inputs: int, outputs: int, cfg: UpliftConfig) -> nn.Sequential:
    """A residual MLP; its last layer starts small so that the hands start near the head's bias."""
    head = nn.Linear(cfg.width, outputs)
    nn.init.normal_(head.weight, std=1e-3)
    nn.init.zeros_(head.bias)
    return nn.Sequential(nn.Linear(inputs, cfg.width), *(_Block(cfg.width) for _ in range(cfg.blocks)),
                         nn.LayerNorm(cfg.width), nn.ReLU(), head)


def swap_mirror_keypoints(x: torch.Tensor) -> torch.Tensor:
    """The mirror image of a pair of keypoint sets ``[B, 2, 21, D]`` (D = 2: normalized crop
    coordinates; D = 3: a camera frame): the first coordinate negated and the hands swapped, so
    that the right hand of the result is the mirrored left hand."""
    flip = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
    flip[0] = -1
    return (x * flip).flip(1)


class _TwoHandNet(nn.Module):
    """The three sub-modules over the hands' views (see the module docstring); subclasses give
    the views of their inputs."""

    dims: int  # coordinates per input keypoint
    where: str  # the name in error messages
    kind: str  # the training system's name for it (handgeom.train.uplift.KINDS)

    def __init__(self, preset: str | UpliftConfig = "cpu"):
        super().__init__()
        preset = resolve_preset(type(self).__name__, preset, PRESETS)
        self.config = preset
        view = 42 * self.dims
        self.angles = _mlp(view, ROT + ANGLES, preset)
        self.lengths = _mlp(view, LENGTHS, preset)
        self.offset = _mlp(view, 3, preset)
        with torch.no_grad():
            self.angles[-1].bias[:ROT] = torch.tensor(BACK_TO_CAMERA)
        self.hands = nn.ModuleList(HandModel(side, preset.resolution) for side in ("right", "left"))

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 2, 42 * dims]``: the right hand's view and the left hand's mirrored view."""
        raise NotImplementedError

    def base_offset(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3]`` metres, what the offset head's output is added to."""
        return x.new_zeros(x.shape[0], 3)

    def forward(self, x: torch.Tensor) -> dict:
        ck = Checker(self.where)
        ck.tensor(x, "keypoints", ("B", 2, 21, self.dims))
        dtype = self.offset[-1].weight.dtype
        if x.dtype != dtype:
            ck.fail(f"keypoints must have the network's dtype {dtype}, got {x.dtype}", TypeError)
        b = x.shape[0]
        views = self.views(x).flatten(0, 1)  # [2B, F]: right, mirrored left of each pair
        head = self.angles(views).view(b, 2, ROT + ANGLES)
        lengths = self.lengths(views).view(b, 2, LENGTHS)
        o = self.offset(views).view(b, 2, 3)
        flip = x.new_tensor([-1.0, 1.0, 1.0])
        offset = self.base_offset(x) + POSITION_SCALE * (o[:, 0] - flip * o[:, 1]) / 2
        out: dict = {"offset": offset, "params": [], "joints": [], "verts": []}
        m = torch.diag(flip)
        for slot, model in enumerate(self.hands):
            params = regressed_params(self.hands[0], head[:, slot, :ROT], head[:, slot, ROT:], lengths[:, slot])
            rotation = rotation_6d_to_matrix(params.rotation)
            params.rotation = rotation if slot == 0 else m @ rotation @ m  # a mirrored right hand: the left
            hand = model(params)
            out["params"].append(params)
            out["joints"].append(hand.joints)
            out["verts"].append(hand.verts)
        out["joints"], out["verts"] = torch.stack(out["joints"], 1), torch.stack(out["verts"], 1)
        return out

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> "_TwoHandNet":
        """A network from weights written by :func:`handgeom.train.export_weights` (``handgeom
        export uplift``), in eval mode, with its training record as ``net.record``."""
        return load_pretrained(cls, Path(path), "uplift", device, kind=cls.kind, where="load")

    @property
    def faces(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The right and left meshes' faces."""
        return self.hands[0].faces, self.hands[1].faces

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class TwoHandUplift(_TwoHandNet):
    """``net(keypoints [B, 2, 21, 2])``: two 3D hands from both hands' 2D keypoints (right hand
    first, handgeom's joint order, normalized crop coordinates in [-1, 1]: ``2 uv / size - 1`` for
    pixels ``uv`` of a square crop of ``size``); outputs in the module docstring.

    Args:
        preset: ``"cpu"``, ``"paper"``, ``"tiny"`` (see :data:`PRESETS`) or an :class:`UpliftConfig`.
    """

    dims = 2
    where = "TwoHandUplift"
    kind = "uplift"

    def views(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.flatten(1), swap_mirror_keypoints(x).flatten(1)], 1)

    @classmethod
    def pretrained(cls, intersection_loss: bool = False, device: torch.device | str | None = None) -> "TwoHandUplift":
        """The shipped ``cpu`` uplift, in eval mode, with its training record as ``net.record``:
        the baseline (trained on MPJPE) or, with ``intersection_loss``, its clone fine-tuned with
        the occupancy intersection loss (the setting chosen by ``python -m
        handgeom.experiments.two_hands``)."""
        if not isinstance(intersection_loss, bool):
            Checker("TwoHandUplift.pretrained").fail(
                f"intersection_loss must be a bool, got {type(intersection_loss).__name__}", TypeError)
        path = PRETRAINED[intersection_loss]
        if not path.is_file():
            raise FileNotFoundError(f"TwoHandUplift.pretrained: {path} is missing; `python -m "
                                    "handgeom.experiments.two_hands --export` writes it")
        return cls.load(path, device)


class SkeletonRefiner(_TwoHandNet):
    """``net(joints [B, 2, 21, 3])``: refined hands from another method's two 3D skeletons (right
    hand first, handgeom's joint order, metres, one camera frame with any origin); outputs in the
    module docstring, the offset predicted as a correction of the input's.

    Each hand's view is its own root-relative joints and the other hand's joints relative to the
    same root (the left hand's mirrored), divided by ``POSITION_SCALE``: the refiner sees the
    pair's relative placement, not its position.
    """

    dims = 3
    where = "SkeletonRefiner"
    kind = "refiner"

    @classmethod
    def pretrained(cls, device: torch.device | str | None = None) -> "SkeletonRefiner":
        """The shipped ``cpu`` refiner, fine-tuned with the occupancy intersection loss (mesh points,
        both hands, squared; the setting ``python -m handgeom.experiments.two_hands`` chose), in
        eval mode, with its training record as ``net.record``."""
        return cls.load(REFINER, device)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        def view(pair: torch.Tensor) -> torch.Tensor:  # relative to the first hand's root
            return ((pair - pair[:, :1, :1]) / POSITION_SCALE).flatten(1)
        return torch.stack([view(x), view(swap_mirror_keypoints(x))], 1)

    def base_offset(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0] - x[:, 1, 0]

