"""Plain PyTorch reference implementations the tests compare handgeom's ops against.

Each is written from the op's mathematical definition, as directly as possible (broadcast over
everything, autograd for gradients), and shares no code with the kernels.
"""

from __future__ import annotations

import torch

# The 20 bones of the 21-joint hand (wrist 0; thumb 1-4; index 5-8; middle 9-12; ring 13-16;
# pinky 17-20), parent -> child.
HAND_BONES = [(0, 1), (1, 2), (2, 3), (3, 4)] + [
    (0 if k == 0 else base + k - 1, base + k) for base in (5, 9, 13, 17) for k in range(4)
]


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den where den > 0, with finite gradients where it is not (the value is masked)."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


def bone_plane_geometry(joint_uv, bones, size):
    """Pixel-to-bone geometry, [B, H*W, P] each: distance d to the segment and weights w_a, w_b."""
    height, width = size
    bones = torch.as_tensor(bones, dtype=torch.long)
    scale = joint_uv.new_tensor([width, height])
    joints_px = (joint_uv + 1) / 2 * scale  # [B, J, 2]
    rows = torch.arange(height, dtype=joint_uv.dtype) + 0.5
    cols = torch.arange(width, dtype=joint_uv.dtype) + 0.5
    yy, xx = torch.meshgrid(rows, cols, indexing="ij")
    x = torch.stack([xx, yy], dim=-1).reshape(1, -1, 1, 2)  # [1, HW, 1, 2]
    a = joints_px[:, bones[:, 0]].unsqueeze(1)  # [B, 1, P, 2]
    b = joints_px[:, bones[:, 1]].unsqueeze(1)
    ab = b - a
    len2 = (ab * ab).sum(-1)
    t = torch.where(len2 > 0, _safe_div(((x - a) * ab).sum(-1), len2), torch.zeros_like(len2)).clamp(0, 1)
    d = torch.linalg.vector_norm(x - (a + t.unsqueeze(-1) * ab), dim=-1)
    ra = torch.linalg.vector_norm(x - a, dim=-1)
    rb = torch.linalg.vector_norm(x - b, dim=-1)
    s = ra + rb
    half = torch.full_like(s, 0.5)
    wa = torch.where(s > 0, _safe_div(rb, s), half)
    wb = torch.where(s > 0, _safe_div(ra, s), half)
    return d, wa, wb


def mask_reach(radius, profile, sigma):
    return radius if profile == "hard" else 4 * sigma


def bone_plane_projection(joint_uv, joint_feat, bones, size, radius=1.0, profile="hard", sigma=None):
    """DIR's multi-plane projection by brute force: every pixel against every bone."""
    height, width = size
    sigma = radius if sigma is None else sigma
    bones = torch.as_tensor(bones, dtype=torch.long)
    d, wa, wb = bone_plane_geometry(joint_uv, bones, size)
    inside = (d < mask_reach(radius, profile, sigma)).to(joint_uv.dtype)
    m = inside if profile == "hard" else inside * torch.exp(-d * d / (2 * sigma**2))
    fa = joint_feat[:, bones[:, 0]].unsqueeze(1)  # [B, 1, P, C]
    fb = joint_feat[:, bones[:, 1]].unsqueeze(1)
    value = (m * wa).unsqueeze(-1) * fa + (m * wb).unsqueeze(-1) * fb  # [B, HW, P, C]
    batch, planes, channels = joint_uv.shape[0], bones.shape[0], joint_feat.shape[2]
    return value.permute(0, 2, 3, 1).reshape(batch, planes * channels, height, width)


def bilinear_sample(feat, joint_uv):
    """Bilinear sampling with zero padding, grid_sample(align_corners=False) convention."""
    batch, channels, height, width = feat.shape
    x = (joint_uv[..., 0] + 1) / 2 * width - 0.5  # continuous pixel index
    y = (joint_uv[..., 1] + 1) / 2 * height - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    out = 0
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - (x - xi).abs()) * (1 - (y - yi).abs())  # [B, J]
            valid = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            idx = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long()
            taps = torch.gather(feat.reshape(batch, channels, -1), 2, idx.unsqueeze(1).expand(-1, channels, -1))
            out = out + (w * valid).unsqueeze(1) * taps
    return out.transpose(1, 2)  # [B, J, C]


def winding_number(points, verts, faces):
    """Generalized winding number of closed triangle meshes at points (Jacobson et al. 2013):
    the sum of signed solid angles (Van Oosterom & Strackee) over 4 pi; ~1 inside, ~0 outside.
    points [N, 3], verts [V, 3], faces [F, 3]; brute force in float64."""
    tri = verts.double()[faces][None] - points.double()[:, None, None]  # [N, F, 3, 3]
    a, b, c = tri.unbind(2)
    la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
    det = (a * torch.linalg.cross(b, c)).sum(-1)
    den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return (2 * torch.atan2(det, den)).sum(-1) / (4 * torch.pi)
