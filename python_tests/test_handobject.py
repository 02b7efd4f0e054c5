"""The hand-object network (HandObjectNet): shapes, gradients, the contact graph, its loss terms
against hand computations (the SDF terms against an analytic box distance), its evaluation and
shipped weights (its command line's errors: test_train.py)."""

import copy
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

import handgeom.models.handobject as ho_module
from handgeom.datasets import Augment, SyntheticHandObject
from handgeom.losses import (CONTACT_DISTANCE, HANDOBJECT_WEIGHTS, contact_loss, hand_object_penetration,
                             handobject_loss, handobject_targets)
from handgeom.models import HandObjectNet
from handgeom.models.handobject import BOX_EDGES, box_keypoints, contact_adjacency
from handgeom.train import evaluate_checkpoint, system, train
from handgeom.train.handobject import RightHand
from references import signed_volume
from test_readers import S, dexycb_fixture, ho3d_fixture

HANDOBJECT = system("handobject")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return HandObjectNet("tiny")


@pytest.fixture(scope="module")
def targets():
    data = SyntheticHandObject(2, 64, seed=3)
    return handobject_targets(torch.utils.data.default_collate([data[0], data[1]]))


def _run(net, t):
    return net(t["image"], t["template"], t["object_class"])


def _cube(centre, half):
    """An axis-aligned closed cube, outward faces: ``(verts [8, 3], faces [12, 3])``."""
    bits = torch.tensor([[(k >> a) & 1 for a in range(3)] for k in range(8)], dtype=torch.float64)
    verts = torch.as_tensor(centre, dtype=torch.float64) + (2 * bits - 1) * half
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]  # -z +z -y +y -x +x
    faces = torch.tensor([f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))])
    return verts, faces


def _box_depth(points, centre, half):
    """Analytic: how deep each point lies inside the cube (0 outside)."""
    inside = half - (points - torch.as_tensor(centre, dtype=points.dtype)).abs()
    return inside.amin(-1).clamp_min(0)


def _box_distance(points, centre, half):
    """Analytic: each point's distance to the cube from outside (0 inside)."""
    outside = ((points - torch.as_tensor(centre, dtype=points.dtype)).abs() - half).clamp_min(0)
    return outside.norm(dim=-1)


def test_output_shapes(tiny, targets):
    outputs = _run(tiny, targets)
    assert len(outputs) == 2
    vo = targets["template"].shape[1]
    for out in outputs:
        assert out["joints"].shape == (2, 21, 3) and out["verts"].shape == (2, 330, 3)
        assert out["joints_uv"].shape == (2, 21, 2) and out["camera"].shape == (2, 3) and out["raw"].shape == (2, 50)
        assert out["object_verts"].shape == (2, vo, 3) and out["object_keypoints"].shape == (2, 9, 3)
        assert out["object_rotation"].shape == (2, 3, 3) and out["object_uv"].shape == (2, 9, 2)
        assert torch.allclose(out["joints"][:, 0], torch.zeros(2, 3), atol=1e-7)  # root-relative
        eye = out["object_rotation"] @ out["object_rotation"].transpose(1, 2)
        assert torch.allclose(eye, torch.eye(3).expand(2, 3, 3), atol=1e-5)
        posed = targets["template"] @ out["object_rotation"].transpose(1, 2) + out["object_translation"][:, None]
        assert torch.allclose(out["object_verts"], posed, atol=1e-6)
    assert outputs[-1]["hand_seg"].shape == (2, 1, 4, 4) and outputs[-1]["object_seg"].shape == (2, 1, 4, 4)


def test_a_gradient_reaches_every_parameter(tiny, targets):
    net = copy.deepcopy(tiny)
    with torch.no_grad():  # the object regressor and the updates start at zero: wake them, so that every path carries gradient
        for layer in (net.object_initial, net.hand_update, net.object_update):
            layer.weight.normal_(std=1e-2)
    total, terms = handobject_loss(_run(net, targets), targets, net.hand_model.faces)
    total.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert set(terms) == set(HANDOBJECT_WEIGHTS)


def test_guidance_uses_the_fused_projection(tiny, targets, monkeypatch):
    net = copy.deepcopy(tiny)
    with torch.no_grad():
        for layer in (net.hand_update, net.object_update):
            layer.weight.normal_(std=1e-2)
    calls, fused = [], ho_module.bone_plane_conv

    def zero_planes(*args, **kwargs):
        calls.append(args[2].shape[0])  # bones: the hand's 20, the box's 12 edges
        return torch.zeros_like(fused(*args, **kwargs))

    with torch.no_grad():
        reference = _run(net, targets)
        monkeypatch.setattr(ho_module, "bone_plane_conv", zero_planes)
        zeroed = _run(net, targets)
    assert calls == [20, 12]
    assert not torch.allclose(reference[-1]["joints"], zeroed[-1]["joints"])
    assert not torch.allclose(reference[-1]["object_verts"], zeroed[-1]["object_verts"])
    assert torch.equal(reference[0]["joints"], zeroed[0]["joints"])  # the initial estimate comes before the graph


