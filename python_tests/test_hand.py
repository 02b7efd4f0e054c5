"""The hand model: closed oriented meshes for every pose, kinematics, IK, converters, presets."""

import math
from dataclasses import fields

import numpy as np
import pytest
import torch
import trimesh

from handgeom.hand import (ANGLE_NAMES, BONES, DEFAULT_BONE_LENGTHS, POSES, TWO_HAND_PRESETS, HandModel, HandParams,
                           angle_limits, convert_joints, named_pose, two_hand_preset)
import references as ref

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
MODELS = [(side, res) for side in ("right", "left") for res in ("coarse", "fine")]


def check_closed_oriented(mesh: trimesh.Trimesh, what: str):
    assert mesh.is_watertight, f"{what}: not watertight"
    assert mesh.is_winding_consistent, f"{what}: inconsistent winding"
    assert mesh.volume > 0, f"{what}: volume {mesh.volume} (normals inward)"


@pytest.mark.parametrize("side,resolution", MODELS)
def test_mesh_closed_2manifold_outward_for_rest_and_random_poses(side, resolution):
    model = HandModel(side, resolution)
    faces = model.faces.numpy()
    assert len({tuple(sorted(f)) for f in faces}) == len(faces), "duplicate faces"
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    assert (np.unique(edges, axis=0, return_counts=True)[1] == 2).all(), "an edge not shared by exactly two faces"
    rest = model(model.rest_pose((), torch.float64)).verts
    check_closed_oriented(model.to_trimesh(rest), "rest pose")
    assert model.to_trimesh(rest).euler_number == 2  # a sphere: no handles
    params = model.sample_poses(200, torch.Generator().manual_seed(0), global_rotation=True,
                                length_jitter=0.1, dtype=torch.float64)
    verts = model(params).verts
    for i in range(200):
        mesh = model.to_trimesh(verts[i])
        check_closed_oriented(mesh, f"pose {i}")
        assert mesh.area_faces.min() > 1e-10, f"pose {i}: degenerate face"


def test_vertex_counts():
    assert 280 <= HandModel(resolution="coarse").num_verts <= 360
    assert 650 <= HandModel(resolution="fine").num_verts <= 800


@pytest.mark.parametrize("side", ["right", "left"])
def test_fk_bone_lengths_equal_the_parameters(side):
    model = HandModel(side)
    params = model.sample_poses(64, torch.Generator().manual_seed(1), global_rotation=True,
                                length_jitter=0.2, dtype=torch.float64)
    params.scale = torch.rand(64, dtype=torch.float64) + 0.5
    joints = model(params).joints
    bones = torch.tensor(BONES)
    lengths = (joints[:, bones[:, 1]] - joints[:, bones[:, 0]]).norm(dim=-1)
    torch.testing.assert_close(lengths, params.bone_lengths * params.scale[:, None])
    torch.testing.assert_close(joints[:, 0], params.translation)


def test_sampler_respects_limits_and_generator():
    model = HandModel(thumb_dof=2)
    a = model.sample_poses(1000, torch.Generator().manual_seed(2))
    b = model.sample_poses(1000, torch.Generator().manual_seed(2))
    assert torch.equal(a.angles, b.angles)
    lo, hi = model.limits.float().T
    assert ((a.angles >= lo - 1e-6) & (a.angles <= hi + 1e-6)).all()
    assert (a.angles[:, ANGLE_NAMES.index("thumb_cmc_twist")] == 0).all()  # two-DOF thumb
    assert a.angles.std(0)[ANGLE_NAMES.index("index_pip_flex")] > 0.3


def test_left_is_the_mirror_of_right():
    right, left = HandModel("right", "fine"), HandModel("left", "fine")
    params = right.sample_poses(8, torch.Generator().manual_seed(3), dtype=torch.float64)  # identity rotation
    r, l = right(params), left(params)
    flip = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(l.joints, r.joints * flip)
    torch.testing.assert_close(l.verts, r.verts * flip)
    assert torch.allclose(torch.linalg.det(l.bone_frames), torch.ones(8, 20, dtype=torch.float64))
    assert left.to_trimesh(l.verts[0]).volume == pytest.approx(right.to_trimesh(r.verts[0]).volume)


