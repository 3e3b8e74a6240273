"""The LightningModule: a segmentation network trained with pCE + weighted regularizers."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.aggregation import CatMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from rloss.crf import DenseCRF
from rloss.data.constants import IGNORE_INDEX, PAD_INDEX, class_names_or_default
from rloss.losses import partial_cross_entropy
from rloss.metrics import volume_scores
from rloss.models.backbones import build_backbone
from rloss.regularizers import Regularizer
from rloss.training.checkpoints import load_checkpoint, network_weights
from rloss.utils.checks import check_integer, check_positive
from rloss.utils.errors import NonFiniteLossError, TrainingStoppedError

Supervision = Literal["scribble", "full"]

LABEL_CHECK_BATCHES = 20
"""Training stops at this batch when none of its batches so far held a labeled pixel. Shorter runs
(smoke tests, ``fast_dev_run``) are not judged: a few random crops may all miss thin scribbles."""


def term_names(regularizers: Sequence[nn.Module]) -> list[str]:
    """Log names of the regularizer terms: class names, numbered when a class repeats."""
    names = [type(r).__name__ for r in regularizers]
    counts = Counter(names)
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(f"{name}_{seen[name]}" if counts[name] > 1 else name)
    return out


def check_setting(value: float, name: str, minimum: float = 0.0, below: float = math.inf) -> float:
    """Return ``value`` as float if it is a finite number with ``minimum <= value < below``."""
    value = float(value)
    if not (math.isfinite(value) and minimum <= value < below):
        bound = f" and < {below:g}" if math.isfinite(below) else ""
        raise ValueError(f"{name} must be a finite number >= {minimum:g}{bound}, got {value}")
    return value


def load_network_weights(path: str | Path, network: nn.Module, hparams: Mapping[str, Any]) -> None:
    """Load the network weights (``net.*`` keys) of the ScribbleSegmentation checkpoint ``path``
    (``--model.init_weights``) into ``network``; FileNotFoundError or CheckpointError when the file is
    missing, no checkpoint, or holds another network than ``hparams`` describe."""
    option = "--model.init_weights"
    checkpoint = load_checkpoint(Path(path), option)
    network.load_state_dict(network_weights(checkpoint, network, hparams, f"{option} {path}"))


class ScribbleSegmentation(pl.LightningModule):
    """Semantic segmentation from scribbles with regularized losses.

    loss = pCE(logits, labels) + sum_r r(images, softmax(logits), roi, labels), where labels
    are the scribbles (``supervision="scribble"``) or the full masks (``"full"``), images are the
    raw image batch and roi = pixels that are not padding (label 254).

    Args:
        num_classes: K (linked from the DataModule by the CLI).
        backbone: a registered network name (:func:`rloss.models.backbone_names`).
        weights_backbone: ``"imagenet"``, None (random init) or a family-specific weight name.
        regularizers: weighted regularizer terms (``rloss.regularizers``), each with its weight.
        supervision: train on ``"scribble"`` or on ``"full"`` masks.
        init_weights: checkpoint whose network weights start the run (phase-2 fine-tuning);
            unlike ``--ckpt_path`` it restores no optimizer, step or epoch.
        lr: base learning rate (backbone), > 0; the head gets ``lr * head_lr_mult`` (> 0).
        momentum, weight_decay: SGD settings, momentum in [0, 1), weight_decay >= 0.
        poly_power: the LR decays as ``(1 - step / max_steps) ** poly_power`` per step (>= 0).
        class_names: K names for per-class IoU (linked from the DataModule by the CLI).
        in_channels: image channels C (linked from the DataModule by the CLI: 3 RGB, 1 MRI, ...).
        postprocess: a :class:`rloss.crf.DenseCRF` that refines the softmax in ``test`` and ``predict``
            (validation stays raw); in YAML ``class_path: rloss.crf.DenseCRF`` with its ``init_args``,
            on the command line ``--model.postprocess rloss.crf.DenseCRF``. None: the raw argmax.
    """

    prediction_size: int | None = None
    """Side (px) single images are resized to, squared, before prediction outside the data modules
    (``rloss annotate``, ``rloss propagate --checkpoint``): set from the checkpoint by
    :func:`rloss.tools.prior.load_predictor`; None: as they come."""

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "deeplabv3plus_mobilenet_v2",
        weights_backbone: str | None = "imagenet",
        regularizers: list[Regularizer] | None = None,
        supervision: Supervision = "scribble",
        init_weights: str | None = None,
        lr: float = 0.007,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        head_lr_mult: float = 10.0,
        poly_power: float = 0.9,
        class_names: Sequence[str] | None = None,
        in_channels: int = 3,
        postprocess: DenseCRF | None = None,
    ) -> None:
        super().__init__()
        check_integer(num_classes, "model.num_classes", 1)
        check_integer(in_channels, "model.in_channels", 1)
        check_positive(lr, "model.lr")
        check_positive(head_lr_mult, "model.head_lr_mult")
        check_setting(momentum, "model.momentum", below=1.0)
        check_setting(weight_decay, "model.weight_decay")
        check_setting(poly_power, "model.poly_power")
        if supervision not in ("scribble", "full"):
            raise ValueError(f"supervision must be 'scribble' or 'full', got {supervision!r}")
        if postprocess is not None and not isinstance(postprocess, DenseCRF):
            raise ValueError(f"postprocess must be a rloss.crf.DenseCRF or None, got {postprocess!r}")
        self.crf = postprocess
        # modules and the test-time CRF stay out of the checkpoints (loadable with weights_only=True)
        self.save_hyperparameters(ignore=["regularizers", "postprocess"])
        self.net = build_backbone(backbone, num_classes, weights_backbone, in_channels)
        if init_weights is not None:
            load_network_weights(init_weights, self.net, self.hparams)
        self.regularizers = nn.ModuleList(regularizers or [])
        self.term_names = term_names(self.regularizers)
        self.target_key = "scribble" if supervision == "scribble" else "mask"
        self.class_names = class_names_or_default(class_names, num_classes)
        self.metrics = nn.ModuleDict({stage: self._metrics(num_classes) for stage in ("val", "test")})
        self.volume_scores = nn.ModuleDict({stage: CatMetric() for stage in ("val", "test")})
        self._labels_seen = False
        self._unlabeled_batches = 0

    @staticmethod
    def _metrics(num_classes: int) -> MetricCollection:
        common = {"num_classes": num_classes, "ignore_index": IGNORE_INDEX, "validate_args": False}
        return MetricCollection(
            {
                "mIoU": MulticlassJaccardIndex(average="macro", **common),
                "IoU": MulticlassJaccardIndex(average="none", **common),
                "pixel_acc": MulticlassAccuracy(average="micro", **common),
            }
        )

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B,K,H,W) of raw images (B,C,H,W) (the network normalizes them as its weights expect)."""
        return self.net(images)

    def segment(self, images: Tensor, logits: Tensor) -> Tensor:
        """Class ids (B,H,W): argmax of the logits, after the ``postprocess`` DenseCRF when one is set."""
        if self.crf is not None:
            logits = self.crf(images, logits.float().softmax(dim=1))
        return logits.argmax(dim=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self.check_labeled(batch[self.target_key])
        images = batch["image"]
        logits = self(images)
        # float32 under any precision: half-precision log-softmax overflows to inf (16-true)
        terms = {"pce": partial_cross_entropy(logits.float(), batch[self.target_key])}
        if len(self.regularizers):
            probs = logits.float().softmax(dim=1)
            roi = batch["mask"] != PAD_INDEX
            for name, regularizer in zip(self.term_names, self.regularizers, strict=True):
                terms[name] = regularizer(images, probs, roi, batch[self.target_key])
        values = torch.stack([t.float() for t in terms.values()])
        self.check_finite(terms, values)
        loss = values.sum()
        batch_size = images.shape[0]
        self.log_dict({f"train/loss_{k}": v for k, v in terms.items()}, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def check_labeled(self, target: Tensor) -> None:
        """Stop the run (TrainingStoppedError) when none of its first :data:`LABEL_CHECK_BATCHES`
        training batches (on any process) holds a labeled pixel: it would train at pCE 0 and exit 0.
        One host synchronisation per step until the first label; nothing without a Trainer."""
        if self._labels_seen or self._trainer is None:
            return
        labeled = bool(((target != IGNORE_INDEX) & (target != PAD_INDEX)).any())
        self._labels_seen = self.trainer.strategy.reduce_boolean_decision(labeled, all=False)
        self._unlabeled_batches += not self._labels_seen
        if self._unlabeled_batches >= LABEL_CHECK_BATCHES:
            raise TrainingStoppedError(
                f"no labeled pixel in the first {LABEL_CHECK_BATCHES} training batches: every "
                f"{self.target_key} pixel is {IGNORE_INDEX} (unlabeled) or {PAD_INDEX} (padding); "
                "pCE would be 0 and nothing would be learnt from labels",
                f"check the {self.target_key} files of the training split (class ids 0..K-1 where labeled)",
            )

    def check_finite(self, terms: dict[str, Tensor], values: Tensor) -> None:
        """Stop the run, before backward and the optimizer step, when a loss term is NaN or inf
        (on any process): NonFiniteLossError naming the term and the step."""
        bad = bool((~torch.isfinite(values)).any())
        if self._trainer is not None:  # all processes stop together
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        pairs = zip(terms, values.tolist(), strict=True)
        found = [f"{name} = {value:g}" for name, value in pairs if not math.isfinite(value)]
        raise NonFiniteLossError(
            f"non-finite loss at training step {self.global_step}: {', '.join(found) or 'on another process'}; "
            "stopped before the weights were updated (checkpoints kept)",
            "lower model.lr or the regularizer's weight, or train in 32-true / bf16-mixed precision",
        )

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        if "slice_size" in batch:
            return self._evaluate_volume(batch, stage)
        logits = self(batch["image"])
        target = batch["mask"].masked_fill(batch["mask"] == PAD_INDEX, IGNORE_INDEX)
        loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
        if (target != IGNORE_INDEX).any():
            self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=target.shape[0])
        predictions = self.segment(batch["image"], logits) if stage == "test" else logits.argmax(dim=1)
        self.metrics[stage].update(predictions, target)

    def predict_volume(self, volume: Tensor, slice_size: int, chunk: int = 16) -> Tensor:
        """Class ids (D, H, W) of a volume (D, C, H, W): each slice resized to ``slice_size`` squared
        (nearest), predicted, argmax, resized back (nearest): the ACDC evaluation protocol."""
        size = volume.shape[-2:]
        small = F.interpolate(volume.float(), size=(slice_size, slice_size), mode="nearest-exact")
        classes = torch.cat([self(part).argmax(1, keepdim=True) for part in small.split(chunk)])
        return F.interpolate(classes.float(), size=size, mode="nearest-exact")[:, 0].long()

    def _evaluate_volume(self, batch: dict[str, Any], stage: str) -> None:
        """One 3-D volume (1, D, C, H, W): IoU over its pixels and its per-class Dice / HD95."""
        truth = batch["mask"][0]
        prediction = self.predict_volume(batch["image"][0], int(batch["slice_size"]))
        self.metrics[stage].update(prediction, truth)
        self.volume_scores[stage].update(volume_scores(prediction, truth, self.hparams.num_classes)[None])

    def _log_metrics(self, stage: str) -> None:
        scores = self.metrics[stage].compute()
        self.metrics[stage].reset()
        self.log(f"{stage}/mIoU", scores["mIoU"], prog_bar=True)
        self.log(f"{stage}/pixel_acc", scores["pixel_acc"])
        self.log_dict({f"{stage}/IoU/{n}": v for n, v in zip(self.class_names, scores["IoU"], strict=True)})
        volumes = self.volume_scores[stage]
        if volumes.update_count:  # (V, 2, K-1): per volume, then the mean over volumes
            dice, hd95 = volumes.compute().reshape(-1, 2, self.hparams.num_classes - 1).mean(0).float()
            self.log(f"{stage}/dice", dice.mean(), prog_bar=True)
            self.log(f"{stage}/hd95", hd95.mean())
            self.log_dict({f"{stage}/dice/{n}": v for n, v in zip(self.class_names[1:], dice, strict=True)})
            self.log_dict({f"{stage}/hd95/{n}": v for n, v in zip(self.class_names[1:], hd95, strict=True)})
        volumes.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """{"masks": uint8 (B,H,W) class ids, "names": list, "sizes": (B,2) H, W before padding}."""
        images = batch["image"]
        sizes = batch.get("size", torch.tensor(images.shape[-2:]).expand(images.shape[0], 2))
        masks = self.segment(images, self(images)).to(torch.uint8)
        return {"masks": masks, "names": batch["name"], "sizes": sizes}

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        backbone, head = self.net.parameter_groups()
        optimizer = torch.optim.SGD(
            [{"params": backbone, "lr": hp.lr}, {"params": head, "lr": hp.lr * hp.head_lr_mult}],
            lr=hp.lr,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total, power=hp.poly_power)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
