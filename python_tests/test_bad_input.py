"""Bad and edge-case input for every public function (issue 19).

1. ``BAD``: a table of (call, expected exception, a word of its message): each call gets one bad
   argument and must fail with an error that names it. The C++ ops' own checks (RuntimeError) have
   their tables in the op families' test files; this table holds the Python layer (TypeError for
   a wrong type or dtype, ValueError for a wrong shape or value) and the rules added for issue 19.
2. Documented results for edge cases that must work: empty batches, non-finite meshes (NaN
   results that reach the loss), extreme scales, a BVH's own vertices.
3. Non-contiguous inputs (transposed, stepped, expanded) give the contiguous results.
4. A child process proves that the raw ops survive non-finite meshes and points (no crash, no hang).
5. The demo CLI's ``--input`` and ``--out``: one line on stderr and exit code 2.
"""

import json
import math
import subprocess
import sys
import zipfile
from functools import lru_cache

import numpy as np
import pytest
import torch
import trimesh
from torch._subclasses.fake_tensor import FakeTensorMode

from handgeom import metrics
from handgeom.__main__ import main
from handgeom.hand import HandModel, HandParams, two_hand_preset
from handgeom.losses import intersection_loss
from handgeom.models import HandOccupancyNet, InteractingHandsNet, SkeletonRefiner, TwoHandUplift
from handgeom.ops import (MeshBVH, bone_plane_projection, conditioned_mlp, edge_conv2d, penetration_loss,
                          points_inside_mesh, ray_mesh_intersect, sample_joint_features, signed_distance)

NAN, INF = float("nan"), float("inf")
F64 = torch.float64
TET_V = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=F64)
TET_F = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # outward
TET_IN = torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.2, 0.1], [0.05, 0.3, 0.2]], dtype=F64)  # inside
TET_OUT = torch.tensor([[2.0, 0.3, 0.4], [-0.5, 0.2, 0.1]], dtype=F64)
TET_POINTS = torch.cat([TET_IN, TET_OUT])[None]
BONES = torch.tensor([[0, 1], [1, 2], [2, 2]])


def tet(batch=1, dtype=F64):
    return TET_V.to(dtype).expand(batch, 4, 3).clone()


def nan_tet(value=NAN):
    """Two tetrahedra, the first with one non-finite coordinate."""
    v = tet(2)
    v[0, 3, 1] = value
    return v


@lru_cache(maxsize=None)
def hands():
    """A right and a left hand (coarse), interlocked: (model_right, model_left, out_right, out_left)."""
    right, left = two_hand_preset("interlocked")
    models = HandModel("right"), HandModel("left")
    return models + (models[0](right), models[1](left))


@lru_cache(maxsize=None)
def occupancy_net():
    return HandOccupancyNet.pretrained()


@lru_cache(maxsize=None)
def dir_net():
    return InteractingHandsNet("tiny").eval()


def joints(batch=2, dtype=torch.float32):
    return hands()[2].joints[None].expand(batch, 21, 3).to(dtype)


def params(**change) -> HandParams:
    p = HandModel().rest_pose((2,))
    for name, value in change.items():
        setattr(p, name, value)
    return p


def keypoints(k=21):
    return torch.rand(2, k, 2, generator=torch.Generator().manual_seed(0)) * 100


def moved_in_place():
    v = tet()
    bvh = MeshBVH(v, TET_F)
    v.add_(1.0)
    return signed_distance(TET_POINTS, v, TET_F, bvh=bvh)


def mlp_args():
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)
    return [r(1, 5, 3), r(8, 3), r(8), r(2, 8, 8), r(2, 8), r(8), r(1), r(1, 2, 8), r(1, 2, 8)]


def with_arg(index, value):
    args = mlp_args()
    args[index] = value
    return args


BOX = trimesh.creation.box()
BOX_V, BOX_F = torch.tensor(BOX.vertices, dtype=torch.float32)[None], torch.tensor(BOX.faces)
UV, FEAT = torch.zeros(1, 3, 2), torch.ones(1, 3, 4)
MAP = torch.randn(1, 4, 8, 8)
X, W, EDGES = torch.randn(1, 3, 8, 8), torch.randn(2, 3, 3), torch.tensor([[0, 1], [1, 2]])

