"""TwoHandUplift and SkeletonRefiner ("Two Hands Are Better Than One"), their training system
(handgeom.train.uplift) and the Table I experiment (handgeom.experiments.two_hands)."""

from __future__ import annotations

import math

import pytest
import torch

from handgeom.datasets import SyntheticInteractingHands
from handgeom.experiments import two_hands
from handgeom.hand import HandModel, two_hand_preset
from handgeom.losses import intersection_loss, mirror, mutual_penetration, placed_meshes
from handgeom.metrics import count_intersections, mpjpe
from handgeom.models import SkeletonRefiner, TwoHandUplift
from handgeom.models.uplift import PRETRAINED, swap_mirror_keypoints
from handgeom.ops.mesh import penetration_loss
from handgeom.train import export_weights, load_checkpoint, train
from handgeom.train import uplift as system

NETS = [(TwoHandUplift, 2), (SkeletonRefiner, 3)]


def _inputs(dims: int, b: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 2, 21, dims, generator=g) * 0.6 - 0.3
    if dims == 3:  # two skeleton-sized point sets some centimetres apart
        x = x * 0.3 + torch.tensor([0.05, 0.0, 0.5])
    return x


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.pt"
    system.save_pairs(path, {"train": (12, 0, 2), "val": (6, 1, 1), "test": (6, 2, 1)}, progress=False)
    return path


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    return out, two_hands.run(out, two_hands.QUICK, progress=False)


@pytest.mark.parametrize("cls,dims", NETS)
def test_shapes(cls, dims):
    net = cls("tiny")
    out = net(_inputs(dims))
    assert out["joints"].shape == (3, 2, 21, 3)
    assert out["verts"].shape == (3, 2, net.hands[0].num_verts, 3)
    assert out["offset"].shape == (3, 3)
    assert len(out["params"]) == 2 and out["params"][1].angles.shape == (3, 21)
    # root-relative: each wrist at the origin
    assert out["joints"][:, :, 0].abs().max() < 1e-6
    assert torch.isfinite(out["verts"]).all()


def test_preset_sizes():
    # the module docstring's sizes
    assert round(TwoHandUplift("cpu").num_parameters() / 1e6, 2) == 0.48
    assert round(TwoHandUplift("paper").num_parameters() / 1e6, 1) == 9.6


