"""``rloss`` command line: Lightning CLI (fit/validate/test/predict) plus tool subcommands.

``rloss data prepare ...``, ``rloss propagate ...`` and ``rloss demo ...`` go to their own
modules; every other command line goes to :class:`RLossCLI`. Input errors of any of them are
reported as one ``rloss: error:`` line, exit code 2 (:mod:`rloss.utils.errors`).
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

from lightning_utilities.core import rank_zero
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from rloss.training.callbacks import ImagePanels, MaskWriter, WandbRunId
from rloss.training.checkpoints import LastCheckpoint, checkpoint_problem, newest_usable_checkpoint, use_atomic_checkpoint_io
from rloss.training.config_files import resolve_config_args
from rloss.data.base import SegmentationDataModule
from rloss.utils.errors import EXIT_USER_ERROR, UserError, debug_mode, one_line, print_error, user_error
from rloss.models import ScribbleSegmentation
from rloss.regularizers import REGISTRY

NOISE_WARNINGS: tuple[str, ...] = (
    # Lightning 2.6 on torch >= 2.10 tests isinstance(x, LeafSpec) on every run
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # ``args`` given while sys.argv holds another command's words (rloss demo, pytest) is intended
    "LightningCLI's args parameter is intended",
)
NOISE_LOG_WORDS: tuple[str, ...] = ("litlogger", "litmodels")
"""Lightning's advertising tips (one per run) contain these words; other messages are kept."""

WANDB_LOGGER = "pytorch_lightning.loggers.WandbLogger"


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (WANDB_API_KEY or a netrc entry for the W&B host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def checked_ckpt_path(ckpt_path: str | None, dirpath: str | None) -> str | None:
    """``--ckpt_path`` made concrete and checked: ``last`` = the newest usable checkpoint of
    ``dirpath`` (corrupt ones moved aside; None when there is none yet, a fresh run), a local file
    must exist and load; other values (``best``, URLs, ``last`` without a dirpath) go to Lightning."""
    if not ckpt_path:
        return ckpt_path
    if ckpt_path == "last":
        if dirpath is None:
            return ckpt_path
        path = newest_usable_checkpoint(Path(dirpath))
        return str(path) if path is not None else None
    if ckpt_path in ("best", "hpc", "registry") or "://" in ckpt_path:
        return ckpt_path
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(f"--ckpt_path {path}: no such checkpoint file", "pass a .ckpt file written by rloss fit")
    if problem := checkpoint_problem(path):
        raise UserError(f"--ckpt_path {path}: the checkpoint is {problem}", "pass another checkpoint")
    return ckpt_path


class RLossArgumentParser(LightningArgumentParser):
    """Argument parser whose errors are one ``rloss: error:`` line plus a hint (the registered
    regularizers for errors about ``model.regularizers``, else where to find the options), exit 2.
    ``RLOSS_DEBUG=1`` keeps jsonargparse's full report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if "regularizers" in message:
            names = ", ".join(f"{cls.__name__} ({name})" for name, cls in sorted(REGISTRY.items()))
            hint = (
                f"registered regularizers: {names}; "
                "use class_path: rloss.regularizers.<ClassName> or the class name"
            )
        else:
            hint = f"run '{self.prog.replace(' [options]', '')} --help' for the options"
        if not self.exit_on_error or debug_mode():
            super().error(f"{message}\n{hint}", ex)
        print_error(one_line(message), hint)
        sys.exit(EXIT_USER_ERROR)


class RLossCLI(LightningCLI):
    """LightningCLI with rloss defaults: W&B logger (offline unless logged in), best-mIoU checkpoints,
    a ``last.ckpt`` on its own schedule (:class:`rloss.training.checkpoints.LastCheckpoint`), checkpoints
    written atomically, W&B image panels, the W&B run id kept across resumes (:class:`WandbRunId`),
    PNG mask writer for predict; num_classes, class_names and in_channels linked from the data."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/mIoU",
                "checkpoint.mode": "max",
                "checkpoint.save_last": False,  # LastCheckpoint writes last.ckpt without waiting for the monitor
                "checkpoint.filename": "best-epoch{epoch}-step{step}",
                "checkpoint.auto_insert_metric_name": False,
                "trainer.logger": {"class_path": WANDB_LOGGER, "init_args": {"project": "rloss", "save_dir": "outputs"}},
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(ImagePanels, "panels")
        parser.add_lightning_class_args(MaskWriter, "predict_writer")
        parser.add_lightning_class_args(WandbRunId, "wandb_run_id")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.checkpoint.save_last and config.last_checkpoint.dirpath in (None, config.checkpoint.dirpath):
            # one writer of last.ckpt: with two, Lightning renames ModelCheckpoint's to last-v1.ckpt
            rank_zero_info("checkpoint.save_last: last.ckpt is written by last_checkpoint (LastCheckpoint)")
            config.checkpoint.save_last = False
        if config.get("ckpt_path") == "last":  # other values were checked by _parse_ckpt_path
            config.ckpt_path = checked_ckpt_path("last", config.checkpoint.dirpath)
        logger = config.trainer.logger
        if not (logger and getattr(logger, "class_path", None) == WANDB_LOGGER):
            return
        if "WANDB_MODE" not in os.environ and not wandb_logged_in():
            os.environ["WANDB_MODE"] = "offline"
        path = Path(config.ckpt_path) if config.ckpt_path else None
        if self.subcommand == "fit" and path and path.is_file():
            WandbRunId.restore(logger.init_args, path)

    def _parse_ckpt_path(self) -> None:
        """Check an explicit ``--ckpt_path FILE`` before Lightning reads its hyperparameters."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path != "last":
            checked_ckpt_path(ckpt_path, None)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, saving checkpoints atomically in their folder (:class:`AtomicCheckpointIO`)."""
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoint_io(trainer)
        return trainer


def drop_noise(record: logging.LogRecord) -> bool:
    """logging filter: False for Lightning's advertising tips (:data:`NOISE_LOG_WORDS`)."""
    return not any(word in str(record.msg) for word in NOISE_LOG_WORDS)


@contextmanager
def third_party_noise_filtered() -> Iterator[None]:
    """Hide the known third-party messages printed on every run (:data:`NOISE_WARNINGS`, the tips)."""
    log = rank_zero.log
    log.addFilter(drop_noise)
    try:
        with warnings.catch_warnings():
            for message in NOISE_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        log.removeFilter(drop_noise)


def run_cli(args: list[str] | None = None) -> RLossCLI:
    """Run the Lightning CLI on ``args`` (default: sys.argv[1:]) and return it."""
    with third_party_noise_filtered():
        return RLossCLI(
            ScribbleSegmentation,
            SegmentationDataModule,
            subclass_mode_data=True,
            args=args,
            parser_class=RLossArgumentParser,
            save_config_kwargs={"overwrite": True},
        )


def main(argv: list[str]) -> None:
    """``rloss fit|validate|test|predict ...``: the Lightning CLI, a shipped config's name working from any folder."""
    run_cli(resolve_config_args(argv))