@pytest.mark.parametrize("rotation_dims", [3, 6])
def test_gradcheck_joints_and_verts(rotation_dims):
    model = HandModel("left")
    params = model.sample_poses(2, torch.Generator().manual_seed(4), dtype=torch.float64)
    rotation = torch.randn(2, rotation_dims, dtype=torch.float64)
    inputs = [rotation, params.translation, params.bone_lengths, params.angles, params.scale + 0.1]
    for t in inputs:
        t.requires_grad_()

    def fn(rot, trans, lengths, angles, scale):
        p = type(params)(rotation=rot, translation=trans, bone_lengths=lengths, angles=angles, scale=scale)
        out = model(p)
        return out.joints, out.verts[:, ::7]

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("side", ["right", "left"])
def test_ik_recovers_model_targets(side):
    model = HandModel(side)
    truth = model.sample_poses(256, torch.Generator().manual_seed(5), global_rotation=True,
                               length_jitter=0.1, dtype=torch.float64)
    truth.translation = torch.randn(256, 3, dtype=torch.float64) * 0.2
    target = model(truth).joints
    fitted = model.fit(target)
    error = (model(fitted).joints - target).norm(dim=-1)
    assert error.mean() < 0.5e-3, f"mean joint error {error.mean() * 1e3:.3f} mm"
    lo, hi = model.limits.T
    assert ((fitted.angles >= lo - 1e-9) & (fitted.angles <= hi + 1e-9)).all()


def test_ik_float32_and_noisy_targets():
    model = HandModel()
    truth = model.sample_poses(32, torch.Generator().manual_seed(6))
    target = model(truth).joints + torch.randn(32, 21, 3, generator=torch.Generator().manual_seed(7)) * 2e-3
    fitted = model.fit(target)
    assert fitted.angles.dtype == torch.float32
    error = (model(fitted).joints - target).norm(dim=-1).mean()
    assert error < 3e-3  # noise of 2 mm per coordinate: the fit absorbs some of it


def test_ik_bad_input():
    model = HandModel()
    with pytest.raises(ValueError, match=r"target_joints must have shape \[..., 21, 3\]"):
        model.fit(torch.zeros(4, 20, 3))
    for bad in (float("nan"), float("inf"), 1e10):  # 1e10: float32 products of four coordinates overflow
        with pytest.raises(ValueError, match="target_joints must be finite with coordinates below 4.3e"):
            model.fit(torch.full((1, 21, 3), bad))


def test_joint_order_converters():
    joints = torch.randn(5, 21, 3)
    for order in ("openpose", "interhand", "mano"):
        torch.testing.assert_close(convert_joints(convert_joints(joints, "openpose", order), order, "openpose"), joints)
    interhand = convert_joints(joints, "openpose", "interhand")
    torch.testing.assert_close(interhand[:, 20], joints[:, 0])  # wrist last
    torch.testing.assert_close(interhand[:, 0], joints[:, 4])  # thumb tip first
    torch.testing.assert_close(interhand[:, 3], joints[:, 1])  # thumb root joint
    mano = convert_joints(joints, "openpose", "mano")
    torch.testing.assert_close(mano[:, 1], joints[:, 5])  # index MCP follows the wrist
    torch.testing.assert_close(mano[:, 13], joints[:, 1])  # thumb joints after the ring finger
    torch.testing.assert_close(mano[:, 16], joints[:, 4])  # tips appended, thumb first
    with pytest.raises(ValueError, match="unknown joint order"):
        convert_joints(joints, "openpose", "coco")


def test_named_poses_differ_and_respect_limits():
    model = HandModel()
    tips = {}
    for name in POSES:
        params = named_pose(model, name, torch.float64)
        lo, hi = model.limits.T
        assert ((params.angles >= lo) & (params.angles <= hi)).all(), name
        tips[name] = model(params).joints[[4, 8, 12, 16, 20]]
    assert (tips["fist"][1:] - tips["open"][1:]).norm(dim=-1).min() > 0.05  # fingers curled
    assert (tips["pinch"][0] - tips["pinch"][1]).norm() < 0.005  # thumb tip on index tip
    assert (tips["point"][1] - tips["open"][1]).norm() < 0.02  # the index stays out


