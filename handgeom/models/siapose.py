"""SiaPose (SIA-GCN, BMVC 2020): a preliminary 2D pose network's 21 heatmaps refined on the hand
graph by per-edge 2D kernels (:class:`~handgeom.models.siagcn.SiaPoseHead`).

``SiaPose(preset)(images [B, 3, S, S] in [0, 1])`` returns a dict:

- ``preliminary`` ``[B, 21, H, W]``: the preliminary estimator's heatmaps (its last stage), and
  ``stages``: every stage's (CPM's intermediate supervision; one entry for the ResNet estimator);
- ``heatmaps`` ``[B, 21, H, W]``: the refined heatmaps (the heads fused by the pointer network's
  weights ``head_weights [B, M]``);
- ``keypoints`` / ``preliminary_keypoints`` ``[B, 21, 2]``: their argmax, and
  ``keypoints_soft``: the refined soft-argmax, in image pixels (the centre of pixel ``(i, j)`` at
  ``(j + 0.5, i + 0.5)``, the datasets' convention).

The preliminary estimator is "any 2D pose network that outputs 21 confidence maps" (the paper):
``cpm``, a six-stage Convolutional Pose Machine (Wei et al. 2016) with each 7x7 convolution
replaced by three 3x3, as the paper uses it (368² input, 46² maps); or ``resnet``, handgeom's
ResNet with a deconvolution head (Xiao et al. 2018), the ``cpu`` preset. The pointer network that
weighs the heads sees a ResNet-18's stride-32 features: its own ResNet-18 for ``cpm`` (the
paper's), the estimator's own backbone for ``resnet`` (which is a ResNet-18).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from handgeom._checks import Checker
from handgeom.models.backbone import ResNet, conv_bn_relu, norm2d
from handgeom.models.pretrained import WEIGHTS, load_pretrained, resolve_preset
from handgeom.models.siagcn import SiaPoseHead, heatmap_keypoints

__all__ = ["SiaPoseConfig", "PRESETS", "SiaPose", "CPM", "DeconvPose", "PRETRAINED"]

PRETRAINED = WEIGHTS / "siapose_cpu.pt"
NUM_JOINTS = 21


@dataclass(frozen=True)
class SiaPoseConfig:
    """An architecture: presets are data (see :data:`PRESETS`)."""

    estimator: str = "cpm"  # "cpm" or "resnet"
    image_size: int = 368
    width: int = 128  # CPM's stage channels; the ResNet's width for "resnet"
    cpm_stages: int = 6
    kernel_size: int = 45  # the SIA-GCN kernels (45 on 46x46 heatmaps in the paper)
    layers: int = 5
    heads: int = 10
    norm: str = "batch"


PRESETS = {
    "paper": SiaPoseConfig(),
    # trains on 2 CPU cores: a narrow ResNet-18 with a deconvolution head on 128² crops (32² maps),
    # 4 heads of 3 layers with 9x9 kernels
    "cpu": SiaPoseConfig(estimator="resnet", image_size=128, width=32, kernel_size=9, layers=3, heads=4, norm="group"),
    # smoke tests
    "tiny": SiaPoseConfig(estimator="resnet", image_size=64, width=8, kernel_size=5, layers=2, heads=2, norm="group"),
}


def _triple(cin: int, cout: int, norm: str) -> nn.Sequential:
    """A 7x7 receptive field as three 3x3 convolutions (the paper's change to CPM)."""
    return nn.Sequential(conv_bn_relu(cin, cout, norm=norm), conv_bn_relu(cout, cout, norm=norm),
                         conv_bn_relu(cout, cout, norm=norm))


class CPM(nn.Module):
    """A Convolutional Pose Machine: VGG-style features at stride 8, a first stage of belief maps
    from the features, and ``stages - 1`` stages that refine the previous beliefs with the features
    (five "7x7" convolutions, each three 3x3, then two 1x1). Returns every stage's maps."""

    stride = 8

    def __init__(self, width: int = 128, stages: int = 6, joints: int = NUM_JOINTS, norm: str = "batch"):
        super().__init__()
        pool = nn.MaxPool2d(2)
        c = conv_bn_relu
        self.features = nn.Sequential(c(3, 64, norm=norm), c(64, 64, norm=norm), pool,
                                      c(64, 128, norm=norm), c(128, 128, norm=norm), pool,
                                      c(128, 256, norm=norm), c(256, 256, norm=norm), c(256, 256, norm=norm), pool,
                                      c(256, 512, norm=norm), c(512, 512, norm=norm), c(512, width, norm=norm))
        self.first = nn.Sequential(c(width, width, norm=norm), c(width, width, norm=norm),
                                   c(width, 512, kernel=1, norm=norm), nn.Conv2d(512, joints, 1))
        self.refine = nn.ModuleList(
            nn.Sequential(_triple(width + joints, width, norm), *[_triple(width, width, norm) for _ in range(4)],
                          c(width, width, kernel=1, norm=norm), nn.Conv2d(width, joints, 1))
            for _ in range(stages - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.features(x)
        beliefs = [self.first(features)]
        for stage in self.refine:
            beliefs.append(stage(torch.cat([features, beliefs[-1]], 1)))
        return beliefs


class DeconvPose(nn.Module):
    """A ResNet and three stride-2 deconvolutions to stride-4 heatmaps (Xiao et al., "Simple
    Baselines", 2018). ``forward`` returns ``([heatmaps], stride-32 features)``."""

    stride = 4

    def __init__(self, depth: int = 18, width: int = 32, joints: int = NUM_JOINTS, norm: str = "batch"):
        super().__init__()
        self.backbone = ResNet(depth, width, norm=norm)
        channels, layers = self.backbone.channels[3], []
        for _ in range(3):
            layers += [nn.ConvTranspose2d(channels, 2 * width, 4, 2, 1, bias=False), norm2d(2 * width, norm), nn.ReLU(inplace=True)]
            channels = 2 * width
        self.deconv = nn.Sequential(*layers, nn.Conv2d(channels, joints, 1))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        top = self.backbone(x)[3]
        return [self.deconv(top)], top


class SiaPose(nn.Module):
    """SiaPose: a preliminary estimator, the SIA-GCN heads and the pointer network (see the
    module docstring for the output).

    Args:
        preset: ``"paper"`` (CPM, 368², 45x45 kernels, 5 layers, 10 heads), ``"cpu"`` (ResNet-18
            of width 32 with deconvolutions, 128², 9x9 kernels, 3 layers, 4 heads, group norm),
            ``"tiny"`` (smoke tests), or a :class:`SiaPoseConfig`.

    Attribute ``detach`` (default False): the head sees the preliminary heatmaps and the pointer's
    features detached, so that a loss of the refined heatmaps trains the head only (the paper's
    stage-wise training; the trainer sets it per phase).
    """

    def __init__(self, preset: str | SiaPoseConfig = "cpu"):
        super().__init__()
        preset = resolve_preset("SiaPose", preset, PRESETS)
        cfg = self.config = preset
        if cfg.estimator == "cpm":
            self.estimator = CPM(cfg.width, cfg.cpm_stages, norm=cfg.norm)
            self.pointer_backbone = ResNet(18, norm=cfg.norm)
            pointer_channels = self.pointer_backbone.channels[3]
        elif cfg.estimator == "resnet":
            self.estimator = DeconvPose(18, cfg.width, norm=cfg.norm)
            self.pointer_backbone = None  # the estimator's ResNet-18
            pointer_channels = self.estimator.backbone.channels[3]
        else:
            raise ValueError(f"SiaPose: estimator must be 'cpm' or 'resnet', got {cfg.estimator!r}")
        multiple = 8 if cfg.estimator == "cpm" else 32  # whole maps at the estimator's strides
        if cfg.image_size % multiple:
            raise ValueError(f"SiaPose: image_size must be a multiple of {multiple} for the {cfg.estimator} estimator, "
                             f"got {cfg.image_size}")
        self.image_size, self.stride = cfg.image_size, self.estimator.stride
        self.head = SiaPoseHead(pointer_channels, cfg.heads, cfg.kernel_size, cfg.layers)
        self.detach = False
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def pretrained(cls, device: torch.device | str | None = None, path: str | Path | None = None) -> "SiaPose":
        """The network shipped with handgeom (``handgeom/weights/siapose_cpu.pt``: the ``cpu``
        preset trained on :class:`~handgeom.datasets.SyntheticSingleHand`), or the weights at
        ``path`` (``handgeom export siapose``), in eval mode, with its training record as
        ``net.record``. It expects ``net.image_size`` square crops in [0, 1]."""
        return load_pretrained(cls, PRETRAINED if path is None else Path(path), "siapose", device)

    def to_image(self, keypoints: torch.Tensor) -> torch.Tensor:
        """Heatmap pixels (centres at integers) to image pixels (centres at +0.5)."""
        return (keypoints + 0.5) * self.stride

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        ck = Checker("SiaPose")
        ck.tensor(images, "images", ("B", 3, "H", "W"), like=self.mean)
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            ck.fail(f"images must be {self.image_size}x{self.image_size} (the preset's crop), got "
                    f"{images.shape[-2]}x{images.shape[-1]}")
        x = (images - self.mean) / self.std
        if self.pointer_backbone is None:
            stages, features = self.estimator(x)
        else:
            stages, features = self.estimator(x), self.pointer_backbone(x)[3]
        preliminary = stages[-1]
        if self.detach:
            preliminary_in, features = preliminary.detach(), features.detach()
        else:
            preliminary_in = preliminary
        refined = self.head(preliminary_in, features)
        return {"stages": stages, "preliminary": preliminary, "heatmaps": refined["heatmaps"],
                "head_weights": refined["head_weights"],
                "keypoints": self.to_image(heatmap_keypoints(refined["heatmaps"])),
                "keypoints_soft": self.to_image(heatmap_keypoints(refined["heatmaps"], soft=True)),
                "preliminary_keypoints": self.to_image(heatmap_keypoints(preliminary))}
