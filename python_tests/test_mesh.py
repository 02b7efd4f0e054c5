"""Mesh queries (inside test, ray casting, signed distance, penetration) against brute-force
float64 references, regression meshes from other libraries' bug reports, and bad input."""

import math

import pytest
import torch
import trimesh

from handgeom.hand import HandModel, named_pose
from handgeom.ops import MeshBVH, penetration_loss, points_inside_mesh, ray_mesh_intersect, signed_distance, surface_points
import references as ref

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FIRST_RAY = torch.tensor([0.5773502691896258, 0.6285393610547089, 0.5211288128307138], dtype=torch.float64)


def random_rotation(gen):
    q = torch.nn.functional.normalize(torch.randn(4, generator=gen, dtype=torch.float64), dim=0)
    w, x, y, z = q
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]], dtype=torch.float64)


def hand_mesh(pose="fist", resolution="coarse"):
    model = HandModel(resolution=resolution)
    return model(named_pose(model, pose, torch.float64)).verts, model.faces


SHAPES = {
    "sphere": lambda: trimesh.creation.icosphere(subdivisions=3),
    "capsule": lambda: trimesh.creation.capsule(height=1.0, radius=0.4, count=[16, 16]),
    "torus": lambda: trimesh.creation.torus(1.0, 0.3, major_sections=24, minor_sections=12),
    "box": lambda: trimesh.creation.box(),
    "hand": None,
}


def shape(name):
    if name == "hand":
        verts, faces = hand_mesh()
        return verts, faces
    mesh = SHAPES[name]()
    return torch.tensor(mesh.vertices, dtype=torch.float64), torch.tensor(mesh.faces)


def stress_points(verts, faces, gen):
    """Points whose inside-test ray passes through a vertex or an edge midpoint of the mesh (to
    within rounding), plus random points around the mesh. The op casts FIRST_RAY with each
    component's sign towards the nearer side of the mesh's bounding box; the points are placed
    back along that ray, close enough to stay on the same side."""
    edges = verts[faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)].mean(1)
    targets = torch.cat([verts, edges])
    lo, hi = verts.min(0).values, verts.max(0).values
    towards = torch.where(hi - targets < targets - lo, 1.0, -1.0).double()
    direction = towards * FIRST_RAY
    room = ((targets - (lo + hi) / 2).abs() / FIRST_RAY).min(1, keepdim=True).values
    points = targets - 0.9 * room * torch.rand(targets.shape[0], 1, generator=gen, dtype=torch.float64) * direction
    same_ray = (torch.where(hi - points < points - lo, 1.0, -1.0) == towards).all(1)
    assert same_ray.float().mean() > 0.9
    box = lo + (hi - lo) * (torch.rand(2000, 3, generator=gen, dtype=torch.float64) * 1.2 - 0.1)
    return torch.cat([points[same_ray], box])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_inside_matches_winding_number_with_one_ray(name):
    gen = torch.Generator().manual_seed(0)
    verts, faces = shape(name)
    for _ in range(3):  # random rotations
        rotated = verts @ random_rotation(gen).T
        points = stress_points(rotated, faces, gen)
        winding = ref.winding_number(points, rotated, faces)
        expected = winding.round() != 0  # the non-zero rule (the fist folds into -1 pockets)
        away = (winding - winding.round()).abs() < 1e-6  # not on the surface
        got = points_inside_mesh(points[None], rotated[None], faces)[0]
        assert expected.sum() > 50
        assert (got[away] != expected[away]).sum() == 0


