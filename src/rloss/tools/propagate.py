"""Scribbles -> dense mask for one image: label propagation through the dense affinity, optionally
refined by optimizing per-pixel logits under pCE + regularizers (``--steps``, ``--regularizer``).

``rloss propagate --image IMG --scribbles PNG --output MASK.png [--regularizer densecrf|ncut|...]
[--checkpoint CKPT]`` (a trained network's prediction as the prior)
or, with folders, ``--image DIR --scribbles DIR --output DIR`` (files matched by stem; images
without a scribble file are reported and skipped). Defaults and what they were chosen against:
benchmarks/propagate.py.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from tqdm import tqdm

from rloss.data.constants import IGNORE_INDEX, VOC_CLASSES
from rloss.data.files import IMAGE_SUFFIXES, read_image, read_label, write_label_png
from rloss.lattice import bilateral_affinity
from rloss.losses import partial_cross_entropy
from rloss.regularizers import REGISTRY, Regularizer, build_regularizer
from rloss.regularizers.affinity import (
    PROPAGATION_SIGMA_RGB,
    PROPAGATION_SIGMA_XY_BOUNDS,
    PROPAGATION_SIGMA_XY_SPACING,
)
from rloss.regularizers.base import scaled_size
from rloss.tools.prior import check_channels, load_predictor, network_probs
from rloss.utils.checks import check_integer, check_labels
from rloss.utils.errors import ArgumentParser

DEFAULT_WIDTH: int = 128
"""Long side (px) of the working resolution the logits are optimized at."""

DEFAULT_ITERATIONS: int = 50
"""Label-propagation iterations through the dense affinity (the initial probabilities)."""

DEFAULT_STEPS: int = 0
REFINE_STEPS: int = 100
DEFAULT_LR: float = 0.3
"""Adam steps refining the propagated probabilities under pCE + regularizers: none by default (on
the benchmark refinement lowered the mean by about 1 point), REFINE_STEPS when the command line names
a regularizer; and the learning rate (logits move at most about steps x lr)."""

def _as_chw(image: Tensor | np.ndarray) -> Tensor:
    """Image (C,H,W), (H,W,C) or (H,W), any C >= 1, uint8 or float intensities -> float32 (C,H,W).
    A 3-D image is (H,W,C) when its last dimension is at most 4 and its first is larger (NumPy/PIL
    arrays), else (C,H,W)."""
    image = torch.as_tensor(np.asarray(image) if not isinstance(image, Tensor) else image)
    if image.dim() == 2:
        image = image[None]
    elif image.dim() == 3 and image.shape[-1] <= 4 < image.shape[0]:
        image = image.permute(2, 0, 1)
    if image.dim() != 3 or 0 in image.shape:
        raise ValueError(f"image must have shape (C, H, W), (H, W, C) or (H, W), got {tuple(image.shape)}")
    return image.float().contiguous()


def labeled_mask(scribbles: Tensor) -> Tensor:
    """Bool (H,W): pixels that carry a class id (not 255 unlabeled, not 254 padding); ValueError for
    ids outside 0..255 (:func:`rloss.utils.checks.check_labels`)."""
    return check_labels(scribbles, IGNORE_INDEX, "scribbles")


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


def downsample_scribbles(onehot: Tensor, size: tuple[int, int]) -> Tensor:
    """Local labels (h,w) from one-hot scribbles (K,H,W): the class covering most of each cell
    (area pooling keeps thin strokes), 255 where no scribble falls."""
    coverage = F.interpolate(onehot[None], size=size, mode="area")[0]
    best, labels = coverage.max(0)
    return torch.where(best > 0, labels, torch.full_like(labels, IGNORE_INDEX))


def working_size(size: tuple[int, int], width: int) -> tuple[int, int]:
    """(h, w) of the working resolution for an image of ``size`` (H, W): long side ``width`` px
    (never upsampled)."""
    return scaled_size(size, min(1.0, width / max(size)))


def propagate(
    image: Tensor | np.ndarray,
    scribbles: Tensor | np.ndarray,
    regularizers: Sequence[Regularizer] | None = None,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    width: int = DEFAULT_WIDTH,
    iterations: int = DEFAULT_ITERATIONS,
    prior: Tensor | None = None,
) -> Tensor:
    """Dense mask int64 (H,W) from scribbles (H,W) (class ids, 255 unlabeled) on an image (C,H,W),
    (H,W,C) or (H,W) of intensities in any units (rescaled to the image's own range,
    :func:`normalize_intensities`): the argmax of :func:`propagate_probs`."""
    classes, probs = propagate_probs(image, scribbles, regularizers, steps, lr, width, iterations, prior)
    return classes[probs[0].argmax(0)]


def check_settings(steps: int, lr: float, width: int, iterations: int = DEFAULT_ITERATIONS, prefix: str = "") -> None:
    """ValueError naming the setting (``prefix`` + name, e.g. ``--width``) unless width is an integer
    >= 1, steps and iterations integers >= 0 and lr a finite number > 0."""
    for name, value, minimum in (("steps", steps, 0), ("width", width, 1), ("iterations", iterations, 0)):
        check_integer(value, prefix + name, minimum)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"{prefix}lr must be a finite number > 0, got {lr!r}")


def propagate_probs(
    image: Tensor | np.ndarray,
    scribbles: Tensor | np.ndarray,
    regularizers: Sequence[Regularizer] | None = None,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    width: int = DEFAULT_WIDTH,
    iterations: int = DEFAULT_ITERATIONS,
    prior: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(classes (K,) int64, probs (1, K, H, W)): the scribbled class ids and their probabilities.

    At a working resolution whose long side is ``width`` px, over the scribbled classes only, on the
    image rescaled to its own range (:func:`normalize_intensities`): the scribbles are propagated
    through the dense affinity (:func:`propagate_labels`, ``iterations``, spatial bandwidth from the
    scribbles' spacing),
    then, with ``steps`` > 0, per-pixel logits starting from those probabilities are optimized with
    Adam (``lr``) under pCE + sum(regularizers) (default DenseCRF), each bound to the working image
    once; the probabilities are upsampled (bilinear) to full size. A single scribbled class gives
    probability 1 everywhere. With a ``prior`` (K, H, W) or (1, K, H, W) of class probabilities (a
    trained network's; normalized over K here): the classes are 0..K-1, the propagation starts from
    the prior and keeps weighting by it (:func:`propagate_labels`), and without scribbles the prior is
    the answer.
    """
    check_settings(steps, lr, width, iterations)
    image = _as_chw(image)
    scribbles = torch.as_tensor(np.asarray(scribbles) if not isinstance(scribbles, Tensor) else scribbles).long()
    if tuple(scribbles.shape) != tuple(image.shape[1:]):
        raise ValueError(
            f"scribbles have size {tuple(scribbles.shape)} (H, W) but the image has {tuple(image.shape[1:])}; "
            "expected the same"
        )
    labeled = labeled_mask(scribbles)
    if prior is not None:
        prior = check_prior(prior, tuple(scribbles.shape), scribbles[labeled])
        classes = torch.arange(prior.shape[1])
        if not labeled.any():
            return classes, prior
    else:
        classes = torch.unique(scribbles[labeled])
        if classes.numel() == 0:
            raise ValueError("scribbles hold no labeled pixel; expected at least one class id != 255")
        if classes.numel() == 1:
            return classes, torch.ones(1, 1, *scribbles.shape)
    size = working_size(tuple(scribbles.shape), width)
    onehot = (scribbles[None] == classes[:, None, None]).float()
    labels = downsample_scribbles(onehot, size)[None]
    small = normalize_intensities(F.interpolate(image[None], size=size, mode="area"))
    small_prior = None if prior is None else F.interpolate(prior, size=size, mode="area")
    initial = propagate_labels(small, labels, classes.numel(), iterations, width, prior=small_prior)
    logits = initial.clamp_min(PROBABILITY_FLOOR).log().requires_grad_()
    if regularizers is None:
        regularizers = [default_regularizer("densecrf", width)]
    bound = [regularizer.bind(small) for regularizer in regularizers] if steps else []
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        probs = logits.softmax(1)
        loss = partial_cross_entropy(logits, labels)
        for regularizer in bound:
            loss = loss + regularizer(probs, None, labels)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probs = F.interpolate(logits.softmax(1), size=tuple(scribbles.shape), mode="bilinear", align_corners=False)
    return classes, probs


