"""The DIR network (InteractingHandsNet), its losses against hand computations, its metrics, and
handgeom's ops under autocast."""

import math

import pytest
import torch
import torch.nn.functional as F

import handgeom.models.dir as dir_module
from handgeom.datasets import SyntheticInteractingHands
from handgeom.hand import HandModel
from handgeom.losses import (DIR_WEIGHTS, dir_loss, dir_targets, edge_length_loss, mesh_edges, normal_loss,
                             placed_meshes)
from handgeom.metrics import alignment_scale, mpjpe
from handgeom.models import InteractingHandsNet, ResNet
from handgeom.ops import bone_plane_conv, bone_plane_projection, edge_conv2d, penetration_loss, points_inside_mesh

FACES = (HandModel("right").faces, HandModel("left").faces)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return InteractingHandsNet("tiny")


@pytest.fixture(scope="module")
def batch():
    data = SyntheticInteractingHands(2, 64, seed=3)
    return torch.utils.data.default_collate([data[0], data[1]])


def test_output_shapes(tiny, batch):
    outputs = tiny(batch["image"])
    assert len(outputs) == 1 + tiny.config.stages
    for out in outputs:
        assert out["joints"].shape == (2, 2, 21, 3) and out["verts"].shape == (2, 2, 330, 3)
        assert out["joints_uv"].shape == (2, 2, 21, 2) and out["verts_uv"].shape == (2, 2, 330, 2)
        assert out["camera"].shape == (2, 2, 3) and out["offset"].shape == (2, 3) and out["raw"].shape == (2, 2, 50)
        assert len(out["params"]) == 2 and out["params"][0].angles.shape == (2, 21)
        assert torch.allclose(out["joints"][:, :, 0], torch.zeros(2, 2, 3), atol=1e-7)  # root-relative
        for slot, params in enumerate(out["params"]):  # within the joint limits
            limits = tiny.hands[slot].limits
            assert (params.angles >= limits[:, 0] - 1e-6).all() and (params.angles <= limits[:, 1] + 1e-6).all()
    assert outputs[-1]["seg"].shape == (2, 3, 8, 8) and outputs[-1]["dense"].shape == (2, 3, 8, 8)


