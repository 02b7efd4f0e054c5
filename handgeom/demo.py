"""The main job, ``handgeom demo``: from an image to two intersection-free hands.

1. Input: an image of two interacting hands, reconstructed by the shipped DIR network
   (:meth:`InteractingHandsNet.pretrained`): by default a fixed held-out sample of
   :class:`~handgeom.datasets.SyntheticInteractingHands` (seed ``DEMO_SEED``, index
   ``DEMO_SAMPLE``) whose prediction interpenetrates, or a user's crop (``image``). Or hands
   without an image: a preset pair (``pose``) or the user's joints (``input_file``, fitted to the
   hand model by IK).
2. Interpenetration measured four ways (:func:`handgeom.reconstruct.measure`: the exact
   ray-casting count on a 125k-point grid, the volume on a 1 mm grid, the maximum penetration depth
   and the occupancy-network count) and, where the ground truth is known, MPJPE and MRRPE.
3. Resolution: Adam on both hands' pose (global rotation and translation offsets, joint angles
   kept within limits) minimizing the exact signed-distance penetration of each hand's vertices
   and 4 points per face into the other mesh (both directions), the occupancy intersection loss at
   the mesh vertices, and the squared joint displacement from the start.
4. The learned alternative: the shipped :class:`~handgeom.models.SkeletonRefiner` ("Two Hands Are
   Better Than One"'s 3D-to-3D refiner, fine-tuned with the intersection loss) on the two skeletons.
5. A table with one row per state (the network's prediction, the optimization, the refiner), the
   time in the network and in each handgeom kernel, the meshes as PLY, ``report.json`` and one figure,
   ``demo.png``: the image with the predicted 2D skeletons and segmentation, the meshes rendered
   from the camera over it, and the meshes before and after the resolution from a second viewpoint
   with the interpenetration tinted red.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm
from torch.utils._python_dispatch import TorchDispatchMode

from handgeom.datasets import SyntheticInteractingHands
from handgeom.hand import HandModel, HandParams, two_hand_preset
from handgeom.hand.kinematics import axis_angle_to_matrix, rotation_matrix
from handgeom.losses import intersection_loss
from handgeom.metrics import mpjpe
from handgeom.models import HandOccupancyNet, InteractingHandsNet, SkeletonRefiner
from handgeom.ops import penetration_loss, surface_points
from handgeom.reconstruct import (BLUE, DISPLAY, RED, SKIN, Hands, draw_prediction, load_image, measure, placed_hands,
                                  pose_hands, predict)
from handgeom.viz import render_meshes

INPUT_KEYS = ("right_joints", "left_joints")
DEMO_STEPS = 150
DEMO_SEED, DEMO_SAMPLE = 1, 177  # held out (training uses seed 0); a prediction that interpenetrates
LR = {"rotation": 4e-3, "translation": 1e-3, "angles": 1e-2}  # Adam step sizes: rad, m, rad
WEIGHTS = {"sdf": 1.0, "occupancy": 1e-3, "stay": 1000.0}  # stay: on the mean squared joint move, m^2


class InputError(ValueError):
    """A ``--input`` file that cannot be used; the message is one line for the user."""


# What a hand in metres looks like: the diagonal of its joints' bounding box (a fist about 0.1 m,
# an open hand about 0.25 m), and its distance from the origin of a camera or world frame.
HAND_SPAN = (0.03, 0.5)
MAX_DISTANCE = 100.0


def load_input(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(right_joints, left_joints)`` ``[21, 3]`` float64 metres (handgeom's OpenPose joint order)
    from a JSON object or an NPZ archive with the keys ``right_joints`` and ``left_joints``: real
    numbers, finite, each hand spanning ``HAND_SPAN`` metres within ``MAX_DISTANCE`` of the origin
    (a hand in millimetres, InterHand2.6M's unit, is told so)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise InputError(f"{path}: expected a JSON object with keys {', '.join(INPUT_KEYS)}")
        elif path.suffix.lower() == ".npz":
            data = dict(np.load(path, allow_pickle=False))
        else:
            raise InputError(f"{path}: expected a .json or .npz file")
    except InputError:
        raise
    except (UnicodeDecodeError, OSError, ValueError, EOFError, RecursionError, zipfile.BadZipFile) as error:
        detail = str(error).splitlines()[0] if str(error) else "corrupt or truncated"
        raise InputError(f"{path}: cannot be read ({type(error).__name__}: {detail})") from None
    missing = [key for key in INPUT_KEYS if key not in data]
    if missing:
        raise InputError(f"{path}: missing key {missing[0]!r} (expected {', '.join(INPUT_KEYS)}: 21 x 3 joints in metres)")
    return tuple(_hand_joints(path, key, data[key]) for key in INPUT_KEYS)


def _hand_joints(path: Path, key: str, raw) -> torch.Tensor:
    """One hand's joints from the input file, checked (see :func:`load_input`)."""
    try:
        array = np.asarray(raw)
    except (TypeError, ValueError, RecursionError):
        array = None
    if array is None or array.dtype.kind not in "iuf":  # not bools, complex numbers, strings or objects
        raise InputError(f"{path}: {key} must be a 21 x 3 array of real numbers")
    if array.shape != (21, 3):
        raise InputError(f"{path}: {key} must have shape 21 x 3, got {' x '.join(map(str, array.shape))}")
    value = torch.as_tensor(array.astype(np.float64))
    if not torch.isfinite(value).all():
        raise InputError(f"{path}: {key} contains NaN or infinite values")
    span, distance = float((value.amax(0) - value.amin(0)).norm()), float(value.norm(dim=1).max())
    if not HAND_SPAN[0] <= span <= HAND_SPAN[1] or distance > MAX_DISTANCE:
        raise InputError(f"{path}: {key} spans {span:.3g} and lies up to {distance:.3g} from the origin: not a hand in "
                         f"metres, which spans {HAND_SPAN[0]}-{HAND_SPAN[1]} m within {MAX_DISTANCE:g} m of the origin "
                         "(joints in millimetres? divide by 1000)")
    return value


