"""Multi-plane joint-to-feature projection (DIR, ICCV 2023) and joint feature sampling."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["bone_plane_projection", "sample_joint_features"]

Profile = Literal["hard", "gaussian"]


def bone_plane_projection(
    joint_uv: torch.Tensor,
    joint_feat: torch.Tensor,
    bones: torch.Tensor,
    size: int | tuple[int, int],
    radius: float = 1.0,
    profile: Profile = "hard",
    sigma: float | None = None,
) -> torch.Tensor:
    r"""Projects per-joint features back into the image, one feature plane per bone.

    DIR (Interacting hands, ICCV 2023) refines joint features in 3D and writes them back into
    the 2D feature map along each bone on a plane of its own, so two overlapping hands never mix
    features ("obfuscation-free"). For bone :math:`p = (a, b)` and pixel centre :math:`x`:

    .. math::
        \mathrm{out}[p C + c, x] = m(d) \, (w_a f_{a,c} + w_b f_{b,c}), \quad
        w_a = \frac{|x - b|}{|x - a| + |x - b|}, \quad w_b = \frac{|x - a|}{|x - a| + |x - b|}

    with :math:`d` the distance from :math:`x` to segment :math:`ab` (both weights 0.5 when
    :math:`x = a = b`), and the mask :math:`m(d) = [d < \text{radius}]` (``"hard"``, DIR's
    choice) or :math:`m(d) = e^{-d^2 / 2\sigma^2}` for :math:`d < 4\sigma`, else 0
    (``"gaussian"``; the truncation keeps the op sparse).

    Args:
        joint_uv: ``[B, J, 2]`` float32/float64, joint positions in normalized image
            coordinates (u, v) = (x, y) in [-1, 1]: pixel coordinates are ``(u+1)/2*W`` and
            ``(v+1)/2*H``; pixel (row i, col j) has its centre at (j + 0.5, i + 0.5), as in
            ``grid_sample(align_corners=False)``. Joints outside the image are allowed. Must be
            finite.
        joint_feat: ``[B, J, C]``, same dtype and device as ``joint_uv``.
        bones: ``[P, 2]`` integer (parent, child) joint indices in ``[0, J)``; parent == child
            is a single joint (a point plane).
        size: output ``(H, W)`` or ``S`` for ``(S, S)``.
        radius: mask radius in pixels (hard profile).
        profile: ``"hard"`` or ``"gaussian"``.
        sigma: Gaussian width in pixels; defaults to ``radius``.

    Returns:
        ``[B, P*C, H, W]``: channel ``p*C + c`` is channel c of bone p's plane.

    Gradients flow to ``joint_feat`` and ``joint_uv`` (through the weights, and through the
    mask for the Gaussian profile; the hard mask is piecewise constant). The norm's derivative
    at zero is taken as 0. CPU and CUDA, float32 and float64; the kernel visits only pixels
    within the mask's reach of each bone and allocates no ``[B, H*W, P, C]`` intermediate.
    Backward is a deterministic gather on both devices (no atomics).
    """
    height, width = (size, size) if isinstance(size, int) else size
    if profile not in ("hard", "gaussian"):
        raise ValueError(f"bone_plane_projection: profile must be 'hard' or 'gaussian', got {profile!r}")
    if not isinstance(bones, torch.Tensor):
        bones = torch.as_tensor(bones, device=joint_uv.device)
    if bones.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        bones = bones.long()
    sigma = float(radius if sigma is None else sigma)
    return torch.ops.handgeom.bone_plane_projection(
        joint_uv, joint_feat, bones, int(height), int(width), float(radius), profile, sigma
    )


@torch.library.register_fake("handgeom::bone_plane_projection")
def _projection_fake(joint_uv, joint_feat, bones, height, width, radius, profile, sigma):
    batch, channels, planes = joint_uv.shape[0], joint_feat.shape[2], bones.shape[0]
    return joint_uv.new_empty((batch, planes * channels, height, width))


@torch.library.register_fake("handgeom::bone_plane_projection_backward")
def _projection_backward_fake(grad_out, joint_uv, joint_feat, bones, height, width, radius, profile, sigma):
    return torch.empty_like(joint_uv), torch.empty_like(joint_feat)


def _projection_setup_context(ctx, inputs, output):
    joint_uv, joint_feat, bones, *ctx.options = inputs
    ctx.save_for_backward(joint_uv, joint_feat, bones)


def _projection_backward(ctx, grad_out):
    joint_uv, joint_feat, bones = ctx.saved_tensors
    grad_uv, grad_feat = torch.ops.handgeom.bone_plane_projection_backward(
        grad_out, joint_uv, joint_feat, bones, *ctx.options
    )
    return grad_uv, grad_feat, None, None, None, None, None, None


torch.library.register_autograd(
    "handgeom::bone_plane_projection", _projection_backward, setup_context=_projection_setup_context
)


def sample_joint_features(feat: torch.Tensor, joint_uv: torch.Tensor) -> torch.Tensor:
    """Bilinearly samples a feature map at joint positions: the inverse direction of
    :func:`bone_plane_projection`.

    Args:
        feat: ``[B, C, H, W]`` feature map.
        joint_uv: ``[B, J, 2]`` normalized (u, v) in [-1, 1], the convention of
            ``grid_sample(align_corners=False)``; outside the image the map is zero-padded.

    Returns:
        ``[B, J, C]``, differentiable in both inputs.

    This is ``torch.nn.functional.grid_sample``: for J = 21-42 joints the work is a few
    thousand bilinear taps, and the measured cost is grid_sample's fixed overhead
    (benchmarks/bench_projection.py), which a fused kernel would not remove.
    """
    if feat.dim() != 4:
        raise ValueError(f"sample_joint_features: feat must have shape [B, C, H, W], got {list(feat.shape)}")
    if joint_uv.dim() != 3 or joint_uv.shape[2] != 2 or joint_uv.shape[0] != feat.shape[0]:
        raise ValueError(
            f"sample_joint_features: joint_uv must have shape [{feat.shape[0]}, J, 2], got {list(joint_uv.shape)}"
        )
    if joint_uv.dtype != feat.dtype or joint_uv.device != feat.device:
        raise ValueError(
            "sample_joint_features: joint_uv must match feat's dtype and device "
            f"({feat.dtype}, {feat.device}), got ({joint_uv.dtype}, {joint_uv.device})"
        )
    sampled = F.grid_sample(feat, joint_uv.unsqueeze(2), mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.squeeze(3).transpose(1, 2)
