"""The main job (`handgeom demo`: image to hands) end to end, `handgeom reconstruct`, their input errors, and
`handgeom bench --quick`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from handgeom.__main__ import main
from handgeom.datasets import SyntheticInteractingHands
from handgeom.demo import DEMO_SAMPLE, DEMO_SEED, run
from handgeom.hand import HandModel, two_hand_preset
from handgeom.losses import placed_meshes
from handgeom.models import InteractingHandsNet
from handgeom.models.dir import PRETRAINED
from handgeom.reconstruct import DISPLAY, load_image, predict


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def red_pixels(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > 180) & (image[..., 1] < 110) & (image[..., 2] < 110)


def panel(image: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th picture of the demo's figure (below the captions)."""
    return image[CAPTION:, k * (DISPLAY + GAP):k * (DISPLAY + GAP) + DISPLAY]


CAPTION, GAP = 18, 8


def assert_meshes_written(out: Path) -> None:
    faces = len(HandModel().to_trimesh(torch.zeros(330, 3)).faces)
    for name in ("right_before", "left_before", "right_after", "left_after"):
        assert b"element face %d" % faces in (out / f"{name}.ply").read_bytes()


def test_demo_reconstructs_the_image_and_resolves_the_interpenetration(tmp_path):
    report = run(steps=40, out=tmp_path, show_progress=False)
    assert report["source"] == f"SyntheticInteractingHands(seed={DEMO_SEED})[{DEMO_SAMPLE}]"
    (name0, before), (name1, after), (name2, refined) = report["rows"].items()
    assert name0 == "prediction" and name1.startswith("optimized") and name2.startswith("learned refiner")
    # the shipped network's prediction of the default sample interpenetrates, and the resolution removes it
    assert before["count"] > 50 and before["volume_cm3"] > 0.5 and before["depth_mm"] > 1 and before["moved_mm"] == 0
    assert after["count"] < 0.2 * before["count"] and after["volume_cm3"] < 0.2 * before["volume_cm3"]
    assert after["depth_mm"] < before["depth_mm"] and 0 < after["moved_mm"] < 10
    # ground truth is known: the prediction is a reconstruction, and the resolution does not spoil it
    assert 10 < before["mpjpe_mm"] < 60 and before["mrrpe_mm"] < 80
    assert after["mpjpe_mm"] < before["mpjpe_mm"] + 3 and after["mrrpe_mm"] < before["mrrpe_mm"] + 5
    # the learned refiner's row: measured the same way (its numbers are the README's, not asserted)
    assert set(refined) == set(before) and refined["moved_mm"] > 0 and 0 < refined["mpjpe_mm"] < 100
    assert report["network_ms"] > 0
    assert {"handgeom::mesh_penetration", "handgeom::conditioned_mlp", "handgeom::mesh_inside"} <= set(report["kernel_ms"])
    image = read_png(tmp_path / "demo.png")
    assert image.shape == (CAPTION + DISPLAY, 4 * DISPLAY + 3 * GAP, 3)
    # the input with its overlays is the synthetic image, not white; the tinted interpenetration shrinks
    assert (panel(image, 0) != 255).any(-1).mean() > 0.9
    assert red_pixels(panel(image, 2)).sum() > 50 > red_pixels(panel(image, 3)).sum()
    assert_meshes_written(tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["steps"] == 40 and saved["rows"][name0]["count"] == before["count"]


def test_predicted_hands_are_the_networks_placed_meshes():
    net = InteractingHandsNet.pretrained()
    images = torch.stack([SyntheticInteractingHands(2, net.image_size, seed=DEMO_SEED)[i]["image"] for i in range(2)])
    predictions = predict(net, images)
    with torch.no_grad():
        right, left = placed_meshes(net(images)[-1])
    for b, p in enumerate(predictions):
        torch.testing.assert_close(p.hands.right_verts, right[b], atol=1e-5, rtol=0)
        torch.testing.assert_close(p.hands.left_verts, left[b], atol=1e-5, rtol=0)
        assert p.joints_px.shape == (2, 21, 2) and p.verts_px.shape == (2, 330, 2) and p.seg.shape[0] == 3


def test_demo_from_a_preset_pose(tmp_path):
    report = run(pose="finger_grasp", steps=40, out=tmp_path, show_progress=False)
    (name0, before), (_, after), _ = report["rows"].items()
    assert name0 == "input" and report["network_ms"] is None and "mpjpe_mm" not in before
    assert before["count"] > 500 and before["volume_cm3"] > 5 and before["depth_mm"] > 2 and before["occupancy_count"] > 100
    assert after["volume_cm3"] < 0.5 * before["volume_cm3"] and after["count"] < before["count"]
    image = read_png(tmp_path / "demo.png")
    assert image.shape == (CAPTION + DISPLAY, 2 * DISPLAY + GAP, 3)
    assert red_pixels(panel(image, 0)).sum() > red_pixels(panel(image, 1)).sum()
    assert_meshes_written(tmp_path)


def test_demo_cli_with_input_file(tmp_path, capsys):
    right, left = two_hand_preset("interlocked")
    joints = {"right_joints": HandModel("right")(right).joints.tolist(), "left_joints": HandModel("left")(left).joints.tolist()}
    path = tmp_path / "hands.json"
    path.write_text(json.dumps(joints))
    main(["demo", "--input", str(path), "--steps", "3", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "running on cpu" in out and "intersection volume reduced" in out
    assert (tmp_path / "out" / "demo.png").is_file()


def write_image(path: Path, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A synthetic interacting-hands image (held-out seed) saved to ``path``, optionally resized."""
    image = (SyntheticInteractingHands(index + 1, 128, seed=DEMO_SEED)[index]["image"].permute(1, 2, 0) * 255).byte().numpy()
    picture = Image.fromarray(image)
    if size is not None:
        picture = picture.resize(size)
    picture.save(path)
    return np.asarray(picture)


def test_demo_cli_with_an_image(tmp_path, capsys):
    path = tmp_path / "crop.jpg"
    write_image(path, 3)
    main(["demo", "--image", str(path), "--steps", "2", "--out", str(tmp_path / "out")])
    assert str(path) in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"] == str(path) and "mpjpe_mm" not in report["rows"]["prediction"]
    assert read_png(tmp_path / "out" / "demo.png").shape == (CAPTION + DISPLAY, 4 * DISPLAY + 3 * GAP, 3)


def test_load_image_pads_to_a_square_and_maps_pixels_back(tmp_path):
    Image.fromarray(np.full((100, 200, 3), 200, np.uint8)).save(tmp_path / "wide.png")
    crop = load_image(tmp_path / "wide.png", 128)
    assert crop.image.shape == (3, 128, 128) and crop.image.dtype == torch.float32
    assert crop.scale == 0.64 and crop.offset == (0.0, 32.0)
    assert crop.image[:, :32].max() == 0 and crop.image[:, 33:95].min() > 0.75  # black bars above and below
    torch.testing.assert_close(crop.to_original(torch.tensor([[64.0, 64.0], [0.0, 32.0]])),
                               torch.tensor([[100.0, 50.0], [0.0, 0.0]]))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grey.png")  # greyscale becomes RGB
    assert load_image(tmp_path / "grey.png", 64).image.shape == (3, 64, 64)


def test_reconstruct_writes_every_image_and_reports_the_broken_one(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", 0)
    write_image(images / "b.jpg", 44, size=(160, 120))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths = [images / "a.png", images / "broken.png", images / "b.jpg", images / "missing.png"]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", *map(str, paths), "--out", str(out), "--batch", "1"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "reconstructed 2 of 4 images" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("handgeom:")]  # past the progress bar
    assert len(errors) == 2 and all(line.startswith("handgeom: skipped ") for line in errors)
    assert "broken.png" in errors[0] and "missing.png: no such file" in errors[1]
    report = json.loads((out / "report.json").read_text())
    assert set(report["reconstructed"]) == {str(paths[0]), str(paths[2])} and set(report["failed"]) == {str(paths[1]), str(paths[3])}
    for name, size in (("a", (128, 128)), ("b", (160, 120))):
        record = json.loads((out / f"{name}.json").read_text())
        joints = np.array(record["joints_2d"]["right"] + record["joints_2d"]["left"])
        assert joints.shape == (42, 2) and np.isfinite(joints).all()
        # 2D joints in the image's own pixels: within (or near) the picture
        assert (joints > -0.25 * np.array(size)).all() and (joints < 1.25 * np.array(size)).all()
        assert np.array(record["joints_3d"]["right"]).shape == (21, 3)
        assert set(record["interaction"]) == {"count", "volume_cm3", "depth_mm", "occupancy_count"}
        assert read_png(out / f"{name}_overlay.png").shape == (DISPLAY, 2 * DISPLAY, 3)
        assert (out / f"{name}_right.ply").is_file() and (out / f"{name}_left.ply").is_file()
    # the readable images are reconstructed and named by their stems
    assert report["reconstructed"][str(paths[0])]["name"] == "a"


def test_reconstruct_names_duplicate_stems_apart_and_takes_other_weights(tmp_path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "hands.png", 1)
    shutil.copy(PRETRAINED, tmp_path / "mine.pt")
    main(["reconstruct", str(tmp_path / "x" / "hands.png"), str(tmp_path / "y" / "hands.png"), "--out",
          str(tmp_path / "out"), "--weights", str(tmp_path / "mine.pt")])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["name"] for r in report["reconstructed"].values()] == ["hands", "hands-2"]
    assert (tmp_path / "out" / "hands-2_overlay.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["demo", "--sample", "-1"], "--sample must be >= 0"),
    (["demo", "--image", "/nonexistent/crop.png"], "--image /nonexistent/crop.png: no such file"),
    (["reconstruct", "x.png", "--batch", "0"], "--batch must be >= 1"),
    (["reconstruct", "x.png", "--weights", "/nonexistent/w.pt"], "--weights /nonexistent/w.pt: "),
    (["demo", "--weights", "WEIGHTS_GARBAGE"], "--weights "),
    (["demo", "--weights", "WEIGHTS_CHECKPOINTLESS"], "--weights "),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")  # a torch file, but not exported weights
    argv = [{"WEIGHTS_GARBAGE": str(tmp_path / "garbage.pt"), "WEIGHTS_CHECKPOINTLESS": str(tmp_path / "other.pt")}.get(a, a)
            for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"handgeom: error: {message}" or (err.startswith(f"handgeom: error: {message}") and "\n" not in err), err


def test_demo_image_that_is_not_an_image(tmp_path, capsys):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--image", str(path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"handgeom: error: --image {path}: not an image file that Pillow can read (PNG, JPEG, ...)"


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
               "penetration_loss", "count_intersections", "dataset interacting", "dataset hand-object",
               "SiaPose training step"):
        assert any(o.startswith(op) for o in ops), (op, ops)
    for row in data["summary"]:
        assert (row["speedup"] is None or row["speedup"] > 0) and row["handgeom"] and row["baseline"]
    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.count("\n|") >= len(data["summary"]) + 1
    assert "Summary" in capsys.readouterr().out