def test_stress_set_defeats_a_naive_ray_test():
    """Negative control: parity of Moller-Trumbore hits along the same rays (no consistent
    treatment of edges and vertices) gets many stress points wrong, so the exactness checks above
    have teeth."""
    verts, faces = shape("hand")
    points = stress_points(verts, faces, torch.Generator().manual_seed(0))
    lo, hi = verts.min(0).values, verts.max(0).values
    dirs = torch.where(hi - points < points - lo, 1.0, -1.0).double() * FIRST_RAY
    o, d = points[:, None], dirs[:, None]
    a, b, c = (verts[faces[:, k]][None] for k in range(3))
    pv = torch.linalg.cross(d.expand(-1, faces.shape[0], -1), (c - a).expand(len(points), -1, -1))
    inv = 1 / ((b - a) * pv).sum(-1)
    u = ((o - a) * pv).sum(-1) * inv
    qv = torch.linalg.cross(o - a, (b - a).expand(len(points), -1, -1))
    v, t = (d * qv).sum(-1) * inv, ((c - a) * qv).sum(-1) * inv
    naive = ((u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)).sum(1) % 2 == 1
    exact = ref.winding_number(points, verts, faces).round() != 0
    assert (naive != exact).sum() > 50
    assert torch.equal(points_inside_mesh(points[None], verts[None], faces)[0], exact)


def test_inside_float32_stress():
    gen = torch.Generator().manual_seed(1)
    verts, faces = shape("hand")
    points = stress_points(verts, faces, gen)
    expected = ref.winding_number(points, verts, faces).round() != 0
    got = points_inside_mesh(points[None].float(), verts[None].float(), faces)[0]
    # the float32 rounding of a point can move it across the surface; away from it: exact
    d, _ = ref.point_triangle_distance(points, verts, faces)
    away = d > 1e-5
    assert (got[away] != expected[away]).sum() == 0


def test_inside_batched_shared_and_per_mesh_faces_agree():
    gen = torch.Generator().manual_seed(2)
    model = HandModel()
    params = model.sample_poses(6, gen, dtype=torch.float64)
    verts = model(params).verts
    points = verts.mean(1, keepdim=True) + 0.05 * torch.randn(6, 500, 3, generator=gen, dtype=torch.float64)
    shared = points_inside_mesh(points, verts, model.faces)
    per_mesh = points_inside_mesh(points, verts, model.faces.expand(6, -1, -1).int())
    assert torch.equal(shared, per_mesh)
    for b in range(6):
        assert torch.equal(shared[b], ref.winding_number(points[b], verts[b], model.faces) > 0.5)


def test_majority_vote_on_a_mesh_with_a_hole():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    verts = torch.tensor(sphere.vertices, dtype=torch.float64)
    faces = torch.tensor(sphere.faces)[1:]  # one face missing
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.2, 0.3], [2.0, 0.0, 0.0]], dtype=torch.float64)
    got = points_inside_mesh(points[None], verts[None], faces, n_rays=5)[0]
    assert got.tolist() == [True, True, False]


# regression meshes of other libraries' bug reports ------------------------------------------------


def test_unit_cube_point_outside_open3d_5105():
    box = trimesh.creation.box(bounds=[[0, 0, 0], [1, 1, 1]])
    verts, faces = torch.tensor(box.vertices)[None], torch.tensor(box.faces)
    points = torch.tensor([[[-1.0, -1.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 1e-9]]], dtype=torch.float64)
    assert points_inside_mesh(points, verts, faces)[0].tolist() == [False, True, True]
    sdf = signed_distance(points, verts, faces)[0][0]
    torch.testing.assert_close(sdf, torch.tensor([math.sqrt(2), -0.5, -1e-9], dtype=torch.float64))


def test_tetrahedron_sign_far_outside_warp_1836():
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    gen = torch.Generator().manual_seed(3)
    points = torch.rand(5000, 3, generator=gen, dtype=torch.float64) * 5 - 2  # up to 2 units outside
    sdf = signed_distance(points[None], verts[None], faces)[0][0]
    distance, _ = ref.point_triangle_distance(points, verts, faces)
    inside = ref.winding_number(points, verts, faces) > 0.5
    torch.testing.assert_close(sdf, torch.where(inside, -distance, distance))


def test_sphere_on_a_regular_grid_kaolin_566():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts, faces = torch.tensor(sphere.vertices, dtype=torch.float64), torch.tensor(sphere.faces)
    axis = torch.linspace(-1.1, 1.1, 23, dtype=torch.float64)  # includes 0: rays along symmetric grid lines
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    expected = ref.winding_number(grid, verts, faces) > 0.5
    assert torch.equal(points_inside_mesh(grid[None], verts[None], faces)[0], expected)