def test_a_gradient_reaches_every_parameter(tiny, batch):
    tiny.zero_grad()
    total, terms = dir_loss(tiny(batch["image"]), dir_targets(batch), FACES)
    total.backward()
    missing = [name for name, p in tiny.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert set(terms) == set(DIR_WEIGHTS)


def test_projection_path_uses_the_op(tiny, batch, monkeypatch):
    import copy

    net = copy.deepcopy(tiny)
    with torch.no_grad():  # the stages' regressors start at zero (an identity update): wake them
        for stage in net.stages:
            for layer in (*stage.regress, stage.regress_offset):
                layer.weight.normal_(std=1e-2)
    calls = []

    def zero_planes(*args, **kwargs):  # the bone planes' fused projection and 3x3 convolution
        calls.append(kwargs["size"])
        return torch.zeros_like(bone_plane_conv(*args, **kwargs))

    with torch.no_grad():
        reference = net(batch["image"])
        monkeypatch.setattr(dir_module, "bone_plane_conv", zero_planes)
        zeroed = net(batch["image"])
    assert calls == [(4, 4), (8, 8)]  # strides 16 and 8 of the 64-pixel crop
    # the planes feed the next stage's map: zeroing them changes the last stage and the heads
    assert not torch.allclose(reference[-1]["joints"], zeroed[-1]["joints"])
    assert not torch.allclose(reference[-1]["seg"], zeroed[-1]["seg"])
    assert torch.equal(reference[1]["joints"], zeroed[1]["joints"])  # the first stage regresses before its planes


def test_presets_and_bad_input():
    assert InteractingHandsNet("cpu").image_size == 128 and dir_module.PRESETS["paper"].depth == 50
    with pytest.raises(ValueError, match="preset"):
        InteractingHandsNet("huge")
    with pytest.raises(ValueError, match="images"):
        InteractingHandsNet("tiny")(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="depth"):
        ResNet(20)


def test_resnet_matches_torchvision_layout():
    sizes = {18: 11.18, 34: 21.28, 50: 23.51}  # torchvision's parameter counts without the classifier, millions
    for depth, millions in sizes.items():
        net = ResNet(depth)
        assert abs(sum(p.numel() for p in net.parameters()) / 1e6 - millions) < 0.01
        maps = net(torch.rand(1, 3, 64, 64))
        assert [m.shape[-1] for m in maps] == [16, 8, 4, 2] and [m.shape[1] for m in maps] == net.channels
    assert "layer4.1.bn2.running_mean" in ResNet(18).state_dict()


# ---- losses against hand computations -----------------------------------------------------------


def smooth_l1(x):
    x = abs(x)
    return 0.5 * x * x if x < 1 else x - 0.5


def test_targets(batch):
    t = dir_targets(batch)
    assert torch.allclose(t["joints"][:, :, 0], torch.zeros(2, 2, 3))
    assert torch.allclose(t["offset"], batch["joints_3d"][:, 0, 0] - batch["joints_3d"][:, 1, 0])
    assert t["joints_uv"].abs().max() < 1.2 and set(t["seg"].unique().tolist()) <= {0, 1, 2}


def fake_outputs(t, joint_shift=0.0, offset_shift=0.0):
    """Outputs equal to the targets, but for the given shifts."""
    out = {"joints": t["joints"] + joint_shift, "verts": t["verts"].clone(), "joints_uv": t["joints_uv"].clone(),
           "verts_uv": t["verts_uv"].clone(), "offset": t["offset"] + offset_shift}
    out["seg"] = F.one_hot(t["seg"], 3).permute(0, 3, 1, 2).float() * 50.0  # confident and right
    out["dense"] = t["dense"].clone()
    return out


def test_loss_terms_against_hand_computation(batch):
    t = dir_targets(batch)
    _, zero = dir_loss([fake_outputs(t)], t, FACES)
    for key in ("joints_3d", "verts_3d", "joints_2d", "verts_2d", "edge", "normal", "offset", "dense"):
        assert float(zero[key]) < 1e-6, key
    assert float(zero["seg"]) < 1e-6
    # a 3 cm shift of every joint along x: SmoothL1 of 0.03 / 0.15 on one of the three coordinates
    _, shifted = dir_loss([fake_outputs(t, joint_shift=torch.tensor([0.03, 0.0, 0.0]))], t, FACES)
    assert math.isclose(float(shifted["joints_3d"]), smooth_l1(0.2) / 3, rel_tol=1e-5)
    # two stages sum
    _, two = dir_loss([fake_outputs(t, joint_shift=torch.tensor([0.03, 0.0, 0.0]))] * 2, t, FACES)
    assert math.isclose(float(two["joints_3d"]), 2 * smooth_l1(0.2) / 3, rel_tol=1e-5)
    # an offset error of 30 cm in z: SmoothL1 of 2 = 1.5, over 3 coordinates
    _, off = dir_loss([fake_outputs(t, offset_shift=torch.tensor([0.0, 0.0, 0.3]))], t, FACES)
    assert math.isclose(float(off["offset"]), 1.5 / 3, rel_tol=1e-5)
    # the weighted total
    total, terms = dir_loss([fake_outputs(t, joint_shift=torch.tensor([0.03, 0.0, 0.0]))], t, FACES, {"edge": 0.0})
    expected = sum(DIR_WEIGHTS[k] * float(v) for k, v in terms.items() if k != "edge" and DIR_WEIGHTS[k] > 0)
    assert math.isclose(float(total), expected, rel_tol=1e-5)
    with pytest.raises(ValueError, match="unknown loss terms"):
        dir_loss([fake_outputs(t)], t, FACES, {"chamfer": 1.0})


def test_segmentation_loss_uses_the_class_weights(batch):
    t = dir_targets(batch)
    out = fake_outputs(t)
    out["seg"] = torch.zeros_like(out["seg"])  # uniform: CE = log 3 for every pixel
    _, terms = dir_loss([out], t, FACES)
    assert math.isclose(float(terms["seg"]), math.log(3), rel_tol=1e-5)
    out["seg"][:, 0] = 5.0  # background everywhere: wrong on hand pixels only
    _, terms = dir_loss([out], t, FACES)
    weights = torch.tensor([0.1, 0.45, 0.45])[t["seg"]]
    ce = F.cross_entropy(out["seg"], t["seg"], reduction="none")
    per_sample = (weights * ce).sum((1, 2)) / weights.sum((1, 2))  # each image's weighted mean, then the batch's
    assert math.isclose(float(terms["seg"]), float(per_sample.mean()), rel_tol=1e-5)


def test_edge_and_normal_terms_on_a_triangle():
    faces = torch.tensor([[0, 1, 2]])
    target = torch.tensor([[[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.0, 0.15, 0.0]]])
    assert mesh_edges(faces).tolist() == [[0, 1], [0, 2], [1, 2]]
    stretched = target * torch.tensor([2.0, 1.0, 1.0])  # edges: 0.3, 0.15, sqrt(0.09 + 0.0225)
    expected = (1.0 + 0.0 + (math.sqrt(0.1125) - math.sqrt(0.045)) / 0.15) / 3
    assert math.isclose(float(edge_length_loss(stretched, target, mesh_edges(faces), torch.ones(1))), expected, rel_tol=1e-5)
    assert float(normal_loss(stretched, target, faces, torch.ones(1))) < 1e-7  # still in the plane
    tilted = target.clone()
    tilted[0, 1, 2] = 0.15  # edge 0-1 at 45 degrees out of the plane: |cos| = 1/sqrt(2) on two edges
    edges = [tilted[0, 1] - tilted[0, 0], tilted[0, 2] - tilted[0, 1], tilted[0, 0] - tilted[0, 2]]
    hand = sum(abs(float(e[2] / e.norm())) for e in edges) / 3
    assert math.isclose(float(normal_loss(tilted, target, faces, torch.ones(1))), hand, rel_tol=1e-5)


def test_physical_terms_are_zero_apart_and_positive_when_interpenetrating(batch):
    t = dir_targets(batch)
    out = fake_outputs(t)
    _, apart = dir_loss([out], t, FACES)  # the ground truth is intersection-free
    assert float(apart["penetration"]) == 0
    out["offset"] = torch.zeros_like(out["offset"])  # both roots at the origin: the hands overlap
    total, inter = dir_loss([out], t, FACES, {"penetration": 1.0, "occupancy": 1.0})
    assert float(inter["penetration"]) > 0 and float(inter["occupancy"]) > 0
    right, left = placed_meshes(out)
    manual = (penetration_loss(right, left, FACES[1], reduction="none").mean(1)
              + penetration_loss(left, right, FACES[0], reduction="none").mean(1)).mean()
    assert math.isclose(float(inter["penetration"]), float(manual), rel_tol=1e-5)
    assert points_inside_mesh(left, right, FACES[0]).any()


def test_pose_metrics():
    target = torch.zeros(1, 21, 3)
    target[0, 9] = torch.tensor([0.0, 0.1, 0.0])
    pred = target * 2
    assert math.isclose(float(mpjpe(pred, target)), 0.1 / 21, rel_tol=1e-6)
    assert math.isclose(float(mpjpe(pred, target, torch.tensor([[True] * 9 + [False] * 12]))), 0.0, abs_tol=1e-9)
    assert math.isclose(float(alignment_scale(pred, target)), 0.5, rel_tol=1e-6)
    assert float(mpjpe(alignment_scale(pred, target)[..., None, None] * pred, target)) < 1e-7


def test_fused_plane_reduction_is_the_projection_then_reduce():
    """bone_plane_conv in the stages gives what DIR's two steps give with the same weights (the
    shipped weights, loaded unchanged): the planes, then stage.reduce."""
    net = InteractingHandsNet.pretrained()
    gen = torch.Generator().manual_seed(3)
    uv = torch.rand(2, 42, 2, generator=gen) * 1.6 - 0.8
    for stage, size in zip(net.stages, [(8, 8), (16, 16)]):
        feats = torch.randn(2, 42, stage.plane_features.out_features, generator=gen)
        x = torch.zeros(2, 1, *size)
        with torch.no_grad():
            fused = net.reduce_planes(stage, uv, feats, x)
            planes = bone_plane_projection(uv, feats, net.bones, size, radius=stage.radius)
            expected = stage.reduce(planes)
        assert expected.abs().max() > 0
        torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)