BAD = [  # id, call, error, word of the message
    # ---- projection
    ("bpp size (8,)", lambda: bone_plane_projection(UV, FEAT, BONES, (8,)), ValueError, "size must be an integer or a pair"),
    ("bpp size 8.0", lambda: bone_plane_projection(UV, FEAT, BONES, 8.0), TypeError, "size must be an integer"),
    ("bpp size str", lambda: bone_plane_projection(UV, FEAT, BONES, "8"), TypeError, "size must be an integer"),
    ("bpp size (8, 2.5)", lambda: bone_plane_projection(UV, FEAT, BONES, (8, 2.5)), TypeError, "size[1] must be an integer"),
    ("bpp uv 1e30", lambda: bone_plane_projection(torch.full((1, 3, 2), 1e30), FEAT, BONES, 8), RuntimeError,
     "joint_uv must be finite and within [-1048576, 1048576]"),
    ("bpp profile", lambda: bone_plane_projection(UV, FEAT, BONES, 8, profile="box"), ValueError, "profile must be"),
    ("sjf int feat", lambda: sample_joint_features(MAP.long(), UV), TypeError, "feat must be a floating point tensor"),
    ("sjf bool feat", lambda: sample_joint_features(MAP > 0, UV), TypeError, "feat must be a floating point tensor"),
    ("sjf H=0", lambda: sample_joint_features(MAP[:, :, :0], UV), ValueError, "feat must have H, W >= 1"),
    ("sjf W=0", lambda: sample_joint_features(MAP[..., :0], UV), ValueError, "feat must have H, W >= 1"),
    ("sjf batch", lambda: sample_joint_features(MAP, UV.expand(2, 3, 2)), ValueError, "joint_uv must have shape [B, J, 2] with B = 1"),
    ("sjf list", lambda: sample_joint_features(MAP.tolist(), UV), TypeError, "feat must be a tensor"),
    # ---- edge convolution
    ("edge method", lambda: edge_conv2d(X, W, EDGES, method="fft2"), ValueError, "method must be 'auto', 'direct' or 'fft'"),
    ("edge aggregation", lambda: edge_conv2d(X, W, EDGES, aggregation="max"), ValueError, "aggregation must be"),
    ("edge weight 2D", lambda: edge_conv2d(X, W[0], EDGES), ValueError, "weight must have shape [E, kh, kw] or"),
    # ---- occupancy MLP (its C++ checks: test_occupancy.py)
    ("mlp weights requiring grad", lambda: conditioned_mlp(*with_arg(3, torch.zeros(2, 8, 8, requires_grad=True))),
     ValueError, "w_hidden requires grad"),
    ("mlp inputs shape", lambda: conditioned_mlp(*with_arg(0, torch.zeros(5, 3))), RuntimeError, "inputs must have shape"),
    # ---- mesh queries
    ("inside n_rays 2", lambda: points_inside_mesh(TET_POINTS, tet(), TET_F, n_rays=2), RuntimeError, "n_rays must be odd"),
    ("inside n_rays 4", lambda: points_inside_mesh(TET_POINTS, tet(), TET_F, n_rays=4), RuntimeError, "n_rays must be odd"),
    ("inside n_rays 11", lambda: points_inside_mesh(TET_POINTS, tet(), TET_F, n_rays=11), RuntimeError, "lie in [1, 9]"),
    ("inside NaN mesh", lambda: points_inside_mesh(TET_POINTS.expand(2, -1, -1), nan_tet(), TET_F), ValueError,
     "verts of mesh 0 has a non-finite value"),
    ("inside Inf mesh", lambda: points_inside_mesh(TET_POINTS.expand(2, -1, -1), nan_tet(-INF), TET_F), ValueError,
     "verts of mesh 0"),
    ("inside NaN bvh", lambda: points_inside_mesh(TET_POINTS.expand(2, -1, -1), None, TET_F, bvh=MeshBVH(nan_tet(), TET_F)),
     ValueError, "verts of mesh 0"),
    ("inside int points", lambda: points_inside_mesh(TET_POINTS.long(), tet(), TET_F), TypeError, "points must be a floating"),
    ("inside verts 2D", lambda: points_inside_mesh(TET_POINTS, TET_V, TET_F), ValueError, "verts must have shape [B, V, 3]"),
    ("inside verts None", lambda: points_inside_mesh(TET_POINTS, None, TET_F), TypeError, "verts must be a tensor"),
    ("sdf other bvh", lambda: signed_distance(TET_POINTS, tet(), TET_F, bvh=MeshBVH(tet() * 2, TET_F)), ValueError,
     "verts must hold the vertices the BVH was built from"),
    ("sdf bvh moved in place", moved_in_place, ValueError, "refit the BVH"),
    ("sdf points batch", lambda: signed_distance(TET_POINTS.expand(2, -1, -1), tet(), TET_F), ValueError,
     "points must have shape [B, *, 3] with B = 1"),
    ("sdf points dtype", lambda: signed_distance(TET_POINTS.float(), tet(), TET_F), TypeError, "points must have dtype torch.float64"),
    ("ray dirs", lambda: ray_mesh_intersect(TET_POINTS, TET_POINTS[..., :2], tet(), TET_F), ValueError, "dirs must have shape"),
    ("ray other bvh", lambda: ray_mesh_intersect(TET_POINTS, TET_POINTS, tet(), TET_F, bvh=MeshBVH(tet() + 1, TET_F)),
     ValueError, "verts must hold the vertices the BVH was built from"),
    ("ray bvh batch", lambda: ray_mesh_intersect(TET_POINTS, TET_POINTS, tet(2), TET_F, bvh=MeshBVH(tet(), TET_F)),
     ValueError, "verts must have shape [B, V, 3] with B = 1"),
    ("penetration reduction", lambda: penetration_loss(TET_POINTS, tet(), TET_F, reduction="max"), ValueError,
     "reduction must be 'sum', 'mean' or 'none'"),
    ("bvh int verts", lambda: MeshBVH(tet().int(), TET_F), TypeError, "MeshBVH: verts must be a floating point tensor"),
    ("bvh faces range", lambda: MeshBVH(tet(), TET_F + 1), RuntimeError, "faces entries must lie in [0, 4)"),
    ("refit shape", lambda: MeshBVH(tet(), TET_F).refit(TET_V), ValueError, "MeshBVH.refit: verts must have shape"),
    # ---- hand model
    ("hand 20 angles", lambda: HandModel()(params(angles=torch.zeros(2, 20))), ValueError,
     "angles must have shape [..., 21] with ... = [2]"),
    ("hand 19 lengths", lambda: HandModel()(params(bone_lengths=torch.ones(2, 19))), ValueError, "bone_lengths must have shape"),
    ("hand batch mismatch", lambda: HandModel()(params(angles=torch.zeros(3, 21))), ValueError, "angles must have shape"),
    ("hand scale [B, 1]", lambda: HandModel()(params(scale=torch.ones(2, 1))), ValueError, "scale must have shape [...]"),
    ("hand rotation [.., 4]", lambda: HandModel()(params(rotation=torch.zeros(2, 4))), ValueError,
     "rotation must have shape [..., 3] or [..., 6] or [..., 3, 3]"),
    ("hand int", lambda: HandModel()(params(translation=torch.zeros(2, 3, dtype=torch.long))), TypeError,
     "translation must be a floating point tensor"),
    ("hand mixed dtypes", lambda: HandModel()(params(angles=torch.zeros(2, 21, dtype=F64))), TypeError,
     "angles must have dtype torch.float32"),
    ("hand not params", lambda: HandModel()(torch.zeros(2, 3)), TypeError, "params must be HandParams"),
    ("fit shape", lambda: HandModel().fit(torch.zeros(2, 20, 3)), ValueError, "target_joints must have shape [..., 21, 3]"),
    ("fit int", lambda: HandModel().fit(torch.zeros(2, 21, 3, dtype=torch.long)), TypeError, "target_joints must be a floating"),
    ("fit NaN", lambda: HandModel().fit(torch.full((1, 21, 3), NAN)), ValueError, "target_joints must be finite"),
    ("fit 1e30", lambda: HandModel().fit(torch.full((1, 21, 3), 1e30)), ValueError, "coordinates below 4.3e+09"),
    ("fit iterations", lambda: HandModel().fit(joints(1), iterations=2.5), TypeError, "iterations must be an integer"),
    ("fit iterations < 0", lambda: HandModel().fit(joints(1), iterations=-1), ValueError, "iterations must be at least 0"),
    # ---- occupancy network and losses
    ("occ int points", lambda: occupancy_net()(joints().long(), joints()), TypeError, "points must be a floating"),
    ("occ mixed dtypes", lambda: occupancy_net()(joints(dtype=F64), joints()), TypeError, "joints must have dtype torch.float64"),
    ("occ joints batch", lambda: occupancy_net()(joints(2), joints(3)), ValueError, "joints must have shape [B, 21, 3] with B = 2"),
    ("occ cull NaN", lambda: occupancy_net()(joints(), joints(), cull_margin=NAN), ValueError, "cull_margin must be finite"),
    ("occ cull < 0", lambda: occupancy_net()(joints(), joints(), cull_margin=-1.0), ValueError, "cull_margin must be at least 0"),
    ("loss int joints", lambda: intersection_loss(joints().long(), joints().long()), TypeError, "joints_left must be a floating"),
    ("loss mixed dtypes", lambda: intersection_loss(joints(), joints(dtype=F64)), TypeError, "joints_right must have dtype"),
    ("loss batch", lambda: intersection_loss(joints(2), joints(3)), ValueError, "joints_right must have shape [B, 21, 3] with B = 2"),
    ("loss reduction", lambda: intersection_loss(joints(), joints(), reduction="max"), ValueError, "reduction must be"),
    ("loss points", lambda: intersection_loss(joints(), joints(), points="all"), ValueError, "points must be"),
    ("loss mesh no verts", lambda: intersection_loss(joints(), joints(), points="mesh"), ValueError, "needs verts_left"),
    ("loss verts batch", lambda: intersection_loss(joints(), joints(), points="mesh", verts_left=torch.zeros(3, 5, 3),
                                                   verts_right=torch.zeros(2, 5, 3)), ValueError, "verts_left must have shape"),
    # ---- metrics
    ("pck delta < 0", lambda: metrics.pck(keypoints(), keypoints(), 100, -0.1), ValueError, "delta must be at least 0"),
    ("pck crop < 0", lambda: metrics.pck(keypoints(), keypoints(), -100, 0.1), ValueError, "crop_size must be positive"),
    ("pck crop 0", lambda: metrics.pck(keypoints(), keypoints(), 0, 0.1), ValueError, "crop_size must be positive"),
    ("pck delta NaN", lambda: metrics.pck(keypoints(), keypoints(), 100, NAN), ValueError, "delta must be finite"),
    ("pck shapes", lambda: metrics.pck(keypoints(), keypoints(5), 100, 0.1), ValueError, "target must have shape [..., K, 2]"),
    ("pck visible dtype", lambda: metrics.pck(keypoints(), keypoints(), 100, 0.1, torch.ones(2, 21)), TypeError,
     "visible must be a bool tensor"),
    ("mpck no deltas", lambda: metrics.mpck(keypoints(), keypoints(), 100, deltas=()), ValueError, "deltas must hold at least one"),
    ("mpjpe shapes", lambda: metrics.mpjpe(joints(2), joints(3)), ValueError, "target must have shape [..., N, 3]"),
    ("alignment shapes", lambda: metrics.alignment_scale(joints(2), joints(2)[:, :20]), ValueError, "target_joints must have shape"),
    ("contact threshold NaN", lambda: metrics.contact_ratio(BOX_V, BOX_V, BOX_F, threshold=NAN), ValueError,
     "threshold must be finite"),
    ("contact threshold str", lambda: metrics.contact_ratio(BOX_V, BOX_V, BOX_F, threshold="5mm"), TypeError,
     "threshold must be a real number"),
    ("depth batch", lambda: metrics.penetration_depth(BOX_V.expand(2, -1, -1), BOX_V, BOX_F), ValueError,
     "obj_verts must have shape [B, *, 3] with B = 2"),
    ("volume pitch inf", lambda: metrics.intersection_volume(BOX_V, BOX_F, BOX_V, BOX_F, pitch=INF), ValueError,
     "pitch must be finite"),
    ("volume pitch 0", lambda: metrics.intersection_volume(BOX_V, BOX_F, BOX_V, BOX_F, pitch=0.0), ValueError,
     "pitch must be positive"),
    ("volume resolution 2.5", lambda: metrics.intersection_volume(BOX_V, BOX_F, BOX_V, BOX_F, resolution=2.5), TypeError,
     "resolution must be an integer"),
    ("volume huge grid", lambda: metrics.intersection_volume(BOX_V, BOX_F, BOX_V, BOX_F, pitch=1e-4), ValueError,
     "would have 1e+12 cells"),
    ("volume both", lambda: metrics.intersection_volume(BOX_V, BOX_F, BOX_V, BOX_F, pitch=0.1, resolution=2), ValueError,
     "not both"),
    ("count NaN", lambda: metrics.count_intersections(nan_tet(), TET_F, tet(2), TET_F, 4), ValueError,
     "verts_a of pair 0 has a non-finite value"),
    ("count resolution 2.5", lambda: metrics.count_intersections(BOX_V, BOX_F, BOX_V, BOX_F, 2.5), TypeError,
     "resolution must be an integer"),
    ("count batch", lambda: metrics.count_intersections(BOX_V, BOX_F, BOX_V.expand(2, -1, -1), BOX_F), ValueError,
     "verts_b must have shape [B, *, 3] with B = 1"),
    ("grid resolution 0", lambda: metrics.intersection_grid(BOX_V, BOX_V, 0), ValueError, "resolution"),
    ("grid shape", lambda: metrics.intersection_grid(BOX_V[0], BOX_V), ValueError, "verts_a"),
    ("procrustes shapes", lambda: metrics.procrustes(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3)), ValueError, "target"),
    ("procrustes points", lambda: metrics.procrustes(torch.zeros(2, 5, 2), torch.zeros(2, 5, 2)), ValueError, "pred"),
    ("count occupancy batch", lambda: metrics.count_intersections_occupancy(joints(1), joints(2)), ValueError,
     "joints_right must have shape [B, 21, 3] with B = 1"),
    ("count occupancy NaN", lambda: metrics.count_intersections_occupancy(joints(2), torch.full((2, 21, 3), NAN), 4),
     ValueError, "joints_right of pair 0"),
    ("count occupancy resolution", lambda: metrics.count_intersections_occupancy(joints(1), joints(1), 0), ValueError,
     "resolution must be at least 1"),
    # ---- the DIR network (handgeom/models/dir.py): what it checks today
    ("dir 3D images", lambda: dir_net()(torch.rand(3, 64, 64)), ValueError, "images must have shape [B, 3, H, W]"),
    ("dir 1 channel", lambda: dir_net()(torch.rand(1, 1, 64, 64)), ValueError, "images must have shape [B, 3, H, W]"),
    ("dir not a multiple of 32", lambda: dir_net()(torch.rand(1, 3, 48, 48)), ValueError, "multiple of 32"),
    ("dir too small", lambda: dir_net()(torch.rand(1, 3, 16, 16)), ValueError, "at least 32"),
    ("dir float64", lambda: dir_net()(torch.rand(1, 3, 64, 64, dtype=F64)), TypeError, "network's dtype"),
    ("dir uint8", lambda: dir_net()(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), TypeError, "divide by 255"),
    ("dir NaN", lambda: dir_net()(torch.full((1, 3, 64, 64), float("nan"))), ValueError, "images must be finite"),
    ("uplift 3D keypoints", lambda: TwoHandUplift("tiny")(torch.zeros(1, 2, 21, 3)), ValueError,
     "keypoints must have shape [B, 2, 21, 2]"),
    ("uplift float64", lambda: TwoHandUplift("tiny")(torch.zeros(1, 2, 21, 2, dtype=F64)), TypeError, "network's dtype"),
    ("uplift pretrained flag", lambda: TwoHandUplift.pretrained(intersection_loss=1), TypeError, "intersection_loss"),
    ("refiner one hand", lambda: SkeletonRefiner("tiny")(torch.zeros(1, 21, 3)), ValueError,
     "keypoints must have shape [B, 2, 21, 3]"),
]


