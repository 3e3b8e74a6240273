"""Normalized cut loss (Tang et al., CVPR 2018)."""

from __future__ import annotations

from torch import Tensor

from rloss.regularizers.affinity import DenseAffinityRegularizer


class NormalizedCutLoss(DenseAffinityRegularizer):
    """Mean over images of sum_k S_k^T W (1 - S_k) / (d^T S_k + eps), d = W 1 (ROI degree).

    Each class term lies in [0, 1]; ``eps`` guards classes with (almost) no mass.
    """

    name = "ncut"

    def __init__(
        self,
        weight: float = 1.0,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 40.0,
        scale_factor: float = 1.0,
        backend: str = "auto",
        eps: float = 1e-6,
    ) -> None:
        super().__init__(weight, sigma_rgb, sigma_xy, scale_factor, backend)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)

    def combine(self, a: Tensor, q: Tensor, roi: Tensor) -> Tensor:
        return ((a - q) / (a + self.eps)).sum(1).mean()
