"""The synthetic datasets: determinism, agreement of the annotations with each other and with
independent ray casting, the physical properties of the scenes, augmentation and the preview."""

import math

import pytest
import torch
from torch.utils.data import DataLoader

from handgeom.datasets import (SHAPES, Augment, SyntheticHandObject, SyntheticInteractingHands,
                               SyntheticSingleHand, make_object)
from handgeom.datasets.augment import transform
from handgeom.datasets.objects import OBJECT_FACES, OBJECT_VERTS
from handgeom.datasets.sample import hand_model, hand_params, project
from handgeom.metrics import intersection_volume, penetration_depth
from handgeom.ops import points_inside_mesh, ray_mesh_intersect, signed_distance
from handgeom.render import pinhole_rays
from references import signed_volume

DATASETS = [SyntheticInteractingHands, SyntheticHandObject, SyntheticSingleHand]
SIZE = 48
KEYS = {"image", "mask", "depth", "dense", "K", "joints_3d", "joints_2d", "joints_valid", "verts", "hand_valid",
        "rotation", "translation", "bone_lengths", "angles", "scale"}


@pytest.fixture(scope="module", params=DATASETS, ids=lambda c: c.__name__)
def samples(request):
    dataset = request.param(4, SIZE, seed=7)
    return dataset, [dataset[i] for i in range(4)]


def scene_meshes(s):
    """(verts, faces, mask label) of each mesh of a sample, camera frame."""
    meshes = [(s["verts"][k], hand_model(side).faces, k + 1) for k, side in enumerate(("right", "left"))
              if s["hand_valid"][k]]
    if "object_verts" in s:
        meshes.append((s["object_verts"], s["object_faces"], 3))
    return meshes


def test_keys_shapes_and_types(samples):
    dataset, batch = samples
    s = batch[0]
    expected = KEYS | ({"object_verts", "object_faces", "object_pose", "object_class"}
                       if isinstance(dataset, SyntheticHandObject) else set())
    assert set(s) == expected
    assert s["image"].shape == (3, SIZE, SIZE) and s["image"].dtype == torch.float32
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    assert s["mask"].shape == (SIZE, SIZE) and s["mask"].dtype == torch.int64
    assert s["dense"].shape == (3, SIZE, SIZE) and s["depth"].shape == (SIZE, SIZE)
    assert s["joints_3d"].shape == (2, 21, 3) and s["joints_2d"].shape == (2, 21, 2) and s["verts"].shape == (2, 330, 3)
    assert s["rotation"].shape == (2, 3, 3) and s["angles"].shape == (2, 21) and s["scale"].shape == (2,)
    if "object_verts" in s:
        assert s["object_verts"].shape == (OBJECT_VERTS, 3) and s["object_faces"].shape == (OBJECT_FACES, 3)
    batch_dict = torch.utils.data.default_collate(batch)  # fixed shapes: batches without a custom collate
    assert batch_dict["image"].shape == (4, 3, SIZE, SIZE)


def test_sample_is_a_pure_function_of_seed_and_index(samples):
    dataset, batch = samples
    again = type(dataset)(4, SIZE, seed=7)
    for i in (2, 0):  # another order, another instance
        for key, value in again[i].items():
            assert torch.equal(value, batch[i][key]), key
    other = type(dataset)(4, SIZE, seed=8)[0]
    assert not torch.equal(other["joints_3d"], batch[0]["joints_3d"])


@pytest.mark.parametrize("options", [{}, {"supersample": 2, "noise": True}])
def test_a_batch_fetch_gives_each_sample_as_alone(samples, options):
    """``__getitems__`` (the DataLoader's batched fetch) makes the batch together: bit for bit
    the samples made one by one, in any order, duplicates and negative indices included."""
    dataset = type(samples[0])(6, SIZE, seed=7, **options)
    indices = [4, 1, 5, 1, -6, 2]
    for index, sample in zip(indices, dataset.__getitems__(indices), strict=True):
        for key, value in dataset[index].items():
            assert torch.equal(value, sample[key]), (index, key)
    assert dataset.__getitems__([]) == []
    with pytest.raises(IndexError, match="index 6 out of range"):
        dataset.__getitems__([0, 6])


