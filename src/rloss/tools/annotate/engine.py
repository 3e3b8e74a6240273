"""The dense mask shown under the strokes: label propagation from the scribbles
(:func:`rloss.tools.propagate.propagate`), optionally with a trained network's prediction as its prior."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rloss.tools.propagate import DEFAULT_WIDTH, propagate

if TYPE_CHECKING:
    from rloss.models import ScribbleSegmentation

UNLABELED = 255


def load_predictor(path: Path, num_classes: int) -> ScribbleSegmentation:
    """The ScribbleSegmentation of checkpoint ``path`` on the CPU in eval mode, with the
    ``prediction_size`` its data module recorded (ACDC: the slice side it was trained at); ValueError
    naming ``--checkpoint`` when it predicts another number of classes than ``num_classes``."""
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
    model.prediction_size = checkpoint.get("datamodule_hyper_parameters", {}).get("prediction_size")
    return model.eval()


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
        """Float (K,H,W) class probabilities of the checkpoint on ``image`` (resized to its
        ``prediction_size`` squared when it has one, and back; cached by id; after its ``postprocess``
        DenseCRF when one is set), or None without one. ValueError when the network
        takes another channel count than the image has (and not 1)."""
        if self.predictor is None:
            return None
        if image_id not in self.predictions:
            channels = int(self.predictor.hparams["in_channels"])
            tensor = torch.from_numpy(image)
            if tensor.shape[0] != channels:
                if tensor.shape[0] != 1:
                    raise ValueError(f"the image has {tensor.shape[0]} channels; the checkpoint takes {channels}")
                tensor = tensor.expand(channels, -1, -1)
            size = self.predictor.prediction_size
            inputs = tensor[None].contiguous()
            if size is not None:  # as the network was trained (the ACDC protocol: nearest, to a square)
                inputs = F.interpolate(inputs, size=(size, size), mode="nearest-exact")
            with self.lock, torch.no_grad():
                logits = self.predictor(inputs).float()
                if logits.shape[-2:] != tensor.shape[-2:]:
                    logits = F.interpolate(logits, size=tensor.shape[-2:], mode="bilinear", align_corners=False)
                probs = logits.softmax(1)
                if self.predictor.crf is not None:
                    probs = self.predictor.crf(tensor[None].float(), probs)
                self.predictions[image_id] = probs[0]
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
