"""Image and label files: reading images and label PNGs, writing label PNGs atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from rloss.utils.atomic import atomic_path
from rloss.data.constants import voc_palette
from rloss.utils.checks import check_labels

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings read as images (lower case)."""


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image file. ValueError naming the file when it cannot be decoded
    (truncated, corrupt, not an image); FileNotFoundError when it is missing."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as error:  # PIL: UnidentifiedImageError, truncated data, bad chunks
        raise ValueError(f"{path}: cannot decode the image ({error}); expected a valid image file") from error
    return image


def read_image(path: Path) -> Tensor:
    """Read an image file as float32 (3,H,W) RGB in 0..255."""
    with load_image(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_label(path: Path, num_classes: int, size: Sequence[int]) -> Tensor:
    """Read a label PNG (class ids, 255 unlabeled/ignored, 254 padding) as int64 (H,W).

    Raises ValueError naming the file when it is not a single-channel PNG, when its size
    differs from ``size`` = (H, W) of its image, or when it holds a class id >= num_classes
    other than 254/255.
    """
    with load_image(path) as img:
        if img.mode not in ("L", "P"):
            raise ValueError(
                f"{path}: label PNG has mode {img.mode!r}; expected a single-channel 'P' or 'L' "
                "image of class ids (255 = unlabeled)"
            )
        array = np.asarray(img, dtype=np.uint8)
    if tuple(array.shape) != tuple(size):
        raise ValueError(
            f"{path}: label size {array.shape[0]}x{array.shape[1]} (HxW) differs from its image "
            f"{size[0]}x{size[1]}"
        )
    labels = torch.from_numpy(array.astype(np.int64))
    check_labels(labels, num_classes, str(path))
    return labels


def write_label_png(labels: Tensor | np.ndarray, path: Path, palette: bool = True) -> None:
    """Write class ids (H,W) in 0..255 to ``path`` as a PNG, atomically: a 'P' image with the VOC
    colours (``palette``), else an 'L' grayscale image (the layout ``rloss data prepare`` writes)."""
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must have shape (H, W), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: labels must be class ids in 0..255, found [{labels.min()}, {labels.max()}]")
    image = Image.fromarray(labels.astype(np.uint8))  # 2-D uint8: an "L" image
    if palette:
        image.putpalette(voc_palette())  # "L" -> "P" with the VOC colours
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
