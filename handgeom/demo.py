"""The main job, ``handgeom demo``: two interpenetrating hands, measured, resolved, measured again.

1. A preset pair of interacting hands (or the user's two hands from ``--input``, fitted to the
   hand model by IK) with the coarse hand model.
2. Interpenetration, measured four ways: the exact ray-casting count of grid points inside both
   hands (125k-point grid, as the interacting-hands evaluation), the intersection volume (1 mm
   grid), the maximum penetration depth (either hand's vertices into the other), and the
   occupancy-network count.
3. Resolution: Adam on both hands' pose (global rotation and translation offsets, joint angles
   kept within limits) minimizing the exact signed-distance penetration of each hand's vertices
   and 4 points per face into the other mesh (both directions), the occupancy intersection loss at the mesh vertices,
   and the squared joint displacement from the start.
4. A before/after table, the time spent in each handgeom kernel, the meshes as
   PLY and one PNG of both states rendered by handgeom's ray casting with the interpenetration
   tinted red.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from torch.utils._python_dispatch import TorchDispatchMode

from handgeom.hand import HandModel, HandParams, two_hand_preset
from handgeom.hand.kinematics import axis_angle_to_matrix, rotation_matrix
from handgeom.losses import intersection_loss
from handgeom.metrics import count_intersections, count_intersections_occupancy, intersection_volume, penetration_depth
from handgeom.models import HandOccupancyNet
from handgeom.ops import penetration_loss
from handgeom.viz import render_meshes

SKIN, BLUE, RED = (0.85, 0.62, 0.48), (0.45, 0.6, 0.85), (0.9, 0.1, 0.1)
INPUT_KEYS = ("right_joints", "left_joints")
DEMO_STEPS = 150
LR = {"rotation": 4e-3, "translation": 1e-3, "angles": 1e-2}  # Adam step sizes: rad, m, rad
WEIGHTS = {"sdf": 1.0, "occupancy": 1e-3, "stay": 1000.0}  # stay: on the mean squared joint move, m^2


class InputError(ValueError):
    """A ``--input`` file that cannot be used; the message is one line for the user."""


@dataclass
class Hands:
    """Both hands of the demo: parameters and the posed meshes."""

    right: HandParams
    left: HandParams
    right_joints: torch.Tensor  # [21, 3]
    left_joints: torch.Tensor
    right_verts: torch.Tensor  # [V, 3]
    left_verts: torch.Tensor


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


def pose_hands(models: tuple[HandModel, HandModel], right: HandParams, left: HandParams) -> Hands:
    out_r, out_l = models[0](right), models[1](left)
    return Hands(right, left, out_r.joints, out_l.joints, out_r.verts, out_l.verts)


def measure(models: tuple[HandModel, HandModel], hands: Hands, net: HandOccupancyNet) -> dict[str, float]:
    """The four interpenetration measures of one pair."""
    faces_r, faces_l = models[0].faces, models[1].faces
    vr, vl = hands.right_verts.detach()[None], hands.left_verts.detach()[None]
    depth = torch.maximum(penetration_depth(vr, vl, faces_l), penetration_depth(vl, vr, faces_r))
    return {
        "count": int(count_intersections(vr, faces_r, vl, faces_l, resolution=50)),
        "volume_cm3": float(intersection_volume(vr, faces_r, vl, faces_l, pitch=0.001)) * 1e6,
        "depth_mm": float(depth) * 1e3,
        "occupancy_count": int(count_intersections_occupancy(hands.left_joints.detach()[None],
                                                             hands.right_joints.detach()[None], net=net)),
    }


# Barycentric coordinates of the surface samples inside each face: the centroid, and the
# centroids of the three corner sub-triangles.
_FACE_SAMPLES = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])


def surface_points(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``[B, V + 4F, 3]``: the vertices of meshes ``verts [B, V, 3]`` and 4 points inside each face."""
    inner = torch.einsum("sk,bfkd->bfsd", _FACE_SAMPLES.to(verts), verts[:, faces])
    return torch.cat([verts, inner.flatten(1, 2)], 1)


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


