"""The watertight skeleton-driven hand surface (after "Two Hands Are Better Than One").

One fixed triangulation, built once per resolution in the rest pose, whose vertices are functions
of the skeleton:

- the palm is a tube from the wrist to the knuckle line, its cross-section a loop of a dorsal and
  a palmar row of ``4k + 1`` columns each; its vertices are fixed blends of the finger bases
  (so the palm follows the metacarpal lengths) plus fixed offsets, in the hand frame;
- each finger is a tube of rings of ``2k + 2`` vertices around its bones, whose first ring is the
  palm's distal loop segment between two webs; the thumb's first ring is a hole in the palm's
  radial side wall; a ring on a joint turns with the mean of its two bones' frames;
- fingertips are fans to a tip vertex on the fingertip joint, the wrist a fan to a centre vertex.

Every palm loop edge is shared by the palm and one finger, every web edge by two fingers, so the
surface is closed and 2-manifold by construction; winding is made consistent and outward once, in
the rest pose (trimesh), and faces never change with the pose.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from handgeom.hand.kinematics import local_skeleton
from handgeom.hand.skeleton import BONES, DEFAULT_BONE_LENGTHS


@dataclass(frozen=True)
class Resolution:
    k: int  # columns per finger across the palm; rings have 2k + 2 vertices
    levels: int  # palm rings from wrist (0) to knuckles (levels - 1)
    thumb_level: int  # first palm level of the thumb hole (the hole spans k + 1 levels)
    finger_rings: tuple[tuple[int, float], ...]  # (bone in chain 1-3, position s); s = 0: joint ring
    thumb_rings: tuple[tuple[int, float], ...]


RESOLUTIONS = {
    "coarse": Resolution(3, 6, 1, ((1, 0.5), (2, 0.0), (3, 0.0), (3, 0.6)),
                         ((1, 0.8), (2, 0.0), (2, 0.5), (3, 0.0), (3, 0.7))),
    "fine": Resolution(5, 8, 1, ((1, 0.25), (1, 0.5), (2, 0.0), (2, 0.5), (3, 0.0), (3, 0.4), (3, 0.75)),
                       ((1, 0.8), (2, 0.0), (2, 0.33), (2, 0.66), (3, 0.0), (3, 0.4), (3, 0.75))),
}

# Shape constants, metres, for the default adult hand (scaled with HandParams.scale).
_WRIST_HALF_WIDTH = 0.026
_WRIST_HALF_THICKNESS = 0.014
_PALM_BULGE = 0.007  # extra half-thickness at mid-palm
_FINGER_RADIUS = (0.0105, 0.0086, 0.0088, 0.0084, 0.0076)  # thumb, index, middle, ring, pinky
_TIP_TAPER = 0.75  # radius at the fingertip end relative to the base


class HandSurface(torch.nn.Module):
    """Fixed triangulation and the vertex recipe (constants in the hand frame, as buffers so the
    surface follows its model across devices):

    palm vertex i:  v = palm_coeffs[i] @ chain_bases + palm_offsets[i]
    tube vertex i:  v = J[p] + s (J[c] - J[p]) + ((1 - blend) F_b + blend F_prev) @ offset

    Both are linear in the skeleton, the 21 joints and the 60 columns of the 20 bone frames: a
    sparse ``[V, 81]`` matrix of at most 5 terms a row (``skin_index``, ``skin_weight``) plus
    ``rest_offsets [V, 3]``, which :meth:`vertices` sums term by term.
    """

    faces: torch.Tensor  # [F, 3] int64
    palm_coeffs: torch.Tensor  # [Np, 5]
    palm_offsets: torch.Tensor  # [Np, 3]
    tube_bone: torch.Tensor  # [Nt] bone index
    tube_prev: torch.Tensor  # [Nt] bone whose frame is blended in (joint rings)
    tube_s: torch.Tensor  # [Nt] position along the bone
    tube_blend: torch.Tensor  # [Nt]
    tube_offset: torch.Tensor  # [Nt, 3] in the (blended) bone frame
    tube_parent: torch.Tensor  # [Nt] joint at the bone's start
    tube_child: torch.Tensor  # [Nt] joint at the bone's end
    skin_index: torch.Tensor  # [V, T]: the skeleton rows (joints, then frame columns) of each vertex's terms
    skin_weight: torch.Tensor  # [V, T]: their weights (0 pads a row of fewer terms)
    rest_offsets: torch.Tensor  # [V, 3]: the palm offsets (0 for tube vertices)

    def __init__(self, **tensors: torch.Tensor):
        super().__init__()
        bones = torch.tensor(BONES)
        tensors.update(tube_parent=bones[tensors["tube_bone"], 0], tube_child=bones[tensors["tube_bone"], 1])
        tensors.update(_linear_recipe(**tensors))
        for name, value in tensors.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def num_verts(self) -> int:
        return self.palm_offsets.shape[0] + self.tube_offset.shape[0]

    def vertices(self, joints: torch.Tensor, frames: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Hand-frame vertices ``[..., V, 3]`` from ``local_skeleton`` output; with ``index``
        (int64 ``[n]``), only those vertices ``[..., n, 3]`` (the same bits: each is its own sum)."""
        skeleton = torch.cat([joints, frames.transpose(-1, -2).flatten(-3, -2)], -2)  # [..., 81, 3]
        # Term by term, in products and sums (no fused multiply-add): every hand gets the same bits
        # in any batch, where a matrix product rounds by the batch's width. The batch is the
        # columns, so each operation is one long contiguous loop, and each term is added as it is
        # made (one [5 V, 3 batch] intermediate was ten times slower for 256 hands).
        columns = skeleton.movedim(-2, 0).reshape(81, -1)  # [81, 3 * batch]
        rows, weight, offsets = self.skin_index, self.skin_weight, self.rest_offsets
        if index is not None:
            rows, weight, offsets = rows[index], weight[index], offsets[index]
        count, width = rows.shape
        weight = weight.to(joints)
        verts = columns.index_select(0, rows[:, 0]).mul_(weight[:, :1])
        for k in range(1, width):
            verts += columns.index_select(0, rows[:, k]).mul_(weight[:, k:k + 1])
        return verts.view(count, *skeleton.shape[:-2], 3).movedim(0, -2) + offsets.to(joints)


