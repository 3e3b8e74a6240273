"""Scribbles simulated from a full ground-truth mask, the way annotators draw them (ScribbleSup-like):
one or two smooth strokes inside every object region large enough to see, and a few long strokes on
the background that go around objects, about 2-3% of the pixels in all, 3 px wide on 500 px images.

The strokes are the synthetic data's (:mod:`rloss.data.strokes`): smooth random walks that turn away
from region borders, rasterized with a margin from the boundary, so every scribble pixel agrees with
the ground truth. Deterministic: the same mask and seed give the same scribbles.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rloss.data.constants import IGNORE_INDEX
from rloss.data.strokes import SCRIBBLE_MARGIN, background_walk, rasterize

BACKGROUND: int = 0
"""Class id of the background (VOC): it gets the long strokes around the objects."""

MIN_REGION: float = 0.001
"""Object regions (connected components of one class) smaller than this fraction of the image get no stroke."""

BACKGROUND_TILES: int = 2
"""The background strokes: one in each cell of a BACKGROUND_TILES x BACKGROUND_TILES grid over the image
whose background part is at least MIN_BACKGROUND of the image (annotators mark every background area)."""

MIN_BACKGROUND: float = 0.05

TWO_STROKES: float = 0.05
"""Regions larger than this fraction of the image get two strokes (often several touching objects)."""


def _object_strokes(rng: np.random.Generator, region: np.ndarray, width: int, count: int) -> list[np.ndarray]:
    """``count`` stroke polylines (M, 2) (y, x) inside ``region`` (square bool (S, S)), together
    1-2 x sqrt(area) px long (ScribbleSup's: about 1.5-2.5), ``SCRIBBLE_MARGIN + width / 2`` px from
    its border (nearer its medial ridge when the region is thinner than that)."""
    depth = ndimage.distance_transform_edt(region)
    inside = depth >= min(SCRIBBLE_MARGIN + width / 2, 0.6 * depth.max())
    area = int(region.sum())
    lengths = rng.uniform(1.0, 2.0, count) * np.sqrt(area) / count
    return [background_walk(rng, inside, max(2, int(length))) for length in lengths]


def simulate_scribbles(
    truth: np.ndarray, seed: int, coverage: float = 0.025, width: int = 3
) -> np.ndarray:
    """Scribbles int64 (H, W) from a ground truth (H, W) of class ids (255 = void, never scribbled):
    the class id on stroke pixels, 255 elsewhere. ``coverage``: target fraction of scribbled pixels
    (varies by about +-20%, at least the object strokes); ``width``: stroke width in px."""
    truth = np.asarray(truth).astype(np.int64)
    if truth.ndim != 2:
        raise ValueError(f"truth must have shape (H, W), got {truth.shape}")
    if not 0.0 < coverage < 0.5:
        raise ValueError(f"coverage must be in (0, 0.5), got {coverage}")
    rng = np.random.default_rng(seed)
    height, full_w = truth.shape
    side = max(height, full_w)
    square = np.full((side, side), IGNORE_INDEX, dtype=np.int64)  # the stroke code works on squares
    square[:height, :full_w] = truth
    scribbles = np.full_like(square, IGNORE_INDEX)
    for label in np.unique(truth):
        if label in (BACKGROUND, IGNORE_INDEX):
            continue
        components, count = ndimage.label(square == label)
        for index in range(1, count + 1):
            region = components == index
            area = region.sum() / truth.size
            if area >= MIN_REGION:
                keep = ndimage.distance_transform_edt(region) >= SCRIBBLE_MARGIN
                for stroke in _object_strokes(rng, region, width, 2 if area >= TWO_STROKES else 1):
                    scribbles[rasterize(stroke, side, width) & keep] = label
    budget = coverage * rng.uniform(0.8, 1.2) * truth.size - (scribbles != IGNORE_INDEX).sum()
    _background_strokes(rng, square, scribbles, max(budget, 0.3 * coverage * truth.size), width)
    return scribbles[:height, :full_w]


def _background_strokes(
    rng: np.random.Generator, square: np.ndarray, scribbles: np.ndarray, budget: float, width: int
) -> None:
    """Draw background strokes of about ``budget`` pixels in all into ``scribbles`` (S, S): one per
    grid cell with enough background, its length proportional to that background's area."""
    background = ndimage.distance_transform_edt(square == BACKGROUND) >= SCRIBBLE_MARGIN + width / 2
    height, full_w = np.argwhere(square != IGNORE_INDEX).max(0) + 1
    rows, cols = np.mgrid[: square.shape[0], : square.shape[1]]
    cells = (rows * BACKGROUND_TILES // height) * BACKGROUND_TILES + cols * BACKGROUND_TILES // full_w
    parts = [background & (cells == cell) for cell in range(BACKGROUND_TILES**2)]
    parts = [part for part in parts if part.sum() >= MIN_BACKGROUND * height * full_w]
    total = sum(part.sum() for part in parts)
    for part in parts:
        walk = background_walk(rng, part, int(budget * part.sum() / total / width))
        if len(walk) > 1:
            scribbles[rasterize(walk, square.shape[0], width) & background] = BACKGROUND
