"""Multi-plane joint-to-feature projection (DIR, ICCV 2023) and joint feature sampling."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from handgeom._checks import Checker

__all__ = ["bone_plane_projection", "bone_plane_conv", "sample_joint_features"]

Profile = Literal["hard", "gaussian"]


def _bones(bones, device: torch.device) -> torch.Tensor:
    """The bone pairs as an int64 tensor (a list, or a narrower integer tensor, accepted)."""
    if not isinstance(bones, torch.Tensor):
        bones = torch.as_tensor(bones, device=device)
    return bones.long() if bones.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8) else bones


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
            ``grid_sample(align_corners=False)``. Joints outside the image are allowed, up to
            ``|u|, |v| <= 2^20`` (finite; beyond, the float32 pixel geometry would overflow).
        joint_feat: ``[B, J, C]``, same dtype and device as ``joint_uv``. Pixels outside every
            bone's mask are 0 whatever the features, NaN included; inside, NaN features give NaN.
        bones: ``[P, 2]`` integer (parent, child) joint indices in ``[0, J)``; parent == child
            is a single joint (a point plane).
        size: output ``(H, W)`` or ``S`` for ``(S, S)``, integers.
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
    ck = Checker("bone_plane_projection")
    height, width = _size(ck, size)
    ck.choice(profile, "profile", ("hard", "gaussian"))
    bones = _bones(bones, joint_uv.device)
    radius = ck.real(radius, "radius")  # a number here; positive: the op checks
    sigma = radius if sigma is None else ck.real(sigma, "sigma")
    return torch.ops.handgeom.bone_plane_projection(joint_uv, joint_feat, bones, height, width, radius, profile, sigma)


def _size(ck: Checker, size) -> tuple[int, int]:
    """``size`` as ``(H, W)``: an integer S for ``(S, S)``, or a pair of integers."""
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            ck.fail(f"size must be an integer or a pair (H, W), got {tuple(size)}")
        return ck.integer(size[0], "size[0]"), ck.integer(size[1], "size[1]")
    side = ck.integer(size, "size")
    return side, side


@torch.library.register_fake("handgeom::bone_plane_projection")
def _projection_fake(joint_uv, joint_feat, bones, height, width, radius, profile, sigma):
    # The shape and option checks of csrc/projection/projection.cpp (not the value checks: fake
    # tensors have no values), so that a compiled graph fails where the eager op would.
    ck = Checker("bone_plane_projection")
    ck.tensor(joint_uv, "joint_uv", ("B", "J", 2))
    ck.tensor(joint_feat, "joint_feat", ("B", "J", None), like=joint_uv)
    ck.tensor(bones, "bones", (None, 2), kind=None)
    if bones.dtype != torch.long or bones.device != joint_uv.device:
        ck.fail(f"bones must be int64 on the device of joint_uv, got {bones.dtype} on {bones.device}", TypeError)
    if not (1 <= height <= 1 << 20 and 1 <= width <= 1 << 20):
        ck.fail(f"size must lie in [1, 1048576], got ({height}, {width})")
    ck.real(radius, "radius", positive=True)
    ck.choice(profile, "profile", ("hard", "gaussian"))
    if profile == "gaussian":
        ck.real(sigma, "sigma", positive=True)
    channels, planes = joint_feat.shape[2], bones.shape[0]
    return joint_uv.new_empty((joint_uv.shape[0], planes * channels, height, width))


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


def bone_plane_conv(
    joint_uv: torch.Tensor,
    joint_feat: torch.Tensor,
    bones: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    size: int | tuple[int, int],
    radius: float = 1.0,
    profile: Profile = "hard",
    sigma: float | None = None,
) -> torch.Tensor:
    r"""The multi-plane projection followed by a convolution, fused: DIR's fusion layer without
    its planes.

    Equals ``F.conv2d(bone_plane_projection(joint_uv, joint_feat, bones, size, radius, profile,
    sigma), weight, bias, padding=k // 2)`` (up to floating-point rounding: the sums run in
    another order), but never builds the ``[B, P*C, H, W]`` planes. By linearity, with
    :math:`m_a = m w_a`, :math:`m_b = m w_b` the projection's endpoint weights of bone
    :math:`p = (a, b)` at pixel :math:`s` and :math:`W_{p,t}` the ``[O, C]`` slice of the weight
    for plane p and tap :math:`t = (dy, dx)`:

    .. math::
        \mathrm{out}[o, q] = \mathrm{bias}[o] + \sum_p \sum_t m_{a,p}(q + d_t) (W_{p,t} f_a)_o
        + m_{b,p}(q + d_t) (W_{p,t} f_b)_o, \quad d_t = (dy - k/2, dx - k/2)

    The tap products :math:`W_{p,t} f_a`, :math:`W_{p,t} f_b` are computed once per sample and
    bone; then each pixel within a mask's reach adds two scaled ``O``-vectors per tap.

    Work (multiply-adds; :math:`N` = lit (pixel, bone) pairs of the batch, summed over samples):

    * dense path: the convolution alone is :math:`B\,O\,P C\,k^2 H W` forward, and twice that
      backward (input and weight gradients);
    * fused forward: :math:`2 B P C k^2 O` (tap products) :math:`+ 2 N k^2 O` (pixels);
    * fused backward: :math:`4 N k^2 O` (pixels: tap gradients and the mask gradients), and
      :math:`2 B P C k^2 O` each for the tap products (recomputed rather than kept from the
      forward), the weight's and the features' gradients.

    The tap products are :math:`HW/2` times cheaper than the dense convolution, the pixel
    terms :math:`C / (2\phi)` times, with :math:`\phi = N / (B P H W)` the lit fraction
    (2-5% in DIR). At DIR's 32x32 stage (B=16, P=40, C=64, O=256, k=3, r=2) the dense
    convolution is 96.6 GMAC forward and 193 GMAC backward; the fused op 0.19 GMAC of tap
    products plus about 0.1 GMAC of pixel work forward, about 0.7 GMAC backward (the README's
    benchmark table counts N).

    Args:
        joint_uv, joint_feat, bones, size, radius, profile, sigma: as
            :func:`bone_plane_projection` (``size``, ``radius``, ``profile``, ``sigma`` by
            keyword).
        weight: ``[O, P*C, k, k]``, k odd, same dtype and device as ``joint_uv``; input channel
            ``p*C + c`` is channel c of bone p's plane (the projection's order). Any strides.
        bias: ``[O]`` or None.

    Returns:
        ``[B, O, H, W]``.

    Gradients flow to ``joint_uv`` (through the endpoint weights, and through the mask for the
    Gaussian profile), ``joint_feat``, ``weight`` and ``bias``. CPU and CUDA, float32 and
    float64. Beyond the output (and the weight's gradient), scratch memory is one group of
    bones' masks, relaid-out weight and tap products (both passes take the bones a few at a
    time, 16 and 4 MiB of scratch on the CPU), and in the backward, unless the incoming gradient is
    channels-last, a channels-last copy of it, 64 channels at a time on the CPU. Nothing but the
    inputs is kept from the forward for the backward. The backward is a deterministic gather (each
    output element owned by one task), on CUDA too (no atomics).
    """
    ck = Checker("bone_plane_conv")
    height, width = _size(ck, size)
    ck.choice(profile, "profile", ("hard", "gaussian"))
    bones = _bones(bones, joint_uv.device)
    ck.tensor(weight, "weight", (None, None, None, None))
    if bias is not None:
        ck.tensor(bias, "bias", (None,))
    radius = ck.real(radius, "radius")
    sigma = radius if sigma is None else ck.real(sigma, "sigma")
    return torch.ops.handgeom.bone_plane_conv(joint_uv, joint_feat, bones, weight, bias, height, width, radius, profile,
                                              sigma)


@torch.library.register_fake("handgeom::bone_plane_conv")
def _conv_fake(joint_uv, joint_feat, bones, weight, bias, height, width, radius, profile, sigma):
    _projection_fake(joint_uv, joint_feat, bones, height, width, radius, profile, sigma)
    ck = Checker("bone_plane_conv")
    planes = bones.shape[0] * joint_feat.shape[2]
    _check_weight_fake(ck, weight, planes, joint_uv)
    if bias is not None:
        ck.tensor(bias, "bias", (weight.shape[0],), like=joint_uv)
    return joint_uv.new_empty((joint_uv.shape[0], weight.shape[0], height, width))


def _check_weight_fake(ck: Checker, weight, planes: int, joint_uv) -> None:
    ck.tensor(weight, "weight", (None, planes, "k", "k"), like=joint_uv)
    if weight.shape[2] % 2 != 1:
        ck.fail(f"weight must have a square kernel of odd size k ([O, P*C, k, k], k odd), got {list(weight.shape)}")


@torch.library.register_fake("handgeom::bone_plane_conv_backward")
def _conv_backward_fake(grad_out, joint_uv, joint_feat, bones, weight, height, width, radius, profile, sigma):
    return torch.empty_like(joint_uv), torch.empty_like(joint_feat), torch.empty_like(weight,
                                                                                       memory_format=torch.contiguous_format)


def _conv_setup_context(ctx, inputs, output):
    joint_uv, joint_feat, bones, weight, bias, *ctx.options = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(joint_uv, joint_feat, bones, weight)


def _conv_backward(ctx, grad_out):
    joint_uv, joint_feat, bones, weight = ctx.saved_tensors
    grad_uv, grad_feat, grad_weight = torch.ops.handgeom.bone_plane_conv_backward(
        grad_out, joint_uv, joint_feat, bones, weight, *ctx.options
    )
    grad_bias = grad_out.sum((0, 2, 3)) if ctx.has_bias else None
    return grad_uv, grad_feat, None, grad_weight, grad_bias, None, None, None, None, None


torch.library.register_autograd("handgeom::bone_plane_conv", _conv_backward, setup_context=_conv_setup_context)


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
    (benchmarks/bench_projection.py), which a fused kernel would not remove. ``feat`` must be
    floating point with ``H, W >= 1``; NaN joints give NaN features.
    """
    ck = Checker("sample_joint_features")
    ck.tensor(feat, "feat", ("B", "C", "H", "W"))
    if feat.shape[2] == 0 or feat.shape[3] == 0:
        ck.fail(f"feat must have H, W >= 1, got [B, C, H, W] = {list(feat.shape)}")
    ck.tensor(joint_uv, "joint_uv", ("B", "J", 2), like=feat)
    sampled = F.grid_sample(feat, joint_uv.unsqueeze(2), mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.squeeze(3).transpose(1, 2)