def test_box_with_inner_cavity_trimesh_2534():
    outer = trimesh.creation.box(extents=[2, 2, 2])
    inner = trimesh.creation.box(extents=[1, 1, 1])
    inner.invert()  # the cavity's wall faces into the cavity
    verts = torch.cat([torch.tensor(outer.vertices), torch.tensor(inner.vertices)])
    faces = torch.cat([torch.tensor(outer.faces), torch.tensor(inner.faces) + 8])
    points = torch.tensor([[0.0, 0.0, 0.0], [0.75, 0.1, 0.2], [1.5, 0.0, 0.0], [0.2, -0.3, 0.1]], dtype=torch.float64)
    assert points_inside_mesh(points[None], verts[None], faces)[0].tolist() == [False, True, False, False]
    sdf = signed_distance(points[None], verts[None], faces)[0][0]
    torch.testing.assert_close(sdf[:3], torch.tensor([0.5, -0.25, 0.5], dtype=torch.float64))


def test_duplicated_opposite_faces_cancel_libigl_644():
    """Documented: a face pair with opposite orientations (an internal membrane) adds crossings
    +1 and -1, so it changes no inside answer."""
    box = trimesh.creation.box(extents=[2, 2, 2])
    verts = torch.cat([torch.tensor(box.vertices), torch.tensor([[-1.0, -1, 0], [1, -1, 0], [1, 1, 0]], dtype=torch.float64)])
    faces = torch.cat([torch.tensor(box.faces), torch.tensor([[8, 9, 10], [8, 10, 9]])])
    gen = torch.Generator().manual_seed(4)
    points = torch.rand(3000, 3, generator=gen, dtype=torch.float64) * 3 - 1.5
    with_membrane = points_inside_mesh(points[None], verts[None], faces)[0]
    without = points_inside_mesh(points[None], verts[None, :8], torch.tensor(box.faces))[0]
    assert torch.equal(with_membrane, without)


# signed distance ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sphere", "torus", "hand"])
def test_signed_distance_matches_brute_force(name):
    gen = torch.Generator().manual_seed(5)
    verts, faces = shape(name)
    points = stress_points(verts, faces, gen)
    sdf, face, closest = signed_distance(points[None], verts[None], faces)
    distance, _ = ref.point_triangle_distance(points, verts, faces)
    inside = ref.winding_number(points, verts, faces) > 0.5
    torch.testing.assert_close(sdf[0], torch.where(inside, -distance, distance), rtol=1e-9, atol=1e-12)
    # the reported point realizes the distance and lies on the reported face
    torch.testing.assert_close((closest[0] - points).norm(dim=-1), distance, rtol=1e-9, atol=1e-12)
    a, b, c = (verts[faces[face[0], k]] for k in range(3))
    normal = torch.nn.functional.normalize(torch.linalg.cross(b - a, c - a), dim=-1)
    assert ((closest[0] - a) * normal).sum(-1).abs().max() < 1e-12
    on_face = ref.point_triangle_distance(closest[0][:200], verts, faces)[0]
    assert on_face.max() < 1e-12


def test_signed_distance_float32_hand_in_metres():
    verts, faces = hand_mesh("fist", "fine")  # triangles of a few mm^2, in metres
    gen = torch.Generator().manual_seed(6)
    points = verts[torch.randint(0, verts.shape[0], (3000,), generator=gen)] + \
        torch.randn(3000, 3, generator=gen, dtype=torch.float64) * 0.01
    sdf = signed_distance(points[None].float(), verts[None].float(), faces)[0][0]
    distance, _ = ref.point_triangle_distance(points, verts, faces)
    assert (sdf.double().abs() - distance).abs().max() < 1e-6  # micrometres


def test_signed_distance_is_invariant_to_face_order():
    verts, faces = shape("hand")
    gen = torch.Generator().manual_seed(7)
    points = stress_points(verts, faces, gen)[None]
    perm = torch.randperm(faces.shape[0], generator=gen)
    a = signed_distance(points, verts[None], faces)[0]
    b = signed_distance(points, verts[None], faces[perm])[0]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


