"""SiaPose (the 2D pose network around the SIA-GCN head): shapes, gradients, the stage-wise
phases, the heatmap targets and loss against hand computations, the PCK evaluation against a hand
count, the 2D readers, `handgeom train/eval siapose` on a tiny checkpoint and its bad input."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from handgeom.__main__ import main
from handgeom.datasets import MHPHands, PanopticHands
from handgeom.datasets.pose2d import MHP_K, project_distorted
from handgeom.datasets.real import DatasetFormatError
from handgeom.losses import heatmap_loss, heatmap_targets, siapose_loss, single_hand_2d
from handgeom.models import SiaPose, heatmap_keypoints
from handgeom.models.siapose import PRETRAINED
from handgeom.train import system, train
from handgeom.train.loop import TrainConfig

SIAPOSE = system("siapose")


def batch_of(net: SiaPose, n: int = 2, seed: int = 3) -> dict[str, torch.Tensor]:
    dataset = SIAPOSE.dataset("synthetic", "train", TrainConfig(model={"preset": "tiny"}), n, seed)
    samples = [dataset[i] for i in range(n)]
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def test_shapes_and_keypoints_in_image_pixels():
    net = SiaPose("tiny")
    images = torch.rand(3, 3, net.image_size, net.image_size)
    out = net(images)
    side = net.image_size // net.stride
    assert out["preliminary"].shape == out["heatmaps"].shape == (3, 21, side, side) and len(out["stages"]) == 1
    assert out["head_weights"].shape == (3, net.config.heads)
    torch.testing.assert_close(out["head_weights"].sum(1), torch.ones(3))
    for key in ("keypoints", "keypoints_soft", "preliminary_keypoints"):
        assert out[key].shape == (3, 21, 2)
    # argmax cell (i, j) is the image region [j s, (j + 1) s): its centre (j + 0.5) s
    cells = heatmap_keypoints(out["heatmaps"])
    torch.testing.assert_close(out["keypoints"], (cells + 0.5) * net.stride)


def test_paper_preset_is_a_six_stage_cpm_on_368():
    net = SiaPose("paper")
    assert net.image_size == 368 and net.stride == 8 and len(net.estimator.refine) == 5
    assert net.head.gcn.weights[0].shape[-1] == 45 and len(net.head.gcn.weights) == 5 and net.config.heads == 10
    # the "7x7" convolutions are three 3x3 each
    assert all(m.kernel_size in ((3, 3), (1, 1)) for m in net.estimator.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        out = net.estimator(torch.rand(1, 3, 368, 368))
    assert len(out) == 6 and out[-1].shape == (1, 21, 46, 46)


def grads(net: SiaPose, config: TrainConfig, step: int) -> tuple[set[str], set[str]]:
    """Names of the parameters with and without a gradient after one loss at ``step``."""
    net.zero_grad(set_to_none=True)
    loss, _ = SIAPOSE.loss(net, batch_of(net), config, step)
    loss.backward()
    named = dict(net.named_parameters())
    with_grad = {n for n, p in named.items() if p.grad is not None and p.grad.abs().sum() > 0}
    return with_grad, set(named) - with_grad


def test_gradients_reach_every_parameter_and_the_phases_train_one_part():
    net = SiaPose("tiny")
    config = TrainConfig(steps=30, model={"preset": "tiny", "phases": [1 / 3, 1 / 3]})
    assert [SIAPOSE.phase(s, config) for s in (0, 9, 10, 19, 20, 29)] == ["estimator"] * 2 + ["head"] * 2 + ["joint"] * 2
    head = {n for n, _ in net.named_parameters() if n.startswith("head.")}
    with_grad, without = grads(net, config, 25)  # joint
    assert not without, without
    with_grad, without = grads(net, config, 0)  # the estimator alone
    assert without == head
    with_grad, without = grads(net, config, 15)  # the heads and the pointer on the frozen estimator
    assert with_grad == head


def test_heatmap_targets_and_loss_by_hand():
    joints = torch.tensor([[[6.0, 10.0], [13.0, 2.0]]], dtype=torch.float64)  # stride 4: cells (1, 2) and (2.75, 0)
    maps = heatmap_targets(joints, (5, 6), stride=4)
    assert maps.shape == (1, 2, 5, 6)
    assert maps[0, 0, 2, 1] == 1 and math.isclose(float(maps[0, 0, 2, 2]), math.exp(-0.5))
    assert math.isclose(float(maps[0, 0, 3, 2]), math.exp(-1.0))  # one cell off in both axes
    assert math.isclose(float(maps[0, 1, 0, 3]), math.exp(-0.25 ** 2 / 2))
    torch.testing.assert_close(heatmap_keypoints(maps[:, :1]), torch.tensor([[[1.0, 2.0]]], dtype=torch.float64))
    pred = torch.zeros_like(maps)
    valid = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # only the valid joint counts: the sum of its target's squares
    assert math.isclose(float(heatmap_loss(pred, maps, valid)), float((maps[0, 0] ** 2).sum()))
    outputs = {"stages": [pred, pred + 1], "heatmaps": maps}
    total, terms = siapose_loss(outputs, maps, valid, {"preliminary": 2.0, "refined": 1.0})
    expected = float((maps[0, 0] ** 2).sum() + ((1 - maps[0, 0]) ** 2).sum())
    assert math.isclose(float(terms["preliminary"]), expected) and float(terms["refined"]) == 0
    assert math.isclose(float(total), 2 * expected)


def test_single_hand_2d_takes_the_filled_slot():
    batch = {"joints_2d": torch.arange(2 * 2 * 21 * 2, dtype=torch.float32).view(2, 2, 21, 2),
             "joints_valid": torch.ones(2, 2, 21, dtype=torch.bool),
             "hand_valid": torch.tensor([[True, False], [False, True]])}
    joints, valid = single_hand_2d(batch)
    torch.testing.assert_close(joints, torch.stack([batch["joints_2d"][0, 0], batch["joints_2d"][1, 1]]))
    assert valid.all()


class Oracle(torch.nn.Module):
    """A 'model' whose keypoints are given: the truth moved by known pixel offsets."""

    def __init__(self, offsets: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.offsets, self.targets, self.calls = offsets, targets, 0

    def forward(self, images):
        b = images.shape[0]
        target = self.targets[self.calls:self.calls + b]
        self.calls += b
        moved = target + self.offsets
        return {"preliminary_keypoints": moved, "keypoints": target.clone(), "keypoints_soft": target + 100}


def test_pck_of_the_evaluation_against_a_hand_count():
    size = 100
    targets = torch.rand(4, 21, 2) * size
    # joint errors of 0.5, 1.5, 2.5, 3.5 px (one per joint row): PCK@0.01 counts those <= 1 px, ...
    offsets = torch.tensor([0.5, 1.5, 2.5, 3.5] * 5 + [10.0])[:, None] * torch.tensor([1.0, 0.0])
    batch = [{"image": torch.zeros(4, 3, size, size), "joints_2d": torch.stack([targets, targets], 1),
              "joints_valid": torch.ones(4, 2, 21, dtype=torch.bool), "hand_valid": torch.tensor([[True, False]] * 4)}]
    metrics = SIAPOSE.evaluate(Oracle(offsets, targets), batch, TrainConfig())
    expected = {0.01: 5 / 21, 0.02: 10 / 21, 0.03: 15 / 21, 0.04: 20 / 21, 0.05: 20 / 21, 0.06: 20 / 21}
    for delta, value in expected.items():
        assert math.isclose(metrics["preliminary"][f"pck@{delta:g}"], value), delta
    assert math.isclose(metrics["preliminary"]["mpck"], sum(expected.values()) / 6)
    assert metrics["refined"]["mpck"] == 1 and metrics["refined_soft"]["curve"][-1] == 0
    assert math.isclose(metrics["gain_pck@0.04"], 1 - 20 / 21)
    assert len(metrics["preliminary"]["curve"]) == len(metrics["deltas"]) == 21


def test_train_eval_and_figures_of_a_tiny_checkpoint(tmp_path, capsys):
    ckpt = train(SIAPOSE, "tiny", "synthetic", tmp_path / "run", progress=False)
    main(["eval", "siapose", str(ckpt), "--size", "4", "--out", str(tmp_path / "eval")])
    assert "PCK@0.04" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert metrics["samples"] == 4 and 0 <= metrics["refined"]["mpck"] <= 1
    with Image.open(tmp_path / "eval" / "keypoints.png") as picture:
        assert picture.size[1] == 2 * 64
    assert (tmp_path / "eval" / "pck.png").is_file()


def test_shipped_weights_refine_held_out_crops():
    assert PRETRAINED.is_file()
    net = SiaPose.pretrained()
    assert net.image_size == 128 and net.record["system"] == "siapose" and net.record["held_out"]["samples"] == 1000
    config = TrainConfig(model={"preset": net.record["model"]["preset"]})
    dataset = SIAPOSE.dataset("synthetic", "eval", config, 48, 7)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    with torch.no_grad():
        metrics = SIAPOSE.evaluate(net, loader, config)
    assert metrics["refined"]["pck@0.06"] > 0.25
    assert metrics["refined"]["mpck"] > metrics["preliminary"]["mpck"]


@pytest.mark.parametrize("argv, words", [
    (["train", "siapose", "--preset", "tiny", "--data", "panoptic:/no/such/dir"], "not a directory"),
    (["train", "siapose", "--preset", "tiny", "--data", "freihand:/x"], "--data must be"),
    (["train", "siapose", "--preset", "tiny", "--loss", "joints_3d=1"], "unknown terms"),
    (["eval", "siapose", "/no/such/ckpt.pt"], "no checkpoint"),
])
def test_cli_bad_input_is_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err, err


# ---- the 2D readers on fixtures written in their formats ------------------------------------------

W, H = 80, 60


def dotted_image(path: Path, points: np.ndarray) -> None:
    """A black image with a white pixel at each point (pixel centres at +0.5)."""
    image = np.zeros((H, W, 3), np.uint8)
    for x, y in points:
        if 0 <= x < W and 0 <= y < H:
            image[int(y), int(x)] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def hand_points(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.floor(np.stack([rng.uniform(20, 60, 21), rng.uniform(15, 45, 21)], 1)) + 0.5


def panoptic_fixture(root: Path) -> dict[str, tuple[np.ndarray, int]]:
    """Two manual labels (a right hand with an invalid joint, a left hand) and one Panoptic Studio entry."""
    expected = {}
    for k, (folder, left) in enumerate((("manual_train", False), ("manual_test", True))):
        points = hand_points(k)
        flags = np.ones(21)
        if k == 0:
            flags[7] = 0
        name = f"{k:09d}_01_{'l' if left else 'r'}"
        dotted_image(root / "hand_labels" / folder / f"{name}.jpg", points)
        (root / "hand_labels" / folder / f"{name}.json").write_text(json.dumps(
            {"hand_pts": np.concatenate([points, flags[:, None]], 1).tolist(), "is_left": int(left),
             "hand_box_center": [40, 30], "head_size": 20}))
        expected[name] = (points, 1 if left else 0, flags == 1)
    points = hand_points(5)
    dotted_image(root / "hand143_panopticdb" / "imgs" / "00000001.jpg", points)
    (root / "hand143_panopticdb" / "hands_v143_14817.json").write_text(json.dumps({"root": [
        {"img_paths": "imgs/00000001.jpg", "img_width": W, "img_height": H, "objpos": [40, 30],
         "joint_self": np.concatenate([points, np.ones((21, 1))], 1).tolist()}]}))
    expected["00000001"] = (points, 0, np.ones(21, bool))
    return expected


def assert_dots_at_joints(sample: dict, slot: int, valid: np.ndarray) -> None:
    """The crop shows each valid joint's dot at (about) its crop position."""
    image = sample["image"].mean(0)
    assert sample["hand_valid"].tolist() == [slot == 0, slot == 1]
    assert sample["joints_valid"][slot].numpy().tolist() == valid.tolist() and not sample["joints_valid"][1 - slot].any()
    for (x, y), ok in zip(sample["joints_2d"][slot], valid):
        if ok:
            i, j = int(y), int(x)
            assert image[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max() > 0.2, (x, y)


def test_panoptic_reader_pools_the_sets_and_splits_70_15_15(tmp_path):
    expected = panoptic_fixture(tmp_path)
    splits = {s: PanopticHands(tmp_path, s, image_size=64) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 3
    names = sorted(e[0].stem for d in splits.values() for e in d.entries)
    assert names == sorted(expected)
    for dataset in splits.values():
        for index, (path, _, _, _) in enumerate(dataset.entries):
            points, slot, valid = expected[path.stem]
            assert_dots_at_joints(dataset[index], slot, valid)


def test_panoptic_reader_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="neither"):
        PanopticHands(tmp_path, "train")
    panoptic_fixture(tmp_path)
    bad = next((tmp_path / "hand_labels" / "manual_train").glob("*.json"))
    bad.write_text(json.dumps({"hand_pts": [[1, 2, 1]] * 20, "is_left": 0}))
    with pytest.raises(DatasetFormatError, match=r"hand_pts.*shape \[21, 3\]"):
        PanopticHands(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        PanopticHands(tmp_path, "training")


def test_mhp_projection_by_hand():
    # on the optical axis: the principal point; off it, the radial and tangential terms by hand
    centre = project_distorted(torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                               torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(centre, torch.tensor([[MHP_K[0][2], MHP_K[1][2]]], dtype=torch.float64))
    k1, k2, p1, p2 = 0.1, -0.05, 0.01, 0.02
    x, y = 0.2, -0.1
    r2 = x * x + y * y
    xd = x * (1 + k1 * r2 + k2 * r2 ** 2) + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * (1 + k1 * r2 + k2 * r2 ** 2) + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    K = ((100.0, 0.0, 50.0), (0.0, 110.0, 40.0), (0.0, 0.0, 1.0))
    # a quarter turn about z, then 1 m forward: (y', -x', z') ... the point maps to (x, y) at z = 1
    rvec = torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)
    world = torch.tensor([[y, -x, 0.0]], dtype=torch.float64)
    uv = project_distorted(world, rvec, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), K, (k1, k2, p1, p2, 0.0))
    torch.testing.assert_close(uv, torch.tensor([[100 * xd + 50, 110 * yd + 40]], dtype=torch.float64))


def test_mhp_reader_orders_joints_and_marks_the_wrist_and_outside_points(tmp_path):
    rng = np.random.default_rng(0)
    world = np.concatenate([rng.uniform(-40, 40, (21, 2)), rng.uniform(380, 420, (21, 1))], 1)  # mm, 0.4 m away
    world[3] = [1000.0, 0.0, 400.0]  # index tip (MHP's F4_KNU3_A) far outside the image
    names = [f"F{f}_{k}" for f in (4, 3, 1, 2) for k in ("KNU1_A", "KNU1_B", "KNU2_A", "KNU3_A")]
    names += ["TH_KNU1_A", "TH_KNU1_B", "TH_KNU2_A", "TH_KNU3_A", "PALM_POSITION"]
    capture = tmp_path / "annotated_frames" / "data_1"
    capture.mkdir(parents=True)
    lines = [f"{n} {x} {y} {z}" for n, (x, y, z) in zip(names, world)] + ["PALM_NORMAL 0 0 1"]
    (capture / "0_joints.txt").write_text("\n".join(lines) + "\n")
    for j in range(1, 5):
        folder = tmp_path / "calibrations" / "data_1" / f"webcam_{j}"
        folder.mkdir(parents=True)
        for name, value in (("rvec", [0.0, 0.05 * j, 0.0]), ("tvec", [0.0, 0.0, 0.0])):
            with open(folder / f"{name}.pkl", "wb") as f:
                pickle.dump(np.array(value), f, protocol=2)
        Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(capture / f"0_webcam_{j}.jpg")
    entries = [e for s in ("train", "val", "test") for e in MHPHands(tmp_path, s, 64).entries]
    assert len(entries) == 4
    for path, joints, valid, slot in entries:
        j = int(path.stem[-1])
        native = project_distorted(torch.tensor(world), torch.tensor([0.0, 0.05 * j, 0.0], dtype=torch.float64),
                                   torch.zeros(3, dtype=torch.float64))
        torch.testing.assert_close(joints[8], native[3])  # our index tip is MHP's F4_KNU3_A
        torch.testing.assert_close(joints[5], native[1])  # our index MCP is F4_KNU1_B
        torch.testing.assert_close(joints[4], native[19])  # our thumb tip is TH_KNU3_A
        assert not valid[0] and not valid[8] and valid[1:8].all() and valid[9:].all() and slot == 0


def test_mhp_reader_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="annotated_frames"):
        MHPHands(tmp_path, "train")
    capture = tmp_path / "annotated_frames" / "data_1"
    capture.mkdir(parents=True)
    (capture / "0_joints.txt").write_text("F4_KNU1_A 1 2\n")
    with pytest.raises(DatasetFormatError, match="rvec.pkl: annotation file not found"):
        MHPHands(tmp_path, "train")
    for j in range(1, 5):
        folder = tmp_path / "calibrations" / "data_1" / f"webcam_{j}"
        folder.mkdir(parents=True)
        for name in ("rvec", "tvec"):
            with open(folder / f"{name}.pkl", "wb") as f:
                pickle.dump(np.zeros(3), f)
    with pytest.raises(DatasetFormatError, match="expected 21 lines"):
        MHPHands(tmp_path, "train")
