"""The public-dataset readers on tiny fixture datasets written here in each format: joints in our
order and frame, projection, the crop (a dot painted at each wrist), the IK fit and its cache, and
the errors for broken files."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from handgeom.datasets import OBJECT_CLASSES, real
from handgeom.datasets.dexycb import DexYCB
from handgeom.datasets.freihand import FreiHAND
from handgeom.datasets.ho3d import HO3D
from handgeom.datasets.interhand import InterHand26M
from handgeom.datasets.real import DatasetFormatError
from handgeom.datasets.sample import hand_params, project
from handgeom.hand import HandModel, convert_joints
from handgeom.hand.kinematics import axis_angle_to_matrix
from handgeom.hand.skeleton import TO_OURS
from references import signed_volume

F64 = torch.float64
W, H, S = 64, 48, 32  # original image size, crop size
K0 = torch.tensor([[60.0, 0.0, 31.7], [0.0, 62.0, 23.9], [0.0, 0.0, 1.0]], dtype=F64)
DOT = {0: (255, 0, 0), 1: (0, 255, 0)}  # wrist dot colour per hand slot (red right, green left)
TIPS = [0, 4, 8, 12, 16, 20]  # wrist and fingertips in our order
GL = torch.tensor([1.0, -1.0, -1.0], dtype=F64)  # OpenCV <-> OpenGL camera axes


def hand_joints(side: str, seed: int, pixel: tuple[int, int], K: torch.Tensor = K0, depth: float = 0.5) -> torch.Tensor:
    """``[21, 3]`` camera-frame joints (metres, our order) of a random pose of the hand model,
    with the wrist on the centre of ``pixel`` (col, row) at ``depth``."""
    model = HandModel(side)
    params = model.sample_poses(1, torch.Generator().manual_seed(seed), global_rotation=True, dtype=F64)
    uv1 = torch.tensor([pixel[0] + 0.5, pixel[1] + 0.5, 1.0], dtype=F64)
    params.translation = (torch.linalg.solve(K, uv1) * depth)[None]
    return model(params).joints[0]


def wrist_pixel(joints: torch.Tensor, K: torch.Tensor) -> tuple[int, int]:
    """The (col, row) of the pixel whose centre the wrist projects to."""
    col, row = project(joints[0], K).floor().long().tolist()
    return col, row


def write_image(path: Path, dots: dict[int, tuple[int, int]] | None = None) -> None:
    """A black ``W x H`` image with a 3x3 dot of ``DOT[slot]`` centred on each ``pixel``."""
    img = np.zeros((H, W, 3), np.uint8)
    for slot, (col, row) in (dots or {}).items():
        img[row - 1:row + 2, col - 1:col + 2] = DOT[slot]
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {}
    Image.fromarray(img).save(path, **options)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


YCB_MODEL = "006_mustard_bottle"  # the fixtures' object (DexYCB's left-hand sequence: "003_cracker_box")
# Their models, about their frame's origin, outward faces (metres): a cube of side 3 cm (its volume
# 27 cm³) and an octahedron of radius 2 cm (fewer vertices and faces: the reader pads it).
CUBE_CORNERS = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=F64) * 0.015
OCTAHEDRON = torch.cat([torch.eye(3, dtype=F64), -torch.eye(3, dtype=F64)]) * 0.02
MODELS = {YCB_MODEL: (CUBE_CORNERS, [(0, 1, 2), (1, 3, 2), (4, 6, 5), (5, 6, 7), (0, 4, 1), (1, 4, 5),
                                     (2, 3, 6), (3, 7, 6), (0, 2, 4), (2, 6, 4), (1, 5, 3), (3, 5, 7)], 0.03 ** 3),
          "003_cracker_box": (OCTAHEDRON, [(0, 1, 2), (1, 3, 2), (3, 4, 2), (4, 0, 2),
                                           (1, 0, 5), (3, 1, 5), (4, 3, 5), (0, 4, 5)], 4 / 3 * 0.02 ** 3)}


def write_object_models(root: Path) -> None:
    """``models/<name>/textured_simple.obj`` of each of ``MODELS``, written as a textured OBJ is:
    each face with its own copies of its corners and texture coordinates (seams)."""
    for name, (verts, faces, _) in MODELS.items():
        lines = ["mtllib textured_simple.obj.mtl"]
        for n, face in enumerate(faces):
            lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts[list(face)].tolist()]
            lines += ["vt 0.1 0.2", "vt 0.3 0.4", "vt 0.5 0.6"]
            lines.append("f " + " ".join(f"{3 * n + k + 1}/{3 * n + k + 1}" for k in range(3)))
        path = root / "models" / name / "textured_simple.obj"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


@dataclass
class Expected:
    """What a sample must hold: joints in our order, camera frame, metres, per slot present."""

    joints: dict[int, torch.Tensor]
    valid: dict[int, torch.Tensor] = field(default_factory=dict)  # per slot [21] (default: all)
    dots: tuple[int, ...] = ()  # slots whose wrist has a dot in the image
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def check_sample(sample: dict, expected: Expected) -> None:
    assert sample["image"].shape == (3, S, S) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (S, S) and sample["K"].shape == (3, 3)
    assert sample["hand_valid"].tolist() == [slot in expected.joints for slot in (0, 1)]
    K = sample["K"].double()
    for slot in (0, 1):
        valid = sample["joints_valid"][slot]
        if slot not in expected.joints:
            assert not valid.any() and not sample["joints_3d"][slot].any()
            continue
        assert valid.tolist() == expected.valid.get(slot, torch.ones(21, dtype=torch.bool)).tolist()
        joints = sample["joints_3d"][slot].double()
        torch.testing.assert_close(joints[valid], expected.joints[slot][valid], atol=1e-5, rtol=0)
        tips = valid[TIPS]  # the wrist and the fingertips where expected (the joint order)
        assert tips.any()
        torch.testing.assert_close(joints[TIPS][tips], expected.joints[slot][TIPS][tips], atol=1e-5, rtol=0)
        assert not joints[~valid].any()
        torch.testing.assert_close(sample["joints_2d"][slot].double()[valid], project(joints, K)[valid],
                                   atol=1e-3, rtol=0)
        # the fitted parameters and vertices are in the same (camera) frame
        fitted = HandModel(("right", "left")[slot])(hand_params(sample, slot).to(F64))
        assert (fitted.joints - joints)[valid].norm(dim=-1).max() < 1e-3
        torch.testing.assert_close(fitted.verts.float(), sample["verts"][slot], atol=1e-5, rtol=0)
        assert (sample["mask"] == slot + 1).any()
    assert (sample["depth"][sample["mask"] > 0] > 0).all() and not sample["depth"][sample["mask"] == 0].any()
    for slot in expected.dots:  # the crop: the dot's centroid is at the wrist's joints_2d
        weight = (sample["image"][slot] - sample["image"][1 - slot] - 0.1).clamp_min(0)
        assert weight.sum() > 0.5, f"slot {slot}: the wrist dot is not in the crop"
        ys, xs = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
        centroid = torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
        torch.testing.assert_close(centroid, sample["joints_2d"][slot, 0], atol=0.2, rtol=0)
    for key, value in expected.extras.items():
        torch.testing.assert_close(sample[key].double(), value, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Fixtures, one per format: (reader class, constructor options, expected samples in order)


def rot(axis_angle) -> torch.Tensor:
    return axis_angle_to_matrix(torch.tensor(axis_angle, dtype=F64))


IH_MISSING = [8, 12, 19]  # our joints that the InterHand2.6M fixture leaves unannotated on frame 10's left hand


def interhand_fixture(root: Path, split: str = "val"):
    """Capture 0, frames 10 (interacting, seen by cameras 400002 and 400004) and 11 (a right-hand
    frame seen by 400002); world frame and mm; three left joints of frame 10 unannotated."""
    R0, c0 = rot([0.3, -0.2, 0.5]), torch.tensor([0.1, -0.05, 0.03], dtype=F64)  # camera 400002
    cams = {"400002": (R0, c0),
            "400004": (rot([0.0, 0.14, 0.0]) @ R0, c0 + R0.T @ torch.tensor([0.02, 0.01, 0.0], dtype=F64))}
    frames = {10: {0: hand_joints("right", 0, (24, 20)), 1: hand_joints("left", 1, (40, 26))},
              11: {0: hand_joints("right", 2, (30, 22)), 1: hand_joints("left", 3, (14, 30))}}
    joint_3d = {}
    for frame, hands in frames.items():
        world = torch.zeros(42, 3, dtype=F64)
        valid = torch.ones(42, dtype=torch.bool)
        for slot, joints in hands.items():  # camera 400002's frame -> world, mm, IH order
            world[21 * slot:21 * slot + 21] = convert_joints(joints @ R0 + c0, "openpose", "interhand") * 1000
        if frame == 10:
            native = [21 + TO_OURS["interhand"][j] for j in IH_MISSING]
            world[native] = 0.0
            valid[native] = False
        joint_3d[str(frame)] = {"world_coord": world.tolist(), "joint_valid": [[bool(v)] for v in valid],
                                "hand_type": "interacting", "hand_type_valid": True}
    views = [(10, "400002", "interacting"), (10, "400004", "interacting"), (11, "400002", "right")]
    images, annotations, expected = [], [], []
    for n, (frame, cam, hand_type) in enumerate(views):
        file_name = f"Capture0/0001_seq/cam{cam}/image{frame:05d}.jpg"
        R, c = cams[cam]
        hands = {s: (j @ R0 + c0 - c) @ R.T for s, j in frames[frame].items()}  # in camera `cam`
        present = hands if hand_type == "interacting" else {0: hands[0]}
        dots = {s: wrist_pixel(j, K0) for s, j in present.items()} if cam == "400002" else {}
        write_image(root / "images" / split / file_name, dots)
        images.append({"id": 100 + n, "file_name": file_name, "width": W, "height": H, "capture": 0, "subject": 0,
                       "seq_name": "0001_seq", "camera": cam, "frame_idx": frame})
        data_valid = [[1]] * 21 + [[1 if hand_type == "interacting" else 0]] * 21
        annotations.append({"id": 100 + n, "image_id": 100 + n, "bbox": [0, 0, W, H], "joint_valid": data_valid,
                            "hand_type": hand_type, "hand_type_valid": 1})
        left_valid = torch.ones(21, dtype=torch.bool)
        if frame == 10:
            left_valid[IH_MISSING] = False
        expected.append(Expected(joints=present, valid={1: left_valid}, dots=tuple(dots)))
    camera = {"0": {key: {} for key in ("campos", "camrot", "focal", "princpt")}}
    for cam, (R, c) in cams.items():
        camera["0"]["campos"][cam] = (c * 1000).tolist()
        camera["0"]["camrot"][cam] = R.tolist()
        camera["0"]["focal"][cam] = [K0[0, 0].item(), K0[1, 1].item()]
        camera["0"]["princpt"][cam] = [K0[0, 2].item(), K0[1, 2].item()]
    folder = root / "annotations" / split
    write_json(folder / f"InterHand2.6M_{split}_data.json", {"images": images, "annotations": annotations})
    write_json(folder / f"InterHand2.6M_{split}_camera.json", camera)
    write_json(folder / f"InterHand2.6M_{split}_joint_3d.json", {"0": joint_3d})
    return InterHand26M, {"split": split}, expected


FREIHAND_N = 2  # annotations in the FreiHAND fixture


def freihand_fixture(root: Path):
    """Two annotations with their own K, four versions of images (ids idx + 2 * version)."""
    Ks = [K0, K0 * torch.tensor([[1.1], [1.05], [1.0]], dtype=F64)]
    joints = [hand_joints("right", 10 + i, (20 + 8 * i, 22), Ks[i]) for i in range(FREIHAND_N)]
    write_json(root / "training_xyz.json", [j.tolist() for j in joints])
    write_json(root / "training_K.json", [K.tolist() for K in Ks])
    expected = []
    for version in range(4):
        for i in range(FREIHAND_N):
            write_image(root / "training" / "rgb" / f"{i + FREIHAND_N * version:08d}.jpg",
                        {0: wrist_pixel(joints[i], Ks[i])})
            expected.append(Expected(joints={0: joints[i]}, dots=(0,)))
    return FreiHAND, {}, expected


def ho3d_fixture(root: Path):
    """Sequence ABF10 with frames 0000, 0002 annotated and 0001 without annotation (objRot None);
    OpenGL axes, MANO joint order, png images."""
    K = K0 * torch.tensor([[1.2], [1.2], [1.0]], dtype=F64)
    expected = []
    for n, frame in enumerate(("0000", "0001", "0002")):
        joints = hand_joints("right", 20 + n, (26 + 4 * n, 21), K)
        obj_rot = torch.tensor([[0.2], [-0.4], [0.1 * n]], dtype=F64)  # [3, 1], as some meta files have it
        obj_trans = torch.tensor([0.01, 0.02, -0.45], dtype=F64)
        meta = {"handJoints3D": (convert_joints(joints, "openpose", "mano") * GL).numpy(), "camMat": K.numpy(),
                "objRot": None if frame == "0001" else obj_rot.numpy(), "objTrans": obj_trans.numpy(),
                "objName": YCB_MODEL, "handPose": np.zeros(48), "handBeta": np.zeros(10)}
        write_pickle(root / "train" / "ABF10" / "meta" / f"{frame}.pkl", meta)
        write_image(root / "train" / "ABF10" / "rgb" / f"{frame}.png", {0: wrist_pixel(joints, K)})
        if frame != "0001":
            pose = torch.cat([axis_angle_to_matrix(obj_rot[:, 0]), obj_trans[:, None]], 1) * GL[:, None]
            expected.append(Expected(joints={0: joints}, dots=(0,), extras={"object_pose": pose}))
    write_object_models(root)
    return HO3D, {}, expected


DEX_SERIAL = "836212060125"


def dexycb_fixture(root: Path):
    """Subject 01 with a right-hand sequence (frames 0, 1; frame 1 has no hand: joint_3d all -1)
    and a left-hand one (frame 0), seen by one camera; s0 train holds both sequences. The grasped
    object (``ycb_ids[ycb_grasp_ind]``: 5, ``YCB_MODEL``, then 2) lies beside the wrist."""
    K = torch.tensor([[58.0, 0.0, 32.2], [0.0, 59.0, 23.6], [0.0, 0.0, 1.0]], dtype=F64)
    calib = root / "calibration" / "intrinsics" / f"{DEX_SERIAL}_640x480.yml"
    calib.parent.mkdir(parents=True)
    calib.write_text(f"color:\n  fx: {K[0, 0].item()}\n  fy: {K[1, 1].item()}\n  ppx: {K[0, 2].item()}\n"
                     f"  ppy: {K[1, 2].item()}\ndepth:\n  fx: 1.0\n  fy: 1.0\n  ppx: 1.0\n  ppy: 1.0\n")
    expected = []
    for q, side in enumerate(("right", "left")):
        sequence = root / "20200709-subject-01" / f"20200709_15354{q}"
        (sequence / DEX_SERIAL).mkdir(parents=True)
        (sequence / "meta.yml").write_text(f"serials:\n- '{DEX_SERIAL}'\nnum_frames: 2\nycb_ids:\n- 2\n- 5\n"
                                           f"ycb_grasp_ind: {1 - q}\nmano_sides:\n- {side}\nmano_calib:\n- 20200709\n")
        for f in range(2 - q):
            joints = hand_joints(side, 30 + 2 * q + f, (22 + 6 * f, 20 + 4 * q), K)
            g = torch.Generator().manual_seed(q * 2 + f)
            pose_y = torch.cat([axis_angle_to_matrix(torch.randn(2, 3, generator=g, dtype=F64)),
                                (joints[0] + torch.tensor([0.03, -0.02, -0.04], dtype=F64))[:, None].expand(2, 3, 1)], 2)
            hand = joints if f == 0 else torch.full((21, 3), -1.0, dtype=F64)
            np.savez(sequence / DEX_SERIAL / f"labels_{f:06d}.npz", seg=np.zeros((H, W), np.uint8),
                     pose_y=pose_y.numpy().astype(np.float32), pose_m=np.zeros((1, 51), np.float32),
                     joint_3d=hand.numpy().astype(np.float32)[None], joint_2d=np.zeros((1, 21, 2), np.float32))
            write_image(sequence / DEX_SERIAL / f"color_{f:06d}.jpg", {q: wrist_pixel(joints, K)})
            if f == 0:  # the npz holds float32
                expected.append(Expected(joints={q: joints.float().double()}, dots=(q,),
                                         extras={"object_pose": pose_y[1 - q].float().double()}))
    write_object_models(root)
    return DexYCB, {}, expected


FIXTURES = {"interhand": interhand_fixture, "freihand": freihand_fixture, "ho3d": ho3d_fixture,
            "dexycb": dexycb_fixture}


def make(reader: str, tmp_path: Path, **kwargs):
    cls, options, expected = FIXTURES[reader](tmp_path)
    return cls(tmp_path, image_size=S, **options, **kwargs), expected


# ----------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize("reader", list(FIXTURES))
def test_reader_samples_joints_projection_crop_and_fit(reader, tmp_path):
    ds, expected = make(reader, tmp_path)
    assert len(ds) == len(expected)
    assert ds.fit_error_mm < 1.0, f"IK fit error {ds.fit_error_mm} mm"
    for i, want in enumerate(expected):
        check_sample(ds[i], want)
    batch = default_collate([ds[0], ds[len(ds) - 1]])
    assert batch["image"].shape == (2, 3, S, S) and batch["joints_3d"].shape == (2, 2, 21, 3)


def test_interhand_filter_and_world_to_camera(tmp_path):
    _, _, expected = interhand_fixture(tmp_path)
    ds = InterHand26M(tmp_path, "val", image_size=S, interacting_only=True)
    assert len(ds) == 2  # the right-hand frame is left out
    for i in range(2):
        check_sample(ds[i], expected[i])
    assert ds.cache_path.name == "handgeom_ik_interhand_val_interacting.pt"


def test_freihand_versions_map_images_to_annotations(tmp_path):
    _, _, expected = freihand_fixture(tmp_path)
    ds = FreiHAND(tmp_path, image_size=S, versions=("hom", "auto"))
    assert ds.images == [f"training/rgb/{i:08d}.jpg" for i in (2, 3, 6, 7)]
    for i, want in enumerate(expected[2:4] + expected[6:8]):
        check_sample(ds[i], want)
    with pytest.raises(ValueError, match="versions"):
        FreiHAND(tmp_path, "evaluation", versions=("hom",))


def test_transform_and_cache_dir(tmp_path):
    freihand_fixture(tmp_path)
    ds = FreiHAND(tmp_path, image_size=S, cache_dir=tmp_path / "cache", versions=("gs",),
                  transform=lambda s, i: {**s, "flipped": torch.tensor(True)})
    assert ds.cache_path == tmp_path / "cache" / "handgeom_ik_freihand_training_gs.pt" and ds.cache_path.is_file()
    assert ds[0]["flipped"]


# ----------------------------------------------------------------------------------------------
# The IK fit cache


class Refit(Exception):
    """Raised by the monkeypatched fit: the reader fitted again."""


def no_fit(*args, **kwargs):
    raise Refit


@pytest.mark.parametrize("reader", list(FIXTURES))
def test_cache_is_used_and_invalidated_by_a_changed_annotation(reader, tmp_path, monkeypatch):
    first, _ = make(reader, tmp_path)
    assert first.cache_path.is_file() and first.cache_path.parent == tmp_path
    monkeypatch.setattr(real, "fit_hands", no_fit)
    cls = type(first)
    options = {"split": "val"} if cls is InterHand26M else {}
    second = cls(tmp_path, image_size=S, **options)  # from the cache: no fit
    assert second.fit_error_mm == first.fit_error_mm and second.images == first.images
    torch.testing.assert_close(second[0]["verts"], first[0]["verts"])
    annotation = first._sources()[-1]  # a changed annotation file (a new modification time)
    st = annotation.stat()
    os.utime(annotation, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(Refit):
        cls(tmp_path, image_size=S, **options)


# ----------------------------------------------------------------------------------------------
# Errors


def expect_error(match_file: str, match_field: str, make_dataset):
    with pytest.raises(DatasetFormatError) as info:
        make_dataset()
    message = str(info.value)
    assert match_file in message and match_field in message, message


def test_interhand_errors(tmp_path):
    interhand_fixture(tmp_path)
    folder = tmp_path / "annotations" / "val"
    data, camera = folder / "InterHand2.6M_val_data.json", folder / "InterHand2.6M_val_camera.json"
    text = data.read_text()
    data.write_text(text[: len(text) // 2])
    expect_error("InterHand2.6M_val_data.json", "JSON", lambda: InterHand26M(tmp_path, "val"))
    data.write_text(text)
    table = json.loads(camera.read_text())
    del table["0"]["camrot"]
    camera.write_text(json.dumps(table))
    expect_error("InterHand2.6M_val_camera.json", "'camrot'", lambda: InterHand26M(tmp_path, "val"))
    expect_error("InterHand2.6M_test_data.json", "not found", lambda: InterHand26M(tmp_path, "test"))
    (folder / "InterHand2.6M_val_joint_3d.json").unlink()
    expect_error("InterHand2.6M_val_joint_3d.json", "not found", lambda: InterHand26M(tmp_path, "val"))
    expect_error("nowhere", "not found", lambda: InterHand26M(tmp_path / "nowhere", "val"))


def test_interhand_bad_joint_shape_and_missing_key(tmp_path):
    interhand_fixture(tmp_path)
    path = tmp_path / "annotations" / "val" / "InterHand2.6M_val_joint_3d.json"
    table = json.loads(path.read_text())
    table["0"]["11"]["world_coord"] = table["0"]["11"]["world_coord"][:40]
    path.write_text(json.dumps(table))
    expect_error("InterHand2.6M_val_joint_3d.json", "['0']['11']['world_coord']: expected shape [42, 3], got [40, 3]",
                 lambda: InterHand26M(tmp_path, "val"))
    del table["0"]["11"]
    path.write_text(json.dumps(table))
    expect_error("InterHand2.6M_val_joint_3d.json", "missing field ['0']['11']", lambda: InterHand26M(tmp_path, "val"))


def test_freihand_errors(tmp_path):
    freihand_fixture(tmp_path)
    xyz = tmp_path / "training_xyz.json"
    table = json.loads(xyz.read_text())
    table[1] = table[1][:20]
    xyz.write_text(json.dumps(table))
    expect_error("training_xyz.json", "[1]: expected shape [21, 3], got [20, 3]", lambda: FreiHAND(tmp_path))
    (tmp_path / "training_K.json").unlink()
    expect_error("training_K.json", "not found", lambda: FreiHAND(tmp_path))


def test_freihand_missing_image_names_the_file(tmp_path):
    freihand_fixture(tmp_path)
    ds = FreiHAND(tmp_path, image_size=S)
    (tmp_path / "training" / "rgb" / "00000003.jpg").unlink()
    expect_error("00000003.jpg", "image file not found", lambda: ds[3])


def test_ho3d_errors(tmp_path):
    ho3d_fixture(tmp_path)
    path = tmp_path / "train" / "ABF10" / "meta" / "0002.pkl"
    with open(path, "rb") as f:
        meta = pickle.load(f)
    write_pickle(path, {k: v for k, v in meta.items() if k != "camMat"})
    expect_error("0002.pkl", "missing field ['camMat']", lambda: HO3D(tmp_path))
    write_pickle(path, {**meta, "handJoints3D": meta["handJoints3D"][0]})  # the evaluation split's root joint
    expect_error("0002.pkl", "only the root joint", lambda: HO3D(tmp_path))
    path.write_bytes(b"\x80\x04truncated")
    expect_error("0002.pkl", "not a readable meta pickle", lambda: HO3D(tmp_path))
    write_pickle(path, {**meta, "objTrans": os.system})  # a pickle that would import a function
    expect_error("0002.pkl", "refusing to load", lambda: HO3D(tmp_path))
    expect_error("evaluation", "split folder not found", lambda: HO3D(tmp_path, "evaluation"))


def test_dexycb_errors(tmp_path):
    dexycb_fixture(tmp_path)
    labels = tmp_path / "20200709-subject-01" / "20200709_153540" / DEX_SERIAL / "labels_000000.npz"
    with np.load(labels) as npz:
        content = {k: npz[k] for k in npz.files}
    np.savez(labels, **{k: v for k, v in content.items() if k != "joint_3d"})
    expect_error("labels_000000.npz", "missing field ['joint_3d']", lambda: DexYCB(tmp_path))
    np.savez(labels, **content)
    meta = labels.parent.parent / "meta.yml"
    meta.write_text(meta.read_text().replace("mano_sides", "hand_sides"))
    expect_error("meta.yml", "missing field ['mano_sides']", lambda: DexYCB(tmp_path))
    (tmp_path / "calibration" / "intrinsics" / f"{DEX_SERIAL}_640x480.yml").unlink()
    expect_error(f"{DEX_SERIAL}_640x480.yml", "not found", lambda: DexYCB(tmp_path))
    expect_error(str(tmp_path), "no <subject>", lambda: DexYCB(tmp_path, "val"))


# ----------------------------------------------------------------------------------------------
# The hand-object readers' object meshes


@pytest.mark.parametrize("reader", ["ho3d", "dexycb"])
def test_hand_object_readers_pose_the_ycb_mesh(reader, tmp_path):
    ds, expected = make(reader, tmp_path, objects=True)
    assert len(ds) == len(expected)
    for i, want in enumerate(expected):
        s = ds[i]
        check_sample(s, want)
        name = YCB_MODEL if reader == "ho3d" or i == 0 else "003_cracker_box"
        assert int(s["object_class"]) == OBJECT_CLASSES.index(name) and s["object_class"].dtype == torch.int64
        # the OBJ's seam copies merged, padded to the largest model (the cube's 8 corners and 12
        # faces), closed and outward-oriented
        corners, _, volume = MODELS[name]
        assert s["object_verts"].shape == (8, 3) and s["object_faces"].shape == (12, 3)
        R, t = s["object_pose"][:, :3].double(), s["object_pose"][:, 3].double()
        template = (s["object_verts"].double() - t) @ R
        assert torch.cdist(template, corners).amin(1).max() < 1e-6
        assert torch.cdist(corners, template).amin(1).max() < 1e-6  # every corner is there
        assert signed_volume(template, s["object_faces"]) == pytest.approx(volume, rel=1e-4)
        # the object is in the crop, and in the mask where it is in front
        uv = project(s["object_verts"].double(), s["K"].double())
        assert (uv > 0).all() and (uv < S).all()
        assert (s["mask"] == 3).any()
    batch = default_collate([ds[i] for i in range(len(ds))])
    assert batch["object_verts"].shape == (len(ds), 8, 3)
    plain = type(ds)(tmp_path, image_size=S)  # without objects=True: the class, no mesh
    assert "object_verts" not in plain[0] and int(plain[0]["object_class"]) == OBJECT_CLASSES.index(YCB_MODEL)


def test_hand_object_reader_errors(tmp_path):
    ho3d_fixture(tmp_path)
    expect_error("elsewhere", "YCB object models", lambda: HO3D(tmp_path, objects=True, models=tmp_path / "elsewhere"))
    model = tmp_path / "models" / YCB_MODEL / "textured_simple.obj"
    model.write_text("v 0 0 0\nf 1 2 3\n")  # a face on vertices that do not exist
    expect_error("textured_simple.obj", "not a readable OBJ mesh", lambda: HO3D(tmp_path, objects=True))
    model.write_text("garbage\n")
    expect_error("textured_simple.obj", "holds no triangle mesh", lambda: HO3D(tmp_path, objects=True))
    model.unlink()
    expect_error("textured_simple.obj", "object model not found", lambda: HO3D(tmp_path, objects=True))
    path = tmp_path / "train" / "ABF10" / "meta" / "0002.pkl"
    with open(path, "rb") as f:
        meta = pickle.load(f)
    write_pickle(path, {**meta, "objName": "teapot"})
    expect_error("0002.pkl", "['objName']: 'teapot' is not a YCB-Video object", lambda: HO3D(tmp_path))


def test_dexycb_bad_object_ids(tmp_path):
    dexycb_fixture(tmp_path)
    meta = tmp_path / "20200709-subject-01" / "20200709_153540" / "meta.yml"
    meta.write_text(meta.read_text().replace("- 5\n", "- 40\n"))
    expect_error("meta.yml", "['ycb_ids']", lambda: DexYCB(tmp_path))
