"""Checkpoints that survive kills: atomic writes in the checkpoint folder, a ``last.ckpt`` on its own
schedule (independent of validation and of the best-mIoU monitor), and resuming from the newest
checkpoint that loads.

Lightning writes checkpoints through fsspec, whose local "transaction" writes a temp file in
TMPDIR and moves it: a copy when TMPDIR is on another filesystem, so a kill during the copy leaves
a truncated checkpoint. :class:`AtomicCheckpointIO` writes the temp file beside its target instead.
"""

from __future__ import annotations

import pickle
import re
import time
import zipfile
from collections.abc import Mapping
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import pytorch_lightning as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from rloss.utils.atomic import atomic_path, temp_files
from rloss.utils.errors import CheckpointError, NonFiniteLossError, TrainingStoppedError, UserError, file_problem

SUFFIX = ".ckpt"
CORRUPT_SUFFIX = ".corrupt"
CHECKPOINT_HINT = "pass a .ckpt file written by rloss fit"
NETWORK_FACTS = ("backbone", "num_classes", "in_channels")
"""The hyperparameters that shape the network, named when a checkpoint does not fit."""


class FileWriter:
    """The ``write`` that ``torch.save`` calls, keeping the OSError of a failed write (a full disk),
    which torch replaces by its own ``enforce fail ... unexpected pos`` RuntimeError."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def write_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` of ``checkpoint`` to ``path``; a failed write raises its OSError."""
    with path.open("wb") as file:
        writer = FileWriter(file)
        try:
            torch.save(checkpoint, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO writing local checkpoints atomically beside their target: a temp file in the
    checkpoint folder, flushed and fsynced, then renamed over the target (the folder fsynced too).
    A write that fails (a full disk, no permission) stops training with a TrainingStoppedError naming
    the file, the previous checkpoints kept. Remote paths (``s3://`` ...) keep Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        try:
            with atomic_path(Path(path), durable=True) as tmp:
                write_checkpoint(checkpoint, tmp)
        except OSError as error:
            problem = file_problem(error) or f"{path}: {error}"
            raise TrainingStoppedError(
                f"cannot write a checkpoint: {problem}; the previous checkpoints are kept"
            ) from error


def use_atomic_checkpoint_io(trainer: pl.Trainer) -> None:
    """Make ``trainer`` save through :class:`AtomicCheckpointIO` unless a custom CheckpointIO is set."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a loadable checkpoint (truncated, corrupt, not a torch zip), or None.

    Checks the zip structure, every member's CRC-32 and torch's ``<folder>/data.pkl`` member
    (reads the file once; no unpickling)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"unreadable ({error})"
    if bad is not None:
        return f"corrupt member {bad}"
    if not any(name.count("/") == 1 and name.endswith("/data.pkl") for name in names):
        return "a zip archive but not a PyTorch file (no data.pkl)"
    return None


def read_checkpoint(path: Path) -> Any:
    """``torch.load`` of a checked checkpoint file: tensors memory-mapped (cheap for large files)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_checkpoint(path: Path, option: str) -> dict[str, Any]:
    """The checkpoint dict at ``path``; FileNotFoundError or CheckpointError naming ``option`` and
    ``path`` when the file is missing, truncated or corrupt, or not a dict saved by ``torch.save``."""
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such checkpoint file")
    if problem := checkpoint_problem(path):
        raise CheckpointError(f"{option} {path}: the checkpoint is {problem}", CHECKPOINT_HINT)
    try:
        checkpoint = read_checkpoint(path)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        unpickler = re.search(r"WeightsUnpickler error: (.+?)(?: Please|$)", str(error), re.MULTILINE)
        reason = unpickler[1] if unpickler else (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{option} {path}: torch cannot load it ({reason})", CHECKPOINT_HINT) from error
    if not isinstance(checkpoint, dict):
        what = type(checkpoint).__name__
        raise CheckpointError(f"{option} {path}: holds a {what}, not a checkpoint", CHECKPOINT_HINT)
    return checkpoint


def network_facts(hparams: Mapping[str, Any]) -> str:
    """``backbone tiny, num_classes 4, in_channels 3``: the :data:`NETWORK_FACTS` of ``hparams``."""
    facts = [f"{name} {hparams[name]}" for name in NETWORK_FACTS if name in hparams]
    return ", ".join(facts) if facts else "no hyper_parameters"


def weights_difference(found: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    """The first difference between the weights ``found`` in a checkpoint and a network's state
    dict ``expected`` (a missing or unknown name, another shape); None when they fit."""
    if not found:
        return "no network weights ('net.*' keys)"
    missing = [name for name in expected if name not in found]
    unknown = [name for name in found if name not in expected]
    groups = (("missing", missing), ("unknown", unknown))
    if parts := [f"{len(names)} {what} weight(s) (e.g. {names[0]})" for what, names in groups if names]:
        return ", ".join(parts)
    for name, value in expected.items():
        if found[name].shape != value.shape:
            return f"{name} has shape {tuple(found[name].shape)}, expected {tuple(value.shape)}"
    return None


def network_weights(
    checkpoint: Mapping[str, Any], network: nn.Module, hparams: Mapping[str, Any], source: str
) -> dict[str, Tensor]:
    """The ``net.*`` weights (prefix removed) of ``checkpoint`` (a Lightning checkpoint or its
    ``state_dict``) when they fit ``network``; else CheckpointError naming ``source``, what the checkpoint
    holds (its hyper_parameters) and what this run builds (``hparams``)."""
    state = checkpoint.get("state_dict", checkpoint)
    weights = {k.removeprefix("net."): v for k, v in state.items() if isinstance(k, str) and k.startswith("net.")}
    if difference := weights_difference(weights, network.state_dict()):
        held = network_facts(checkpoint.get("hyper_parameters", {}))
        raise CheckpointError(
            f"{source} holds another network ({held}) than this run builds ({network_facts(hparams)}): {difference}",
            "pass a checkpoint of this model, or the data and model settings it was trained with",
        )
    return weights


def non_finite_tensors(module: nn.Module) -> list[str]:
    """Names of ``module``'s floating-point parameters and buffers that hold NaN or inf."""
    tensors = chain(module.named_parameters(), module.named_buffers())
    return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


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
    (single process; not on a :class:`TrainingStoppedError` such as a non-finite loss). Independent of
    validation and of ModelCheckpoint's monitor, so a kill loses at most that much training. 0 disables
    a trigger. Weights or statistics that became NaN/inf are never saved: the run stops instead
    (NonFiniteLossError), keeping the previous file.

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
            path.parent.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made is named before step 1
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
        # with several processes the others may never reach the save's barrier: the periodic file stands;
        # non-finite weights are not saved (nor reported over the exception that stopped the run)
        if (
            trainer.world_size == 1
            and not isinstance(exception, TrainingStoppedError)
            and not non_finite_tensors(pl_module)
        ):
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        path = self.path(trainer)
        if path is None or trainer.fast_dev_run or trainer.global_step <= self._saved_step:
            return
        bad = non_finite_tensors(trainer.lightning_module)
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            what = f"{len(bad)} weight(s) or statistic(s) (e.g. {bad[0]})" if bad else "weights of another process"
            raise NonFiniteLossError(
                f"{what} became NaN/inf by training step {trainer.global_step}; "
                f"{path.name} not written, the previous checkpoints are kept",
                "the loss was finite but an update overflowed: lower model.lr (or model.head_lr_mult)",
            )
        trainer.save_checkpoint(path, weights_only=False)  # given: Lightning logs a line each save otherwise
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()
