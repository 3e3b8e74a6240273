"""The dense mask shown under the strokes: label propagation from the scribbles
(:func:`rloss.tools.propagate.propagate`), optionally starting from a trained network's prediction."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from rloss.tools.propagate import DEFAULT_WIDTH, propagate

if TYPE_CHECKING:
    from rloss.models import ScribbleSegmentation

UNLABELED = 255
BAND_FRACTION = 0.05
"""With a checkpoint: predicted pixels within this fraction of the image's long side (at least 8 px)
of a stroke are re-decided by the propagation."""


def load_predictor(path: Path, num_classes: int) -> ScribbleSegmentation:
    """The ScribbleSegmentation of checkpoint ``path`` on the CPU in eval mode; ValueError naming
    ``--checkpoint`` when it predicts another number of classes than ``num_classes``."""
    from rloss.models import ScribbleSegmentation
    from rloss.training.checkpoints import load_checkpoint
    from rloss.utils.errors import CheckpointError

    checkpoint = load_checkpoint(path, "--checkpoint")  # a missing or corrupt file: one named error line
    if not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise CheckpointError(
            f"--checkpoint {path}: no state_dict and hyper_parameters; expected a checkpoint of rloss fit"
        )
    try:  # weights_backbone=None: the checkpoint's weights replace the ImageNet ones (nothing is downloaded)
        model = ScribbleSegmentation.load_from_checkpoint(path, map_location="cpu", weights_backbone=None)
    except (RuntimeError, TypeError, KeyError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"--checkpoint {path}: cannot build its network ({reason})") from error
    if model.hparams["num_classes"] != num_classes:
        raise ValueError(
            f"--checkpoint {path}: predicts {model.hparams['num_classes']} classes; expected {num_classes} (--classes)"
        )
    return model.eval()


class Engine:
    """Dense masks (H,W) uint8 from scribbles; one computation at a time (the CPU is shared).

    ``width``: :func:`propagate`'s working long side in px (None: its default).
    """

    def __init__(self, predictor: ScribbleSegmentation | None = None, width: int | None = None) -> None:
        self.predictor, self.width = predictor, width
        self.lock = threading.Lock()
        self.predictions: dict[str, np.ndarray] = {}

    def warm_up(self) -> None:
        """Run one small propagation so that the first real one does not pay for compilation."""
        image = np.random.default_rng(0).uniform(0, 255, (3, 48, 64)).astype(np.float32)
        scribbles = np.full((48, 64), UNLABELED, np.int64)
        scribbles[10, 5:20], scribbles[40, 30:60] = 0, 1
        self.propagate(image, scribbles)

    def propagate(self, image: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
        """uint8 (H,W) class ids from float (C,H,W) ``image`` and (H,W) scribbles (255 unlabeled)."""
        width = DEFAULT_WIDTH if self.width is None else self.width
        with self.lock, torch.no_grad():
            mask = propagate(torch.from_numpy(image), torch.from_numpy(scribbles.astype(np.int64)), width=width)
        return mask.numpy().astype(np.uint8)

    def predict(self, image_id: str, image: np.ndarray) -> np.ndarray | None:
        """uint8 (H,W) argmax of the checkpoint on ``image`` (cached by id), or None without one.
        ValueError when the network takes another channel count than the image has (and not 1)."""
        if self.predictor is None:
            return None
        if image_id not in self.predictions:
            channels = int(self.predictor.hparams["in_channels"])
            tensor = torch.from_numpy(image)
            if tensor.shape[0] != channels:
                if tensor.shape[0] != 1:
                    raise ValueError(f"the image has {tensor.shape[0]} channels; the checkpoint takes {channels}")
                tensor = tensor.expand(channels, -1, -1)
            with self.lock, torch.no_grad():
                logits = self.predictor(tensor[None].contiguous())
                if logits.shape[-2:] != tensor.shape[-2:]:
                    logits = F.interpolate(logits, size=tensor.shape[-2:], mode="bilinear", align_corners=False)
                self.predictions[image_id] = self.predictor.segment(tensor[None], logits)[0].numpy().astype(np.uint8)
        return self.predictions[image_id]

    def dense_mask(self, image_id: str, image: np.ndarray, scribbles: np.ndarray) -> np.ndarray | None:
        """uint8 (H,W) mask of uint8 (H,W) ``scribbles``; None when nothing is scribbled and there is
        no checkpoint. Without a checkpoint: :func:`propagate` from the scribbles. With one: its
        prediction where no stroke is near; the propagation decides the pixels within the band
        (BAND_FRACTION) around the strokes and every predicted connected region that a stroke of
        another class touches, seeded by the strokes and the rest of the prediction."""
        labeled = scribbles != UNLABELED
        prediction = self.predict(image_id, image)
        if prediction is None:
            return self.propagate(image, scribbles) if labeled.any() else None
        if not labeled.any():
            return prediction
        band = max(8.0, BAND_FRACTION * max(scribbles.shape))
        undecided = ndimage.distance_transform_edt(~labeled) <= band
        for label in np.unique(prediction):
            regions, _ = ndimage.label(prediction == label)
            touched = np.unique(regions[labeled & (scribbles != label) & (regions > 0)])
            undecided |= np.isin(regions, touched[touched > 0])
        seeds = np.where(undecided, UNLABELED, prediction).astype(np.uint8)
        seeds[labeled] = scribbles[labeled]
        return self.propagate(image, seeds)
