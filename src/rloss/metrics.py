"""IoU of label maps through torchmetrics (training logs ``val/mIoU`` with the same
``MulticlassJaccardIndex``, accumulated over the epoch), and per-volume Dice / HD95 through medpy."""

from __future__ import annotations

import numpy as np
import torch
from medpy.metric import binary
from torch import Tensor
from torchmetrics.functional.classification import multiclass_jaccard_index

from rloss.data.constants import IGNORE_INDEX


def class_iou(prediction: Tensor, truth: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """IoU (%) of each class over all pixels of integer maps of one shape (dataset level); pixels
    where ``truth == ignore_index`` do not count; NaN for a class absent from both maps."""
    ious = multiclass_jaccard_index(
        prediction, truth, num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan")
    )
    return 100.0 * ious


def mean_iou(prediction: Tensor, truth: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU (%): the mean of :func:`class_iou` over the classes present in either map."""
    return float(class_iou(prediction, truth, num_classes, ignore_index).nanmean())


def dice_hd95(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and the 95th-percentile Hausdorff distance (pixels, unit spacing on every axis) of two
    binary volumes, with medpy (the implementation of the published ACDC numbers). Empty cases:
    both empty -> (1, 0); exactly one empty -> (0, the volume's diagonal), the worst distance."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    if not prediction.any() and not truth.any():
        return 1.0, 0.0
    if not prediction.any() or not truth.any():
        return 0.0, float(np.linalg.norm(np.asarray(truth.shape) - 1))
    return float(binary.dc(prediction, truth)), float(binary.hd95(prediction, truth))


def volume_scores(prediction: Tensor, truth: Tensor, num_classes: int) -> Tensor:
    """(2, K-1) float64: Dice and HD95 (pixels) of each foreground class 1..K-1 of one volume of
    class ids (D, H, W) (:func:`dice_hd95` per class)."""
    pred, gt = prediction.cpu().numpy(), truth.cpu().numpy()
    scores = [dice_hd95(pred == k, gt == k) for k in range(1, num_classes)]
    return torch.tensor(scores, dtype=torch.float64).T
