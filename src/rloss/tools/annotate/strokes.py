"""The strokes a page sends, checked and rasterized into a scribble map.

A request body holds ``{"base": [v0, n0, v1, n1, ...] | null, "strokes": [...]}``:

- ``base``: the scribbles the page started from (those saved before), run-length encoded in row-major
  order as (value, count) pairs; values are class ids or 255 (unlabeled); counts add up to H x W.
- ``strokes``: applied in order on top of ``base``; each ``{"class": id | null, "radius": r,
  "points": [[x, y], ...]}`` paints every pixel whose centre (column + 0.5, row + 0.5) lies within
  ``r`` pixels of the polyline through the points (image pixel units; x right, y down, 0..W and
  0..H) with the class id, or with 255 when ``class`` is null (the eraser).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

UNLABELED = 255
MAX_RADIUS = 512.0
"""Largest brush radius accepted (image pixels)."""


class StrokeError(ValueError):
    """A request's strokes are malformed, leave the image, or name an unknown class."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StrokeError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def decode_base(base: Any, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """uint8 (H,W) scribbles from the run-length list ``base`` (None: all unlabeled)."""
    height, width = size
    if base is None:
        return np.full(size, UNLABELED, np.uint8)
    if not isinstance(base, list) or len(base) % 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in base
    ):
        raise StrokeError("base must be a list of integer (value, count) pairs")
    values, counts = np.asarray(base[0::2], np.int64), np.asarray(base[1::2], np.int64)
    if (counts < 0).any() or int(counts.sum()) != height * width:
        raise StrokeError(
            f"base run lengths add up to {int(counts.sum())}; expected {height} x {width} = {height * width}"
        )
    unknown = sorted({int(v) for v in values if not (0 <= v < num_classes or v == UNLABELED)})
    if unknown:
        raise StrokeError(f"base holds unknown class id(s) {unknown}; expected 0..{num_classes - 1} or 255")
    return np.repeat(values, counts).astype(np.uint8).reshape(size)


def encode_base(scribbles: np.ndarray) -> list[int]:
    """Run-length list (see :func:`decode_base`) of uint8 (H,W) scribbles."""
    flat = scribbles.reshape(-1)
    if flat.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    counts = np.diff(np.r_[starts, flat.size])
    return np.stack([flat[starts].astype(np.int64), counts], 1).reshape(-1).tolist()


def check_stroke(stroke: Any, index: int, size: tuple[int, int], num_classes: int) -> tuple[int, float, np.ndarray]:
    """(class id or 255, radius, points (N,2) float64 x, y) of one stroke; StrokeError naming stroke
    ``index`` when a field is malformed, the class unknown or a point outside the W x H image."""
    height, width = size
    where = f"stroke {index}"
    if not isinstance(stroke, dict):
        raise StrokeError(f"{where}: expected an object with class, radius and points")
    label = stroke.get("class")
    if label is None:
        label = UNLABELED
    elif isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise StrokeError(f"{where}: unknown class {label!r}; expected an id 0..{num_classes - 1} or null (eraser)")
    radius = _number(stroke.get("radius"), f"{where}: radius")
    if not 0.5 <= radius <= MAX_RADIUS:
        raise StrokeError(f"{where}: radius {radius:g} px; expected 0.5..{MAX_RADIUS:g}")
    points = stroke.get("points")
    if not isinstance(points, list) or not points:
        raise StrokeError(f"{where}: points must be a non-empty list of [x, y]")
    array = np.empty((len(points), 2))
    for i, point in enumerate(points):
        if not isinstance(point, list) or len(point) != 2:
            raise StrokeError(f"{where}: point {i} must be [x, y], got {point!r}")
        x, y = (_number(v, f"{where}: point {i}") for v in point)
        if not (0 <= x <= width and 0 <= y <= height):
            raise StrokeError(
                f"{where}: point {i} ({x:g}, {y:g}) lies outside the {width}x{height} image; "
                f"expected 0 <= x <= {width}, 0 <= y <= {height}"
            )
        array[i] = x, y
    return label, radius, array


def paint(scribbles: np.ndarray, label: int, radius: float, points: np.ndarray) -> None:
    """Set the pixels of uint8 (H,W) ``scribbles`` within ``radius`` of the polyline ``points``
    (N,2) x, y to ``label``, in place."""
    height, width = scribbles.shape
    segments = zip(points[:-1], points[1:], strict=True) if len(points) > 1 else [(points[0], points[0])]
    for (x0, y0), (x1, y1) in segments:
        left = max(0, math.floor(min(x0, x1) - radius))
        right = min(width, math.ceil(max(x0, x1) + radius) + 1)
        top = max(0, math.floor(min(y0, y1) - radius))
        bottom = min(height, math.ceil(max(y0, y1) + radius) + 1)
        if left >= right or top >= bottom:
            continue
        cx = np.arange(left, right)[None] + 0.5 - x0
        cy = np.arange(top, bottom)[:, None] + 0.5 - y0
        dx, dy = x1 - x0, y1 - y0
        length = dx * dx + dy * dy
        t = np.clip((cx * dx + cy * dy) / length, 0.0, 1.0) if length > 0 else np.zeros_like(cx * cy)
        inside = (cx - t * dx) ** 2 + (cy - t * dy) ** 2 <= radius * radius
        scribbles[top:bottom, left:right][inside] = label


def rasterize(body: Any, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """uint8 (H,W) scribbles (class ids, 255 unlabeled) of a request body (see the module docstring);
    StrokeError before anything is painted when any part is invalid."""
    if not isinstance(body, dict):
        raise StrokeError("the request body must be a JSON object with base and strokes")
    strokes = body.get("strokes", [])
    if not isinstance(strokes, list):
        raise StrokeError("strokes must be a list")
    checked = [check_stroke(stroke, i, size, num_classes) for i, stroke in enumerate(strokes)]
    scribbles = decode_base(body.get("base"), size, num_classes)
    for label, radius, points in checked:
        paint(scribbles, label, radius, points)
    return scribbles
