"""A contact sheet of synthetic samples: ``python -m handgeom.datasets.preview [--out PATH]``.

One row per dataset (interacting hands, hand-object, single hand); per sample the image with the
2D skeletons drawn, and its mask (right hand, left hand, object in three colours).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from handgeom.datasets.synthetic import SyntheticHandObject, SyntheticInteractingHands, SyntheticSingleHand
from handgeom.hand import BONES

MASK_COLOURS = np.array([[255, 255, 255], [230, 120, 60], [60, 120, 230], [80, 180, 80]], dtype=np.uint8)
SKELETON_COLOURS = ((255, 40, 40), (40, 90, 255))  # right, left


def to_pil(image: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` float in [0, 1] to a Pillow RGB image."""
    return Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def draw_skeletons(image: Image.Image, joints_2d: torch.Tensor, hand_valid: torch.Tensor, width: int = 1) -> Image.Image:
    """The 2D skeletons (``joints_2d [2, 21, 2]`` pixels of ``image``) drawn over a copy of it."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    for slot in range(2):
        if not bool(hand_valid[slot]):
            continue
        pts = [tuple(p) for p in joints_2d[slot].tolist()]
        for a, b in BONES:
            draw.line([pts[a], pts[b]], fill=SKELETON_COLOURS[slot], width=width)
        for p in pts:
            draw.ellipse([p[0] - width, p[1] - width, p[0] + width, p[1] + width], fill=SKELETON_COLOURS[slot])
    return out


def mask_image(mask: torch.Tensor) -> Image.Image:
    return Image.fromarray(MASK_COLOURS[mask.numpy()])


def contact_sheet(per_row: int = 6, image_size: int = 128, seed: int = 0) -> Image.Image:
    """Rows of ``per_row`` samples of each synthetic dataset, each as image+skeleton over its mask."""
    rows = []
    for cls in (SyntheticInteractingHands, SyntheticHandObject, SyntheticSingleHand):
        dataset = cls(per_row, image_size, seed=seed)
        tiles = []
        for i in range(per_row):
            s = dataset[i]
            top = draw_skeletons(to_pil(s["image"]), s["joints_2d"], s["hand_valid"])
            tile = Image.new("RGB", (image_size, 2 * image_size), "white")
            tile.paste(top, (0, 0))
            tile.paste(mask_image(s["mask"]), (0, image_size))
            tiles.append(tile)
        rows.append(tiles)
    gap = 4
    sheet = Image.new("RGB", (per_row * (image_size + gap) - gap, len(rows) * (2 * image_size + gap) - gap), "white")
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (c * (image_size + gap), r * (2 * image_size + gap)))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m handgeom.datasets.preview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/datasets.png"), help="PNG to write (default: docs/datasets.png)")
    parser.add_argument("--per-row", type=int, default=6, help="samples per dataset (default: 6)")
    parser.add_argument("--size", type=int, default=128, help="image size (default: 128)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.per_row < 1 or args.size < 8:
        parser.error("--per-row must be >= 1 and --size >= 8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(args.per_row, args.size, args.seed).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