def resolve(models: tuple[HandModel, HandModel], start: Hands, net: HandOccupancyNet, steps: int,
            weights: dict[str, float], show_progress: bool = True) -> Hands:
    """Both hands' poses after ``steps`` Adam steps on the resolution loss (see the module doc)."""
    right0, left0 = start.right, start.left
    base_rot = [rotation_matrix(p.rotation) for p in (right0, left0)]
    device = start.right_joints.device
    rot = torch.zeros(2, 3, device=device, requires_grad=True)  # axis-angle offsets
    trans = torch.zeros(2, 3, device=device, requires_grad=True)
    angles = torch.stack([right0.angles, left0.angles]).clone().requires_grad_()
    optimizer = torch.optim.Adam([{"params": [rot], "lr": LR["rotation"]}, {"params": [trans], "lr": LR["translation"]},
                                  {"params": [angles], "lr": LR["angles"]}])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    limits = [m.limits for m in models]
    joints0 = torch.stack([start.right_joints, start.left_joints]).detach()

    def posed():
        params = [HandParams(rotation=axis_angle_to_matrix(rot[i]) @ base_rot[i], translation=p.translation + trans[i],
                             bone_lengths=p.bone_lengths, angles=angles[i], scale=p.scale)
                  for i, p in enumerate((right0, left0))]
        return pose_hands(models, *params)

    loop = tqdm(range(steps), desc="resolving", disable=not show_progress)
    for _ in loop:
        hands = posed()
        vr, vl = hands.right_verts[None], hands.left_verts[None]
        # vertices and points inside faces: the coarse meshes' faces cross between their vertices
        sdf = (penetration_loss(surface_points(vr, models[0].faces), vl, models[1].faces)
               + penetration_loss(surface_points(vl, models[1].faces), vr, models[0].faces))
        occupancy = intersection_loss(hands.left_joints[None], hands.right_joints[None], net, points="mesh",
                                      verts_left=vl, verts_right=vr)
        moved = (torch.stack([hands.right_joints, hands.left_joints]) - joints0).pow(2).sum(-1).mean()
        loss = weights["sdf"] * sdf + weights["occupancy"] * occupancy + weights["stay"] * moved
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():  # joint limits by projection
            for i in range(2):
                angles[i].clamp_(limits[i][:, 0], limits[i][:, 1])
        loop.set_postfix(loss=f"{loss.item():.4g}", penetration_mm=f"{sdf.item() * 1e3:.4g}", refresh=False)
    with torch.no_grad():
        return posed()


