"""IoU of label maps through torchmetrics, for tests and benchmarks (training logs ``val/mIoU`` with
the same ``MulticlassJaccardIndex``, accumulated over the epoch)."""

from __future__ import annotations

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
