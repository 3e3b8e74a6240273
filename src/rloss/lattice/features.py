"""Per-pixel bilateral features (x/sigma_xy, y/sigma_xy, r/sigma_rgb, g/sigma_rgb, b/sigma_rgb)."""

from __future__ import annotations

import torch
from torch import Tensor

from rloss.utils.checks import check_images, check_positive


def bilateral_features(images: Tensor, sigma_rgb: float, sigma_xy: float, dtype: torch.dtype) -> Tensor:
    """Features of every pixel in units of the Gaussian's std.

    images: (B, 3, H, W) RGB in 0..255. Returns (B, H*W, 5) of ``dtype`` on images' device,
    pixels in row-major order, columns (x, y, r, g, b).
    """
    check_images(images, "images")
    sigma_rgb = check_positive(sigma_rgb, "sigma_rgb")
    sigma_xy = check_positive(sigma_xy, "sigma_xy")
    b, _, h, w = images.shape
    out = torch.empty((b, h, w, 5), dtype=dtype, device=images.device)
    out[..., 0] = torch.arange(w, device=images.device, dtype=dtype) / sigma_xy
    out[..., 1] = torch.arange(h, device=images.device, dtype=dtype)[:, None] / sigma_xy
    torch.div(images.permute(0, 2, 3, 1).to(dtype), sigma_rgb, out=out[..., 2:])
    return out.reshape(b, h * w, 5)