@pytest.mark.parametrize("cls,dims", NETS)
def test_gradients_reach_every_parameter(cls, dims):
    net = cls("tiny")
    out = net(_inputs(dims))
    (out["joints"].square().sum() + out["verts"].square().sum() + out["offset"].square().sum()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls,dims", NETS)
def test_left_hand_is_the_mirrored_right_prediction(cls, dims):
    torch.manual_seed(0)
    net = cls("tiny").double()
    for p in net.parameters():  # a non-trivial network
        p.data.normal_(0, 0.3)
    x = _inputs(dims).double()
    out = net(x)
    # the left hand is the right-hand model, with the predicted parameters seen in the mirror, mirrored back
    left = out["params"][1]
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    right_style = type(left)(rotation=m @ left.rotation @ m, translation=left.translation,
                             bone_lengths=left.bone_lengths, angles=left.angles, scale=left.scale)
    right_model = HandModel("right")
    torch.testing.assert_close(out["joints"][:, 1], mirror(right_model(right_style).joints))
    torch.testing.assert_close(out["verts"][:, 1], mirror(right_model(right_style).verts))
    # and the mirrored, swapped input gives the mirrored, swapped hands
    swapped = net(swap_mirror_keypoints(x))
    torch.testing.assert_close(swapped["joints"][:, 0], mirror(out["joints"][:, 1]))
    torch.testing.assert_close(swapped["joints"][:, 1], mirror(out["joints"][:, 0]))
    torch.testing.assert_close(swapped["verts"][:, 0], mirror(out["verts"][:, 1]))
    torch.testing.assert_close(swapped["offset"], -mirror(out["offset"]))
    # it is not trivially so: the two hands of one input differ
    assert (out["joints"][:, 0] - mirror(out["joints"][:, 1])).abs().max() > 1e-3


def test_swap_mirror_keypoints():
    x = torch.arange(2 * 2 * 21 * 2, dtype=torch.float32).view(2, 2, 21, 2)
    y = swap_mirror_keypoints(x)
    torch.testing.assert_close(y[:, 0, :, 0], -x[:, 1, :, 0])
    torch.testing.assert_close(y[:, 1, :, 1], x[:, 0, :, 1])
    torch.testing.assert_close(swap_mirror_keypoints(y), x)


def test_refiner_sees_relative_placement_only():
    net = SkeletonRefiner("tiny")
    x = _inputs(3)
    a, b = net(x), net(x + torch.tensor([0.3, -0.2, 0.1]))
    torch.testing.assert_close(a["joints"], b["joints"])
    torch.testing.assert_close(a["offset"], b["offset"])
    # the offset is a correction of the input's
    torch.testing.assert_close(a["offset"], x[:, 0, 0] - x[:, 1, 0], atol=0.02, rtol=0)


@pytest.mark.parametrize("cls,dims", NETS)
def test_bad_input(cls, dims):
    net = cls("tiny")
    with pytest.raises(ValueError, match="keypoints"):
        net(torch.zeros(2, 2, 20, dims))
    with pytest.raises(ValueError, match="keypoints"):
        net(torch.zeros(2, 21, dims))
    with pytest.raises(TypeError, match="keypoints"):
        net(torch.zeros(2, 2, 21, dims, dtype=torch.float64))
    with pytest.raises(TypeError, match="keypoints"):
        net([[0.0]])
    with pytest.raises(ValueError, match="preset"):
        cls("huge")
    assert torch.isnan(net(torch.full((1, 2, 21, dims), math.nan))["joints"]).all()  # NaN in, NaN out


def test_pretrained_bad_argument():
    with pytest.raises(TypeError, match="intersection_loss"):
        TwoHandUplift.pretrained(intersection_loss="yes")


def test_annotations_are_the_samples_keypoints():
    scenes = SyntheticInteractingHands(3, 64, seed=5)
    views = scenes.annotations(1, views=3)
    sample = scenes[1]
    for key in ("joints_3d", "joints_2d", "verts", "K", "rotation", "angles", "bone_lengths", "scale"):
        torch.testing.assert_close(views[key][0], sample[key], msg=key)
    assert views["joints_3d"].shape == (3, 2, 21, 3)
    assert (views["joints_2d"][1] - views["joints_2d"][0]).abs().max() > 1  # another camera
    # the views are one scene: the same hands, seen from elsewhere (root-relative shape kept)
    rel = lambda j: (j - j[:, :1]).norm(dim=-1)
    torch.testing.assert_close(rel(views["joints_3d"][2]), rel(views["joints_3d"][0]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="views"):
        scenes.annotations(0, views=0)


def test_pairs_file(pairs):
    data = torch.load(pairs, weights_only=True)["splits"]
    assert data["train"]["joints"].shape == (24, 2, 21, 3)
    assert data["test"]["uv"].shape == (6, 2, 21, 2)
    config = system.PRESETS["tiny"]
    train_set = system.dataset(f"pairs:{pairs}", "train", config, 0, 0)
    val = system.dataset(f"pairs:{pairs}", "eval", config, 4, 1)
    assert len(train_set) == 24 and "input" not in train_set[0]
    assert len(val) == 4 and val[0]["input"].shape == (2, 21, 2)
    again = system.dataset(f"pairs:{pairs}", "eval", config, 4, 1)
    torch.testing.assert_close(again[3]["input"], val[3]["input"])  # held-out inputs are fixed by the seed
    # root-relative targets and the offset are the camera-frame joints'
    item = train_set[5]
    torch.testing.assert_close(item["joints"] + item["joints_cam"][:, :1], item["joints_cam"])
    torch.testing.assert_close(item["offset"], item["joints_cam"][0, 0] - item["joints_cam"][1, 0])
    # the ground truth is the hand model's: its parameters (scale folded into the lengths) give its joints
    for slot, side in enumerate(("right", "left")):
        model = HandModel(side)
        p = model.rest_pose((), torch.float32)
        p.rotation, p.angles, p.bone_lengths = item["rotation"][slot], item["angles"][slot], item["lengths"][slot]
        p.translation = item["joints_cam"][slot, 0]
        torch.testing.assert_close(model(p).joints, item["joints_cam"][slot], atol=1e-5, rtol=0)
    with pytest.raises(system.TrainError, match="pairs:PATH"):
        system.dataset("synthetic", "train", config, 0, 0)


def test_uplift_noise():
    n = 4000
    batch = {"uv": torch.zeros(n, 2, 21, 2)}
    uv = system.corrupt(batch, "uplift", torch.Generator().manual_seed(0))
    error_px = uv * system.IMAGE_SIZE / 2
    outliers = error_px.abs().amax(-1) > 5 * system.UV_SIGMA_PX
    assert abs(outliers.float().mean().item() - system.OUTLIER_RATE * 0.9) < 0.01  # most outliers land far
    robust_sigma = error_px.abs().median().item() / 0.6745  # the Gaussian's, barely moved by 3% outliers
    assert abs(robust_sigma - system.UV_SIGMA_PX) < 0.15
    assert error_px.abs().max() <= system.OUTLIER_PX + 6 * system.UV_SIGMA_PX


def test_refiner_noise_makes_hands_collide(pairs):
    test = system.dataset(f"pairs:{pairs}", "test", system.PRESETS["tiny-refiner"], 6, 2)
    items = test.items
    noisy = items["input"]
    error = (noisy - items["joints_cam"]).norm(dim=-1).mean()
    assert 0.005 < error < 0.05  # centimetres: a plausible estimator's
    centre = lambda j: (j[:, 0].mean(1) - j[:, 1].mean(1)).norm(dim=-1)
    assert (centre(noisy) < centre(items["joints_cam"])).float().mean() > 0.6  # pushed together
    # the noisy hands are hand-model skeletons (bone lengths preserved up to the jitter)
    assert noisy.shape == items["joints_cam"].shape


def test_loss_terms_by_hand(pairs):
    config = system.PRESETS["tiny"]
    config = type(config)(**{**config.__dict__, "loss": {**system.BASE_LOSS, "intersection_dense": 0.5,
                                                         "penetration": 2.0}})
    val = system.dataset(f"pairs:{pairs}", "eval", config, 4, 1)
    batch = {k: v for k, v in val.items.items()}
    net = TwoHandUplift("tiny")
    total, terms = system.loss(net, batch, config, 0)
    out = net(batch["input"])
    joints = (out["joints"] - batch["joints"]).norm(dim=-1).mean()
    offset = (out["offset"] - batch["offset"]).norm(dim=-1).mean()
    lengths = (torch.stack([p.bone_lengths for p in out["params"]], 1) - batch["lengths"]).abs().mean()
    right, left = out["joints"][:, 0], out["joints"][:, 1] - out["offset"][:, None]
    occupancy = intersection_loss(left, right, points="dense", both=True)
    vr, vl = placed_meshes(out)
    faces = net.faces
    penetration = (penetration_loss(vr, vl, faces[1], reduction="none").mean(1)
                   + penetration_loss(vl, vr, faces[0], reduction="none").mean(1)).mean()
    for name, value in (("joints", joints), ("offset", offset), ("lengths", lengths),
                        ("intersection_dense", occupancy), ("penetration", penetration)):
        torch.testing.assert_close(terms[name], value.detach(), msg=name)
    torch.testing.assert_close(total.detach(), (joints + offset + lengths + 0.5 * occupancy + 2 * penetration).detach())


@pytest.mark.parametrize("points", ["sparse", "dense", "mesh"])
def test_intersection_term_alpha(points):
    # an interpenetrating pair, as a network's output (root-relative hands and the offset)
    right, left = two_hand_preset("finger_grasp")
    models = HandModel("right"), HandModel("left")
    hr, hl = models[0](right), models[1](left)
    root_r, root_l = hr.joints[0], hl.joints[0]
    out = {"joints": torch.stack([hr.joints - root_r, hl.joints - root_l])[None],
           "verts": torch.stack([hr.verts - root_r, hl.verts - root_l])[None], "offset": (root_r - root_l)[None]}
    kw = dict(verts_left=(hl.verts - root_r)[None], verts_right=(hr.verts - root_r)[None]) if points == "mesh" else {}
    jl, jr = (hl.joints - root_r)[None], (hr.joints - root_r)[None]
    both = intersection_loss(jl, jr, points=points, both=True, **kw)
    single = intersection_loss(jl, jr, points=points, both=False, **kw)
    assert both > single > 0
    torch.testing.assert_close(system.intersection_term(out, points, 1.0), both)
    torch.testing.assert_close(system.intersection_term(out, points, 0.0), single)
    torch.testing.assert_close(system.intersection_term(out, points, 0.5), single + 0.5 * (both - single))
    truncated = system.intersection_term(out, points, 1.0, truncate=True)
    torch.testing.assert_close(truncated, intersection_loss(jl, jr, points=points, truncate=True, **kw))


def test_mutual_penetration_by_hand():
    right, left = two_hand_preset("interlocked")
    models = HandModel("right"), HandModel("left")
    vr, vl = models[0](right).verts[None], models[1](left).verts[None]
    expected = (penetration_loss(vr, vl, models[1].faces, reduction="none").mean()
                + penetration_loss(vl, vr, models[0].faces, reduction="none").mean())
    value = mutual_penetration(vr, models[0].faces, vl, models[1].faces)
    assert value.shape == (1,) and value[0] > 0
    torch.testing.assert_close(value[0], expected)
    apart = mutual_penetration(vr, models[0].faces, vl + torch.tensor([0.5, 0.0, 0.0]), models[1].faces)
    assert apart[0] == 0


def test_count_pairs_against_count_intersections():
    models = HandModel("right"), HandModel("left")
    outs, expected = [], []
    for name in ("finger_grasp", "interlocked", "clasped"):
        right, left = two_hand_preset(name)
        hr, hl = models[0](right), models[1](left)
        root_r, root_l = hr.joints[0], hl.joints[0]
        outs.append({"joints": torch.stack([hr.joints - root_r, hl.joints - root_l]),
                     "verts": torch.stack([hr.verts - root_r, hl.verts - root_l]), "offset": root_r - root_l})
        expected.append(count_intersections((hr.verts - root_r)[None].double(), models[0].faces,
                                            (hl.verts - root_r)[None].double(), models[1].faces)[0])
    out = {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
    faces = (models[0].faces, models[1].faces)
    counts = two_hands.count_pairs(out, faces)
    assert counts.tolist() == [int(e) for e in expected]
    assert all(c > 50 for c in counts.tolist())  # the presets interpenetrate
    assert two_hands.count_pairs(out, faces, batch=1).tolist() == counts.tolist()
    # placed apart, none
    far = dict(out, offset=out["offset"] + torch.tensor([0.5, 0.0, 0.0]))
    assert two_hands.count_pairs(far, faces).tolist() == [0, 0, 0]


def test_training_loop_and_save_load(pairs, tmp_path):
    data = f"pairs:{pairs}"
    base = train(system, "tiny", data, tmp_path / "base", progress=False)
    tuned = train(system, "tiny", data, tmp_path / "tuned", steps=3, loss_weights={"intersection_sparse": 1.0},
                  lr=1e-3, init=base, progress=False)
    model, config, state = load_checkpoint(system, tuned)
    assert config.loss["intersection_sparse"] == 1.0 and state["final"]["eval"]["samples"] == 6
    base_model = load_checkpoint(system, base)[0]
    assert any((a - b).abs().max() > 0 for a, b in zip(model.parameters(), base_model.parameters()))
    x = system.dataset(data, "test", config, 6, 2).items["input"]
    for half in (False, True):
        path = tmp_path / f"tuned_{half}.pt"
        record = export_weights(tuned, path, half=half, system="uplift")
        assert record["steps"] == 3 and record["loss"]["intersection_sparse"] == 1.0
        loaded = TwoHandUplift.load(path)
        with torch.no_grad():
            a, b = model(x), loaded(x)
        torch.testing.assert_close(b["joints"], a["joints"], atol=0 if not half else 2e-3, rtol=0 if not half else 1e-2)
    with pytest.raises(ValueError, match="refiner"):
        SkeletonRefiner.load(tmp_path / "tuned_False.pt")
    # the refiner trains through the same loop
    refiner = train(system, "tiny-refiner", data, tmp_path / "refiner", progress=False)
    assert isinstance(load_checkpoint(system, refiner)[0], SkeletonRefiner)


def test_quick_experiment(quick):
    out, results = quick
    table = (out / "table.md").read_text()
    assert "| TwoHandUplift (2D keypoints) |" in table and "| + intersection loss |" in table
    assert "| + penetration loss (exact) |" in table and "Validation sweep" in table
    rows = results["rows"]
    assert [(r["model"], r["row"]) for r in rows] == [
        (k, r) for k in ("uplift", "refiner") for r in ("baseline", "+ intersection loss", "+ penetration loss (exact)")]
    per_pair = torch.load(out / "per_pair.pt", weights_only=False)["rows"]
    for row, full in zip(rows, per_pair):
        assert len(full["per_pair"]["intersections"]) == two_hands.QUICK.test_scenes
        assert row["mpjpe"] > 0 and row["intersections"] >= 0 and row["occupancy"] >= 0
    pytest.importorskip("matplotlib")
    assert set(results["figures"]) == {"fig5_occupancy_vs_raycast.png", "fig6_before_after.png"}
    assert all((out / f).stat().st_size > 1000 for f in results["figures"])


def test_quick_experiment_counts_match_metrics(quick):
    # the experiment's test counts are count_intersections of the chosen model's placed meshes
    out, results = quick
    row = results["rows"][1]
    model = load_checkpoint(system, results["studies"]["uplift"]["chosen"]["checkpoint"])[0]
    config = system.PRESETS["tiny"]
    test = system.dataset(f"pairs:{out / 'pairs.pt'}", "test", config, two_hands.QUICK.test_scenes, config.seed + 2)
    with torch.no_grad():
        pred = model(test.items["input"])
    right, left = placed_meshes(pred)
    counts = count_intersections(right.double(), model.faces[0], left.double(), model.faces[1])
    assert row["intersections"] == pytest.approx(counts.double().mean().item())
    assert row["mpjpe"] == pytest.approx(1e3 * mpjpe(pred["joints"], test.items["joints"]).mean().item(), rel=1e-5)


@pytest.mark.parametrize("fine_tuned", [False, True])
def test_pretrained(fine_tuned):
    assert PRETRAINED[fine_tuned].is_file()
    assert PRETRAINED[fine_tuned].stat().st_size < 5e6
    net = TwoHandUplift.pretrained(intersection_loss=fine_tuned)
    record = net.record
    for key in ("preset", "steps", "seed", "train_seconds", "date", "held_out"):
        assert record[key] is not None, key
    assert not net.training
    # it runs on the test inputs it was measured on, and agrees with its record there
    out = net(torch.zeros(2, 2, 21, 2))
    assert torch.isfinite(out["joints"]).all()
    assert record["held_out"]["row"] == ("+ intersection loss" if fine_tuned else "baseline")


def test_pretrained_refiner():
    net = SkeletonRefiner.pretrained()
    assert net.record["model"]["kind"] == "refiner" and net.record["held_out"]["row"] == "+ intersection loss"
    out = net(torch.zeros(1, 2, 21, 3))
    assert out["joints"].shape == (1, 2, 21, 3) and torch.isfinite(out["joints"]).all()


def test_cli_needs_a_pairs_file(capsys, tmp_path):
    from handgeom.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "uplift", "--preset", "tiny", "--out", str(tmp_path)])  # --data defaults to "synthetic"
    assert exit_info.value.code == 2 and "pairs:PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "uplift", "--preset", "tiny", "--data", "pairs:/no/such/file", "--out", str(tmp_path)])
    assert "no file" in capsys.readouterr().err