@pytest.mark.parametrize("call,error,word", [pytest.param(c, e, w, id=i) for i, c, e, w in BAD])
def test_bad_input_is_named(call, error, word):
    with pytest.raises(error) as info:
        call()
    assert word in str(info.value)


def test_dir_net_of_an_empty_batch_is_empty():
    with torch.no_grad():
        assert dir_net()(torch.rand(0, 3, 64, 64))[-1]["joints"].shape == (0, 2, 21, 3)


def test_fake_projection_rejects_what_the_op_rejects():
    """The fake (meta) implementation checks shapes and options as the C++ op, so a compiled graph
    fails when it is traced, not when it runs."""
    cases = [
        ((torch.zeros(2, 21, 2), torch.zeros(2, 20, 5), BONES), "joint_feat must have shape"),
        ((torch.zeros(2, 21, 3), torch.zeros(2, 21, 5), BONES), "joint_uv must have shape"),
        ((torch.zeros(2, 21, 2), torch.zeros(2, 21, 5, dtype=F64), BONES), "joint_feat must have .*dtype"),
        ((torch.zeros(2, 21, 2), torch.zeros(2, 21, 5), BONES[:, :1]), "bones must have shape"),
        ((torch.zeros(2, 21, 2), torch.zeros(2, 21, 5), BONES.double()), "bones must be int64"),
    ]
    for (uv, feat, bones), word in cases:
        with pytest.raises(RuntimeError, match=word):  # the eager op
            torch.ops.handgeom.bone_plane_projection(uv, feat, bones, 8, 8, 1.0, "hard", 1.0)
        with FakeTensorMode() as mode, pytest.raises((ValueError, TypeError), match=word):
            torch.ops.handgeom.bone_plane_projection(*map(mode.from_tensor, (uv, feat, bones)), 8, 8, 1.0, "hard", 1.0)
    uv, feat = torch.zeros(2, 21, 2), torch.zeros(2, 21, 5)
    for options, word in [((0, 8, 1.0, "hard", 1.0), "size must lie in"), ((8, 8, -1.0, "hard", 1.0), "radius must be positive"),
                          ((8, 8, 1.0, "box", 1.0), "profile must be"), ((8, 8, 1.0, "gaussian", 0.0), "sigma must be positive")]:
        with pytest.raises(RuntimeError, match=word):
            torch.ops.handgeom.bone_plane_projection(uv, feat, BONES, *options)
        with FakeTensorMode() as mode, pytest.raises(ValueError, match=word):
            torch.ops.handgeom.bone_plane_projection(mode.from_tensor(uv), mode.from_tensor(feat), mode.from_tensor(BONES),
                                                     *options)


