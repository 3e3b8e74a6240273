"""Scribble strokes drawn the way annotators draw them (ScribbleSup-like): polylines rasterized a
few px wide, smooth random walks that turn away from region borders, and the labels of a whole
image's strokes. Used by the synthetic scenes (:mod:`rloss.data.synthetic_scenes`) and by the
scribble simulator (:mod:`rloss.data.simulate`)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from rloss.data.constants import IGNORE_INDEX

SCRIBBLE_MARGIN = 1.5
"""Scribble pixels keep this distance (px) from the boundary of the region they label."""


def rasterize(points: np.ndarray, size: int, width: int) -> np.ndarray:
    """Bool (size, size) mask of a polyline (M, 2) (y, x) drawn ``width`` px thick."""
    delta = points[1:] - points[:-1]
    steps = np.maximum(1, np.ceil(2 * np.abs(delta).max(axis=1))).astype(np.int64)
    owner = np.repeat(np.arange(len(delta)), steps)
    fraction = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / steps[owner]
    dense = np.vstack([points[:-1][owner] + fraction[:, None] * delta[owner], points[-1:]])
    dense = np.rint(dense).astype(np.int64)
    dense = dense[((dense >= 0) & (dense < size)).all(axis=1)]
    line = np.zeros((size, size), dtype=bool)
    line[dense[:, 0], dense[:, 1]] = True
    if width > 1:
        line = ndimage.binary_dilation(line, structure=np.ones((width, width), dtype=bool))
    return line


def background_walk(rng: np.random.Generator, allowed: np.ndarray, length: int) -> np.ndarray:
    """A smooth random walk (M, 2) of ``length`` unit steps that stays on ``allowed`` pixels and
    turns away from objects and image borders, as a hand drawing around them would."""
    size = allowed.shape[0]
    starts = np.argwhere(allowed)
    position = starts[rng.integers(len(starts))].astype(np.float64)
    heading = rng.uniform(0, 2 * math.pi)
    path = [position]
    for _ in range(length):
        heading += rng.normal(0.0, 0.12)
        for attempt in range(12):
            step = position + np.array([math.sin(heading), math.cos(heading)])
            iy, ix = np.rint(step).astype(int)
            if 0 <= iy < size and 0 <= ix < size and allowed[iy, ix]:
                break
            heading += rng.choice([-1.0, 1.0]) * (0.4 + 0.2 * attempt)
        else:
            break
        position = step
        path.append(position)
    return np.asarray(path)


def scribble_labels(rng: np.random.Generator, mask: np.ndarray,
               objects: list[tuple[int, np.ndarray, np.ndarray]], coverage: float,
               width: int) -> np.ndarray:
    """Scribble labels int64 (H, W): medial strokes in objects, long walks on background."""
    size = mask.shape[0]
    scribble = np.full(mask.shape, IGNORE_INDEX, dtype=np.int64)
    for label, region, stroke in objects:
        keep = rasterize(stroke, size, width) & (ndimage.distance_transform_edt(region) >= SCRIBBLE_MARGIN)
        scribble[keep] = label
    background = ndimage.distance_transform_edt(mask == 0) >= SCRIBBLE_MARGIN + width / 2
    budget = coverage * rng.uniform(0.8, 1.2) * mask.size - (scribble != IGNORE_INDEX).sum()
    budget = max(budget, 0.3 * coverage * mask.size)
    strokes = int(rng.integers(1, 4))
    for share in rng.dirichlet(np.full(strokes, 2.0)):
        if not background.any():
            break
        walk = background_walk(rng, background, int(share * budget / width))
        if len(walk) > 1:
            scribble[rasterize(walk, size, width) & background] = 0
    return scribble