def test_signed_distance_gradcheck_points_and_verts():
    sphere = trimesh.creation.icosphere(subdivisions=1)
    verts = torch.tensor(sphere.vertices, dtype=torch.float64)[None] * torch.tensor([1.0, 0.8, 0.6], dtype=torch.float64)
    faces = torch.tensor(sphere.faces)
    gen = torch.Generator().manual_seed(8)
    points = torch.randn(1, 40, 3, generator=gen, dtype=torch.float64) * 0.8
    points.requires_grad_(), verts.requires_grad_()
    assert torch.autograd.gradcheck(lambda p, v: signed_distance(p, v, faces)[0], (points, verts))


@pytest.mark.parametrize("squared", [False, True])
def test_penetration_loss_matches_sdf_and_gradcheck(squared):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = torch.tensor(sphere.vertices, dtype=torch.float64)[None]
    faces = torch.tensor(sphere.faces)
    gen = torch.Generator().manual_seed(9)
    points = torch.randn(2, 300, 3, generator=gen, dtype=torch.float64) * 0.7
    verts2 = verts.expand(2, -1, -1).contiguous()
    loss = penetration_loss(points, verts2, faces, reduction="none", squared=squared)
    depth = (-signed_distance(points, verts2, faces)[0]).clamp_min(0)
    torch.testing.assert_close(loss, depth ** 2 if squared else depth)
    assert penetration_loss(points, verts2, faces, squared=squared) == pytest.approx(loss.sum().item())
    assert penetration_loss(points, verts2, faces, "mean", squared) == pytest.approx(loss.mean().item())
    p, v = points[:, :30].clone().requires_grad_(), verts2.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, v: penetration_loss(p, v, faces, "none", squared), (p, v))


def test_surface_points_by_hand():
    """The vertices, then per face its centroid and the centroids of its corner sub-triangles
    (a, b, c -> (2a + (b + c) / 2) / 3, ...), batched or not, in the vertices' dtype."""
    verts, faces = hand_mesh()
    a, b, c = verts[faces].unbind(1)  # [F, 3] each
    corners = [(a + b + c) / 3, (4 * a + b + c) / 6, (a + 4 * b + c) / 6, (a + b + 4 * c) / 6]
    for k in (1, 4):
        expected = torch.cat([verts, torch.stack(corners[:k], 1).reshape(-1, 3)])
        torch.testing.assert_close(surface_points(verts, faces, k), expected, rtol=0, atol=1e-15)
        batched = surface_points(verts.float().expand(2, -1, -1), faces.int(), k)
        assert batched.shape == (2, verts.shape[0] + k * faces.shape[0], 3) and batched.dtype == torch.float32
        torch.testing.assert_close(batched, expected.float().expand(2, -1, -1))
    with pytest.raises(ValueError, match="surface_points: per_face must be 1 to 4, got 5"):
        surface_points(verts, faces, 5)
    with pytest.raises(ValueError, match="surface_points: per_face must be"):
        surface_points(verts, faces, 0)
    with pytest.raises(ValueError, match="surface_points: faces must have shape"):
        surface_points(verts, faces[:, :2])


def test_vertex_gradients_are_deterministic():
    verts, faces = hand_mesh()
    gen = torch.Generator().manual_seed(10)
    points = (verts[torch.randint(0, verts.shape[0], (4000,), generator=gen)] * 0.9)[None].float()
    grads = []
    for _ in range(2):
        v = verts[None].float().clone().requires_grad_()
        penetration_loss(points, v, faces).backward()
        grads.append(v.grad)
    assert grads[0].abs().sum() > 0 and torch.equal(grads[0], grads[1])


