"""The dense mask shown under the strokes: label propagation from the scribbles
(:func:`rloss.tools.propagate.propagate`), optionally with a trained network's prediction as its prior."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from rloss.tools.prior import network_probs
from rloss.tools.propagate import DEFAULT_WIDTH, propagate

if TYPE_CHECKING:
    from rloss.models import ScribbleSegmentation

UNLABELED = 255


class Engine:
    """Dense masks (H,W) uint8 from scribbles; one computation at a time (the CPU is shared).

    ``width``: :func:`propagate`'s working long side in px (None: its default).
    """

    def __init__(self, predictor: ScribbleSegmentation | None = None, width: int | None = None) -> None:
        self.predictor, self.width = predictor, width
        self.lock = threading.Lock()
        self.predictions: dict[str, Tensor] = {}

    def warm_up(self) -> None:
        """Run one small propagation with a prior (not the checkpoint's: any channel count is fine) so
        that the first real one does not pay for compilation."""
        image = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (3, 48, 64)).astype(np.float32))
        scribbles = torch.full((48, 64), UNLABELED, dtype=torch.int64)
        scribbles[10, 5:20], scribbles[40, 30:60] = 0, 1
        with self.lock, torch.no_grad():
            propagate(image, scribbles, prior=torch.ones(2, 48, 64))

    def predict(self, image_id: str, image: np.ndarray) -> Tensor | None:
        """Float (K,H,W) :func:`rloss.tools.prior.network_probs` of the checkpoint on ``image``
        (cached by id), or None without one."""
        if self.predictor is None:
            return None
        if image_id not in self.predictions:
            with self.lock:
                self.predictions[image_id] = network_probs(self.predictor, torch.from_numpy(image))
        return self.predictions[image_id]

    def dense_mask(self, image_id: str, image: np.ndarray, scribbles: np.ndarray) -> np.ndarray | None:
        """uint8 (H,W) mask of uint8 (H,W) ``scribbles``; None when nothing is scribbled and there is
        no checkpoint. :func:`propagate` from the scribbles, with the checkpoint's probabilities as its
        prior when there is one (without strokes: the prediction)."""
        prior = self.predict(image_id, image)
        if prior is None and not (scribbles != UNLABELED).any():
            return None
        width = DEFAULT_WIDTH if self.width is None else self.width
        with self.lock, torch.no_grad():
            mask = propagate(torch.from_numpy(image), torch.from_numpy(scribbles.astype(np.int64)), width=width,
                             prior=prior)
        return mask.numpy().astype(np.uint8)
