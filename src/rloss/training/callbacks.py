"""Callbacks: W&B image panels during training, the W&B run id kept across resumes, VOC-palette
PNG masks from ``predict``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from jsonargparse import Namespace
from pytorch_lightning.callbacks import BasePredictionWriter, Callback
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from rloss.data.constants import PAD_INDEX, voc_palette
from rloss.data.files import write_label_png
from rloss.utils.errors import one_line

PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize(labels: Tensor) -> np.ndarray:
    """VOC colours (H,W,3) uint8 of a label map (H,W) (255 white, 254 black)."""
    return PALETTE[labels.detach().cpu().numpy().astype(np.uint8)]


def panel(image: Tensor, scribble: Tensor, prediction: Tensor, mask: Tensor) -> np.ndarray:
    """One row [image | scribbles over the image | prediction | ground truth], (H,4W,3) uint8."""
    rgb = image.detach().cpu().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    labeled = (scribble < PAD_INDEX).cpu().numpy()[..., None]  # class ids: neither padding nor unlabeled
    scribbles = np.where(labeled, colorize(scribble), rgb)
    return np.concatenate([rgb, scribbles, colorize(prediction), colorize(mask)], axis=1)


class ImagePanels(Callback):
    """Every ``every_n_steps`` training steps, log image / scribbles / prediction / ground-truth
    panels of the first ``max_images`` images of the batch to W&B (key ``train/panels``).

    Predictions come from an extra forward pass in eval mode without gradients.
    Loggers other than W&B are left alone; 0 disables the panels.
    """

    def __init__(self, every_n_steps: int = 500, max_images: int = 4) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.max_images = max_images

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        step = trainer.global_step
        if not loggers or self.every_n_steps <= 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        images = batch["image"][: self.max_images]
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            predictions = pl_module(images).argmax(dim=1)
        pl_module.train(was_training)
        panels = [
            panel(images[i], batch["scribble"][i], predictions[i], batch["mask"][i]) for i in range(len(images))
        ]
        caption = "image | scribbles | prediction | ground truth"
        for logger in loggers:
            logger.log_image("train/panels", panels, step=step, caption=[caption] * len(panels))


class WandbRunId(Callback):
    """One W&B run across resumes: every checkpoint records the run id of the Trainer's W&B logger
    (key :attr:`KEY`) and :meth:`restore` gives that id to the logger of a run resumed from it.

    W&B fixes the id when the run is created, which the Trainer does before any callback hook, so
    :meth:`restore` edits the logger's settings before the logger is instantiated (the CLI calls it).
    """

    KEY = "wandb_run_id"

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[self.KEY] = logger.version

    @classmethod
    def saved_id(cls, path: Path) -> str | None:
        """The run id recorded in checkpoint ``path``; None when there is none, or (with a warning
        naming the file) when the checkpoint cannot be read: the run then gets a new id."""
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure; the run id is a convenience
            message = f"{path}: no W&B run id read ({one_line(error)}); the resumed run gets a new id"
            warnings.warn(message, stacklevel=2)
            return None
        return checkpoint.get(cls.KEY)

    @classmethod
    def restore(cls, logger_init_args: Namespace, ckpt_path: Path) -> None:
        """Set ``id`` of a WandbLogger's ``init_args`` to the run id saved in ``ckpt_path`` (when it
        has one), unless an id is given."""
        if logger_init_args.get("id") is None and (run_id := cls.saved_id(ckpt_path)):
            logger_init_args.id = run_id


class MaskWriter(BasePredictionWriter):
    """Write each prediction of ``predict`` as ``<output_dir>/<name>.png``, a VOC-palette PNG
    of class ids at the input image's size (atomically). ``output_dir`` None:
    ``<trainer.default_root_dir>/predictions``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        folder = Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")
        items = zip(prediction["masks"], prediction["names"], prediction["sizes"].tolist(), strict=True)
        for mask, name, (height, width) in items:
            write_label_png(mask[:height, :width], folder / f"{name}.png")
