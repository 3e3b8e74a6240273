"""A deterministic synthetic scribble-segmentation dataset: the data of ``make demo`` and of the tests.

Each image shows 1-3 objects of three classes on a cluttered background:

- ``disc``: round blobs, red/orange, smooth;
- ``star``: spiky blobs, green, striped;
- ``worm``: thick bent curves, blue, spotted.

Objects are regions of coherent colour whose boundary is a colour edge, and they cast a soft shadow
on the background, so the background pixels next to an object look unlike the scribbled ones on open
background (a CNN trained on scribbles alone is unsure there; a CRF on RGB snaps to the edge).
Rim shading of the objects was tried and dropped: a colour gradient inside objects makes a DenseCRF
loss shrink them (see benchmarks/synthetic_baselines.py). The background is a smooth field of a
desaturated colour with flat clutter shapes (rectangles, triangles, bars) of any hue, so colour alone
does not tell objects from clutter. Scribbles imitate the ScribbleSup ones: a stroke along the medial
axis of every object and a few long strokes on the background that go around objects, about 3% of
pixels in all. Every scribble pixel agrees with the full mask.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same arrays.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rloss.data.strokes import scribble_labels
from rloss.utils.checks import check_fraction, check_integer

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "disc", "star", "worm")
"""Class names; the index is the label id."""

SPLITS: tuple[str, ...] = ("train", "val", "test")

MIN_SIZE = 32
MAX_OBJECTS = 3
SPIKE_AMPLITUDE = (0.2, 0.3)
"""Range of the relative depth of the spikes of stars."""
SHADOW_DEPTH = 0.35
"""Darkening of the background right outside an object, decaying with distance."""
STRIPE_AMPLITUDE = 10.0
SPOT_AMPLITUDE = 15.0
NOISE_STD = 4.0


@dataclass(frozen=True)
class ObjectStyle:
    """Colour (HSV ranges in [0, 1]) and texture of one object class."""

    hue: float
    hue_spread: float
    saturation: tuple[float, float]
    value: tuple[float, float]
    texture: str


STYLES: dict[int, ObjectStyle] = {
    1: ObjectStyle(hue=0.03, hue_spread=0.05, saturation=(0.55, 0.9), value=(0.75, 0.95), texture="smooth"),
    2: ObjectStyle(hue=0.30, hue_spread=0.07, saturation=(0.45, 0.85), value=(0.6, 0.9), texture="stripes"),
    3: ObjectStyle(hue=0.60, hue_spread=0.07, saturation=(0.45, 0.85), value=(0.65, 0.95), texture="spots"),
}


@dataclass(frozen=True)
class SyntheticSample:
    """One generated sample.

    image: uint8 (H, W, 3) RGB; mask: int64 (H, W) class ids; scribble: int64 (H, W) class id on
    scribbled pixels, IGNORE_INDEX (255) elsewhere.
    """

    image: np.ndarray
    mask: np.ndarray
    scribble: np.ndarray


def _hsv(rng: np.random.Generator, hue: float, hue_spread: float, sat: tuple[float, float],
         val: tuple[float, float]) -> np.ndarray:
    """A random RGB colour (3,) in 0..255 from HSV ranges."""
    h = (hue + rng.uniform(-hue_spread, hue_spread)) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return 255.0 * np.asarray(rgb)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (size, size) float."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return y, x


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise (size, size) rescaled to [-1, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / max(np.abs(field).max(), 1e-8)


def _polar_shape(rng: np.random.Generator, size: int, centre: np.ndarray, radius: float,
                 spikes: int) -> tuple[np.ndarray, np.ndarray]:
    """A star-shaped region r(theta) <= radius (1 + harmonics) around centre.

    Returns the mask (size, size) bool and its medial stroke as points (M, 2) (y, x): a gently bent
    line through the centre along the longest diameter.
    """
    y, x = _grid(size)
    theta = np.arctan2(y - centre[0], x - centre[1])
    harmonics = [(k, rng.uniform(0.0, 0.12), rng.uniform(0, 2 * math.pi)) for k in (2, 3)]
    if spikes:
        harmonics.append((spikes, rng.uniform(*SPIKE_AMPLITUDE), rng.uniform(0, 2 * math.pi)))

    def r_of(t: np.ndarray) -> np.ndarray:
        return radius * (1.0 + sum(a * np.cos(k * t + p) for k, a, p in harmonics))

    mask = np.hypot(y - centre[0], x - centre[1]) <= r_of(theta)
    angles = np.linspace(0, math.pi, 90, endpoint=False)
    axis = angles[np.argmax(r_of(angles) + r_of(angles + math.pi))]
    reach = 0.7 * min(r_of(np.array([axis]))[0], r_of(np.array([axis + math.pi]))[0])
    direction = np.array([math.sin(axis), math.cos(axis)])
    normal = np.array([direction[1], -direction[0]])
    t = np.linspace(-1.0, 1.0, 64)[:, None]
    bend = rng.uniform(-0.15, 0.15) * reach * (1 - t**2)
    return mask, centre + t * reach * direction + bend * normal


def _worm_shape(rng: np.random.Generator, size: int, centre: np.ndarray,
                length: float) -> tuple[np.ndarray, np.ndarray]:
    """A thick bent curve (quadratic Bezier) of about ``length`` px; returns (mask, medial stroke)."""
    angle = rng.uniform(0, math.pi)
    direction = np.array([math.sin(angle), math.cos(angle)])
    normal = np.array([direction[1], -direction[0]])
    ends = centre + np.outer([-0.5, 0.5], direction) * length
    control = centre + rng.uniform(-0.5, 0.5) * length * normal
    u = np.linspace(0, 1, 96)[:, None]
    curve = (1 - u) ** 2 * ends[0] + 2 * u * (1 - u) * control + u**2 * ends[1]
    thickness = length * rng.uniform(0.13, 0.18) * (1.0 - 0.35 * (2 * u[:, 0] - 1) ** 2)
    pixels = np.rint(curve).astype(np.int64)
    inside = ((pixels >= 0) & (pixels < size)).all(axis=1)
    if not inside.any():
        return np.zeros((size, size), dtype=bool), curve[12:-12]
    radius = np.zeros((size, size))
    radius[pixels[inside, 0], pixels[inside, 1]] = thickness[inside]
    dist, (iy, ix) = ndimage.distance_transform_edt(radius == 0, return_indices=True)
    mask = dist <= radius[iy, ix]
    return mask, curve[12:-12]


def _object_shape(rng: np.random.Generator, size: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask (size, size) bool and medial stroke (M, 2) of one object of class ``label`` at a random place."""
    centre = rng.uniform(0.2 * size, 0.8 * size, 2)
    if label == 1:
        return _polar_shape(rng, size, centre, rng.uniform(0.11, 0.16) * size, spikes=0)
    if label == 2:
        return _polar_shape(rng, size, centre, rng.uniform(0.12, 0.17) * size, spikes=int(rng.integers(4, 7)))
    return _worm_shape(rng, size, centre, rng.uniform(0.4, 0.55) * size)


