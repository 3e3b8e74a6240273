"""Image and label files: reading images and label PNGs, writing label PNGs atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from rloss.data.constants import voc_palette
from rloss.utils.atomic import atomic_path
from rloss.utils.checks import check_labels

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".npy")
"""File name endings read as images (lower case); ``.npy``: a NumPy array (see :func:`read_image`)."""

MAX_IMAGE_PIXELS: int = 100_000_000
"""Images with more pixels (10,000 x 10,000) are refused, naming the file: read as float32 RGB such an
image takes 1.2 GB, in each DataLoader worker. Pillow's decompression-bomb warning (above 89 MP) is
redundant with this check; the ``rloss`` command hides it."""

DEPTH_MODES: tuple[str, ...] = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""Pillow modes of 1-channel images read at their real depth (16-bit, 32-bit integer, 32-bit float)."""


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image file. ValueError naming the file when it cannot be decoded
    (truncated, corrupt, not an image) or has more than :data:`MAX_IMAGE_PIXELS` pixels (checked
    before decoding); FileNotFoundError when it is missing."""
    try:
        image = Image.open(path)
        if image.width * image.height > MAX_IMAGE_PIXELS:
            image.close()
            raise too_large(path, f"{image.width:,} x {image.height:,} = {image.width * image.height:,}")
        image.load()
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own limit, 2 x Image.MAX_IMAGE_PIXELS, checked first
        raise too_large(path, f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}") from error
    except (OSError, SyntaxError) as error:  # PIL: UnidentifiedImageError, truncated data, bad chunks
        raise ValueError(f"{path}: cannot decode the image ({error}); expected a valid image file") from error
    return image


def too_large(path: Path, pixels: str) -> ValueError:
    """The error for an image of ``pixels`` pixels, above :data:`MAX_IMAGE_PIXELS`."""
    return ValueError(f"{path}: the image has {pixels} pixels; expected at most {MAX_IMAGE_PIXELS:,} "
                      "(rloss.data.files.MAX_IMAGE_PIXELS; tile larger images)")


def _read_pixels(path: Path) -> np.ndarray:
    """(C, H, W) float32 of an image file (see :func:`read_image`)."""
    with load_image(path) as img:
        if img.mode in DEPTH_MODES:
            array = np.asarray(img).astype(np.float32)
        elif img.mode in ("1", "L", "LA"):
            array = np.asarray(img.convert("L"), dtype=np.float32)
        else:
            array = np.asarray(img.convert("RGB"), dtype=np.float32)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _read_array(path: Path) -> np.ndarray:
    """(C, H, W) float32 of a ``.npy`` file holding real numbers of shape (H, W) or (C, H, W)."""
    expected = "a .npy file of real numbers of shape (H, W) or (C, H, W)"
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the array ({error}); expected {expected}") from error
    if not (isinstance(array, np.ndarray) and array.ndim in (2, 3) and array.size and array.dtype.kind in "buif"):
        found = type(array).__name__
        if isinstance(array, np.ndarray):
            found = f"a {array.dtype} array of shape {array.shape}"
        raise ValueError(f"{path}: holds {found}; expected {expected}")
    array = array.astype(np.float32)
    return array[None] if array.ndim == 2 else array


def read_image(path: Path, channels: int | None = None) -> Tensor:
    """Read an image file as float32 (C, H, W) intensities in the file's own units.

    Grayscale (modes L, 1, LA) -> (1, H, W) in 0..255; 16-bit and 32-bit grayscale (I;16, I, F: PNG,
    TIFF) -> (1, H, W) at their real depth (0..65535 for 16-bit); every other mode (RGB; RGBA and
    LA lose their alpha; palette, CMYK, ...) -> (3, H, W) RGB in 0..255 (Pillow reads 16-bit colour
    PNGs as 8-bit); ``.npy`` -> its (H, W) or (C, H, W) array. ``channels``: the C expected; a
    1-channel image is repeated to it (grayscale files in a set of colour photos), another C is a
    ValueError. ValueError naming the file for NaN/inf values.
    """
    path = Path(path)
    image = torch.from_numpy(_read_array(path) if path.suffix.lower() == ".npy" else _read_pixels(path))
    if not torch.isfinite(image).all():
        raise ValueError(f"{path}: holds NaN/inf values; expected finite intensities")
    if channels is not None and image.shape[0] != channels:
        if image.shape[0] != 1:
            raise ValueError(f"{path}: has {image.shape[0]} channels; expected {channels} (or 1)")
        image = image.expand(channels, -1, -1)
    return image.contiguous()


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
