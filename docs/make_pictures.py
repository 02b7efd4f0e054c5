"""Regenerates the README's pictures: python docs/make_pictures.py"""

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from handgeom.demo import run
from handgeom.hand import POSES, TWO_HAND_PRESETS, HandModel, named_pose, two_hand_preset
from PIL import Image

from handgeom.viz import render_meshes

SKIN, BLUE = (0.85, 0.62, 0.48), (0.45, 0.6, 0.85)


def rotation_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def main() -> None:
    right, left = HandModel("right", "fine"), HandModel("left", "fine")
    poses = [render_meshes([(right(named_pose(right, name, torch.float64)).verts.numpy(), right.faces.numpy(), SKIN)],
                           (240, 240), view=rotation_x(-0.3)) for name in POSES]
    pairs = []
    for name in TWO_HAND_PRESETS:
        r, l = two_hand_preset(name, torch.float64)
        meshes = [(right(r).verts.numpy(), right.faces.numpy(), SKIN), (left(l).verts.numpy(), left.faces.numpy(), BLUE)]
        pairs.append(render_meshes(meshes, (240, 240), view=rotation_y(-0.5) @ rotation_x(0.5)))
    pairs += [np.full_like(pairs[0], 255)] * (len(poses) - len(pairs))
    out = Path(__file__).with_name("hand_poses.png")
    Image.fromarray(np.concatenate([np.concatenate(poses, 1), np.concatenate(pairs, 1)], 0)).save(out)
    print(f"wrote {out}")
    with tempfile.TemporaryDirectory() as tmp:  # the demo's picture, from a default run
        run(out=Path(tmp), show_progress=False)
        shutil.copy(Path(tmp) / "demo.png", Path(__file__).with_name("demo.png"))
    print(f"wrote {Path(__file__).with_name('demo.png')}")


if __name__ == "__main__":
    main()