class KernelTimer(TorchDispatchMode):
    """Wall time per handgeom operator while active (CUDA synchronized around each call, so the
    times are the kernels' even on a GPU): ``timer.ms`` maps ``"handgeom::op"`` to milliseconds."""

    def __init__(self):
        super().__init__()
        self.ms: dict[str, float] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace != "handgeom":
            return func(*args, **(kwargs or {}))
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = func(*args, **(kwargs or {}))
        if cuda:
            torch.cuda.synchronize()
        name = f"handgeom::{func._opname}"
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3
        return result


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


# The second viewpoint of the before/after pictures (render_meshes' view: to a camera looking along
# -z, y up): for hands in a camera frame (x right, y down, z forward) the camera's own view turned
# 60 degrees about the vertical; for hands in a world frame (presets, --input), an oblique view.
CAMERA_FRAME_VIEW = _rotation(1, np.radians(60)) @ np.diag([1.0, -1.0, -1.0])
WORLD_FRAME_VIEW = _rotation(1, 0.5) @ _rotation(0, 0.4)


def figure(models: tuple[HandModel, HandModel], before: Hands, after: Hands, panels: list[tuple[str, np.ndarray]],
           view: np.ndarray) -> np.ndarray:
    """``demo.png``: the given picture ``panels``, then before | after from ``view`` with the
    interpenetration tinted, each under its caption; ``uint8 [H, W, 3]``."""
    for name, hands in (("before: the prediction", before), ("after: resolved", after)):
        meshes = [(hands.right_verts, models[0].faces, SKIN), (hands.left_verts, models[1].faces, BLUE)]
        panels.append((name, render_meshes(meshes, (DISPLAY, DISPLAY), view=view, highlight=RED)))
    caption, gap = 18, 8
    canvas = Image.new("RGB", (len(panels) * (DISPLAY + gap) - gap, DISPLAY + caption), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (name, picture) in enumerate(panels):
        canvas.paste(Image.fromarray(picture), (k * (DISPLAY + gap), caption))
        draw.text((k * (DISPLAY + gap) + 4, 3), name, fill=(0, 0, 0))
    return np.asarray(canvas)


def evaluate(models: tuple[HandModel, HandModel], hands: Hands, occupancy: HandOccupancyNet,
             truth: torch.Tensor | None, start: Hands) -> dict[str, float]:
    """:func:`measure`, the joints' motion from ``start`` (mm), and with the true joints
    ``truth [2, 21, 3]``, the root-relative MPJPE (mean of both hands) and the MRRPE (error of the
    right root relative to the left), in mm."""
    joints = torch.stack([hands.right_joints, hands.left_joints]).detach()
    row = measure(models, hands, occupancy)
    row["moved_mm"] = float((joints - torch.stack([start.right_joints, start.left_joints])).norm(dim=-1).mean()) * 1e3
    if truth is not None:
        row["mpjpe_mm"] = float(mpjpe(joints - joints[:, :1], truth - truth[:, :1]).mean()) * 1e3
        row["mrrpe_mm"] = float(((joints[0, 0] - joints[1, 0]) - (truth[0, 0] - truth[1, 0])).norm()) * 1e3
    return row


def run(image: Path | None = None, sample: int = DEMO_SAMPLE, pose: str | None = None, input_file: Path | None = None,
        steps: int = DEMO_STEPS, device: str = "cpu", out: Path = Path("demo_out"), show_progress: bool = True,
        net: InteractingHandsNet | None = None) -> dict:
    """Runs the demo on one input (``input_file``, else ``pose``, else ``image``, else the synthetic
    ``sample``) and returns its report (also written to ``out/report.json``). ``net``: the
    reconstruction network (default: the shipped one)."""
    started = time.perf_counter()
    occupancy = HandOccupancyNet.pretrained(device)
    truth, panels, network_ms = None, [], None
    if input_file is not None or pose is not None:
        models = (HandModel("right").to(device), HandModel("left").to(device))
        if input_file is not None:
            right_joints, left_joints = load_input(input_file)
            right = models[0].fit(right_joints.to(device, torch.float32))
            left = models[1].fit(left_joints.to(device, torch.float32))
            source = str(input_file)
        else:
            right, left = two_hand_preset(pose, device=device)
            source = f"preset {pose!r}"
        before, view = pose_hands(models, right, left), WORLD_FRAME_VIEW
    else:
        net = net or InteractingHandsNet.pretrained(device)
        models = (net.hands[0], net.hands[1])
        if image is not None:
            picture, source = load_image(image, net.image_size).image, str(image)
        else:
            scene = SyntheticInteractingHands(sample + 1, net.image_size, seed=DEMO_SEED)[sample]
            picture, truth = scene["image"], scene["joints_3d"].to(device)
            source = f"SyntheticInteractingHands(seed={DEMO_SEED})[{sample}]"
        tic = time.perf_counter()  # outside the kernel timer, whose first dispatch costs seconds
        prediction = predict(net, picture[None].to(device))[0]
        if device == "cuda":
            torch.cuda.synchronize()
        network_ms = (time.perf_counter() - tic) * 1e3
        before, view = prediction.hands, CAMERA_FRAME_VIEW
        panels = list(zip(("input: 2D skeletons, segmentation", "meshes from the camera"),
                          draw_prediction(picture, prediction, (models[0].faces.cpu(), models[1].faces.cpu()))))
    with KernelTimer() as timer:
        rows = {"prediction" if network_ms is not None else "input": evaluate(models, before, occupancy, truth, before)}
        after = resolve(models, before, occupancy, steps, WEIGHTS, show_progress)
        rows["optimized (SDF + occupancy)"] = evaluate(models, after, occupancy, truth, before)
        refiner = SkeletonRefiner.pretrained(device)
        with torch.no_grad():
            skeletons = torch.stack([before.right_joints, before.left_joints]).detach()[None]
            refined = placed_hands(models, refiner(skeletons.to(refiner.offset[-1].weight.dtype)), 0)
        rows["learned refiner (SkeletonRefiner)"] = evaluate(models, refined, occupancy, truth, before)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "demo.png"]
    Image.fromarray(figure(models, before, after, panels, view)).save(files[0])
    for name, hands in (("before", before), ("after", after)):
        for side, model, verts in (("right", models[0], hands.right_verts), ("left", models[1], hands.left_verts)):
            files.append(out / f"{side}_{name}.ply")
            model.export(verts.detach().cpu(), files[-1])
    first, optimized = rows["prediction" if network_ms is not None else "input"], rows["optimized (SDF + occupancy)"]
    report = {
        "source": source, "device": device, "steps": steps, "rows": rows,
        "volume_reduction": 1 - optimized["volume_cm3"] / max(first["volume_cm3"], 1e-12),
        "network_ms": network_ms, "kernel_ms": dict(sorted(timer.ms.items(), key=lambda kv: -kv[1])),
        "seconds": time.perf_counter() - started,
        "files": [str(p) for p in files],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


COLUMNS = (("grid pts in both", "count", "{:d}"), ("volume cm^3", "volume_cm3", "{:.2f}"),
           ("depth mm", "depth_mm", "{:.1f}"), ("occupancy pts", "occupancy_count", "{:d}"),
           ("MPJPE mm", "mpjpe_mm", "{:.1f}"), ("MRRPE mm", "mrrpe_mm", "{:.1f}"), ("moved mm", "moved_mm", "{:.2f}"))


def print_report(report: dict) -> None:
    rows = report["rows"]
    columns = [c for c in COLUMNS if c[1] in next(iter(rows.values()))]
    width = max(len(name) for name in rows)
    print(f"\n{report['source']} on {report['device']}:")
    print(f"{'':<{width}}  " + "  ".join(label for label, _, _ in columns))
    for name, row in rows.items():
        print(f"{name:<{width}}  " + "  ".join(f"{fmt.format(row[key]):>{len(label)}}" for label, key, fmt in columns))
    print("\n(grid points inside both hands on a 125k-point grid, intersection volume on a 1 mm grid, maximum "
          "penetration depth, the occupancy network's count, joint errors against the ground truth, mean joint motion)")
    print(f"intersection volume reduced by {100 * report['volume_reduction']:.1f}%")
    network = "" if report["network_ms"] is None else f"network {report['network_ms']:.0f} ms; "
    print(f"time: {network}handgeom kernels (measures and resolution): " + ", ".join(
        f"{k.removeprefix('handgeom::')} {v:.0f} ms" for k, v in report["kernel_ms"].items()))
    print(f"wrote {', '.join(report['files'])} and report.json in {report['seconds']:.1f} s on {report['device']}")