def test_two_dataloader_workers_give_the_same_samples():
    dataset = SyntheticInteractingHands(6, 32, seed=3)
    loaded = list(DataLoader(dataset, batch_size=2, num_workers=2))
    for i in range(6):
        direct = dataset[i]
        for key, value in direct.items():
            assert torch.equal(loaded[i // 2][key][i % 2], value), key


def test_annotations_agree(samples):
    _, batch = samples
    for s in batch:
        for k, side in enumerate(("right", "left")):
            if not s["hand_valid"][k]:
                assert s["joints_3d"][k].abs().max() == 0 and not s["joints_valid"][k].any()
                continue
            # joints_3d projected with K is joints_2d
            uv = project(s["joints_3d"][k].double(), s["K"].double())
            assert (uv - s["joints_2d"][k].double()).abs().max() < 1e-4
            # joints and vertices are the hand model's for the stored parameters
            out = hand_model(side)(hand_params(s, k).to(torch.float64))
            assert torch.allclose(out.joints.float(), s["joints_3d"][k], atol=1e-6)
            assert torch.allclose(out.verts.float(), s["verts"][k], atol=1e-6)
            assert s["joints_valid"][k].all()
        R = s["rotation"][s["hand_valid"]]
        assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5)


def test_mask_and_depth_are_the_first_ray_hits(samples):
    """Independent reference: each mesh ray cast on its own; the nearest hit per pixel."""
    _, batch = samples
    for s in batch:
        dirs = pinhole_rays(s["K"], SIZE, SIZE).reshape(1, -1, 3).float()
        best_t = torch.full((SIZE * SIZE,), math.inf)
        label = torch.zeros(SIZE * SIZE, dtype=torch.long)
        for verts, faces, lab in scene_meshes(s):
            t, _, _ = ray_mesh_intersect(torch.zeros_like(dirs), dirs, verts[None], faces)
            nearer = t[0] < best_t
            best_t, label = torch.where(nearer, t[0], best_t), torch.where(nearer, lab, label)
        assert torch.equal(s["mask"].view(-1), label)
        depth = torch.where(torch.isfinite(best_t), best_t, torch.zeros_like(best_t))
        assert torch.allclose(s["depth"].view(-1), depth, atol=1e-6)
        hit = label > 0
        assert (s["depth"].view(-1)[hit] > 0).all()
        # the dense code is in [0, 1] on the hands, 0 elsewhere
        dense = s["dense"].view(3, -1)
        hands = (label == 1) | (label == 2)
        assert dense[:, ~hands].abs().max() == 0 and dense.max() <= 1 + 1e-6
        assert hands.any()


def test_interacting_hands_are_intersection_free_and_in_contact():
    dataset = SyntheticInteractingHands(24, 16, seed=11)
    near = 0
    right, left = hand_model("right").faces, hand_model("left").faces
    for i in range(len(dataset)):
        s = dataset[i]
        vr, vl = s["verts"][:1].double(), s["verts"][1:].double()
        assert not points_inside_mesh(vl, vr, right).any() and not points_inside_mesh(vr, vl, left).any()
        assert float(intersection_volume(vr, right, vl, left, pitch=0.001)) <= 2e-9  # at most 2 mm^3
        d, _, _ = signed_distance(vl, vr, right)
        near += float(d.min()) <= 0.01
    assert near >= len(dataset) / 2


def test_grasps_touch_without_penetrating():
    dataset = SyntheticHandObject(16, 16, seed=5)
    classes = set()
    for i in range(len(dataset)):
        s = dataset[i]
        d, _, _ = signed_distance(s["joints_3d"][:1, [4, 8, 12, 16, 20]], s["object_verts"][None], s["object_faces"])
        assert int((d.abs() <= 0.002).sum()) >= 3
        assert float(penetration_depth(s["verts"][:1], s["object_verts"][None], s["object_faces"])) <= 0.001
        R, t = s["object_pose"][:, :3], s["object_pose"][:, 3]
        assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5) and abs(float(torch.linalg.det(R)) - 1) < 1e-5
        extent = ((s["object_verts"] - t) @ R).amax(0) - ((s["object_verts"] - t) @ R).amin(0)
        assert 0.04 - 1e-4 <= float(extent.max()) <= 0.15 + 1e-4
        classes.add(int(s["object_class"]))
    assert len(classes) >= 4


