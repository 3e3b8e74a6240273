"""Scribbles -> dense mask for one image: optimize per-pixel logits under pCE + regularizers.

``rloss propagate --image IMG --scribbles PNG --output MASK.png [--regularizer densecrf|ncut|...]``
or, with folders, ``--image DIR --scribbles DIR --output DIR`` (files matched by stem).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import Tensor
from tqdm import tqdm

from rloss.atomic import atomic_path
from rloss.data.base import IMAGE_SUFFIXES, read_image, read_label
from rloss.data.constants import IGNORE_INDEX, PAD_INDEX, VOC_CLASSES, voc_palette
from rloss.losses import partial_cross_entropy
from rloss.regularizers import REGISTRY, Regularizer, build_regularizer

DEFAULT_WIDTH: int = 128
"""Long side (px) of the working resolution the logits are optimized at."""

DEFAULT_WEIGHTS: dict[str, float] = {"densecrf": 1.0, "ncut": 1.0, "size": 1.0}
"""Weight of each regularizer in ``rloss propagate`` (losses normalized per ROI pixel)."""

SIGMA_XY_FRACTION: float = 0.05
"""Spatial bandwidth of the affinity regularizers as a fraction of the working width."""


def _as_chw(image: Tensor | np.ndarray) -> Tensor:
    """Image (3,H,W) or (H,W,3), uint8 or float RGB 0..255 -> float32 (3,H,W)."""
    image = torch.as_tensor(np.asarray(image) if not isinstance(image, Tensor) else image)
    if image.dim() == 3 and image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W) or (H, W, 3), got {tuple(image.shape)}")
    return image.float().contiguous()


def labeled_mask(scribbles: Tensor) -> Tensor:
    """Bool (H,W): pixels that carry a class id (not 255 unlabeled, not 254 padding)."""
    return (scribbles != IGNORE_INDEX) & (scribbles != PAD_INDEX)


def voronoi_baseline(scribbles: Tensor | np.ndarray) -> Tensor:
    """Nearest-scribble labeling: every pixel gets the class of its closest scribbled pixel.

    scribbles: (H,W) int class ids, 255 unlabeled. Returns int64 (H,W).
    """
    scribbles = torch.as_tensor(np.asarray(scribbles)).long()
    labeled = labeled_mask(scribbles).numpy()
    if not labeled.any():
        raise ValueError("scribbles hold no labeled pixel; expected at least one class id != 255")
    _, (rows, cols) = ndimage.distance_transform_edt(~labeled, return_indices=True)
    return scribbles[torch.from_numpy(rows), torch.from_numpy(cols)]


def _downsample_scribbles(onehot: Tensor, size: tuple[int, int]) -> Tensor:
    """Local labels (h,w) from one-hot scribbles (K,H,W): the class covering most of each cell
    (area pooling keeps thin strokes), 255 where no scribble falls."""
    coverage = F.interpolate(onehot[None], size=size, mode="area")[0]
    best, labels = coverage.max(0)
    return torch.where(best > 0, labels, torch.full_like(labels, IGNORE_INDEX))


def propagate(
    image: Tensor | np.ndarray,
    scribbles: Tensor | np.ndarray,
    regularizers: Sequence[Regularizer],
    steps: int = 300,
    lr: float = 0.1,
    width: int = DEFAULT_WIDTH,
) -> Tensor:
    """Dense mask int64 (H,W) from scribbles (H,W) (class ids, 255 unlabeled) on image RGB 0..255.

    Per-pixel logits over the scribbled classes only, at a working resolution whose long side
    is ``width`` px, are optimized with Adam (``steps``, ``lr``) under pCE +
    sum(regularizers); the probabilities are upsampled (bilinear) to full size and argmaxed.
    """
    image = _as_chw(image)
    scribbles = torch.as_tensor(np.asarray(scribbles) if not isinstance(scribbles, Tensor) else scribbles).long()
    if tuple(scribbles.shape) != tuple(image.shape[1:]):
        raise ValueError(
            f"scribbles have size {tuple(scribbles.shape)} (H, W) but the image has {tuple(image.shape[1:])}; "
            "expected the same"
        )
    labeled = labeled_mask(scribbles)
    classes = torch.unique(scribbles[labeled])
    if classes.numel() == 0:
        raise ValueError("scribbles hold no labeled pixel; expected at least one class id != 255")
    if classes.numel() == 1:
        return torch.full_like(scribbles, int(classes[0]))
    height, full_w = scribbles.shape
    scale = min(1.0, width / max(height, full_w))
    size = (max(1, round(height * scale)), max(1, round(full_w * scale)))
    onehot = (scribbles[None] == classes[:, None, None]).float()
    labels = _downsample_scribbles(onehot, size)[None]
    small = F.interpolate(image[None], size=size, mode="area").clamp(0, 255)
    logits = torch.zeros(1, classes.numel(), *size, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):  # the same ``small`` tensor every step: the regularizers reuse its lattice
        optimizer.zero_grad()
        probs = logits.softmax(1)
        loss = partial_cross_entropy(logits, labels)
        for regularizer in regularizers:
            loss = loss + regularizer(small, probs, None, labels)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probs = F.interpolate(logits.softmax(1), size=(height, full_w), mode="bilinear", align_corners=False)
    return classes[probs[0].argmax(0)]


def default_regularizer(name: str, width: int = DEFAULT_WIDTH) -> Regularizer:
    """``name`` with the propagate defaults: weight from DEFAULT_WEIGHTS, and for the affinity
    losses sigma_xy = SIGMA_XY_FRACTION x width (bandwidths in working-resolution pixels)."""
    kwargs: dict[str, float] = {"weight": DEFAULT_WEIGHTS.get(name, 1.0)}
    if name in ("densecrf", "ncut"):
        kwargs["sigma_xy"] = SIGMA_XY_FRACTION * width
    return build_regularizer(name, **kwargs)


def load_pair(image_path: Path, scribble_path: Path, num_classes: int) -> tuple[Tensor, Tensor]:
    """Read an image (3,H,W) float 0..255 and its scribbles (H,W) int64; ValueError naming the
    file when it cannot be read, sizes differ, a class id is >= num_classes or nothing is scribbled."""
    try:
        image = read_image(image_path)
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{image_path}: cannot read it as an image ({error}); expected an RGB image file") from error
    try:
        scribbles = read_label(scribble_path, num_classes, image.shape[-2:])
    except (OSError, SyntaxError) as error:
        raise ValueError(
            f"{scribble_path}: cannot read it as a PNG ({error}); expected a single-channel PNG of class ids"
        ) from error
    if not labeled_mask(scribbles).any():
        raise ValueError(
            f"{scribble_path}: holds no scribble; expected at least one pixel with a class id "
            f"0..{num_classes - 1} (255 = unlabeled)"
        )
    return image, scribbles


def write_mask(mask: Tensor, path: Path) -> None:
    """Save mask (H,W) class ids as a VOC-palette 'P' PNG, atomically."""
    image = Image.fromarray(mask.numpy().astype(np.uint8), mode="L")
    image.putpalette(voc_palette())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _pairs(image: Path, scribbles: Path, output: Path) -> list[tuple[Path, Path, Path]]:
    """(image, scribbles, output) files: one triple, or folders matched by file stem."""
    if not image.is_dir():
        return [(image, scribbles, output)]
    if not scribbles.is_dir():
        raise ValueError(f"--scribbles {scribbles}: expected a folder since --image {image} is a folder")
    images = {p.stem: p for p in sorted(image.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    pngs = {p.stem.removesuffix("_scribble"): p for p in sorted(scribbles.glob("*.png"))}
    stems = sorted(images.keys() & pngs.keys())
    if not stems:
        raise ValueError(
            f"no image of {image} has a scribble PNG of the same stem (or <stem>_scribble.png) in {scribbles}"
        )
    return [(images[s], pngs[s], output / f"{s}.png") for s in stems]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rloss propagate", description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, required=True, help="image file or folder")
    parser.add_argument("--scribbles", type=Path, required=True, help="scribble PNG (255 = unlabeled) or folder")
    parser.add_argument("--output", type=Path, required=True, help="mask PNG or folder")
    parser.add_argument(
        "--regularizer", action="append", choices=sorted(REGISTRY), default=None,
        help="regularizer(s) added to pCE (repeatable); default densecrf",
    )
    parser.add_argument("--num-classes", type=int, default=len(VOC_CLASSES), help="class ids must be below it")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="working long side in px")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    """``rloss propagate ...``: write one mask per (image, scribbles) pair; returns 0."""
    args = parse_args(argv)
    regularizers = [default_regularizer(name, args.width) for name in args.regularizer or ["densecrf"]]
    pairs = _pairs(args.image, args.scribbles, args.output)
    for image_path, scribble_path, _ in pairs:  # every input is valid before anything is written
        load_pair(image_path, scribble_path, args.num_classes)
    for image_path, scribble_path, output_path in tqdm(pairs, desc="propagate", disable=len(pairs) == 1):
        image, scribbles = load_pair(image_path, scribble_path, args.num_classes)
        start = time.perf_counter()
        mask = propagate(image, scribbles, regularizers, args.steps, args.lr, args.width)
        write_mask(mask, output_path)
        tqdm.write(f"{output_path} ({time.perf_counter() - start:.1f} s)")
    return 0
