"""A miniature VOC2012 tree in the real layout, for the tests (JPEG images, palette PNG masks,
split lists and scribble PNGs as ``rloss data prepare`` writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rloss.data.constants import IGNORE_INDEX, SCRIBBLE_DIR, VOC_DIR, voc_palette

SIZES: tuple[tuple[int, int], ...] = ((48, 64), (40, 56))
"""(H, W) of the images, alternating, so whole-image batches need padding."""


def save_label(array: np.ndarray, path: Path) -> None:
    """Save an (H,W) uint8 label map as a VOC-palette PNG."""
    image = Image.fromarray(array.astype(np.uint8))
    image.putpalette(voc_palette())
    image.save(path)


def make_sample(rng: np.random.Generator, height: int, width: int, num_classes: int) -> tuple[np.ndarray, ...]:
    """(image uint8 (H,W,3), mask (H,W), scribble (H,W)): one object rectangle on background,
    a 1-px 255 boundary, a scribble line in the object and one in the background."""
    label = int(rng.integers(1, num_classes))
    top, left = int(rng.integers(4, height // 3)), int(rng.integers(4, width // 3))
    bottom, right = top + height // 2, left + width // 2
    mask = np.zeros((height, width), np.uint8)
    mask[top:bottom, left:right] = label
    mask[top - 1, left - 1 : right + 1] = mask[bottom, left - 1 : right + 1] = IGNORE_INDEX
    mask[top - 1 : bottom + 1, left - 1] = mask[top - 1 : bottom + 1, right] = IGNORE_INDEX
    colours = rng.integers(0, 256, size=(num_classes, 3))
    image = colours[np.where(mask == IGNORE_INDEX, 0, mask)] + rng.normal(0, 8, (height, width, 3))
    scribble = np.full((height, width), IGNORE_INDEX, np.uint8)
    scribble[(top + bottom) // 2, left + 2 : right - 2] = label
    scribble[1, 2 : width - 2] = 0
    return np.clip(image, 0, 255).astype(np.uint8), mask, scribble


def make_voc_tree(root: Path, num_train: int = 4, num_val: int = 2, num_classes: int = 21, seed: int = 0) -> Path:
    """Write a miniature VOC tree under ``root`` (train_aug: ``num_train`` images, val:
    ``num_val``) and return ``root``."""
    rng = np.random.default_rng(seed)
    voc = root / VOC_DIR
    folders = {name: voc / name for name in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation")}
    folders["scribbles"] = root / SCRIBBLE_DIR
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    names = {"train_aug": [f"2007_{i:06d}" for i in range(num_train)],
             "val": [f"2008_{i:06d}" for i in range(num_val)]}
    for split, split_names in names.items():
        (folders["ImageSets/Segmentation"] / f"{split}.txt").write_text("".join(f"{n}\n" for n in split_names))
        for i, name in enumerate(split_names):
            image, mask, scribble = make_sample(rng, *SIZES[i % len(SIZES)], num_classes)
            Image.fromarray(image).save(folders["JPEGImages"] / f"{name}.jpg", quality=95)
            save_label(mask, folders["SegmentationClassAug"] / f"{name}.png")
            save_label(scribble, folders["scribbles"] / f"{name}.png")
    return root
