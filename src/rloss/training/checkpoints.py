"""Checkpoints that survive kills: atomic writes in the checkpoint folder, a ``last.ckpt`` on its own
schedule (independent of validation and of the best-mIoU monitor), and resuming from the newest
checkpoint that loads.

Lightning writes checkpoints through fsspec, whose local "transaction" writes a temp file in
TMPDIR and moves it: a copy when TMPDIR is on another filesystem, so a kill during the copy leaves
a truncated checkpoint. :class:`AtomicCheckpointIO` writes the temp file beside its target instead.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from rloss.utils.atomic import atomic_path, temp_files
from rloss.utils.errors import NonFiniteLossError, UserError

SUFFIX = ".ckpt"
CORRUPT_SUFFIX = ".corrupt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO writing local checkpoints atomically beside their target: a temp file in the
    checkpoint folder, flushed and fsynced, then renamed over the target (the folder fsynced too).
    Remote paths (``s3://`` ...) keep Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(Path(path), durable=True) as tmp:
            torch.save(checkpoint, tmp)


def use_atomic_checkpoint_io(trainer: pl.Trainer) -> None:
    """Make ``trainer`` save through :class:`AtomicCheckpointIO` unless a custom CheckpointIO is set."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a loadable checkpoint (truncated, corrupt, not a torch zip), or None.

    Checks the zip structure and every member's CRC-32 (reads the file once; no unpickling)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"unreadable ({error})"
    return f"corrupt member {bad}" if bad is not None else None


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoints of ``folder``, newest first (atomic writes' temp files excluded)."""
    files = [p for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def move_aside(path: Path) -> Path:
    """Rename a corrupt checkpoint to ``<name>.corrupt`` (``.corrupt1``, ... when taken); return the new path."""
    for index in range(1000):
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{index or ''}")
        if not target.exists():
            path.rename(target)
            return target
    raise UserError(f"cannot move corrupt checkpoint {path} aside: {path}{CORRUPT_SUFFIX}* all exist")


def newest_usable_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint of ``folder`` that loads; corrupt ones are named and moved aside.

    None when the folder holds no checkpoint (a fresh run); UserError when it holds only corrupt ones."""
    if not folder.is_dir():
        return None
    candidates = checkpoint_files(folder)
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        try:
            moved = move_aside(path)
        except FileNotFoundError:  # another process (DDP rank) moved it first
            continue
        rank_zero_warn(f"checkpoint {path} is {problem}: moved to {moved.name}; trying the next newest")
    if candidates:
        raise UserError(
            f"--ckpt_path last: no usable checkpoint in {folder}; "
            f"the {len(candidates)} found were corrupt (moved to *{SUFFIX}{CORRUPT_SUFFIX})",
            "start a fresh run without --ckpt_path, or pass --ckpt_path FILE",
        )
    return None


class LastCheckpoint(Callback):
    """Save ``<dirpath>/<filename>`` every ``every_n_train_steps`` training steps or ``every_minutes``
    minutes, whichever comes first, at the end of training, and when training stops on an exception
    (single process; not on a non-finite loss). Independent of validation and of ModelCheckpoint's monitor, so a kill
    loses at most that much training. 0 disables a trigger.

    ``dirpath`` None: the ModelCheckpoint's folder. Temp files that killed writes left there are
    removed when training starts. Nothing is written when no step was trained since the last save
    (e.g. a run that fails before step 1 keeps the previous run's file).
    """

    def __init__(
        self,
        every_n_train_steps: int = 500,
        every_minutes: float = 10.0,
        dirpath: str | None = None,
        filename: str = f"last{SUFFIX}",
    ) -> None:
        super().__init__()
        if every_n_train_steps < 0 or not every_minutes >= 0:
            raise ValueError(
                f"last_checkpoint: every_n_train_steps ({every_n_train_steps}) and every_minutes "
                f"({every_minutes}) must be >= 0 (0 = off)"
            )
        self.every_n_train_steps = every_n_train_steps
        self.every_minutes = every_minutes
        self.dirpath = dirpath
        self.filename = filename
        self._saved_step = 0
        self._saved_time = 0.0

    def path(self, trainer: pl.Trainer) -> Path | None:
        """The file this callback writes (None when there is no checkpoint folder)."""
        folder = self.dirpath or getattr(trainer.checkpoint_callback, "dirpath", None)
        return Path(folder) / self.filename if folder else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()
        path = self.path(trainer)
        if path is not None and trainer.is_global_zero:
            for stale in temp_files(path.parent, SUFFIX):
                stale.unlink(missing_ok=True)
                rank_zero_info(f"removed {stale}, a partial checkpoint of a killed run")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        steps = trainer.global_step - self._saved_step
        due = steps > 0 and (
            (self.every_n_train_steps > 0 and steps >= self.every_n_train_steps)
            or (self.every_minutes > 0 and time.monotonic() - self._saved_time >= 60 * self.every_minutes)
        )
        if trainer.strategy.reduce_boolean_decision(due, all=False):  # ranks' clocks differ
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # with several processes the others may never reach the save's barrier: the periodic file stands
        if trainer.world_size == 1 and not isinstance(exception, NonFiniteLossError):
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        path = self.path(trainer)
        if path is None or trainer.fast_dev_run or trainer.global_step <= self._saved_step:
            return
        trainer.save_checkpoint(path)
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()