def _place_objects(rng: np.random.Generator, size: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """1-3 non-touching objects as (label, mask, medial stroke); at least one is always placed."""
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    placed: list[tuple[int, np.ndarray, np.ndarray]] = []
    occupied = np.zeros((size, size), dtype=bool)
    gap = max(2, size // 24)
    tries = 0
    while len(placed) < wanted and (tries < 20 * wanted or not placed):
        tries += 1
        label = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
        mask, stroke = _object_shape(rng, size, label)
        if mask.sum() < 0.01 * size * size or (ndimage.binary_dilation(mask, iterations=gap) & occupied).any():
            continue
        placed.append((label, mask, stroke))
        occupied |= mask
    return placed


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Desaturated smooth colour field with flat clutter shapes of any hue; float (size, size, 3)."""
    base = _hsv(rng, rng.uniform(), 0.0, (0.05, 0.35), (0.3, 0.75))
    tint = _hsv(rng, rng.uniform(), 0.0, (0.1, 0.5), (0.3, 0.8)) - base
    image = base + _smooth_noise(rng, size, size / 6)[..., None] * tint * 0.6
    y, x = _grid(size)
    for _ in range(int(rng.integers(2, 6))):
        colour = _hsv(rng, rng.uniform(), 0.0, (0.1, 0.75), (0.25, 0.9))
        cy, cx = rng.uniform(0, size, 2)
        half = rng.uniform(0.04, 0.14, 2) * size
        angle = rng.uniform(0, math.pi)
        u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
        v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
        kind = rng.integers(3)
        if kind == 0:
            region = (np.abs(u) <= half[0]) & (np.abs(v) <= half[1])
        elif kind == 1:
            region = (v >= -half[1]) & (np.abs(u) <= half[0] * (half[1] - v) / (2 * half[1]))
        else:
            region = (np.abs(u) <= 2.5 * half[0]) & (np.abs(v) <= max(1.0, 0.15 * half[1]))
        image[region] = colour
    return image


def _texture(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """Additive intensity pattern (size, size) of a class texture."""
    if kind == "smooth":
        return np.zeros((size, size))
    y, x = _grid(size)
    if kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = size / rng.uniform(10, 14)
        return STRIPE_AMPLITUDE * np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    spots = ndimage.gaussian_filter(rng.standard_normal((size, size)), max(0.7, size / 80))
    return np.where(spots > 1.1 * spots.std(), SPOT_AMPLITUDE, 0.0)


def _object_colour(rng: np.random.Generator, style: ObjectStyle, surround: np.ndarray) -> np.ndarray:
    """A colour of ``style`` at least 70 RGB units from the mean surrounding colour (best of 10 tries)."""
    best, best_dist = None, -1.0
    for _ in range(10):
        colour = _hsv(rng, style.hue, style.hue_spread, style.saturation, style.value)
        dist = float(np.linalg.norm(colour - surround))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= 70.0:
            break
    return best


def _render(rng: np.random.Generator, size: int,
            objects: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Image uint8 (size, size, 3) and mask int64 (size, size) of objects drawn on a background."""
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.int64)
    for label, region, _ in objects:
        mask[region] = label
    reach = max(2.0, size / 20)
    distance = ndimage.distance_transform_edt(mask == 0)
    image *= 1.0 - SHADOW_DEPTH * (np.exp(-distance / reach) * (mask == 0))[..., None]
    for label, region, _ in objects:
        ring = (mask == 0) & ndimage.binary_dilation(region, iterations=int(reach))
        surround = image[ring] if ring.any() else image.reshape(-1, 3)
        colour = _object_colour(rng, STYLES[label], surround.mean(axis=0))
        painted = colour + _texture(rng, size, STYLES[label].texture)[..., None]
        image[region] = painted[region]
    image = ndimage.gaussian_filter(image, sigma=(0.5, 0.5, 0)) + rng.normal(0.0, NOISE_STD, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def generate_sample(seed: int, size: int = 64, coverage: float = 0.03,
                    scribble_width: int | None = None) -> SyntheticSample:
    """Generate one image with its full mask and scribbles, deterministically from ``seed``.

    size: side of the square image (>= 32). coverage: target fraction of scribbled pixels (the
    result varies by about +-20% around it). scribble_width: stroke width in px; None scales it with
    the image, max(1, round(size / 64)) (real scribbles are 3 px wide on 500 px images).
    """
    seed = check_integer(seed, "seed", 0)
    size = check_integer(size, "size", MIN_SIZE)
    coverage = check_fraction(coverage, "coverage", 0.0, 0.5)
    width = max(1, round(size / 64)) if scribble_width is None else check_integer(scribble_width, "scribble_width", 1)
    rng = np.random.default_rng(seed)
    objects = _place_objects(rng, size)
    image, mask = _render(rng, size, objects)
    scribble = scribble_labels(rng, mask, objects, coverage, width)
    return SyntheticSample(image=image, mask=mask, scribble=scribble)


def sample_seed(seed: int, split: str, index: int) -> int:
    """The generator seed of image ``index`` of ``split``: distinct across splits and indices."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])