def test_box_keypoints_and_edges():
    template = torch.tensor([[[-1.0, -2.0, -3.0], [1.0, 2.0, 3.0], [0.5, 0.0, 0.0], [-1.0, -2.0, -3.0]]])
    keypoints = box_keypoints(template)[0]
    assert torch.equal(keypoints[0], torch.tensor([-1.0, -2.0, -3.0])) and torch.equal(keypoints[7], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(keypoints[1], torch.tensor([1.0, -2.0, -3.0])) and torch.equal(keypoints[8], torch.zeros(3))
    assert BOX_EDGES.shape == (12, 2)
    differ = (keypoints[BOX_EDGES[:, 0]] != keypoints[BOX_EDGES[:, 1]]).sum(1)
    assert (differ == 1).all()  # each edge runs along one axis
    assert len({tuple(e) for e in BOX_EDGES.tolist()}) == 12


def test_contact_graph():
    torch.manual_seed(1)
    hand, obj = torch.randn(2, 21, 3) * 0.05, torch.randn(2, 9, 3) * 0.05
    sigma = torch.tensor(0.03)
    adjacency = contact_adjacency(hand, obj, sigma)
    assert adjacency.shape == (2, 30, 30)
    assert torch.allclose(adjacency.sum(-1), torch.ones(2, 30))
    for b in range(2):
        i, j = 4, 6
        d2 = ((hand[b, i] - obj[b, j]) ** 2).sum()
        row = 1 + sum(math.exp(-float(((hand[b, i] - obj[b, k]) ** 2).sum()) / (2 * 0.03 ** 2)) for k in range(9))
        assert math.isclose(float(adjacency[b, i, 21 + j]), math.exp(-float(d2) / (2 * 0.03 ** 2)) / row, rel_tol=1e-5)
        assert math.isclose(float(adjacency[b, i, i]), 1 / row, rel_tol=1e-5)
    off = adjacency[:, :21, :21] - torch.diag_embed(torch.diagonal(adjacency[:, :21, :21], dim1=1, dim2=2))
    assert off.abs().max() == 0  # no hand-hand edges: the skeleton is the topology GCN's
    assert adjacency[:, 21:, 21:].triu(1).abs().max() == 0
    near = contact_adjacency(hand, hand[:, :9] + 1e-4, sigma)  # object nodes on hand joints: strong edges
    assert torch.allclose(near[:, 0, 21], near[:, 0, 0], rtol=1e-3)  # as strong as the identity


def test_loss_terms_against_hand_computation(targets):
    faces = HandObjectNet("tiny").hand_model.faces
    exact = {"joints": targets["joints"], "verts": targets["verts"], "joints_uv": targets["joints_uv"],
             "object_verts": targets["object_verts"]}
    logits = torch.zeros(2, 1, 4, 4)
    outputs = [dict(exact), {**exact, "hand_seg": logits, "object_seg": logits}]
    total, terms = handobject_loss(outputs, targets, faces, {"penetration": 0.0, "contact": 0.0})
    for key in ("joints_3d", "verts_3d", "joints_2d", "object"):
        assert terms[key] == 0, key
    assert math.isclose(float(terms["seg"]), 2 * math.log(2), rel_tol=1e-6)  # zero logits: ln 2 per pixel, two masks
    assert math.isclose(float(total), HANDOBJECT_WEIGHTS["seg"] * 2 * math.log(2), rel_tol=1e-6)
    # a shift of 1.5 cm along x: SmoothL1 of 0.1 (the /0.15 m units) on one coordinate of three, both estimates
    shifted = [{**o, "joints": o["joints"] + torch.tensor([0.015, 0, 0])} for o in outputs]
    _, terms = handobject_loss(shifted, targets, faces)
    assert math.isclose(float(terms["joints_3d"]), 2 * 0.5 * 0.1 ** 2 / 3, rel_tol=1e-4)
    # the object term averages only the template's real vertices: moving the padding (copies of
    # vertex 0, as meshes of different sizes get in a batch) changes nothing
    data = SyntheticHandObject(2, 64, seed=3)
    batch = torch.utils.data.default_collate([data[0], data[1]])
    batch["object_verts"] = torch.cat([batch["object_verts"], batch["object_verts"][:, :1].expand(-1, 5, 3)], 1)
    padded_targets = handobject_targets(batch)
    padded = ~padded_targets["object_real"]
    assert padded[:, -5:].all()
    moved = [{**o, "object_verts": torch.where(padded[..., None], padded_targets["object_verts"] + 1.0,
                                               padded_targets["object_verts"])} for o in outputs]
    _, terms = handobject_loss(moved, padded_targets, faces)
    assert terms["object"] == 0


def test_sdf_terms_against_an_analytic_box():
    """Two cubes as the hand and object meshes: the penetration both ways against the analytic
    box depth, zero when apart; the contact attraction against the analytic distance."""
    hand, hand_faces = _cube((0.0, 0.0, 0.0), 0.02)
    for shift, overlapping in ((0.035, True), (0.05, False)):  # off every face plane of the other cube
        obj, obj_faces = _cube((shift, 0.004, 0.003), 0.02)
        real = torch.ones(1, 8, dtype=torch.bool)
        got = hand_object_penetration(hand[None], hand_faces, obj[None], obj_faces, real)
        points = torch.cat([hand, hand[hand_faces].mean(1)])  # the vertices and face centroids
        expected = (_box_depth(points, (shift, 0.004, 0.003), 0.02).mean()
                    + _box_depth(obj, (0.0, 0.0, 0.0), 0.02).mean())
        assert math.isclose(float(got), float(expected), rel_tol=1e-4, abs_tol=1e-7)
        assert (float(got) > 1e-4) == overlapping
    # a gradient reaches both meshes' vertices, and the object's pose through them
    obj, obj_faces = _cube((0.0, 0.0, 0.0), 0.02)
    translation = torch.tensor([0.03, 0.003, 0.0], dtype=torch.float64, requires_grad=True)
    angle = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
    rotation = torch.stack([torch.stack([c, -s, zero]), torch.stack([s, c, zero]), torch.stack([zero, zero, one])])
    hand_leaf = hand.clone().requires_grad_()
    posed = obj @ rotation.T + translation
    hand_object_penetration(hand_leaf[None], hand_faces, posed[None], obj_faces, torch.ones(1, 8, dtype=torch.bool)).sum().backward()
    assert translation.grad.abs().sum() > 0 and angle.grad.abs() > 0 and hand_leaf.grad.abs().sum() > 0
    assert translation.grad[0] < 0  # moving the object away lowers the penetration
    # contact: only vertices outside within 1 cm are attracted, by t tanh(d / t)
    obj, obj_faces = _cube((0.0, 0.0, 0.0), 0.02)
    points = torch.tensor([[[0.023, 0.0, 0.0], [0.0, 0.028, 0.0], [0.0, 0.0, 0.05], [0.0, 0.0, 0.01]]], dtype=torch.float64)
    d = _box_distance(points[0], (0.0, 0.0, 0.0), 0.02)
    near = (d > 0) & (d < CONTACT_DISTANCE)
    expected = (CONTACT_DISTANCE * torch.tanh(d[near] / CONTACT_DISTANCE)).mean()
    assert near.sum() == 2
    assert math.isclose(float(contact_loss(points, obj[None], obj_faces)), float(expected), rel_tol=1e-4)


def test_sdf_term_on_the_synthetic_grasps(targets):
    """The ground truth grasps barely penetrate (at most 1 mm by the dataset's construction);
    the object moved into the hand penetrates."""
    faces = HandObjectNet("tiny").hand_model.faces
    args = (targets["object_faces"], targets["object_real"])
    truth = hand_object_penetration(targets["verts"], faces, targets["object_verts"], *args)
    assert (truth < 1e-4).all()
    centre = targets["verts"].mean(1, keepdim=True)
    sunk = targets["object_verts"] - targets["object_verts"].mean(1, keepdim=True) + centre
    assert (hand_object_penetration(targets["verts"], faces, sunk, *args) > 1e-3).all()


def test_presets_and_bad_input(tiny, targets):
    assert HandObjectNet("cpu").image_size == 128 and ho_module.PRESETS["paper"].depth == 50
    with pytest.raises(ValueError, match="unknown preset"):
        HandObjectNet("huge")
    images, template, cls = targets["image"], targets["template"], targets["object_class"]
    with pytest.raises(ValueError, match="images"):
        tiny(images[0], template, cls)
    with pytest.raises(ValueError, match="template"):
        tiny(images, template[0], cls)
    with pytest.raises(ValueError, match="object_class"):
        tiny(images, template, cls + 100)
    with pytest.raises(TypeError, match="object_class"):
        tiny(images, template, cls.float())
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny(F.interpolate(images, size=(48, 48)), template, cls)


def test_train_and_eval_a_tiny_checkpoint(tmp_path):
    path = train(HANDOBJECT, "tiny", "synthetic", tmp_path / "run", steps=2, progress=False)
    metrics = evaluate_checkpoint(HANDOBJECT, path, "synthetic", tmp_path / "eval", size=2, seed=5)
    for group in ("initial", "refined"):
        assert {"mpjpe", "pa_mpjpe", "mpvpe", "pa_mpvpe", "object_mm", "object_centre_mm"} <= set(metrics[group])
        assert metrics[group]["pa_mpjpe"] <= metrics[group]["mpjpe"] + 1e-6  # the alignment can only lower it
    for group in ("predicted", "truth"):
        assert {"distance_mm", "depth_mm", "volume_1mm_cm3", "volume_5mm_cm3", "contact"} == set(metrics[group])
    assert metrics["truth"]["depth_mm"] <= 1.0 and metrics["samples"] == 2
    assert "PA-MPJPE" in (tmp_path / "eval" / "eval.md").read_text()
    assert (tmp_path / "eval" / "examples.png").stat().st_size > 0


def test_right_hand_mirrors_a_left_hand_frame(tmp_path):
    cls, _, _ = dexycb_fixture(tmp_path)
    ds = cls(tmp_path, image_size=S, objects=True)
    left = ds[1]  # the left-hand sequence's frame
    assert left["hand_valid"].tolist() == [False, True]
    right = RightHand()(left, 1)
    mirror = torch.tensor([-1.0, 1.0, 1.0])
    assert right["hand_valid"].tolist() == [True, False]
    torch.testing.assert_close(right["joints_3d"][0], left["joints_3d"][1] * mirror)
    torch.testing.assert_close(right["image"], left["image"].flip(-1), atol=1e-5, rtol=0)
    t = handobject_targets(torch.utils.data.default_collate([right]))
    template = handobject_targets(torch.utils.data.default_collate([left]))["template"]
    torch.testing.assert_close(t["template"], template * mirror, atol=1e-6, rtol=0)  # the mirrored object
    assert signed_volume(right["object_verts"], right["object_faces"]) > 0  # still outward-oriented
    assert torch.equal(RightHand()(ds[0], 0)["image"], ds[0]["image"])  # a right hand's frame stays as it is
    with pytest.raises(ValueError, match="objects=True"):  # a pose alone cannot be mirrored
        RightHand()(cls(tmp_path, image_size=S)[1], 1)
    with pytest.raises(ValueError, match="must not flip"):
        RightHand(Augment(flip=0.5))


def test_train_and_eval_on_a_ho3d_layout(tmp_path):
    root = tmp_path / "ho3d"
    ho3d_fixture(root)
    shutil.copytree(root / "train", root / "evaluation")  # the full annotations of the evaluation split
    path = train(HANDOBJECT, "tiny", f"ho3d:{root}", tmp_path / "run", steps=2, progress=False)
    metrics = evaluate_checkpoint(HANDOBJECT, path, f"ho3d:{root}", tmp_path / "eval", size=1)
    assert metrics["samples"] == 1 and math.isfinite(metrics["refined"]["mpjpe"])  # a seeded subset of the split
    assert metrics["truth"]["volume_1mm_cm3"] >= 0 and (tmp_path / "eval" / "examples.png").is_file()


@pytest.mark.parametrize("sdf_loss", [True, False])
def test_shipped_weights_reconstruct_held_out_grasps(sdf_loss):
    net = HandObjectNet.pretrained(sdf_loss=sdf_loss)
    record = net.record
    assert net.image_size == 128 and record["system"] == "handobject" and record["preset"] == "cpu"
    penetration = {**HANDOBJECT_WEIGHTS, **record["loss"]}["penetration"]  # the record keeps the preset's changes
    assert (penetration > 0) == sdf_loss and record["held_out"]["samples"] == 500
    data = SyntheticHandObject(4, net.image_size, seed=1)  # held out: the weights trained on seed 0
    t = handobject_targets(torch.utils.data.default_collate([data[i] for i in range(4)]))
    torch.manual_seed(0)
    untrained = HandObjectNet("cpu").eval()
    with torch.no_grad():
        trained, fresh = _run(net, t)[-1], _run(untrained, t)[-1]
    error = lambda out, key: (out[key] - t[key]).norm(dim=-1).mean()
    assert error(trained, "joints") < 0.8 * error(fresh, "joints")
    assert error(trained, "object_verts") < 0.8 * error(fresh, "object_verts")
