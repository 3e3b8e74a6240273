"""Per-pixel bilateral features (x/sigma_xy, y/sigma_xy, I_1/sigma_rgb, ..., I_C/sigma_rgb)."""

from __future__ import annotations

import torch
from torch import Tensor

from rloss.lattice.base import Bounds
from rloss.utils.checks import check_images, check_positive


def bilateral_features_and_bounds(
    images: Tensor, sigma_rgb: float, sigma_xy: float, dtype: torch.dtype
) -> tuple[Tensor, Bounds]:
    """:func:`bilateral_features` and known limits (lo, hi) of its 2 + C columns: the grid's, and the
    intensities' range from :func:`rloss.utils.checks.check_images` (measured once for float images,
    0..255 for uint8)."""
    lo, hi = check_images(images, "images")
    sigma_rgb = check_positive(sigma_rgb, "sigma_rgb")
    sigma_xy = check_positive(sigma_xy, "sigma_xy")
    b, c, h, w = images.shape
    out = torch.empty((b, h, w, 2 + c), dtype=dtype, device=images.device)
    out[..., 0] = torch.arange(w, device=images.device, dtype=dtype) / sigma_xy
    out[..., 1] = torch.arange(h, device=images.device, dtype=dtype)[:, None] / sigma_xy
    torch.div(images.permute(0, 2, 3, 1).to(dtype), sigma_rgb, out=out[..., 2:])
    bounds = (
        [0.0, 0.0, *(v / sigma_rgb for v in lo)],
        [(w - 1) / sigma_xy, (h - 1) / sigma_xy, *(v / sigma_rgb for v in hi)],
    )
    return out.reshape(b, h * w, 2 + c), bounds


def bilateral_features(images: Tensor, sigma_rgb: float, sigma_xy: float, dtype: torch.dtype) -> Tensor:
    """Features of every pixel in units of the Gaussian's std.

    images: (B, C, H, W) intensities, any C >= 1 (sigma_rgb in their units). Returns (B, H*W, 2 + C)
    of ``dtype`` on images' device, pixels in row-major order, columns (x, y, I_1, ..., I_C).
    """
    return bilateral_features_and_bounds(images, sigma_rgb, sigma_xy, dtype)[0]
