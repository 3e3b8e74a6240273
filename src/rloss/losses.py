"""Partial cross-entropy: the supervised term on scribbled pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rloss.data.constants import IGNORE_INDEX
from rloss.utils.checks import check_labels


def partial_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over labeled pixels.

    logits: (B, K, H, W); labels: (B, H, W) int64 class ids, 255 (unlabeled) and 254 (padding)
    ignored. Returns a scalar; 0 (with a gradient path, never NaN) when no pixel is labeled.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (B, K, H, W), got {tuple(logits.shape)}")
    expected = (logits.shape[0], logits.shape[2], logits.shape[3])
    if labels.dim() != 3 or tuple(labels.shape) != expected:
        raise ValueError(f"labels must have shape (B, H, W) = {expected}, got {tuple(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of class ids, got dtype {labels.dtype}")
    labels = labels.long()
    labeled = check_labels(labels, logits.shape[1])
    count = labeled.sum()
    if count == 0:
        return logits.sum() * 0.0
    targets = torch.where(labeled, labels, torch.full_like(labels, IGNORE_INDEX))
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / count
