"""From images to two hands: the DIR network's prediction posed in one frame, its interaction
measured exactly, and drawn over the image; and ``handgeom reconstruct IMAGE...`` for a user's
own crops.

The shipped network (:meth:`InteractingHandsNet.pretrained`) was trained on handgeom's synthetic
renders only; see the README for what that means for photographs and how to train on
InterHand2.6M.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm import tqdm

from handgeom.hand import HandModel, HandParams
from handgeom.metrics import count_intersections, count_intersections_occupancy, intersection_volume, penetration_depth
from handgeom.models import HandOccupancyNet, InteractingHandsNet
from handgeom.viz import draw_skeleton, render_pixels

__all__ = ["Crop", "Hands", "ImageError", "Prediction", "draw_prediction", "load_image", "measure", "placed_hands",
           "pose_hands", "predict", "reconstruct_images"]

SKIN, BLUE, RED = (0.85, 0.62, 0.48), (0.45, 0.6, 0.85), (0.9, 0.1, 0.1)  # right hand, left hand, interpenetration
SKELETON = ((235, 120, 40), (40, 110, 235))  # right, left: 2D skeletons and segmentation tints
DISPLAY = 256  # pixels per side of each picture of a crop


class ImageError(ValueError):
    """An image file that cannot be used; the message is one line for the user."""


@dataclass
class Crop:
    """A user's image as the network's square input: the image scaled so that its longer side
    fills ``size`` pixels and centred, the rest black. Network pixel ``p`` is original pixel
    ``(p - offset) / scale``."""

    image: torch.Tensor  # [3, size, size] float32 in [0, 1]
    scale: float
    offset: tuple[float, float]  # (x, y), network pixels

    def to_original(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - torch.tensor(self.offset, dtype=pixels.dtype)) / self.scale


def load_image(path: Path, size: int) -> Crop:
    """Reads a PNG, JPEG or any image Pillow reads, as :class:`Crop` (``ImageError`` otherwise)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        with Image.open(path) as file:
            rgb = file.convert("RGB")  # decodes the whole file: truncated data fails here
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file that Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: cannot be decoded ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'corrupt'})") from None
    width, height = rgb.size
    scale = size / max(width, height)
    resized = rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    square = Image.new("RGB", (size, size))
    offset = ((size - resized.width) // 2, (size - resized.height) // 2)
    square.paste(resized, offset)
    image = torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1).float() / 255
    return Crop(image, resized.width / width, (float(offset[0]), float(offset[1])))


@dataclass
class Hands:
    """A pair of hands in one frame: parameters and the posed meshes (one pair, no batch)."""

    right: HandParams
    left: HandParams
    right_joints: torch.Tensor  # [21, 3]
    left_joints: torch.Tensor
    right_verts: torch.Tensor  # [V, 3]
    left_verts: torch.Tensor


def pose_hands(models: tuple[HandModel, HandModel], right: HandParams, left: HandParams) -> Hands:
    out_r, out_l = models[0](right), models[1](left)
    return Hands(right, left, out_r.joints, out_l.joints, out_r.verts, out_l.verts)


def measure(models: tuple[HandModel, HandModel], hands: Hands, net: HandOccupancyNet) -> dict[str, float]:
    """The four interpenetration measures of one pair: grid points inside both meshes (125k-point
    grid, ray casting), intersection volume (1 mm grid), maximum penetration depth (either hand's
    vertices into the other) and the occupancy network's count."""
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


@dataclass
class Prediction:
    """The network's last stage for one crop: the hands in one frame (the right root at the
    origin, the left at ``-offset``, camera orientation), their 2D joints and vertices in crop
    pixels, and the segmentation (``[3, h, w]`` logits: background, right, left)."""

    hands: Hands
    joints_px: torch.Tensor  # [2, 21, 2]
    verts_px: torch.Tensor  # [2, V, 2]
    camera: torch.Tensor  # [2, 3] weak perspective (s, tx, ty) per hand
    seg: torch.Tensor


@torch.no_grad()
def predict(net: InteractingHandsNet, images: torch.Tensor) -> list[Prediction]:
    """Runs ``net`` on ``images [B, 3, S, S]`` and returns one :class:`Prediction` per image."""
    last = net(images)[-1]
    size = images.shape[-1]
    to_px = lambda uv: (uv + 1) * size / 2  # [-1, 1] to pixels
    models = (net.hands[0], net.hands[1])
    return [Prediction(placed_hands(models, last, b), to_px(last["joints_uv"][b]), to_px(last["verts_uv"][b]),
                       last["camera"][b], last["seg"][b]) for b in range(images.shape[0])]


def placed_hands(models: tuple[HandModel, HandModel], out: dict, b: int) -> Hands:
    """Pair ``b`` of a two-hand network's output (``params`` root-relative and ``offset``, as
    :class:`InteractingHandsNet` and the uplift models give them) in one frame: the right root at
    the origin, the left at ``-offset``."""
    right, left = out["params"][0][b], out["params"][1][b]
    left = HandParams(rotation=left.rotation, translation=-out["offset"][b], bone_lengths=left.bone_lengths,
                      angles=left.angles, scale=left.scale)
    return pose_hands(models, right, left)