# ---- documented results: empty batches ----------------------------------------------------------


def test_empty_batches_give_empty_or_zero_results():
    x, w, e = torch.randn(2, 3, 8, 8), torch.randn(2, 9, 9), torch.tensor([[0, 1], [1, 2]])
    for args in [(x[:0], w, e), (x[:, :0], w[:0], e[:0]), (x, w[:0], e[:0]), (x[..., :0], w, e)]:
        torch.testing.assert_close(edge_conv2d(*args, method="fft"), edge_conv2d(*args, method="direct"))
    assert not edge_conv2d(x, w[:0], e[:0], method="fft").any()  # no edges: zeros
    j = joints(2)
    assert intersection_loss(j[:0], j[:0]).item() == 0 and intersection_loss(j[:0], j[:0], reduction="sum").item() == 0
    assert intersection_loss(j[:0], j[:0], reduction="none").shape == (0,)
    net = occupancy_net()
    assert net(j[:0], j[:0], cull_margin=0.03).shape == (0, 21) and net(j[:, :0], j, cull_margin=0.03).shape == (2, 0)
    fitted = HandModel().fit(torch.zeros(0, 21, 3))
    assert fitted.angles.shape == (0, 21) and fitted.rotation.shape == (0, 3, 3) and fitted.scale.shape == (0,)
    torch.testing.assert_close(metrics.penetration_depth(BOX_V[:, :0], BOX_V, BOX_F), torch.zeros(1))
    assert metrics.contact_ratio(BOX_V[:0], BOX_V[:0], BOX_F) == 0.0
    assert metrics.pck(keypoints()[:, :0], keypoints()[:, :0], 100, 0.1) == 0.0
    assert metrics.count_intersections_occupancy(j[:0], j[:0]).shape == (0,)
    assert metrics.count_intersections(BOX_V[:0], BOX_F, BOX_V[:0], BOX_F).shape == (0,)
    assert metrics.intersection_volume(BOX_V[:0], BOX_F, BOX_V[:0], BOX_F).shape == (0,)
    assert penetration_loss(TET_POINTS[:, :0], tet(), TET_F, reduction="mean").item() == 0