def _linear_recipe(palm_coeffs, palm_offsets, tube_s, tube_blend, tube_offset, tube_bone, tube_prev, tube_parent,
                   tube_child, **_) -> dict[str, torch.Tensor]:
    """The recipe as a sparse ``[V, 81]`` matrix (columns: the 21 joints, then column k of bone
    b's frame at ``21 + 3 b + k``), each row's non-zero terms in column order (``skin_index``,
    ``skin_weight``, padded with weight 0), and ``rest_offsets [V, 3]``."""
    palm, tube = palm_offsets.shape[0], tube_s.shape[0]
    w = torch.zeros(palm + tube, 81, dtype=torch.float64)
    w[:palm, [1, 5, 9, 13, 17]] = palm_coeffs.double()
    rows = torch.arange(palm, palm + tube)
    w[rows, tube_parent] += 1 - tube_s
    w[rows, tube_child] += tube_s
    for bone, weight in ((tube_bone, 1 - tube_blend), (tube_prev, tube_blend)):
        for k in range(3):
            w[rows, 21 + 3 * bone + k] += weight * tube_offset[:, k]
    offsets = torch.cat([palm_offsets.double(), torch.zeros(tube, 3, dtype=torch.float64)])
    terms = int((w != 0).sum(1).max())
    index = torch.sort(torch.where(w != 0, torch.arange(81), 81), 1).values[:, :terms]  # 81: padding
    weight = torch.where(index < 81, w.gather(1, index.clamp(max=80)), 0.0)
    return {"skin_index": index.clamp(max=80), "skin_weight": weight, "rest_offsets": offsets}


def hand_surface(resolution: str) -> HandSurface:
    """A new surface module (the template is built once per resolution)."""
    return copy.deepcopy(_template(resolution))


@lru_cache(maxsize=None)
def _template(resolution: str) -> HandSurface:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"hand mesh resolution must be one of {sorted(RESOLUTIONS)}, got {resolution!r}")
    return _build(RESOLUTIONS[resolution])