@pytest.mark.parametrize("name", sorted(TWO_HAND_PRESETS))
def test_two_hand_presets_interpenetrate(name):
    right, left = HandModel("right"), HandModel("left")
    rp, lp = two_hand_preset(name, torch.float64)
    rv, lv = right(rp).verts, left(lp).verts
    inside_right = ref.winding_number(lv, rv, right.faces) > 0.5
    inside_left = ref.winding_number(rv, lv, left.faces) > 0.5
    assert inside_right.sum() >= 1 and inside_left.sum() >= 1, (inside_right.sum(), inside_left.sum())
    assert inside_right.sum() + inside_left.sum() >= 10


def test_winding_number_reference_on_a_hand():
    """The test reference itself: 1 at points well inside the rest hand, 0 far away."""
    model = HandModel()
    out = model(model.rest_pose((), torch.float64))
    inside = torch.stack([out.joints[9] * 0.5, (out.joints[5] + out.joints[6]) / 2])  # mid-palm, index bone
    outside = torch.tensor([[0.0, 0.0, 0.2], [0.3, 0.0, 0.0]], dtype=torch.float64)
    w = ref.winding_number(torch.cat([inside, outside]), out.verts, model.faces)
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_export_round_trip(tmp_path, suffix):
    model = HandModel(resolution="fine")
    verts = model(named_pose(model, "fist")).verts
    path = tmp_path / f"hand{suffix}"
    model.export(verts, path)
    loaded = trimesh.load(path, process=False)
    assert loaded.vertices.shape == (model.num_verts, 3) and loaded.is_watertight
    np.testing.assert_allclose(loaded.vertices, verts.numpy(), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="side must be 'right' or 'left'"):
        HandModel("middle")
    with pytest.raises(ValueError, match="resolution must be one of"):
        HandModel(resolution="ultra")
    with pytest.raises(ValueError, match="thumb_dof must be 2 or 3"):
        HandModel(thumb_dof=4)
    with pytest.raises(ValueError, match="unknown angle"):
        HandModel().pose(index_flex=10)
    with pytest.raises(ValueError, match="unknown pose"):
        named_pose(HandModel(), "wave")
    with pytest.raises(ValueError, match="must end in .ply or .obj"):
        HandModel().export(torch.zeros(HandModel().num_verts, 3), "hand.stl")
    with pytest.raises(ValueError, match="verts must have shape"):
        HandModel().to_trimesh(torch.zeros(10, 3))


def test_default_bone_lengths_are_an_adult_hand():
    joints = HandModel()(HandModel().rest_pose((), torch.float64)).joints
    # wrist to middle fingertip joint: Buchholz's middle-finger ratios sum to 0.928 of hand length
    hand_length = (joints[12] - joints[0]).norm()
    assert hand_length == pytest.approx(0.928 * 0.18, rel=1e-6)
    assert len(DEFAULT_BONE_LENGTHS) == 20 and angle_limits().shape == (21, 2)


@requires_cuda
def test_cuda_matches_cpu():
    model = HandModel(resolution="fine")
    params = model.sample_poses(16, torch.Generator().manual_seed(8), global_rotation=True)
    cpu = model(params)
    gpu = model.cuda()(params.to("cuda"))
    torch.testing.assert_close(gpu.verts.cpu(), cpu.verts, rtol=1e-4, atol=1e-6)


def _rotation(axis: int, angle: float) -> np.ndarray:
    """The right-handed rotation by ``angle`` about coordinate axis ``axis``, written out."""
    c, s = np.cos(angle), np.sin(angle)
    return [np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])][axis]


