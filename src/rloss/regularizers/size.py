"""Size constraint loss (Kervadec et al., MIDL 2018 / MedIA 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from rloss.regularizers.base import Regularizer
from rloss.utils.checks import check_labels

BoundSource = Literal["tags", "scribbles", "fixed"]


class SizeLoss(Regularizer):
    """Mean over images of sum_k penalty(V_k), V_k = sum_roi S_k / n_roi (fraction of ROI pixels).

    penalty = (V_k - a_k)^2 below the bounds, (V_k - b_k)^2 above, 0 inside [a_k, b_k].
    Bounds (B, K, 2) come from ``source``:

    - ``"tags"``: image-level tags, the classes present in the labels (scribbles); a present class
      gets [lower, upper], an absent one [0, 0] (b = 0).
    - ``"scribbles"``: as tags, with the lower bound raised to the fraction of ROI pixels scribbled
      with that class.
    - ``"fixed"``: [lower_k, upper_k] for every image (``lower``/``upper`` one value or K values).

    :meth:`energy_with_bounds` takes per-image bounds (B, K, 2) directly instead.
    """

    name = "size"

    def __init__(
        self,
        weight: float = 1.0,
        source: BoundSource = "tags",
        lower: float | Sequence[float] = 0.0,
        upper: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__(weight)
        if source not in ("tags", "scribbles", "fixed"):
            raise ValueError(f"source must be 'tags', 'scribbles' or 'fixed', got {source!r}")
        self.source = source
        self.lower = torch.as_tensor(lower, dtype=torch.float64).flatten()
        self.upper = torch.as_tensor(upper, dtype=torch.float64).flatten()
        if ((self.lower < 0) | (self.lower > 1)).any() or ((self.upper < 0) | (self.upper > 1)).any():
            raise ValueError(f"lower and upper must be fractions in [0, 1], got {lower} and {upper}")

    def _class_bounds(self, num_classes: int, device: torch.device) -> tuple[Tensor, Tensor]:
        lower, upper = self.lower.to(device), self.upper.to(device)
        for name, value in (("lower", lower), ("upper", upper)):
            if value.numel() not in (1, num_classes):
                raise ValueError(f"{name} must have 1 or K={num_classes} values, got {value.numel()}")
        lower, upper = lower.expand(num_classes), upper.expand(num_classes)
        if (lower > upper).any():
            raise ValueError(f"lower must be <= upper for every class, got {lower.tolist()} > {upper.tolist()}")
        return lower, upper

    def bounds_for(self, labels: Tensor | None, roi: Tensor, num_classes: int) -> Tensor:
        """Bounds (B, K, 2) float64 for this batch; labels (B, H, W) needed unless source is 'fixed'."""
        lower, upper = self._class_bounds(num_classes, roi.device)
        batch = roi.shape[0]
        if self.source == "fixed":
            return torch.stack((lower, upper), -1).expand(batch, -1, -1).clone()
        if labels is None:
            raise ValueError(f"SizeLoss(source={self.source!r}) needs labels (scribbles) to find the image tags")
        if tuple(labels.shape) != tuple(roi.shape):
            raise ValueError(f"labels must have shape (B, H, W) = {tuple(roi.shape)}, got {tuple(labels.shape)}")
        labels = labels.to(roi.device).long()
        valid = check_labels(labels, num_classes, roi=roi)
        onehot = torch.zeros(batch, num_classes, dtype=torch.float64, device=roi.device)
        ids = torch.where(valid, labels, 0).flatten(1)
        onehot.scatter_add_(1, ids, valid.flatten(1).double())
        present = onehot > 0
        low = torch.where(present, lower.expand(batch, -1), 0.0)
        if self.source == "scribbles":
            n_roi = roi.flatten(1).sum(1, keepdim=True).clamp(min=1)
            low = torch.maximum(low, onehot / n_roi)
        high = torch.where(present, upper.expand(batch, -1), 0.0)
        return torch.stack((low, torch.maximum(low, high)), -1)

    def energy(
        self, images: Tensor, probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        probs, roi = self.prepare_inputs(images, probs, roi)
        return self._penalty(probs, roi, self.bounds_for(labels, roi, probs.shape[1]))

    def energy_with_bounds(self, images: Tensor, probs: Tensor, roi: Tensor | None, bounds: Tensor) -> Tensor:
        """The energy with per-image bounds (B, K, 2) fractions [a_k, b_k] instead of the source's."""
        probs, roi = self.prepare_inputs(images, probs, roi)
        return self._penalty(probs, roi, bounds)

    def _penalty(self, probs: Tensor, roi: Tensor, bounds: Tensor) -> Tensor:
        batch, num_classes = probs.shape[:2]
        if tuple(bounds.shape) != (batch, num_classes, 2):
            raise ValueError(f"bounds must have shape (B, K, 2) = {(batch, num_classes, 2)}, got {tuple(bounds.shape)}")
        n_roi = roi.flatten(1).sum(1).clamp(min=1).double()
        sizes = probs.double().flatten(2).sum(2) / n_roi[:, None]  # (B, K) fractions
        bounds = bounds.to(sizes)
        below = (bounds[..., 0] - sizes).clamp(min=0)
        above = (sizes - bounds[..., 1]).clamp(min=0)
        penalty = (below.square() + above.square()).sum(1)
        penalty = torch.where(roi.flatten(1).any(1), penalty, torch.zeros_like(penalty))
        return penalty.mean().to(probs.dtype)

    def extra_repr(self) -> str:
        bounds = f"lower={self.lower.tolist()}, upper={self.upper.tolist()}"
        return f"weight={self.weight:g}, source={self.source!r}, {bounds}"