def draw_prediction(image: torch.Tensor, prediction: Prediction, faces: tuple[torch.Tensor, torch.Tensor],
                    display: int = DISPLAY) -> tuple[np.ndarray, np.ndarray]:
    """Two ``uint8 [display, display, 3]`` pictures of a prediction on its crop ``image [3, S, S]``:
    the image with the segmentation tinted and the 2D skeletons drawn, and the meshes rendered from
    the camera over the image (each hand by its weak-perspective camera, ordered by depth)."""
    size = image.shape[-1]
    zoom = display / size
    photo = Image.fromarray((image.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).cpu().numpy())
    photo = np.asarray(photo.resize((display, display), Image.Resampling.BILINEAR)).astype(np.float32)
    labels = F.interpolate(prediction.seg[None].float().cpu(), size=(display, display), mode="bilinear",
                           align_corners=False)[0].argmax(0).numpy()
    tinted = photo.copy()
    for label, colour in enumerate(SKELETON, start=1):
        tinted[labels == label] = 0.55 * tinted[labels == label] + 0.45 * np.array(colour)
    overlay = Image.fromarray(tinted.astype(np.uint8))
    draw = ImageDraw.Draw(overlay)
    for joints, colour in zip(prediction.joints_px.cpu() * zoom, SKELETON):
        draw_skeleton(draw, joints, colour)
    # pixel-space meshes: x, y from each hand's camera, depth from the common frame at the mean scale
    depth_scale = float(prediction.camera[:, 0].mean()) * display / 2
    verts3d = (prediction.hands.right_verts, prediction.hands.left_verts)
    meshes = [(torch.cat([uv.cpu() * zoom, v[:, 2:].cpu() * depth_scale], 1), f, colour)
              for uv, v, f, colour in zip(prediction.verts_px, verts3d, faces, (SKIN, BLUE))]
    rendered = render_pixels(meshes, (display, display), background=photo.astype(np.uint8), opacity=0.85)
    return np.asarray(overlay), rendered


def _unique_names(paths: list[Path]) -> list[str]:
    """File stems, with ``-2``, ``-3``... where two images share one."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


def reconstruct_images(paths: list[Path], out: Path, batch: int = 8, device: str = "cpu",
                       show_progress: bool = True, net: InteractingHandsNet | None = None) -> dict:
    """``handgeom reconstruct``: each image through ``net`` (default: the shipped network), writing
    per image
    ``NAME_right.ply``, ``NAME_left.ply``, ``NAME.json`` (3D joints in metres in the common frame,
    2D joints in the image's own pixels, the cameras and the interaction measures of
    :func:`measure`) and ``NAME_overlay.png`` (segmentation and skeletons | meshes over the image).
    An image that cannot be read is skipped with its one-line reason in ``failed``. Returns the
    summary, also written to ``out/report.json``."""
    net = net or InteractingHandsNet.pretrained(device)
    occupancy = HandOccupancyNet.pretrained(device)
    models = (net.hands[0], net.hands[1])
    faces = (models[0].faces.cpu(), models[1].faces.cpu())
    out.mkdir(parents=True, exist_ok=True)
    done, failed = {}, {}
    started = time.perf_counter()
    names = _unique_names(paths)
    bar = tqdm(total=len(paths), desc="reconstructing", unit="image", disable=not show_progress)
    for first in range(0, len(paths), batch):
        crops, chunk = [], []
        for path, name in zip(paths[first:first + batch], names[first:first + batch]):
            try:
                crops.append(load_image(path, net.image_size))
                chunk.append((path, name))
            except ImageError as error:
                failed[str(path)] = str(error)
                bar.update()
        if not crops:
            continue
        predictions = predict(net, torch.stack([c.image for c in crops]).to(device))
        for (path, name), crop, prediction in zip(chunk, crops, predictions):
            hands = prediction.hands
            models[0].export(hands.right_verts.cpu(), out / f"{name}_right.ply")
            models[1].export(hands.left_verts.cpu(), out / f"{name}_left.ply")
            record = {
                "image": str(path),
                "joints_3d": {"right": hands.right_joints.cpu().double().round(decimals=6).tolist(),  # metres, to 1 um
                              "left": hands.left_joints.cpu().double().round(decimals=6).tolist()},
                "joints_2d": {side: crop.to_original(prediction.joints_px[s].cpu().double()).round(decimals=2).tolist()
                              for s, side in enumerate(("right", "left"))},
                "camera": prediction.camera.cpu().double().round(decimals=6).tolist(),
                "interaction": measure(models, hands, occupancy),
            }
            (out / f"{name}.json").write_text(json.dumps(record))
            overlay, rendered = draw_prediction(crop.image, prediction, faces)
            Image.fromarray(np.concatenate([overlay, rendered], 1)).save(out / f"{name}_overlay.png")
            done[str(path)] = {"name": name, **record["interaction"]}
            bar.update()
    bar.close()
    report = {"device": device, "images": len(paths), "reconstructed": done, "failed": failed,
              "seconds": time.perf_counter() - started}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