def test_hand_model_takes_any_batch_shape():
    """A batch shape (2, 3) of axis-angles ends in 3 like a matrix: the batch shape tells them apart."""
    model = HandModel()
    flat = model.sample_poses(6, torch.Generator().manual_seed(4))
    flat.rotation = torch.randn(6, 3, generator=torch.Generator().manual_seed(5))  # axis-angle
    grid = HandParams(**{k: v.reshape(2, 3, *v.shape[1:]) for k, v in vars(flat).items()})
    torch.testing.assert_close(model(grid).verts.reshape(6, -1, 3), model(flat).verts)


def test_float64_inputs_of_the_occupancy_network_and_loss():
    """Computed in the network's dtype (float32), returned in the inputs' dtype."""
    net, j = occupancy_net(), joints(2)
    points = j + 0.01
    logits = net(points.double(), j.double(), cull_margin=0.03)
    assert logits.dtype == F64
    torch.testing.assert_close(logits, net(points, j, cull_margin=0.03).double())
    loss = intersection_loss(j.double(), (j + 0.01).double())
    assert loss.dtype == F64
    torch.testing.assert_close(loss, intersection_loss(j, j + 0.01).double())


# ---- documented results: non-finite input --------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_a_non_finite_mesh_gives_nan_that_reaches_the_loss(bad):
    verts, points = nan_tet(bad), TET_POINTS.expand(2, -1, -1)
    sdf, face, closest = signed_distance(points, verts, TET_F)
    assert sdf[0].isnan().all() and (face[0] == -1).all() and closest[0].isnan().all()
    alone = signed_distance(points[1:], verts[1:], TET_F)
    torch.testing.assert_close(sdf[1:], alone[0])  # the other mesh of the batch is unaffected
    torch.testing.assert_close(closest[1:], alone[2])
    p, v = points.clone().requires_grad_(), verts.clone().requires_grad_()
    loss = penetration_loss(p, v, TET_F)
    assert loss.isnan()  # the example of the issue: a NaN vertex gave a finite loss of 0.2
    loss.backward()
    assert (p.grad[0] == 0).all() and p.grad[1].abs().sum() > 0  # the finite mesh keeps its gradient
    t, face, bary = ray_mesh_intersect(points, -points, verts, TET_F)
    assert t[0].isnan().all() and (face[0] == -1).all() and bary[0].isnan().all() and (face[1] >= 0).any()
    bvh = MeshBVH(verts, TET_F)  # accepted: the queries answer NaN for mesh 0
    assert not bvh.finite[0] and bvh.finite[1]
    assert penetration_loss(points, verts, TET_F, reduction="none", bvh=bvh)[0].isnan().all()
    assert bvh.refit(tet(2)).finite.all() and not penetration_loss(points, None, TET_F, bvh=bvh).isnan()


