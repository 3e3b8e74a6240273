"""PASCAL VOC class names, colour palette and the special label values; default class names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

VOC_DIR = Path("VOCdevkit/VOC2012")
"""The VOC2012 folder relative to a dataset root."""

SCRIBBLE_DIR = "VOCdevkit/VOC2012/pascal_2012_scribble"
"""Scribble PNG folder relative to the root, as ``rloss data prepare`` writes it."""

IGNORE_INDEX: int = 255
"""Label of unlabeled pixels (scribbles) and of object boundaries (VOC full masks)."""

PAD_INDEX: int = 254
"""Label of pixels added by padding during cropping; excluded from every loss (outside the ROI)."""

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def class_names_or_default(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The K = ``num_classes`` class names (for per-class metrics); None gives "0".."K-1".
    ValueError when there are not K names."""
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names; expected num_classes={num_classes}")
    return names


def voc_palette() -> list[int]:
    """The standard 256-entry VOC colour map as a flat [r, g, b, ...] list for PIL 'P' images."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.extend((r, g, b))
    return palette
