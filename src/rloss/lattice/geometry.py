"""Facts of the permutohedral lattice shared by its back-ends: calibration, elevation scales and
the layout of packed vertex keys. One definition, so that the Numba and torch lattices build the
same vertices, weights and neighbours."""

from __future__ import annotations

import math

import numpy as np

# Calibration of the lattice against the exact Gaussian sum (measured, see benchmarks/lattice.py):
# - WIDTH_CORRECTION: with Adams et al.'s scaling the lattice kernel is about 9% wider than the
#   Gaussian it stands for. Its response to a constant signal on a 2-D point set (a flat-colour image,
#   0.565x exact) and on a 5-D one (uniform density, 0.727x by the lattice's cell volume) disagree; for
#   a kernel of width s they scale as s^2 and s^5, which fixes s = (0.727 / 0.565)^(1/3) = 1.0877. We
#   shrink the features' scale by that factor, after which the response is nearly content-independent.
# - NORMALIZATION: the remaining peak factor at d = 5. The corrected lattice gives 0.48-0.49x the exact
#   sum on flat and noise-textured images and 0.47-0.54x on real VOC images; we scale by 1 / 0.5.
#   Other d: see normalization().
WIDTH_CORRECTION: float = 1.0877
NORMALIZATION: float = 2.0


def normalization(d: int) -> float:
    """Factor on the lattice's output for d features: NORMALIZATION at d = 5, scaled by the ratio of the
    lattice kernel's peaks. That peak (relative to the Gaussian) is the response to a uniform density of
    points: the lattice cell's volume in feature units (d+1)^(-1/2) (3/2)^(d/2) / s^d times the blur's
    mass 2^(d+1) over the Gaussian's (2 pi)^(d/2), i.e. 2 (d+1)^(-1/2) (3 / (pi s^2))^(d/2) with
    s = WIDTH_CORRECTION (0.727 / s^5 at d = 5). Measured on real images: within 5% of the exact sum at
    d = 2, 3 and 6 (the CRF's spatial kernel, grayscale and 4-channel images) as at d = 5, where the
    d = 5 factor gave 1.9x, 1.5x and 0.82x."""
    return NORMALIZATION * math.sqrt((d + 1) / 6.0) * (math.pi * WIDTH_CORRECTION**2 / 3.0) ** ((d - 5) / 2.0)

MAX_EXTENT: int = 1 << 20
"""Largest lattice coordinate accepted (lattice units): a guard against bandwidths far too small
for the image, not a packing limit."""

KEY_MARGIN: float = 4.0
"""Margin (in units of d+1, plus this many) around the coordinates' range in a packed-key field:
covers rounding, the simplex corners (within d+1) and the blur neighbours (d+1 more)."""


def elevation_scales(d: int) -> np.ndarray:
    """(d,) float64: feature i is multiplied by this before the elevation onto the lattice plane
    (Adams et al.'s scale sqrt(2/3) (d+1) / sqrt((i+1)(i+2)), narrowed by WIDTH_CORRECTION)."""
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    return np.array([WIDTH_CORRECTION * inv_std / math.sqrt((i + 1.0) * (i + 2.0)) for i in range(d)])


def key_fields(f_lo: np.ndarray, f_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Layout of the packed vertex keys from the features' range ``f_lo``, ``f_hi`` (d,) float.

    Lattice coordinate j (j < d; the last one is implied) is sum_{i >= j} c_i - j c_(j-1) with
    c_i = scale_i f_i, so its range follows from the features'. Returns (coord_lo, width), both (d,)
    int64: field j stores coordinate - coord_lo[j] in width[j] bits. ValueError when the features
    span more than MAX_EXTENT lattice units (bandwidths too small for the image).
    """
    f_lo = np.asarray(f_lo, np.float64)
    f_hi = np.asarray(f_hi, np.float64)
    d = f_lo.shape[0]
    if not (np.isfinite(f_lo).all() and np.isfinite(f_hi).all()):
        raise ValueError("features contain NaN/inf values; expected finite values")
    scale = elevation_scales(d)
    extent = float(np.maximum(np.abs(f_lo), np.abs(f_hi)).sum()) * WIDTH_CORRECTION * (d + 1) ** 2 * math.sqrt(2 / 3)
    if extent >= MAX_EXTENT:
        raise ValueError(
            f"features span {extent:.3g} lattice units, more than the {MAX_EXTENT} the lattice "
            "supports: the Gaussian's std (sigma_xy / sigma_rgb) is too small for the image size or value range"
        )
    coord_lo = np.empty(d, np.int64)
    width = np.empty(d, np.int64)
    for j in range(d):
        lo = hi = 0.0
        for i in range(max(j - 1, 0), d):
            c = scale[i] if i >= j else -j * scale[i]  # coefficient of f_i in coordinate j
            lo += f_lo[i] * c if c >= 0 else f_hi[i] * c
            hi += f_hi[i] * c if c >= 0 else f_lo[i] * c
        margin = KEY_MARGIN * (d + 1) + KEY_MARGIN + 1e-6 * (abs(lo) + abs(hi))
        coord_lo[j] = math.floor(lo - margin)
        span = math.ceil(hi + margin) - int(coord_lo[j])
        width[j] = max(1, span.bit_length())
    return coord_lo, width
