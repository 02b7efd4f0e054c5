"""The main job (`handgeom demo`) end to end, its input errors, and `handgeom bench --quick`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from handgeom.__main__ import main
from handgeom.demo import run
from handgeom.hand import HandModel, two_hand_preset


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_demo_end_to_end(tmp_path):
    report = run("finger_grasp", steps=40, out=tmp_path, show_progress=False)
    before, after = report["before"], report["after"]
    assert before["count"] > 500 and before["volume_cm3"] > 5 and before["depth_mm"] > 2 and before["occupancy_count"] > 100
    assert after["volume_cm3"] < 0.5 * before["volume_cm3"] and after["count"] < before["count"]
    assert after["depth_mm"] < before["depth_mm"]
    assert 0 < report["joint_moved_mean_mm"] < 10
    assert {"handgeom::mesh_penetration", "handgeom::conditioned_mlp", "handgeom::mesh_inside"} <= set(report["kernel_ms"])
    image = read_png(tmp_path / "hands.png")
    assert image.shape == (360, 728, 3)
    red = (image[..., 0] > 180) & (image[..., 1] < 110) & (image[..., 2] < 110)
    assert red[:, :360].sum() > red[:, 368:].sum()  # the tinted interpenetration shrinks
    for name in ("right_before", "left_before", "right_after", "left_after"):
        mesh = HandModel().to_trimesh(torch.zeros(330, 3))  # reference face count
        text = (tmp_path / f"{name}.ply").read_bytes()
        assert b"element face %d" % len(mesh.faces) in text
    assert json.loads((tmp_path / "report.json").read_text())["steps"] == 40


def test_demo_cli_with_input_file(tmp_path, capsys):
    right, left = two_hand_preset("interlocked")
    joints = {"right_joints": HandModel("right")(right).joints.tolist(), "left_joints": HandModel("left")(left).joints.tolist()}
    path = tmp_path / "hands.json"
    path.write_text(json.dumps(joints))
    main(["demo", "--input", str(path), "--steps", "3", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "running on cpu" in out and "intersection volume reduced" in out
    assert (tmp_path / "out" / "hands.png").is_file()


def write_bad(tmp_path: Path, kind: str) -> Path:
    good = np.zeros((21, 3))
    files = {
        "missing": (tmp_path / "none.json", None),
        "not json": (tmp_path / "bad.json", "{not json"),
        "list": (tmp_path / "list.json", "[1, 2]"),
        "no key": (tmp_path / "nokey.json", json.dumps({"right_joints": good.tolist()})),
        "shape": (tmp_path / "shape.json", json.dumps({"right_joints": good.tolist(), "left_joints": good[:20].tolist()})),
        "strings": (tmp_path / "str.json", json.dumps({"right_joints": "abc", "left_joints": good.tolist()})),
        "nan": (tmp_path / "nan.json", json.dumps({"right_joints": good.tolist(), "left_joints": [[float("nan")] * 3] * 21})),
        "extension": (tmp_path / "hands.txt", "x"),
        "npz shape": (tmp_path / "hands.npz", None),
        "npz garbage": (tmp_path / "garbage.npz", "not a zip"),
    }
    path, text = files[kind]
    if kind == "npz shape":
        np.savez(path, right_joints=good, left_joints=np.zeros((21, 2)))
    elif text is not None:
        path.write_text(text)
    return path


@pytest.mark.parametrize("kind", ["missing", "not json", "list", "no key", "shape", "strings", "nan", "extension",
                                  "npz shape", "npz garbage"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, kind):
    path = write_bad(tmp_path, kind)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--input", str(path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("handgeom: error: --input") and "\n" not in err and "Traceback" not in err, err


def test_bench_quick_writes_json_and_markdown(tmp_path, capsys):
    main(["bench", "--quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["meta"]["command"] == "handgeom bench --quick" and data["meta"]["threads"] >= 1
    ops = {row["op"] for row in data["summary"]}
    for op in ("bone_plane_projection", "edge_conv2d", "conditioned_mlp", "points_inside_mesh", "signed_distance",
               "penetration_loss", "count_intersections", "dataset interacting", "dataset hand-object"):
        assert any(o.startswith(op) for o in ops), (op, ops)
    for row in data["summary"]:
        assert (row["speedup"] is None or row["speedup"] > 0) and row["handgeom"] and row["baseline"]
    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.count("\n|") >= len(data["summary"]) + 1
    assert "Summary" in capsys.readouterr().out
