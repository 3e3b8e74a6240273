"""Exact (brute-force) dense Gaussian affinity: the reference for the lattices, O(N^2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rloss.lattice.base import GaussianAffinity

_CUTOFF = 138.0  # squared distance beyond which exp(-d2/2) < 1e-30: set to 0 (avoids denormals)


def exact_gaussian_filter(features: Tensor, values: Tensor, chunk_size: int = 2048) -> Tensor:
    """out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j, over all j including i.

    features: (B, N, d); values: (B, C, N). Returns (B, C, N) in values' dtype on values' device;
    differentiable with respect to ``values``. Memory: chunk_size x N entries at a time.
    """
    features = features.to(device=values.device, dtype=values.dtype)
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


class ExactAffinity(GaussianAffinity):
    """W_ij = exp(-|f_i - f_j|^2 / 2) exactly (symmetric), by chunked matrix products on the
    features' device. For tests and small images."""

    name = "exact"

    symmetric = True
    feature_dtype = torch.float64

    def __init__(
        self, features: Tensor, bounds: tuple[Sequence[float], Sequence[float]] | None = None, chunk_size: int = 2048
    ) -> None:
        """features: (B, N, d) in units of the Gaussian's std; ``bounds`` is unused."""
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN/inf values; expected finite values")
        super().__init__(features, bounds)
        self.features = features.detach()
        self.chunk_size = int(chunk_size)

    def _filter(self, values: Tensor, transposes: tuple[bool, ...]) -> list[Tensor]:
        return [exact_gaussian_filter(self.features, values, self.chunk_size) for _ in transposes]