def render_pair(models: tuple[HandModel, HandModel], before: Hands, after: Hands, path: Path) -> None:
    """Before | after, seen from the same oblique view, interpenetration tinted red."""
    c, s = np.cos(0.5), np.sin(0.5)
    view = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)],
                                                                      [0, np.sin(0.4), np.cos(0.4)]])
    images = [render_meshes([(h.right_verts, models[0].faces, SKIN), (h.left_verts, models[1].faces, BLUE)],
                            (360, 360), view=view, highlight=RED) for h in (before, after)]
    Image.fromarray(np.concatenate([images[0], np.full_like(images[0][:, :8], 255), images[1]], 1)).save(path)


def run(pose: str = "finger_grasp", steps: int = DEMO_STEPS, device: str = "cpu", out: Path = Path("demo_out"),
        input_file: Path | None = None, show_progress: bool = True) -> dict:
    """Runs the demo and returns its report (also written to ``out/report.json``)."""
    started = time.perf_counter()
    models = (HandModel("right").to(device), HandModel("left").to(device))
    if input_file is not None:
        right_joints, left_joints = load_input(input_file)
        right = models[0].fit(right_joints.to(device, torch.float32))
        left = models[1].fit(left_joints.to(device, torch.float32))
        source = str(input_file)
    else:
        right, left = two_hand_preset(pose, device=device)
        source = f"preset {pose!r}"
    net = HandOccupancyNet.pretrained(device)
    before = pose_hands(models, right, left)
    with KernelTimer() as timer:
        measured_before = measure(models, before, net)
        after = resolve(models, before, net, steps, WEIGHTS, show_progress)
        measured_after = measure(models, after, net)
    moved = (torch.stack([after.right_joints, after.left_joints]) - torch.stack([before.right_joints, before.left_joints]))
    moved_mm = moved.norm(dim=-1) * 1e3
    out.mkdir(parents=True, exist_ok=True)
    for name, hands in (("before", before), ("after", after)):
        models[0].export(hands.right_verts.detach().cpu(), out / f"right_{name}.ply")
        models[1].export(hands.left_verts.detach().cpu(), out / f"left_{name}.ply")
    render_pair(models, before, after, out / "hands.png")
    report = {
        "source": source, "device": device, "steps": steps, "before": measured_before, "after": measured_after,
        "volume_reduction": 1 - measured_after["volume_cm3"] / max(measured_before["volume_cm3"], 1e-12),
        "joint_moved_mean_mm": float(moved_mm.mean()), "joint_moved_max_mm": float(moved_mm.max()),
        "kernel_ms": dict(sorted(timer.ms.items(), key=lambda kv: -kv[1])), "seconds": time.perf_counter() - started,
        "files": sorted(str(p) for p in out.iterdir() if p.suffix in (".ply", ".png")),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def print_report(report: dict) -> None:
    b, a = report["before"], report["after"]
    rows = [("grid points inside both hands (125k grid)", "count", "{:d}"),
            ("intersection volume, cm^3 (1 mm grid)", "volume_cm3", "{:.2f}"),
            ("max penetration depth, mm", "depth_mm", "{:.1f}"),
            ("occupancy-network count (125k grid)", "occupancy_count", "{:d}")]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':<{width}}  {'before':>9}  {'after':>9}")
    for label, key, fmt in rows:
        print(f"{label:<{width}}  {fmt.format(b[key]):>9}  {fmt.format(a[key]):>9}")
    print(f"\nintersection volume reduced by {100 * report['volume_reduction']:.1f}%; joints moved "
          f"{report['joint_moved_mean_mm']:.2f} mm on average (max {report['joint_moved_max_mm']:.2f} mm)")
    print("time in handgeom kernels: " + ", ".join(
        f"{k.removeprefix('handgeom::')} {v:.0f} ms" for k, v in report["kernel_ms"].items()))
    print(f"wrote {', '.join(report['files'])} in {report['seconds']:.1f} s on {report['device']}")