# ray casting --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sphere", "torus", "hand"])
def test_ray_hits_match_brute_force(name):
    verts, faces = shape(name)
    gen = torch.Generator().manual_seed(11)
    centre, size = verts.mean(0), (verts.max(0).values - verts.min(0).values).max()
    origins = centre + size * (torch.rand(500, 3, generator=gen, dtype=torch.float64) - 0.5) * 3  # inside and out
    aims = verts[torch.randint(0, verts.shape[0], (500,), generator=gen)]
    dirs = aims - origins + 0.05 * size * torch.randn(500, 3, generator=gen, dtype=torch.float64)
    dirs[:100] = origins[:100] - centre  # mostly away from the mesh: misses
    t, face, bary = ray_mesh_intersect(origins[None], dirs[None], verts[None], faces)
    t_ref, face_ref = ref.ray_triangle_hits(origins, dirs, verts, faces)
    assert (face_ref >= 0).sum() > 20 and (face_ref < 0).sum() > 20  # hits and misses
    torch.testing.assert_close(t[0], t_ref, rtol=1e-9, atol=1e-12)
    assert torch.equal(face[0], face_ref)
    hit = face[0] >= 0
    tri = verts[faces[face[0][hit]]]  # the barycentric weights reproduce the hit point
    point = (bary[0][hit].unsqueeze(-1) * tri).sum(1)
    torch.testing.assert_close(point, origins[hit] + t[0][hit, None] * dirs[hit])
    assert (bary[0][~hit] == 0).all() and torch.isinf(t[0][~hit]).all()


def test_rays_starting_inside_hit_the_surface_once():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    verts, faces = torch.tensor(sphere.vertices, dtype=torch.float64)[None], torch.tensor(sphere.faces)
    gen = torch.Generator().manual_seed(12)
    dirs = torch.nn.functional.normalize(torch.randn(1, 200, 3, generator=gen, dtype=torch.float64), dim=-1)
    t, face, _ = ray_mesh_intersect(torch.zeros(1, 200, 3, dtype=torch.float64), dirs, verts, faces)
    assert (face >= 0).all() and ((t - 1).abs() < 0.02).all()  # the unit sphere's facets


# BVH object, metrics-sized batches ----------------------------------------------------------------


def test_bvh_refit_equals_rebuild():
    model = HandModel()
    gen = torch.Generator().manual_seed(13)
    first = model(model.sample_poses(4, gen, dtype=torch.float64)).verts
    moved = model(model.sample_poses(4, gen, dtype=torch.float64)).verts
    points = moved.mean(1, keepdim=True) + 0.04 * torch.randn(4, 700, 3, generator=gen, dtype=torch.float64)
    bvh = MeshBVH(first, model.faces).refit(moved)
    torch.testing.assert_close(signed_distance(points, moved, model.faces, bvh=bvh)[0],
                               signed_distance(points, moved, model.faces)[0])
    assert torch.equal(points_inside_mesh(points, moved, model.faces, bvh=bvh),
                       points_inside_mesh(points, moved, model.faces))


@pytest.mark.parametrize("shared", [True, False])
def test_bvh_selection_equals_a_build_of_the_selected_meshes(shared):
    model = HandModel()
    verts = model(model.sample_poses(3, torch.Generator().manual_seed(14), dtype=torch.float64)).verts
    faces = model.faces if shared else torch.stack([model.faces, model.faces.flip(1), model.faces.roll(1, 0)])
    rows = [2, 0, 2]
    picked, built = MeshBVH(verts, faces)[rows], MeshBVH(verts[rows], faces if shared else faces[rows])
    for name in ("order", "tris", "boxes", "verts", "finite", "scale", "faces"):
        assert torch.equal(getattr(picked, name), getattr(built, name)), name
    points = verts[rows].mean(1, keepdim=True) + 0.03 * torch.randn(3, 300, 3, dtype=torch.float64)
    assert torch.equal(points_inside_mesh(points, None, built.faces, bvh=picked),
                       points_inside_mesh(points, verts[rows], built.faces))


# bad input ----------------------------------------------------------------------------------------