def _build(res: Resolution) -> HandSurface:
    k, levels = res.k, res.levels
    columns = 4 * k + 1
    rest_joints, rest_frames = local_skeleton(torch.zeros(21, dtype=torch.float64),
                                              torch.tensor(DEFAULT_BONE_LENGTHS, dtype=torch.float64))
    bases = rest_joints[[1, 5, 9, 13, 17]].numpy()

    # Palm: vertex (level, side, column), side 0 dorsal, 1 palmar; column 0 is radial.
    palm_coeffs, palm_offsets = [], []
    palm_index = {}
    for level in range(levels):
        a = level / (levels - 1)
        for side in (0, 1):
            for c in range(columns):
                u = (c - k / 2) / k  # finger units: finger f (index=0) centred at u = f
                lo = min(max(int(math.floor(u)), 0), 2)
                w = u - lo
                coeff = np.zeros(5)
                coeff[1 + lo], coeff[2 + lo] = a * (1 - w), a * w  # knuckle line
                finger = 1 + min(max(int(round(u)), 0), 3)
                edge = 0.75 if c in (0, columns - 1) else 1.0
                knuckle_half = _FINGER_RADIUS[finger] * 0.9
                half = ((1 - a) * _WRIST_HALF_THICKNESS + a * knuckle_half
                        + _PALM_BULGE * math.sin(math.pi * a)) * edge
                x_wrist = _WRIST_HALF_WIDTH * (1 - 2 * c / (columns - 1))
                palm_index[level, side, c] = len(palm_offsets)
                palm_coeffs.append(coeff)
                palm_offsets.append([(1 - a) * x_wrist, 0.0, half if side == 0 else -half])
    wrist_centre = len(palm_offsets)
    palm_coeffs.append(np.zeros(5))
    palm_offsets.append([0.0, -0.004, 0.0])
    num_palm = len(palm_offsets)
    palm_coeffs_t = torch.tensor(np.array(palm_coeffs))
    palm_offsets_t = torch.tensor(palm_offsets, dtype=torch.float64)
    palm_rest = (palm_coeffs_t @ torch.tensor(bases) + palm_offsets_t).numpy()

    def loop(level):  # the palm's cross-section loop at a level
        return [palm_index[level, 0, c] for c in range(columns)] + [
            palm_index[level, 1, c] for c in reversed(range(columns))]

    faces = []

    def strip(a_loop, b_loop, skip=()):  # quads between two loops of equal length
        n = len(a_loop)
        for q in range(n):
            if q in skip:
                continue
            a0, a1, b0, b1 = a_loop[q], a_loop[(q + 1) % n], b_loop[q], b_loop[(q + 1) % n]
            faces.extend([(a0, a1, b1), (a0, b1, b0)])

    def fan(centre, ring):
        n = len(ring)
        faces.extend((centre, ring[(q + 1) % n], ring[q]) for q in range(n))

    hole = range(res.thumb_level, res.thumb_level + k)  # levels whose radial side quad is open
    radial_side = 2 * columns - 1  # loop edge from palmar column 0 back to dorsal column 0
    for level in range(levels - 1):
        strip(loop(level), loop(level + 1), skip=(radial_side,) if level in hole else ())
    fan(wrist_centre, loop(0)[::-1])

    # Tubes: fingers from the distal loop, the thumb from the hole.
    tube = dict(bone=[], prev=[], s=[], blend=[], offset=[])

    def add_tube(chain, base_loop, rings):
        radius = _FINGER_RADIUS[chain]
        first_bone = 4 * chain + 1
        base_pts = palm_rest[base_loop]
        centre = base_pts.mean(0)
        frame = rest_frames[first_bone].numpy()
        rel = (base_pts - centre) @ frame  # in the first bone's frame
        angles = np.arctan2(rel[:, 2], rel[:, 0])
        chain_length = sum(DEFAULT_BONE_LENGTHS[4 * chain + 1: 4 * chain + 4])
        previous = base_loop
        for bone_in_chain, s in rings:
            bone = 4 * chain + bone_in_chain
            along = sum(DEFAULT_BONE_LENGTHS[4 * chain + 1: bone]) + s * DEFAULT_BONE_LENGTHS[bone]
            r = radius * (1 - (1 - _TIP_TAPER) * along / chain_length)
            ring = []
            for angle in angles:
                offset = [r * math.cos(angle), 0.0, r * 0.9 * math.sin(angle)]
                ring.append(num_palm + len(tube["bone"]))
                _add_tube_vertex(tube, bone, s, offset)
            strip(previous, ring)
            previous = ring
        tip = num_palm + len(tube["bone"])
        _add_tube_vertex(tube, 4 * chain + 3, 1.0, [0.0, 0.0, 0.0])
        fan(tip, previous)

    distal = levels - 1
    for f in range(4):
        cols = range(f * k, (f + 1) * k + 1)
        base_loop = [palm_index[distal, 0, c] for c in cols] + [palm_index[distal, 1, c] for c in reversed(cols)]
        add_tube(f + 1, base_loop, res.finger_rings)
    hole_levels = range(res.thumb_level, res.thumb_level + k + 1)
    thumb_loop = [palm_index[lv, 0, 0] for lv in hole_levels] + [palm_index[lv, 1, 0] for lv in reversed(hole_levels)]
    add_tube(0, thumb_loop, res.thumb_rings)

    surface = HandSurface(
        faces=torch.tensor(faces, dtype=torch.int64),
        palm_coeffs=palm_coeffs_t,
        palm_offsets=palm_offsets_t,
        tube_bone=torch.tensor(tube["bone"]),
        tube_prev=torch.tensor(tube["prev"]),
        tube_s=torch.tensor(tube["s"], dtype=torch.float64),
        tube_blend=torch.tensor(tube["blend"], dtype=torch.float64),
        tube_offset=torch.tensor(tube["offset"], dtype=torch.float64),
    )
    surface.faces = _orient_outward(surface.vertices(rest_joints, rest_frames), surface.faces)
    return surface


def _add_tube_vertex(tube, bone, s, offset):
    """A ring at s = 0 sits on the bone's parent joint and turns with both adjacent bones."""
    joint_ring = s == 0.0 and bone % 4 != 0
    tube["bone"].append(bone)
    tube["prev"].append(bone - 1 if joint_ring else bone)
    tube["s"].append(s)
    tube["blend"].append(0.5 if joint_ring else 0.0)
    tube["offset"].append(offset)


def _orient_outward(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Consistent winding (trimesh's breadth-first fix), then outward: positive volume."""
    import trimesh

    mesh = trimesh.Trimesh(verts.numpy(), faces.numpy(), process=False)
    trimesh.repair.fix_winding(mesh)
    if mesh.volume < 0:
        mesh.invert()
    return torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64))
