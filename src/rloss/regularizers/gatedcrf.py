"""Gated CRF loss (Obukhov, Georgoulis, Dai & Van Gool, arXiv 1906.04651): relaxed Potts on a local window."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from rloss.lattice import Affinity, LocalWindowAffinity
from rloss.regularizers.affinity import PROPAGATION_SIGMA_RGB, AffinityRegularizer, potts_energy
from rloss.utils.checks import check_integer


class GatedCRFLoss(AffinityRegularizer):
    """Mean over images of (1 / n_roi) sum_i sum_{j in window(i), j != i} m_i m_j K_ij (1 - S_i . S_j).

    K_ij = exp(-|p_i - p_j|^2 / 2 sigma_xy^2 - |I_i - I_j|^2 / 2 sigma_rgb^2) on the (2 radius + 1)^2
    window around i at the working resolution; m the ROI indicator (a pair counts only when both
    pixels are in the ROI: the gating). It is the DenseCRF energy with the local-window affinity
    (sum_k S_ik = m_i), so it shares its quadratic forms and exact gradient; no approximation.

    Defaults: the paper's recipe, computed at 1/4 of the input (``scale_factor=0.25``, images
    reduced by area averaging as in its code) with radius 5 there; its sigma_xy 6 is measured in
    pixels of that 1/4 resolution, which is 24 pixels of the input in our convention (sigma_xy in
    input pixels, multiplied by scale_factor); its sigma_rgb 0.1 on 0..1 images is 25.5 on 0..255
    (sigma_rgb is in the images' units; any number of channels C >= 1).
    Its loss is the same sum divided by the ROI pixels of the batch, so its weight 0.1 carries over
    unchanged for equal-size crops (ours divides per image, then averages).
    """

    name = "gatedcrf"

    image_downsampling = "area"

    def __init__(
        self,
        weight: float = 0.1,
        sigma_rgb: float = 25.5,
        sigma_xy: float = 24.0,
        radius: int = 5,
        scale_factor: float = 0.25,
    ) -> None:
        super().__init__(weight, sigma_rgb, sigma_xy, scale_factor)
        self.radius = check_integer(radius, "radius", 1)

    @classmethod
    def propagation_settings(cls, width: int) -> dict[str, Any]:
        """A 5x5 window (radius 2, sigma_xy 2) at the working resolution itself."""
        return {
            **super().propagation_settings(width),
            "sigma_rgb": PROPAGATION_SIGMA_RGB, "sigma_xy": 2.0, "radius": 2, "scale_factor": 1.0,
        }

    def affinity_of(self, images: Tensor) -> Affinity:
        return LocalWindowAffinity(images, self.sigma_rgb, self.sigma_xy * self.scale_factor, self.radius)

    def combine(self, a: Tensor, q: Tensor, roi: Tensor) -> Tensor:
        return potts_energy(a, q, roi)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, radius={self.radius}"