def test_empty_batches_and_meshes():
    verts, faces = shape("box")
    empty = torch.zeros(0, 3, dtype=torch.float64)
    assert points_inside_mesh(empty[None], verts[None], faces).shape == (1, 0)
    assert points_inside_mesh(torch.zeros(0, 5, 3, dtype=torch.float64), verts[None][:0], faces).shape == (0, 5)
    sdf, face, _ = signed_distance(torch.ones(1, 2, 3, dtype=torch.float64), verts[None], faces[:0])
    assert torch.isinf(sdf).all() and (face == -1).all()
    assert not points_inside_mesh(torch.ones(1, 2, 3, dtype=torch.float64), verts[None], faces[:0]).any()


def test_nan_points_are_defined():
    verts, faces = shape("sphere")
    points = torch.tensor([[[float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    assert points_inside_mesh(points, verts[None], faces)[0].tolist() == [False, True]
    sdf, face, _ = signed_distance(points, verts[None], faces)
    assert math.isnan(sdf[0, 0]) and face[0, 0] == -1 and sdf[0, 1] < 0
    loss = penetration_loss(points, verts[None], faces, reduction="none")
    assert math.isnan(loss[0, 0]) and loss[0, 1] > 0


def test_degenerate_faces_are_allowed():
    verts, faces = shape("box")
    verts = torch.cat([verts, torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)])
    faces = torch.cat([faces, torch.tensor([[8, 8, 8], [0, 8, 0]])])  # a point and a segment
    points = torch.tensor([[[0.1, 0.1, 0.1], [2.0, 0.0, 0.0]]], dtype=torch.float64)
    assert points_inside_mesh(points, verts[None], faces)[0].tolist() == [True, False]
    sdf = signed_distance(points, verts[None], faces)[0][0]
    torch.testing.assert_close(sdf, torch.tensor([-0.1 * math.sqrt(3), 1.5], dtype=torch.float64))


BAD = [  # the C++ checks of the ops raise RuntimeError, those of the Python layer ValueError / TypeError
    (lambda v, f, p: points_inside_mesh(p, v[0], f), ValueError, "verts must have shape [B, V, 3], got [8, 3]"),
    (lambda v, f, p: points_inside_mesh(p, v, f + 100), RuntimeError, "faces entries must lie in [0, 8)"),
    (lambda v, f, p: points_inside_mesh(p, v, -f), RuntimeError, "faces entries must lie in [0, 8)"),
    (lambda v, f, p: points_inside_mesh(p, v, f.double()), RuntimeError, "faces must be int64 or int32"),
    (lambda v, f, p: points_inside_mesh(p, v, f[:, :2]), RuntimeError, "faces must have shape"),
    (lambda v, f, p: points_inside_mesh(p, v, f.expand(3, -1, -1)), RuntimeError, "faces must have shape [1, *, 3]"),
    (lambda v, f, p: points_inside_mesh(p.float(), v, f), TypeError, "points must have dtype torch.float64"),
    (lambda v, f, p: points_inside_mesh(p[0], v, f), ValueError, "points must have shape [B, *, 3] with B = 1"),
    (lambda v, f, p: points_inside_mesh(p, v.int(), f), TypeError, "verts must be a floating point tensor"),
    (lambda v, f, p: points_inside_mesh(p, v, f, n_rays=10), RuntimeError, "n_rays must be odd and lie in [1, 9]"),
    (lambda v, f, p: points_inside_mesh(p, v, f, n_rays=2), RuntimeError, "n_rays must be odd"),
    (lambda v, f, p: signed_distance(p, v.expand(2, -1, -1), f, bvh=MeshBVH(v, f)), ValueError,
     "verts must have shape [B, V, 3] with B = 1"),
    (lambda v, f, p: ray_mesh_intersect(p, p[:, :1], v, f), ValueError, "dirs must have shape [B, R, 3] with B = 1, R = 5"),
    (lambda v, f, p: torch.ops.handgeom.mesh_inside(p, *MeshBVH(v, f).tensors[:2], MeshBVH(v, f).boxes[:, :1], 1),
     RuntimeError, "boxes must have shape"),
    (lambda v, f, p: MeshBVH(v, f).refit(v.expand(2, -1, -1)), RuntimeError, "order must have shape [2, 12]"),
]


@pytest.mark.parametrize("call,error,message", BAD)
def test_bad_input_names_the_argument(call, error, message):
    box = trimesh.creation.box()
    verts, faces = torch.tensor(box.vertices)[None], torch.tensor(box.faces)
    points = torch.zeros(1, 5, 3, dtype=torch.float64)
    with pytest.raises(error) as info:
        call(verts, faces, points)
    assert message in str(info.value)


def test_penetration_reduction_is_checked():
    verts, faces = shape("box")
    with pytest.raises(ValueError, match="reduction must be"):
        penetration_loss(torch.zeros(1, 2, 3, dtype=torch.float64), verts[None], faces, reduction="max")


def test_opcheck_mesh_ops():
    verts, faces = shape("sphere")
    verts = verts[None].clone()
    gen = torch.Generator().manual_seed(14)
    points = torch.randn(1, 20, 3, generator=gen, dtype=torch.float64) * 0.8
    order, tris, boxes = torch.ops.handgeom.mesh_bvh(verts, faces, None)
    torch.library.opcheck(torch.ops.handgeom.mesh_bvh.default, (verts, faces, None))
    torch.library.opcheck(torch.ops.handgeom.mesh_inside.default, (points, order, tris, boxes, 3))
    torch.library.opcheck(torch.ops.handgeom.mesh_ray_hit.default, (points, points + 1, order, tris, boxes))
    p, v = points.clone().requires_grad_(), verts.clone().requires_grad_()
    torch.library.opcheck(torch.ops.handgeom.mesh_signed_distance.default, (p, v, faces, order, tris, boxes))
    torch.library.opcheck(torch.ops.handgeom.mesh_penetration.default, (p, v, faces, order, tris, boxes, True))


@requires_cuda
def test_cuda_matches_cpu():
    model = HandModel()
    gen = torch.Generator().manual_seed(15)
    verts = model(model.sample_poses(8, gen, dtype=torch.float64)).verts
    points = verts.mean(1, keepdim=True) + 0.05 * torch.randn(8, 2000, 3, generator=gen, dtype=torch.float64)
    for device_args in [(points, verts, model.faces), tuple(t.cuda() for t in (points, verts, model.faces))]:
        pass
    cpu = (points_inside_mesh(points, verts, model.faces), signed_distance(points, verts, model.faces)[0],
           ray_mesh_intersect(points, points.flip(1), verts, model.faces)[0])
    gpu = (points_inside_mesh(points.cuda(), verts.cuda(), model.faces.cuda()),
           signed_distance(points.cuda(), verts.cuda(), model.faces.cuda())[0],
           ray_mesh_intersect(points.cuda(), points.flip(1).cuda(), verts.cuda(), model.faces.cuda())[0])
    assert torch.equal(gpu[0].cpu(), cpu[0])
    torch.testing.assert_close(gpu[1].cpu(), cpu[1])
    torch.testing.assert_close(gpu[2].cpu(), cpu[2])
    v = verts.cuda().requires_grad_()
    penetration_loss(points.cuda(), v, model.faces.cuda()).backward()
    vc = verts.clone().requires_grad_()
    penetration_loss(points, vc, model.faces).backward()
    torch.testing.assert_close(v.grad.cpu(), vc.grad)


@requires_cuda
def test_cuda_device_mismatch_is_rejected():
    verts, faces = shape("box")
    with pytest.raises(RuntimeError, match="points must be on the device of tris"):
        points_inside_mesh(torch.zeros(1, 2, 3, dtype=torch.float64), verts[None].cuda(), faces.cuda())


def test_queries_compile_with_fullgraph():
    """The README's torch.compile example: the Python layer (checks, scaling, NaN results) traces."""
    verts, faces = shape("box")
    points = (torch.rand(1, 50, 3, generator=torch.Generator().manual_seed(16), dtype=torch.float64) - 0.5)
    loss_fn = torch.compile(lambda p, v, f: penetration_loss(p, v, f), fullgraph=True)
    p = points.clone().requires_grad_()
    loss = loss_fn(p, verts[None], faces)
    torch.testing.assert_close(loss, penetration_loss(points, verts[None], faces))
    loss.backward()
    assert p.grad.abs().sum() > 0