def check_prior(prior: Tensor, size: tuple[int, int], scribbled: Tensor) -> Tensor:
    """The prior (K, H, W) or (1, K, H, W) as float (1, K, H, W) normalized over K; ValueError naming
    ``prior`` unless its size is ``size``, its values are finite and >= 0 with a positive sum at every
    pixel, and every scribbled class id (``scribbled``, 1-D) is below K."""
    prior = torch.as_tensor(prior).float()
    prior = prior[None] if prior.dim() == 3 else prior
    if prior.dim() != 4 or prior.shape[0] != 1 or tuple(prior.shape[-2:]) != tuple(size) or prior.shape[1] == 0:
        raise ValueError(f"prior must have shape (K, {size[0]}, {size[1]}), got {tuple(prior.shape)}")
    total = prior.sum(1, keepdim=True)
    if not (torch.isfinite(prior).all() and (prior >= 0).all() and (total > 0).all()):
        raise ValueError("prior must hold finite probabilities >= 0 with a positive sum at every pixel")
    if scribbled.numel() and int(scribbled.max()) >= prior.shape[1]:
        raise ValueError(f"scribbles hold class {int(scribbled.max())} but the prior has {prior.shape[1]} classes")
    return prior / total


PROBABILITY_FLOOR: float = 1e-4
"""Propagated probabilities are floored here before their log starts the logits (a prior's, before
its power)."""

