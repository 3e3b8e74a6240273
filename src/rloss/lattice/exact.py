"""Exact (brute-force) dense Gaussian filtering: the reference for the lattice, O(N^2)."""

from __future__ import annotations

import torch
from torch import Tensor

from rloss.lattice.features import bilateral_features
from rloss.validation import check_values

_CUTOFF = 138.0  # squared distance beyond which exp(-d2/2) < 1e-30: set to 0 (avoids denormals)


def exact_gaussian_filter(features: Tensor, values: Tensor, chunk_size: int = 2048) -> Tensor:
    """out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j, over all j including i.

    features: (B, N, d); values: (B, C, N). Returns (B, C, N) in values' dtype; differentiable
    with respect to ``values``. Memory: chunk_size x N entries at a time.
    """
    features = features.to(values.dtype)
    out = []
    for b in range(values.shape[0]):
        f = features[b]
        chunks = []
        for start in range(0, f.shape[0], chunk_size):
            d2 = torch.cdist(f[start : start + chunk_size], f).square()
            kernel = torch.exp(-0.5 * d2).masked_fill_(d2 > _CUTOFF, 0.0)
            chunks.append(values[b] @ kernel.T)
        out.append(torch.cat(chunks, dim=1))
    return torch.stack(out)


def exact_bilateral_filter(
    images: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float, chunk_size: int = 2048
) -> Tensor:
    """Brute-force ``out_i = sum_j W_ij v_j`` with the RGBXY Gaussian affinity W (symmetric).

    images: (B, 3, H, W) RGB 0..255; values: (B, C, H, W). Returns (B, C, H, W) on values'
    device and dtype (computed in float64 for float64 values, else float32). For small images.
    """
    check_values(values, images)
    compute = torch.float64 if values.dtype == torch.float64 else torch.float32
    b, c, h, w = values.shape
    features = bilateral_features(images.to(values.device), sigma_rgb, sigma_xy, compute)
    out = exact_gaussian_filter(features, values.to(compute).reshape(b, c, h * w), chunk_size)
    return out.reshape(b, c, h, w).to(values.dtype)
