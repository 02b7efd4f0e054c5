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


def bone_plane_conv(joint_uv, joint_feat, bones, weight, bias=None, size=None, radius=1.0, profile="hard", sigma=None,
                    projection=None):
    """The dense path of handgeom.ops.bone_plane_conv: the planes built (by the brute-force
    projection above, or by ``projection``, e.g. handgeom's), then a zero-padded conv2d."""
    projection = projection or bone_plane_projection
    planes = projection(joint_uv, joint_feat, bones, size, radius, profile, sigma)
    return torch.nn.functional.conv2d(planes, weight, bias, padding=weight.shape[-1] // 2)


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


def _in_chunks(fn):
    """Applies fn(points, ...) to chunks of points (the brute-force references are [N, F] wide)."""
    def chunked(points, *args):
        size = max(1, 2_000_000 // max(1, args[-1].shape[0]))
        parts = [fn(points[i:i + size], *args) for i in range(0, points.shape[0], size)]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(p) for p in zip(*parts))
        return torch.cat(parts) if parts else fn(points, *args)
    return chunked


@_in_chunks
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


def _segment_distance2(p, a, b):
    """Squared distance from points p [N, 1, 3] to segments ab [1, F, 3]."""
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-300)).clamp(0, 1)
    return ((p - (a + t.unsqueeze(-1) * ab)) ** 2).sum(-1)


@_in_chunks
def point_triangle_distance(points, verts, faces):
    """Brute-force unsigned distance from every point to every triangle, min over triangles:
    the plane projection when it falls inside the triangle, else the nearest edge. Float64;
    returns (distance [N], nearest face [N])."""
    p = points.double()[:, None]  # [N, 1, 3]
    a, b, c = (verts.double()[faces[:, k]][None] for k in range(3))  # [1, F, 3]
    n = torch.linalg.cross(b - a, c - a)
    n2 = (n * n).sum(-1)
    h = ((p - a) * n).sum(-1) / n2.clamp_min(1e-300)
    q = p - h.unsqueeze(-1) * n  # projection onto the plane
    inside = n2 > 0
    for u, v in ((a, b), (b, c), (c, a)):  # q on the inner side of every edge
        inside = inside & ((torch.linalg.cross(v - u, q - u) * n).sum(-1) >= 0)
    plane = ((p - q) ** 2).sum(-1)
    edges = torch.minimum(torch.minimum(_segment_distance2(p, a, b), _segment_distance2(p, b, c)),
                          _segment_distance2(p, c, a))
    d2 = torch.where(inside, plane, edges)
    best, face = d2.min(dim=1)
    return best.sqrt(), face


def ray_triangle_hits(origins, dirs, verts, faces):
    """Brute-force first hits (Moller-Trumbore over every triangle, float64): (t [R], face [R]),
    inf and -1 for a miss. For rays in general position (not through edges or vertices)."""
    o, d = origins.double()[:, None], dirs.double()[:, None]  # [R, 1, 3]
    a, b, c = (verts.double()[faces[:, k]][None] for k in range(3))
    e1, e2 = b - a, c - a
    pv = torch.linalg.cross(d.expand(-1, e2.shape[1], -1), e2.expand(d.shape[0], -1, -1))
    det = (e1 * pv).sum(-1)
    inv = 1 / torch.where(det == 0, torch.ones_like(det), det)
    tv = o - a
    u = (tv * pv).sum(-1) * inv
    qv = torch.linalg.cross(tv, e1.expand_as(tv))
    v = (d * qv).sum(-1) * inv
    t = (e2 * qv).sum(-1) * inv
    hit = (det != 0) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = torch.where(hit, t, torch.full_like(t, float("inf")))
    best, face = t.min(dim=1)
    return best, torch.where(torch.isinf(best), -1, face)


def edge_conv2d(x, weight, edges, bias=None, aggregation="mean"):
    """The naive composition of a per-edge graph convolution: gather each edge's source map,
    depthwise conv2d with the edge's kernel, add the bias, index_add into the targets, divide by
    the in-degree. x [B, M, K, H, W], weight [M, E, kh, kw], bias [M, E] -> [B, M, K, H, W]."""
    batch, heads_x, nodes, height, width = x.shape
    heads, count, kh, kw = weight.shape
    src, tgt = edges[:, 0], edges[:, 1]
    gathered = x.expand(batch, heads, nodes, height, width)[:, :, src].reshape(batch, heads * count, height, width)
    messages = torch.nn.functional.conv2d(gathered, weight.reshape(heads * count, 1, kh, kw),
                                          padding=(kh // 2, kw // 2), groups=heads * count)
    messages = messages.reshape(batch, heads, count, height, width)
    if bias is not None:
        messages = messages + bias[None, :, :, None, None]
    out = x.new_zeros(batch, heads, nodes, height, width).index_add(2, tgt, messages)
    if aggregation == "mean":
        out = out / torch.bincount(tgt, minlength=nodes).clamp_min(1).to(x.dtype)[:, None, None]
    return out


def conditioned_mlp(x, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift):
    """The FiLM-modulated residual MLP as plain tensor algebra (handgeom.ops.conditioned_mlp)."""
    h = x @ w_in.T + b_in
    for l in range(0, w_hidden.shape[0], 2):
        a = torch.relu(scale[:, l, None] * h + shift[:, l, None]) @ w_hidden[l].T + b_hidden[l]
        h = h + torch.relu(scale[:, l + 1, None] * a + shift[:, l + 1, None]) @ w_hidden[l + 1].T + b_hidden[l + 1]
    return torch.relu(h) @ w_out + b_out


def occupancy_penalty(logits, point_weights, truncate=False):
    """sum_n w_n q(sigmoid(logit_n)) per sample, q(p) = p^2 (truncate: p^2 [p > 1/2])
    (handgeom.ops.conditioned_mlp_penalty on the logits)."""
    p = torch.sigmoid(logits)
    q = p * p * (p > 0.5) if truncate else p * p
    return (point_weights * q).sum(-1)


def signed_volume(verts: torch.Tensor, faces: torch.Tensor) -> float:
    """The volume a closed triangle mesh encloses (divergence theorem: the sum of its faces'
    tetrahedra with the origin), positive when its faces wind outward."""
    a, b, c = verts.double()[faces].unbind(1)
    return float(torch.linalg.det(torch.stack([a, b, c], 1)).sum() / 6)