PRIOR_POWER: float = 0.03
"""Exponent of a prior's probabilities in each propagation step (:func:`propagate_labels`): 0 lets the
prior only start the iterations, 1 lets a confident prior overrule the scribbles' neighbours. Chosen on
ACDC's tuning slices with a network trained on their scribbles (benchmarks/propagate.py ``--acdc-checkpoint``)."""


def normalize_intensities(images: Tensor) -> Tensor:
    """Images (B, C, h, w) rescaled so that each image's range (min..max over its pixels and
    channels) is 0..255, the units of PROPAGATION_SIGMA_RGB: a float 0..1 MRI slice, its 16-bit
    or 0..255 copy and an 8-bit photo get the same relative bandwidth. A constant image becomes 0."""
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    spread = images.amax(dim=(1, 2, 3), keepdim=True) - lo
    return torch.where(spread > 0, (images - lo) * (255.0 / spread.clamp_min(1e-30)), torch.zeros_like(images))


def scribble_spacing(labels: Tensor) -> float:
    """The median distance (px) from a scribbled pixel of ``labels`` (h, w) (class ids, 255
    elsewhere) to the nearest pixel scribbled with another class; inf with fewer than two classes."""
    local = labels.numpy()
    scribbled = local != IGNORE_INDEX
    distances = []
    for label in np.unique(local[scribbled]):
        others = scribbled & (local != label)
        if others.any():
            distances.append(ndimage.distance_transform_edt(~others)[local == label])
    return float(np.median(np.concatenate(distances))) if distances else math.inf


def propagation_sigma_xy(labels: Tensor, width: int) -> float:
    """Spatial bandwidth (px) of the label propagation for scribbles ``labels`` (h, w) at working
    width ``width``: PROPAGATION_SIGMA_XY_SPACING x :func:`scribble_spacing`, within
    PROPAGATION_SIGMA_XY_BOUNDS x ``width``."""
    low, high = (bound * width for bound in PROPAGATION_SIGMA_XY_BOUNDS)
    return float(min(max(PROPAGATION_SIGMA_XY_SPACING * scribble_spacing(labels), low), high))


def propagate_labels(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    iterations: int,
    width: int,
    sigma_xy: float | None = None,
    prior: Tensor | None = None,
) -> Tensor:
    """Label propagation through the dense bilateral affinity W of ``images`` (1, C, h, w) (sigma_rgb
    PROPAGATION_SIGMA_RGB in the images' units, 0..255 after :func:`normalize_intensities`; sigma_xy
    px, default :func:`propagation_sigma_xy` of the scribbles at working width ``width``):
    P <- W P normalized over the classes, the scribbled pixels of ``labels`` (1, h, w) (ids
    0..num_classes-1, 255 elsewhere) held at their class; from uniform P. The iterates approach the
    minimizer of the quadratic (Laplacian) relaxation of the Potts energy sum_ij W_ij |P_i - P_j|^2
    with the scribbles fixed, which keeps a class connected along colour-coherent paths (like the
    random walker, on a dense graph); the spatial bandwidth follows the scribbles' spacing so that
    nested or close scribbles (a cardiac slice) keep their classes local, while far-apart strokes (a
    photo) still reach along similar colours. With a ``prior`` (1, num_classes, h, w) of class
    probabilities (a trained network's), P starts from it and each step is P <- normalize(W P x
    prior ** PRIOR_POWER): far from the scribbles the prior decides, near them the scribbles do.
    Returns P (1, num_classes, h, w)."""
    scribbled = labels[:, None] != IGNORE_INDEX
    fixed = F.one_hot(torch.where(scribbled[:, 0], labels, 0).long(), num_classes).permute(0, 3, 1, 2).float()
    start = torch.full_like(fixed, 1.0 / num_classes) if prior is None else prior
    probs = torch.where(scribbled, fixed, start)
    if iterations == 0:
        return probs
    if sigma_xy is None:
        sigma_xy = propagation_sigma_xy(labels[0], width)
    affinity = bilateral_affinity(images, PROPAGATION_SIGMA_RGB, sigma_xy)
    weight = None if prior is None else prior.clamp_min(PROBABILITY_FLOOR) ** PRIOR_POWER
    for _ in range(iterations):
        probs = affinity.filter(probs)
        if weight is not None:
            probs = probs * weight
        probs = torch.where(scribbled, fixed, probs / probs.sum(1, keepdim=True).clamp_min(1e-12))
    return probs