@pytest.mark.parametrize("name", SHAPES)
def test_objects_are_closed(name):
    import trimesh

    g = torch.Generator().manual_seed(1)
    verts, faces = make_object(name, 0.1, g, pad=False)
    mesh = trimesh.Trimesh(verts.numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert faces.shape[0] == OBJECT_FACES and mesh.area_faces.min() > 0  # every shape: the same real faces, no padding
    assert abs(float((verts.amax(0) - verts.amin(0)).max()) - 0.1) < 1e-9
    padded_v, padded_f = make_object(name, 0.1, torch.Generator().manual_seed(1))
    probe = torch.rand(1, 500, 3, dtype=torch.float64) * 0.12 - 0.06
    assert torch.equal(points_inside_mesh(probe, padded_v[None], padded_f),
                       points_inside_mesh(probe, verts[None], faces))


def check_consistent(s):
    """The annotations of a (transformed) sample agree with each other and with its mask."""
    for k, side in enumerate(("right", "left")):
        if s["hand_valid"][k]:
            out = hand_model(side)(hand_params(s, k).to(torch.float64))
            assert torch.allclose(out.verts.float(), s["verts"][k], atol=2e-6)
            assert torch.allclose(out.joints.float(), s["joints_3d"][k], atol=2e-6)
            uv = project(s["joints_3d"][k].double(), s["K"].double())
            assert (uv - s["joints_2d"][k].double()).abs().max() < 1e-3
    # the warped mask agrees with ray casting the transformed meshes (but for edge pixels)
    dirs = pinhole_rays(s["K"], SIZE, SIZE).reshape(1, -1, 3).float()
    best_t, label = torch.full((SIZE * SIZE,), math.inf), torch.zeros(SIZE * SIZE, dtype=torch.long)
    for verts, faces, lab in scene_meshes(s):
        t, _, _ = ray_mesh_intersect(torch.zeros_like(dirs), dirs, verts[None], faces)
        nearer = t[0] < best_t
        best_t, label = torch.where(nearer, t[0], best_t), torch.where(nearer, lab, label)
    assert (s["mask"].view(-1) == label).float().mean() > 0.97


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_keeps_annotations_consistent(flip):
    for cls in (SyntheticInteractingHands, SyntheticHandObject):
        s = cls(1, SIZE, seed=2)[0]
        out = transform(s, 0.9, 0.7, [0.03, -0.02], flip)
        check_consistent(out)
        if flip:  # left and right swap: the new right hand is the old left one, mirrored
            mirror = torch.tensor([-1.0, 1.0, 1.0])
            assert torch.equal(out["hand_valid"], s["hand_valid"].flip(0))
            if s["hand_valid"].all():
                assert torch.allclose(out["joints_3d"][0] @ torch.diag(mirror),
                                      s["joints_3d"][1] @ transform_rotation(0.7).T, atol=1e-5)
        if "object_verts" in s:  # the object's template is mirrored on a flip, its mesh still outward-oriented
            R, t = out["object_pose"][:, :3], out["object_pose"][:, 3]
            assert abs(float(torch.linalg.det(R)) - 1) < 1e-5
            template = (s["object_verts"] - s["object_pose"][:, 3]) @ s["object_pose"][:, :3]
            mirrored = template * torch.tensor([-1.0, 1.0, 1.0]) if flip else template
            assert torch.allclose((out["object_verts"] - t) @ R, mirrored, atol=1e-5)
            assert signed_volume(out["object_verts"], out["object_faces"]) > 0
    sample = SyntheticSingleHand(1, SIZE, seed=4)[0]
    randomized = Augment(seed=3)(sample, 0)
    check_consistent(randomized)
    again = Augment(seed=3)(sample, 0)  # a function of (seed, index)
    assert all(torch.equal(again[k], v) for k, v in randomized.items())
    assert not torch.equal(Augment(seed=3)(sample, 1)["image"], randomized["image"])


def test_augmentation_of_unannotated_joints_and_real_object_poses():
    s = SyntheticInteractingHands(1, SIZE, seed=2)[0]
    s["joints_valid"][1, 5:9] = False  # a reader's unannotated joints are zeros
    s["joints_3d"][1, 5:9] = 0
    s["joints_2d"][1, 5:9] = 0
    out = transform(s, 1.0, 0.3, [0.0, 0.0], False)
    assert torch.isfinite(out["joints_2d"]).all() and out["joints_2d"][1, 5:9].abs().max() == 0
    s["object_pose"] = torch.cat([torch.eye(3), torch.tensor([[0.0], [0.0], [0.5]])], 1)  # a pose without a mesh
    out = Augment(flip=1.0, colour=False)(s, 0)
    assert torch.equal(out["hand_valid"], s["hand_valid"])  # never flipped: the object need not be symmetric
    R = out["object_pose"][:, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6) and not torch.allclose(R, torch.eye(3))


def transform_rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_identity_transform_is_identity():
    s = SyntheticInteractingHands(1, SIZE, seed=1)[0]
    out = transform(s, 1.0, 0.0, [0.0, 0.0], False)
    for key in ("mask", "joints_3d", "verts", "rotation", "translation"):
        assert torch.allclose(out[key].double(), s[key].double(), atol=1e-6), key
    assert torch.allclose(out["image"], s["image"], atol=1e-5)


def test_body_arrangement_puts_the_right_hand_on_the_image_left():
    """The body arrangement is seen from the front: the person's right wrist is mostly left of
    the left wrist in the image; the random arrangement has no such prior."""
    def right_first(arrangement):
        ds = SyntheticInteractingHands(40, 16, seed=9, arrangement=arrangement)
        return sum(float(ds[i]["joints_3d"][0, 0, 0] < ds[i]["joints_3d"][1, 0, 0]) for i in range(len(ds))) / len(ds)

    assert right_first("body") >= 0.8
    assert 0.2 <= right_first("random") <= 0.8


@pytest.mark.parametrize("side", ["right", "left"])
def test_palms_are_lighter_than_the_backs_of_the_hands(side):
    """The palm tint is on the side the fingers flex towards (a wrong sign lightens the backs)."""
    from handgeom.datasets.synthetic import _hand_albedo
    from handgeom.render import cast, interpolate

    model = hand_model(side, "coarse")
    verts = model(model.rest_pose()).verts
    albedo = _hand_albedo(torch.tensor([0.36, 0.23, 0.16]), side, "coarse")
    ys, xs = torch.meshgrid(*(torch.linspace(-0.1, 0.2, 64),) * 2, indexing="ij")
    grid = torch.stack([xs.flatten() * 0.8, ys.flatten(), torch.zeros(64 * 64)], 1)
    seen = {}
    for name, z in (("palm", -1.0), ("back", 1.0)):  # the rest pose's fingers flex towards -z
        origins, dirs = grid + torch.tensor([0.0, 0.0, z]), torch.tensor([0.0, 0.0, -z]).expand(64 * 64, 3)
        frags = cast([[(verts, model.faces)]], origins, dirs)
        assert frags.hit.sum() > 300
        seen[name] = interpolate([[albedo]], frags).mean()
    assert seen["palm"] > seen["back"] + 0.1


def test_supersampling_and_noise_options():
    plain = SyntheticSingleHand(1, 32, seed=1)[0]
    smooth = SyntheticSingleHand(1, 32, seed=1, supersample=2)[0]
    noisy = SyntheticSingleHand(1, 32, seed=1, noise=True)[0]
    assert torch.equal(plain["mask"], smooth["mask"]) and not torch.equal(plain["image"], smooth["image"])
    assert (plain["image"] - smooth["image"]).abs().mean() < 0.05
    assert not torch.equal(plain["image"], noisy["image"]) and torch.equal(plain["mask"], noisy["mask"])


@pytest.mark.parametrize("make, word", [
    (lambda: SyntheticInteractingHands(-1), "size"),
    (lambda: SyntheticInteractingHands(2, image_size=4), "image_size"),
    (lambda: SyntheticSingleHand(2, supersample=0), "supersample"),
    (lambda: SyntheticSingleHand(2, side="both"), "side"),
    (lambda: SyntheticHandObject(2, classes=("teapot",)), "classes"),
    (lambda: SyntheticHandObject(2, object_size=(0.2, 0.1)), "object_size"),
    (lambda: SyntheticInteractingHands(2, distance=(0.0, 1.0)), "distance"),
    (lambda: SyntheticInteractingHands(2, arrangement="sideways"), "arrangement"),
    (lambda: make_object("box", -1.0), "size"),
    (lambda: Augment(scale=1.5), "scale"),
])
def test_bad_options_name_the_argument(make, word):
    with pytest.raises(ValueError, match=word):
        make()


def test_index_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        SyntheticSingleHand(3)[3]


def test_preview_writes_a_contact_sheet(tmp_path):
    from PIL import Image

    from handgeom.datasets.preview import main

    main(["--out", str(tmp_path / "sheet.png"), "--per-row", "2", "--size", "32"])
    with Image.open(tmp_path / "sheet.png") as image:
        assert image.size == (2 * 32 + 4, 3 * 64 + 8)
