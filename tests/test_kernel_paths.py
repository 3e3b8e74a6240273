"""The generic (strided) path of ``kernels.filter_values`` equals its vectorized (unit-stride) path.

The vectorized path transposes 8 x 8 blocks in registers through hand-written LLVM IR and needs
unit-stride rows; strided rows (and the last N % 8 pixels) go through the scalar block loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import load_image
from rloss.lattice.numba_lattice import NumbaLattice, numba_kernels


def image_features(image: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    """(1, N, 5) features (x/sigma_xy, y/sigma_xy, rgb/sigma_rgb) of a (1, 3, H, W) image."""
    _, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    xy = torch.stack((xs, ys)).float().reshape(2, -1) / sigma_xy
    rgb = image[0].reshape(3, -1) / sigma_rgb
    return torch.cat((xy, rgb)).T[None]


def strided(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` as a view whose last axis has stride 2 elements (not unit-stride)."""
    wide = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), array.dtype)
    view = wide[..., ::2]
    view[...] = array
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_path_equals_vectorized_path(dtype: type) -> None:
    image = load_image("2007_000032", factor=8)  # 62 x 35 pixels
    lattice = NumbaLattice(image_features(image, sigma_rgb=15.0, sigma_xy=10.0)).lattices[0]
    n_points = lattice.offsets.shape[0] - 3  # a remainder of pixels outside the 8-pixel groups
    offsets, weights = lattice.offsets[:n_points], lattice.weights[:n_points]
    values = np.random.default_rng(0).random((21, n_points)).astype(dtype)  # 21: channels padded to 24
    reverse = np.array([False, True])
    scale = np.array([0.7], dtype)
    kernels = numba_kernels()

    vectorized = np.empty((2, *values.shape), dtype)
    kernels.filter_values(values, offsets, weights, lattice.neighbors, reverse, scale, vectorized)
    generic = strided(np.zeros_like(vectorized))
    kernels.filter_values(strided(values), offsets, weights, lattice.neighbors, reverse, scale, generic)

    assert values.flags.c_contiguous and generic.strides[-1] == 2 * values.itemsize
    assert np.abs(vectorized).max() > 0.1
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(generic, vectorized, rtol=rtol, atol=rtol * np.abs(vectorized).max())