def test_shipped_weights_reconstruct_held_out_hands():
    """The shipped cpu weights, with their record, on 16 fresh images (seed 7): far better than the
    mean pose (about 85 mm), and the refinement stages improve on the initial regressor."""
    net = InteractingHandsNet.pretrained()
    assert not net.training and net.image_size == 128
    assert net.record["preset"] == "cpu" and net.record["steps"] > 0 and net.record["held_out"]["samples"] == 500
    data = SyntheticInteractingHands(16, net.image_size, seed=7)
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    targets = dir_targets(batch)
    with torch.no_grad():
        outputs = net(batch["image"])
    error = [float(mpjpe(out["joints"], targets["joints"]).mean()) for out in outputs]
    assert error[-1] < 0.06 and error[-1] < error[0], error


# ---- autocast ---------------------------------------------------------------------------------------


def test_ops_run_in_float32_under_cpu_autocast():
    g = torch.Generator().manual_seed(0)
    uv = (torch.rand(2, 4, 2, generator=g) * 2 - 1)
    feat = torch.randn(2, 4, 3, generator=g)
    bones = torch.tensor([[0, 1], [2, 3]])
    reference = bone_plane_projection(uv.bfloat16().float(), feat.bfloat16().float(), bones, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bone_plane_projection(uv.bfloat16(), feat.bfloat16().requires_grad_(), bones, 8)
        assert out.dtype == torch.float32
        x = torch.randn(1, 21, 8, 8).bfloat16()
        w = torch.randn(61, 3, 3).bfloat16()
        from handgeom.models import hand_graph_edges
        assert edge_conv2d(x, w, hand_graph_edges()).dtype == torch.float32
        verts = HandModel()(HandModel().rest_pose((1,))).verts
        assert penetration_loss(verts.bfloat16(), verts, FACES[0]).dtype == torch.float32
    assert torch.equal(out, reference)
    out.sum().backward()  # the backward runs too