def test_local_skeleton_by_hand():
    # each chain: rest frame, then abduction (about z, radial = -), flexion (about x, palmar = -) and
    # the thumb's twist (about y); the distal joints flex; joints step along each frame's y axis
    from handgeom.hand.kinematics import _rest_chain_frames, local_skeleton
    from handgeom.hand.skeleton import CHAIN_ANGLES

    model = HandModel()
    params = model.sample_poses(8, torch.Generator().manual_seed(3), length_jitter=0.2, dtype=torch.float64)
    joints, frames = local_skeleton(params.angles, params.bone_lengths)
    rest = _rest_chain_frames(torch.float64, torch.device("cpu")).numpy()
    for b in range(8):
        a = np.append(params.angles[b].numpy(), 0.0)  # index -1: no twist
        lengths = params.bone_lengths[b].numpy().reshape(5, 4)
        for f, (flex1, abd, twist, flex2, flex3) in enumerate(CHAIN_ANGLES):
            f1 = rest[f] @ _rotation(2, -a[abd]) @ _rotation(0, -a[flex1]) @ _rotation(1, a[twist])
            f2 = f1 @ _rotation(0, -a[flex2])
            f3 = f2 @ _rotation(0, -a[flex3])
            chain = [rest[f], f1, f2, f3]
            point = np.zeros(3)
            for k, frame in enumerate(chain):
                point = point + frame[:, 1] * lengths[f, k]
                np.testing.assert_allclose(joints[b, 1 + 4 * f + k].numpy(), point, rtol=0, atol=1e-15)
                np.testing.assert_allclose(frames[b, 4 * f + k].numpy(), frame, rtol=0, atol=1e-15)
    assert (joints[:, 0] == 0).all()


@pytest.mark.parametrize("resolution", ["coarse", "fine"])
def test_surface_follows_its_recipe_by_hand(resolution):
    # the vertex recipe of HandSurface's docstring, vertex by vertex, against its one matrix product
    from handgeom.hand.kinematics import local_skeleton

    model = HandModel(resolution=resolution)
    surface = model.surface
    params = model.sample_poses(3, torch.Generator().manual_seed(4), length_jitter=0.2, dtype=torch.float64)
    joints, frames = local_skeleton(params.angles, params.bone_lengths)
    verts = surface.vertices(joints, frames)
    palm = surface.palm_offsets.shape[0]
    for b in range(3):
        J, F = joints[b].numpy(), frames[b].numpy()
        for i in range(palm):
            expected = surface.palm_coeffs[i].numpy() @ J[[1, 5, 9, 13, 17]] + surface.palm_offsets[i].numpy()
            np.testing.assert_allclose(verts[b, i].numpy(), expected, rtol=0, atol=1e-15)
        for i in range(surface.tube_s.shape[0]):
            p, c = int(surface.tube_parent[i]), int(surface.tube_child[i])
            s, blend = float(surface.tube_s[i]), float(surface.tube_blend[i])
            frame = (1 - blend) * F[int(surface.tube_bone[i])] + blend * F[int(surface.tube_prev[i])]
            expected = J[p] + s * (J[c] - J[p]) + frame @ surface.tube_offset[i].numpy()
            np.testing.assert_allclose(verts[b, palm + i].numpy(), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3), (2, 3)])
def test_any_batch_shape_empty_included(shape):
    model = HandModel("left")
    n = math.prod(shape)
    flat = model.sample_poses(n, torch.Generator().manual_seed(5), global_rotation=True, dtype=torch.float64)
    batch = HandParams(**{f.name: getattr(flat, f.name).reshape(shape + getattr(flat, f.name).shape[1:])
                          for f in fields(HandParams)})
    out = model(batch)
    assert out.verts.shape == (*shape, model.num_verts, 3) and out.joints.shape == (*shape, 21, 3)
    verts = out.verts.reshape(n, model.num_verts, 3)
    for i in range(n):  # each hand as if alone, bit for bit: a hand's bits never depend on its batch
        assert torch.equal(verts[i], model(flat[i]).verts) and torch.equal(out.joints.reshape(n, 21, 3)[i], model(flat[i]).joints)


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_subset_of_vertices_is_those_rows_of_the_full_output(side):
    model = HandModel(side)
    params = model.sample_poses(6, torch.Generator().manual_seed(6), global_rotation=True, dtype=torch.float64)
    params.translation = torch.randn(6, 3, dtype=torch.float64)
    index = torch.tensor([model.num_verts - 1, 0, 200, 200, 57])
    full, part = model(params), model(params, index)
    assert torch.equal(part.verts, full.verts[:, index]) and torch.equal(part.joints, full.joints)
