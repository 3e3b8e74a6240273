"""DenseCRF loss: the relaxed Potts energy sum_k S_k^T W (1 - S_k) (Tang et al., ECCV 2018)."""

from __future__ import annotations

from torch import Tensor

from rloss.regularizers.affinity import DenseAffinityRegularizer, potts_energy


class DenseCRFLoss(DenseAffinityRegularizer):
    """Mean over images of sum_k S_k^T W (1 - S_k) / n_roi, non-negative.

    1 is the ROI indicator (pixels outside the ROI have S = 0); n_roi counts ROI pixels at the
    resolution the energy is computed at. Converting the original rloss weight w (applied to
    -sum_k S_k^T W S_k summed over pixels, divided by batch size, with a lattice whose sums are
    about 0.54x the exact Gaussian sums): ours = w x n_roi x 0.54. The dropped term W 1 is the
    same for every class, so after the softmax the gradients agree. For the original 2e-9 at
    scale_factor 0.5 on 513x513 crops (257x257 = 66,049 pixels) this is about 7e-5.

    Arguments (see :class:`DenseAffinityRegularizer`): weight, sigma_rgb=15, sigma_xy=100 (pixels of the
    input), scale_factor=1.0, backend="auto".
    """

    name = "densecrf"

    def combine(self, a: Tensor, q: Tensor, roi: Tensor) -> Tensor:
        return potts_energy(a, q, roi)
