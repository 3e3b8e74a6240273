"""Soft Dice loss on the labeled pixels: the second half of WSL4MIS's full-supervision loss
0.5 (CE + Dice) on ACDC (``code/utils/losses.py``, DiceLoss with squared denominators)."""

from __future__ import annotations

import torch
from torch import Tensor

from rloss.regularizers.base import Regularizer
from rloss.utils.checks import check_labels

SMOOTH = 1e-5
"""Added to the numerator and the denominator of every class's Dice (WSL4MIS's value)."""


class DiceLoss(Regularizer):
    """1 - mean_k (2 sum_i S_ik T_ik + e) / (sum_i S_ik^2 + sum_i T_ik + e), pooled over the batch.

    T is the one-hot of ``labels`` (B, H, W); i runs over the labeled ROI pixels of the whole batch
    (255 unlabeled and 254 padding excluded); k over all K classes, background included. With full
    masks as labels (``model.supervision: full``) this is WSL4MIS's Dice term. Not an image prior: it
    needs labels; a batch without a labeled pixel gives 0.
    """

    name = "dice"

    def energy(
        self, images: Tensor, probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        probs, roi = self.prepare_inputs(images, probs, roi)
        if labels is None:
            raise ValueError("DiceLoss needs labels (B, H, W): the training masks or scribbles")
        if tuple(labels.shape) != tuple(roi.shape):
            raise ValueError(f"labels must have shape (B, H, W) = {tuple(roi.shape)}, got {tuple(labels.shape)}")
        labels = labels.to(roi.device).long()
        num_classes = probs.shape[1]
        labeled = check_labels(labels, num_classes, roi=roi)
        weights = labeled.unsqueeze(1).to(probs.dtype)
        target = torch.nn.functional.one_hot(torch.where(labeled, labels, 0), num_classes)
        target = target.permute(0, 3, 1, 2).to(probs.dtype) * weights
        probs = probs * weights
        dims = (0, 2, 3)
        intersection = (probs * target).sum(dims)
        denominator = probs.square().sum(dims) + target.sum(dims)
        return 1.0 - ((2.0 * intersection + SMOOTH) / (denominator + SMOOTH)).mean()
