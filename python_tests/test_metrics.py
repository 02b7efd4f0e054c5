"""handgeom.metrics against closed-form volumes and brute-force counts."""

import math

import pytest
import torch
import trimesh

from handgeom.hand import HandModel, two_hand_preset
from handgeom.metrics import (contact_ratio, count_intersections, hand_object_gap, intersection_volume, mpjpe,
                              penetration_depth, procrustes)
import references as ref


def box(lo, hi):
    mesh = trimesh.creation.box(bounds=[lo, hi])
    return torch.tensor(mesh.vertices, dtype=torch.float64)[None], torch.tensor(mesh.faces)


def sphere(centre, subdivisions=4):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    return (torch.tensor(mesh.vertices, dtype=torch.float64) + torch.tensor(centre, dtype=torch.float64))[None], \
        torch.tensor(mesh.faces)


@pytest.mark.parametrize("kwargs", [dict(resolution=7), dict(pitch=0.1), dict()])
def test_intersection_volume_of_overlapping_boxes_is_exact(kwargs):
    va, fa = box([0, 0, 0], [1, 1, 1])
    vb, fb = box([0.5, 0, 0], [1.5, 1, 1])
    volume = intersection_volume(va, fa, vb, fb, **kwargs)
    torch.testing.assert_close(volume, torch.tensor([0.5], dtype=torch.float64))


def test_intersection_volume_of_two_spheres_matches_the_lens_formula():
    d = 1.0
    va, fa = sphere([0, 0, 0])
    vb, fb = sphere([d, 0, 0])
    lens = math.pi * (4 + d) * (2 - d) ** 2 / 12  # two unit spheres at distance d
    volume = intersection_volume(va, fa, vb, fb, resolution=60).item()
    assert volume == pytest.approx(lens, rel=0.03)


def test_disjoint_meshes_have_no_intersection():
    va, fa = box([0, 0, 0], [1, 1, 1])
    vb, fb = box([2, 0, 0], [3, 1, 1])
    assert intersection_volume(va, fa, vb, fb).item() == 0
    assert count_intersections(va, fa, vb, fb).item() == 0


def test_count_intersections_matches_a_brute_force_count():
    right, left = HandModel("right"), HandModel("left")
    pairs = [two_hand_preset(name, torch.float64) for name in ("clasped", "interlocked", "finger_grasp")]
    va = torch.stack([right(r).verts for r, _ in pairs])
    vb = torch.stack([left(l).verts for _, l in pairs])
    counts = count_intersections(va, right.faces, vb, left.faces, resolution=14)
    assert (counts > 0).all()
    for b in range(3):
        lo = torch.minimum(va[b].amin(0), vb[b].amin(0))
        hi = torch.maximum(va[b].amax(0), vb[b].amax(0))
        axes = [lo[k] + (hi[k] - lo[k]) * (torch.arange(14, dtype=torch.float64) + 0.5) / 14 for k in range(3)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        both = (ref.winding_number(grid, va[b], right.faces).round() != 0) & \
            (ref.winding_number(grid, vb[b], left.faces).round() != 0)
        assert counts[b].item() == both.sum().item()


def test_penetration_depth_and_contact_ratio():
    obj, faces = sphere([0, 0, 0], subdivisions=3)
    gen = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen, dtype=torch.float64), dim=-1)
    inside_hand = (direction * torch.linspace(0.6, 1.4, 200, dtype=torch.float64)[:, None])[None]
    far_hand = inside_hand + 5.0
    hands = torch.cat([inside_hand, far_hand])
    depth = penetration_depth(hands, obj.expand(2, -1, -1), faces)
    distance, _ = ref.point_triangle_distance(inside_hand[0], obj[0], faces)
    inside = ref.winding_number(inside_hand[0], obj[0], faces) > 0.5
    torch.testing.assert_close(depth, torch.tensor([distance[inside].max().item(), 0.0], dtype=torch.float64))
    assert contact_ratio(hands, obj.expand(2, -1, -1), faces) == 0.5
    # the signed gap: minus the depth inside, the closest vertex's distance outside
    far, _ = ref.point_triangle_distance(far_hand[0], obj[0], faces)
    torch.testing.assert_close(hand_object_gap(hands, obj.expand(2, -1, -1), faces),
                               torch.stack([-depth[0], far.min()]))


def test_metric_arguments_are_checked():
    va, fa = box([0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="pitch or resolution, not both"):
        intersection_volume(va, fa, va, fa, pitch=0.1, resolution=10)
    with pytest.raises(ValueError, match="pitch must be positive"):
        intersection_volume(va, fa, va, fa, pitch=0.0)
    with pytest.raises(ValueError, match="resolution must be at least 1"):
        count_intersections(va, fa, va, fa, resolution=0)


def test_procrustes_undoes_a_similarity_transform_and_only_lowers_the_error():
    torch.manual_seed(0)
    target = torch.randn(4, 21, 3, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(4, 3, 3, dtype=torch.float64))
    rotation = q * torch.sign(torch.linalg.det(q))[:, None, None]  # proper rotations
    scale = torch.rand(4, 1, 1, dtype=torch.float64) + 0.5
    moved = scale * target @ rotation.transpose(1, 2) + torch.randn(4, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(procrustes(moved, target), target)
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # no reflection: not undone
    assert (mpjpe(procrustes(mirrored, target), target) > 1e-3).all()
    noisy = target + 0.1 * torch.randn_like(target)
    assert (mpjpe(procrustes(noisy, target), target) <= mpjpe(noisy, target)).all()
    with pytest.raises(ValueError, match="target"):
        procrustes(target, target[:, :20])
