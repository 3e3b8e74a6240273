"""A trained network as the propagation's prior: load a checkpoint of ``rloss fit`` for prediction
on single images and give its class probabilities (``rloss propagate --checkpoint``,
``rloss annotate --checkpoint``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from rloss.models import ScribbleSegmentation


def load_predictor(path: Path, num_classes: int, classes_option: str) -> ScribbleSegmentation:
    """The ScribbleSegmentation of checkpoint ``path`` on the CPU in eval mode, with the
    ``prediction_size`` its data module recorded (ACDC: the slice side it was trained at); ValueError
    naming ``--checkpoint`` and ``classes_option`` when it predicts another number of classes than
    ``num_classes``; a missing, corrupt or foreign file is one named error too."""
    from rloss.models import ScribbleSegmentation
    from rloss.training.checkpoints import load_checkpoint
    from rloss.utils.errors import CheckpointError

    checkpoint = load_checkpoint(path, "--checkpoint")
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
            f"--checkpoint {path}: predicts {model.hparams['num_classes']} classes; "
            f"expected {num_classes} ({classes_option})"
        )
    model.prediction_size = checkpoint.get("datamodule_hyper_parameters", {}).get("prediction_size")
    return model.eval()


def check_channels(model: ScribbleSegmentation, channels: int) -> None:
    """ValueError unless an image of ``channels`` channels fits ``model``: the same count, or 1."""
    expected = int(model.hparams["in_channels"])
    if channels not in (1, expected):
        raise ValueError(f"the image has {channels} channels; the checkpoint takes {expected}")


def network_probs(model: ScribbleSegmentation, image: Tensor) -> Tensor:
    """Float (K,H,W) class probabilities of ``model`` on a float (C,H,W) image: a 1-channel image is
    repeated to the network's channels (ValueError for another mismatch); resized to the model's
    ``prediction_size`` squared (nearest, as trained) when it has one, the logits back (bilinear);
    after the model's ``postprocess`` DenseCRF when one is set."""
    check_channels(model, image.shape[0])
    image = image.expand(int(model.hparams["in_channels"]), -1, -1)
    inputs = image[None].float().contiguous()
    if model.prediction_size is not None:
        inputs = F.interpolate(inputs, size=(model.prediction_size,) * 2, mode="nearest-exact")
    with torch.no_grad():
        logits = model(inputs).float()
        if logits.shape[-2:] != image.shape[-2:]:
            logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        probs = logits.softmax(1)
        if model.crf is not None:
            probs = model.crf(image[None].float(), probs)
    return probs[0]