def default_regularizer(name: str, width: int = DEFAULT_WIDTH) -> Regularizer:
    """The regularizer registered as ``name`` with its propagation settings at working width
    ``width`` (:meth:`rloss.regularizers.Regularizer.propagation_settings`)."""
    return build_regularizer(name, **REGISTRY[name].propagation_settings(width))


def load_pair(image_path: Path, scribble_path: Path, num_classes: int) -> tuple[Tensor, Tensor]:
    """Read an image (C,H,W) float (:func:`rloss.data.files.read_image`) and its scribbles (H,W) int64;
    ValueError naming the file when it cannot be decoded, sizes differ, a class id is >= num_classes or
    nothing is scribbled."""
    image = read_image(image_path)
    scribbles = read_label(scribble_path, num_classes, image.shape[-2:])
    if not labeled_mask(scribbles).any():
        raise ValueError(
            f"{scribble_path}: holds no scribble; expected at least one pixel with a class id "
            f"0..{num_classes - 1} (255 = unlabeled)"
        )
    return image, scribbles


def check_output(output: Path, folder: bool) -> None:
    """ValueError naming ``--output`` unless masks can be written there: a file path (not an existing
    folder) or, with ``folder``, a folder path (not an existing file); no part above it a file."""
    if folder and output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: is a file; expected a folder since --image is a folder")
    if not folder and output.is_dir():
        raise ValueError(f"--output {output}: is a folder; expected the path of a mask PNG")
    for parent in output.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--output {output}: {parent} is a file, not a folder")
            break


def _pairs(image: Path, scribbles: Path, output: Path) -> list[tuple[Path, Path, Path]]:
    """(image, scribbles, output) files: one triple, or folders matched by file stem; in folder
    mode every image without a scribble file is reported on stderr (one line each) and skipped."""
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
    for stem in sorted(images.keys() - pngs.keys()):
        print(f"rloss propagate: warning: {images[stem]}: no {stem}.png or {stem}_scribble.png in "
              f"{scribbles}; skipped", file=sys.stderr)
    return [(images[s], pngs[s], output / f"{s}.png") for s in stems]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="rloss propagate", description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, required=True, help="image file or folder")
    parser.add_argument("--scribbles", type=Path, required=True, help="scribble PNG (255 = unlabeled) or folder")
    parser.add_argument("--output", type=Path, required=True, help="mask PNG or folder")
    parser.add_argument(
        "--regularizer", action="append", choices=sorted(REGISTRY), default=None,
        help="regularizer(s) added to pCE (repeatable); default densecrf",
    )
    parser.add_argument("--num-classes", type=int, default=len(VOC_CLASSES), help="class ids must be below it")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="label-propagation iterations")
    parser.add_argument(
        "--steps", type=int, default=None,
        help=f"Adam steps refining under pCE + the regularizers (default {DEFAULT_STEPS}; "
        f"{REFINE_STEPS} with --regularizer)",
    )
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="working long side in px")
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help="network of rloss fit (--num-classes classes) whose prediction is the propagation's prior",
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    """``rloss propagate ...``: write one mask per (image, scribbles) pair; returns 0."""
    args = parse_args(argv)
    if args.steps is None:
        args.steps = REFINE_STEPS if args.regularizer else DEFAULT_STEPS
    check_settings(args.steps, args.lr, args.width, args.iterations, prefix="--")
    for option, path in (("--image", args.image), ("--scribbles", args.scribbles)):
        if not path.exists():
            raise FileNotFoundError(f"{option} {path}: no such file or folder")
    check_output(args.output, folder=args.image.is_dir())
    regularizers = [default_regularizer(name, args.width) for name in args.regularizer or ["densecrf"]]
    predictor = load_predictor(args.checkpoint, args.num_classes, "--num-classes") if args.checkpoint else None
    pairs = _pairs(args.image, args.scribbles, args.output)
    for image_path, scribble_path, _ in pairs:  # every input is valid before anything is written
        image, _ = load_pair(image_path, scribble_path, args.num_classes)
        if predictor is not None:
            try:
                check_channels(predictor, image.shape[0])
            except ValueError as error:
                raise ValueError(f"{image_path}: {error}") from error
    for image_path, scribble_path, output_path in tqdm(pairs, desc="propagate", disable=len(pairs) == 1):
        image, scribbles = load_pair(image_path, scribble_path, args.num_classes)
        start = time.perf_counter()
        prior = network_probs(predictor, image) if predictor is not None else None
        mask = propagate(image, scribbles, regularizers, args.steps, args.lr, args.width, args.iterations, prior)
        write_label_png(mask, output_path)
        tqdm.write(f"{output_path} ({time.perf_counter() - start:.1f} s)")
    return 0
