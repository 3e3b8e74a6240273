"""The soft Dice term (WSL4MIS's full-supervision Dice) against a per-class loop written from its
definition, its gradient against finite differences, and what it ignores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rloss.data.constants import IGNORE_INDEX, PAD_INDEX
from rloss.regularizers import DiceLoss, build_regularizer


def reference(probs: np.ndarray, labels: np.ndarray, smooth: float = 1e-5) -> float:
    """1 - mean over classes of (2 |S T| + e) / (|S|^2 + |T|^2 + e) over the labeled pixels, a loop."""
    keep = (labels != IGNORE_INDEX) & (labels != PAD_INDEX)
    scores = []
    for k in range(probs.shape[1]):
        s = probs[:, k][keep]
        t = (labels[keep] == k).astype(np.float64)
        scores.append((2 * (s * t).sum() + smooth) / ((s * s).sum() + (t * t).sum() + smooth))
    return 1.0 - float(np.mean(scores))


def sample(seed: int, k: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 1, 9, 11, generator=generator, dtype=torch.float64)
    probs = torch.randn(2, k, 9, 11, generator=generator, dtype=torch.float64).softmax(1)
    labels = torch.randint(0, k, (2, 9, 11), generator=generator)
    labels[0, :3] = IGNORE_INDEX
    return images, probs, labels


@pytest.mark.parametrize("seed", range(3))
def test_dice_equals_the_definition_and_ignores_unlabeled_pixels(seed: int) -> None:
    images, probs, labels = sample(seed)
    dice = DiceLoss()
    value = dice(images, probs, None, labels)
    assert value.item() == pytest.approx(reference(probs.numpy(), labels.numpy()), rel=1e-10)
    changed = probs.clone()
    changed[0, :, :3] = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)[:, None, None]  # unlabeled rows
    assert dice(images, changed, None, labels).item() == pytest.approx(value.item(), rel=1e-12)


def test_dice_is_zero_for_the_one_hot_masks_and_padding_is_outside() -> None:
    images, _, labels = sample(0)
    labels[1, :, -2:] = PAD_INDEX
    roi = labels != PAD_INDEX
    onehot = torch.nn.functional.one_hot(labels.clamp(max=3), 4).permute(0, 3, 1, 2).double() * roi[:, None]
    assert DiceLoss()(images, onehot, roi, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert build_regularizer("dice", weight=0.5)(images, onehot, roi, torch.full_like(labels, IGNORE_INDEX)) == 0


def test_dice_gradient_matches_finite_differences() -> None:
    images, probs, labels = sample(1)
    logits = probs.log().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: DiceLoss()(images, z.softmax(1), None, labels), (logits,))


def test_dice_needs_labels_of_the_batch_shape() -> None:
    images, probs, labels = sample(2)
    with pytest.raises(ValueError, match="needs labels"):
        DiceLoss()(images, probs)
    with pytest.raises(ValueError, match=r"labels must have shape \(B, H, W\)"):
        DiceLoss()(images, probs, None, labels[:, :4])