def test_non_finite_inputs_of_the_python_layer():
    vr, vl = hands()[2].verts[None], hands()[3].verts[None]
    nan_verts = vl.clone()
    nan_verts[0, 5, 0] = NAN
    faces = hands()[0].faces
    assert metrics.penetration_depth(nan_verts, vr, faces).isnan().all()
    assert metrics.penetration_depth(vr, nan_verts, faces).isnan().all()
    assert math.isnan(metrics.contact_ratio(nan_verts, vr, faces))
    volume = metrics.intersection_volume(torch.cat([vr, vr]), faces, torch.cat([nan_verts, vl]), faces, resolution=20)
    assert volume[0].isnan() and volume[1] > 0
    # the occupancy network: NaN points and joints give NaN logits, with or without culling
    net, j = occupancy_net(), joints(1)
    points = torch.tensor([[[NAN, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    for margin in (None, 0.03):
        logits = net(points, j, cull_margin=margin)
        assert logits[0, 0].isnan() and logits[0, 1] < 0
        assert net(points, torch.full_like(j, NAN), cull_margin=margin).isnan().all()
    assert intersection_loss(torch.full_like(j, NAN), j).isnan()
    # the hand model: NaN parameters, and 6D rotations that span no rotation
    model = HandModel()
    assert model(params(translation=torch.full((2, 3), NAN))).verts.isnan().all()
    assert model(params(angles=torch.full((2, 21), NAN))).joints[:, [4, 8, 12, 16, 20]].isnan().all()  # the tips
    parallel = torch.tensor([[1.0, 0, 0, 2, 0, 0], [0.0] * 6])
    assert model(params(rotation=parallel)).verts.isnan().all()  # was: a hand collapsed to a point


def test_projection_of_nan_features_is_zero_outside_the_masks():
    uv = torch.tensor([[[-0.8, -0.8], [-0.5, -0.8], [0.7, 0.7]]])
    feat = torch.ones(1, 3, 2)
    feat[0, 2] = NAN
    out = bone_plane_projection(uv, feat, BONES, 16, radius=1.5)
    lit = bone_plane_projection(uv, torch.ones(1, 3, 2), BONES, 16, radius=1.5) != 0
    assert not out[~lit].isnan().any() and (out[~lit] == 0).all()  # the reference's 0 outside every mask
    assert out[0, 0:2][lit[0, 0:2]].isfinite().all()  # bone (0, 1) has no NaN feature
    assert out[0, 2:][lit[0, 2:]].isnan().any()  # bones with joint 2 are NaN where they are lit


# ---- documented results: scale ------------------------------------------------------------------


@pytest.mark.parametrize("dtype,scales", [(torch.float32, [1e12, 1e-30, 1e30, 1e-20, 1e-35]),
                                          (F64, [1e200, 1e-200, 1e300, 1e-300])])
def test_mesh_queries_are_scale_invariant(dtype, scales):
    sdf, _, _ = signed_distance(TET_POINTS, tet(), TET_F)  # float64 at unit scale: the reference
    inside = torch.tensor([[True] * 3 + [False] * 2])
    for s in scales:
        p, v = (TET_POINTS * s).to(dtype), (tet() * s).to(dtype)
        torch.testing.assert_close(signed_distance(p, v, TET_F)[0].double() / s, sdf, rtol=1e-6, atol=0)
        torch.testing.assert_close(penetration_loss(p, v, TET_F, reduction="none").double() / s, (-sdf).clamp_min(0),
                                   rtol=1e-6, atol=0)
        if torch.finfo(dtype).tiny < 1e-3 * s * s < torch.finfo(dtype).max:  # the squares are representable
            torch.testing.assert_close(penetration_loss(p, v, TET_F, reduction="none", squared=True).double() / s / s,
                                       sdf.clamp_max(0) ** 2, rtol=1e-5, atol=0)
        assert torch.equal(points_inside_mesh(p, v, TET_F), inside)
        t, face, _ = ray_mesh_intersect(p, torch.ones_like(p), v, TET_F)
        assert ((face >= 0) == inside).all() and (t[inside] > 0).all()


@pytest.mark.parametrize("dtype,far", [(torch.float32, 1e17), (F64, 1e149)])
def test_far_points_within_the_documented_range(dtype, far):
    direction = torch.tensor([0.3, -0.5, 0.8], dtype=F64)
    points = (direction / direction.norm() * far)[None, None].to(dtype)
    sdf = signed_distance(points, tet(dtype=dtype), TET_F)[0]
    torch.testing.assert_close(sdf.double(), torch.full((1, 1), far, dtype=F64), rtol=1e-6, atol=0)
    assert math.isinf(signed_distance(points * 1e6, tet(dtype=dtype), TET_F)[0])  # beyond: +inf, outside


def test_bvh_takes_its_own_vertices():
    v = tet(1).requires_grad_()
    bvh = MeshBVH(v, TET_F)
    sdf = signed_distance(TET_POINTS, v, TET_F, bvh=bvh)[0]
    torch.testing.assert_close(sdf, signed_distance(TET_POINTS, v, TET_F)[0])
    sdf.sum().backward()
    assert v.grad.abs().sum() > 0
    torch.testing.assert_close(signed_distance(TET_POINTS, None, TET_F, bvh=bvh)[0], sdf.detach())  # None: no gradient
    moved = v.detach() * 2
    bvh.refit(moved)
    torch.testing.assert_close(signed_distance(TET_POINTS, moved, TET_F, bvh=bvh)[0], signed_distance(TET_POINTS, moved, TET_F)[0])
    with pytest.raises(ValueError, match="verts must hold the vertices the BVH was built from"):
        signed_distance(TET_POINTS, v, TET_F, bvh=bvh)  # the vertices before the refit
    torch.testing.assert_close(signed_distance(TET_POINTS, moved.clone(), TET_F, bvh=bvh)[0],  # equal values: fine
                               signed_distance(TET_POINTS, moved, TET_F)[0])
    nan_bvh = MeshBVH(nan_tet(), TET_F)
    assert signed_distance(TET_POINTS.expand(2, -1, -1), nan_tet(), TET_F, bvh=nan_bvh)[0][0].isnan().all()  # NaN == NaN
    with torch.inference_mode():
        w = tet(1)
        assert points_inside_mesh(TET_POINTS, w, TET_F, bvh=MeshBVH(w, TET_F)).sum() == 3


# ---- non-contiguous inputs ----------------------------------------------------------------------


def transposed(t):
    return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 else stepped(t)


def stepped(t):
    return t.repeat_interleave(2, dim=-1)[..., ::2] if t.dim() else t


def expanded(t):
    """A batch of 1 expanded to 3 (stride 0): compared with its contiguous copy."""
    return t.expand(3, *t.shape[1:])


def _hand_batch():
    return HandModel().sample_poses(1, torch.Generator().manual_seed(3), global_rotation=True)


NON_CONTIGUOUS = {  # name: (function of tensors, tensors with a leading batch of 1, non-batched tensors)
    "bone_plane_projection": (lambda uv, f, bones: bone_plane_projection(uv, f, bones, (12, 20), 2.5),
                              (torch.rand(1, 3, 2) * 2 - 1, torch.randn(1, 3, 4)), (BONES,)),
    "sample_joint_features": (sample_joint_features, (torch.randn(1, 4, 8, 9), torch.rand(1, 5, 2) * 2 - 1), ()),
    "edge_conv2d": (lambda x, w, e: edge_conv2d(x, w, e), (torch.randn(1, 3, 8, 8),), (torch.randn(2, 3, 3), EDGES)),
    "edge_conv2d fft": (lambda x, w, e: edge_conv2d(x, w, e, method="fft"), (torch.randn(1, 3, 8, 8),),
                        (torch.randn(2, 3, 3), EDGES)),
    "conditioned_mlp": (lambda x, scale, shift, *weights: conditioned_mlp(x, *weights, scale, shift),
                        tuple(mlp_args()[i] for i in (0, 7, 8)), tuple(mlp_args()[1:7])),
    "signed_distance": (lambda p, v, f: signed_distance(p, v, f)[0], (TET_POINTS, tet()), (TET_F,)),
    "penetration_loss": (lambda p, v, f: penetration_loss(p, v, f, reduction="none"), (TET_POINTS, tet()), (TET_F,)),
    "points_inside_mesh": (lambda p, v, f: points_inside_mesh(p, v, f, n_rays=3), (TET_POINTS, tet()), (TET_F,)),
    "ray_mesh_intersect": (lambda o, d, v, f: ray_mesh_intersect(o, d, v, f)[0], (TET_POINTS, -TET_POINTS, tet()), (TET_F,)),
    "HandModel": (lambda r, t, b, a, s: HandModel()(HandParams(r, t, b, a, s[..., 0])).verts,
                  (lambda p: (p.rotation, p.translation, p.bone_lengths, p.angles, p.scale[:, None]))(_hand_batch()), ()),
    "HandOccupancyNet": (lambda p, j: occupancy_net()(p, j, cull_margin=0.03),
                         (joints(1) + 0.01, joints(1)), ()),
    "intersection_loss": (lambda a, b: intersection_loss(a, b, reduction="none"), (joints(1), joints(1) + 0.02), ()),
    "mpjpe": (metrics.mpjpe, (joints(1), joints(1).flip(1)), ()),
}


@pytest.mark.parametrize("layout", [transposed, stepped, expanded])
@pytest.mark.parametrize("name", sorted(NON_CONTIGUOUS))
def test_non_contiguous_inputs_give_the_contiguous_results(name, layout):
    fn, batched, shared = NON_CONTIGUOUS[name]
    if layout is expanded:
        strided, contiguous = [expanded(t) for t in batched] + list(shared), [expanded(t).contiguous() for t in batched] + list(shared)
    else:
        strided = [layout(t) for t in batched] + [layout(t) for t in shared]
        contiguous = list(batched) + list(shared)
    assert any(not t.is_contiguous() for t in strided)
    torch.testing.assert_close(fn(*strided), fn(*contiguous))


# ---- the raw ops survive non-finite meshes (in a child process: a crash must not take pytest) ------

CHILD = r"""
import torch, trimesh, handgeom
nan, inf = float("nan"), float("inf")
s = trimesh.creation.icosphere(subdivisions=3)
v = torch.tensor(s.vertices, dtype=torch.float32)[None].repeat(4, 1, 1)
f = torch.tensor(s.faces)
g = torch.Generator().manual_seed(0)
v[0, torch.randint(0, v.shape[1], (50,), generator=g)] = nan
v[1, ::3], v[2, ::2], v[3] = inf, -inf, nan
p = torch.randn(4, 500, 3, generator=g)
p[:, ::7], p[:, ::11] = nan, inf
order, tris, boxes = torch.ops.handgeom.mesh_bvh(v, f, None)
torch.ops.handgeom.mesh_bvh(v, f, order)
torch.ops.handgeom.mesh_inside(p, order, tris, boxes, 9)
torch.ops.handgeom.mesh_ray_hit(p, p.flip(1), order, tris, boxes)
torch.ops.handgeom.mesh_signed_distance(p, v, f, order, tris, boxes)
torch.ops.handgeom.mesh_penetration(p, v, f, order, tris, boxes, True)
print("survived")
"""


def test_raw_mesh_ops_survive_non_finite_meshes_and_points():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-2000:]


# ---- the demo CLI -------------------------------------------------------------------------------


def _demo_joints():
    return hands()[2].joints.double().numpy(), hands()[3].joints.double().numpy()


def _json(path, right, left):
    path.write_text(json.dumps({"right_joints": np.asarray(right).tolist(), "left_joints": np.asarray(left).tolist()}))


def _write_demo_input(tmp_path, kind):
    right, left = _demo_joints()
    path = tmp_path / {"deep": "deep.json", "millimetres": "mm.json", "1e30": "big.json", "bools": "bools.json"}.get(kind, "in.npz")
    if kind == "millimetres":  # InterHand2.6M's unit
        _json(path, right * 1000, left * 1000)
    elif kind == "1e30":
        _json(path, right + 1e30, left)
    elif kind == "bools":
        _json(path, np.ones((21, 3), dtype=bool), left)
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "complex":
        np.savez(path, right_joints=right.astype(complex) + 1e-3j, left_joints=left)
    else:
        np.savez(path, right_joints=right, left_joints=left)
        data = path.read_bytes()
        corrupt = {"truncated npz": data[:len(data) // 2], "empty npz": b"",
                   "flipped npz": data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:]}
        path.write_bytes(corrupt[kind])
    return path


@pytest.mark.parametrize("kind", ["millimetres", "1e30", "bools", "deep", "complex", "truncated npz", "empty npz",
                                  "flipped npz", "zip of junk"])
def test_demo_input_errors_are_one_line_and_exit_2(tmp_path, capsys, kind):
    if kind == "zip of junk":
        path = tmp_path / "junk.npz"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("right_joints.npy", b"\x93NUMPY junk")
            archive.writestr("left_joints.npy", b"junk")
    else:
        path = _write_demo_input(tmp_path, kind)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--input", str(path), "--steps", "0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("handgeom: error: --input") and "\n" not in err, err
    if kind == "millimetres":
        assert "not a hand in metres" in err and "millimetres" in err
    if kind in ("bools", "complex"):
        assert "array of real numbers" in err


def test_demo_out_naming_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    existing = tmp_path / "report.txt"
    existing.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--steps", "0", "--out", str(existing)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("handgeom: error: --out") and "\n" not in err, err
