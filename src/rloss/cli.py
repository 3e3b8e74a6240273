"""``rloss`` command line: Lightning CLI (fit/validate/test/predict) plus tool subcommands.

``rloss data prepare ...``, ``rloss propagate ...`` and ``rloss demo ...`` go to their own
modules; every other command line goes to :class:`RLossCLI`.
"""

from __future__ import annotations

import netrc
import os
import sys
import warnings
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlparse

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from rloss.allocator import keep_freed_memory
from rloss.callbacks import ImagePanels, MaskWriter
from rloss.data.base import SegmentationDataModule
from rloss.models import ScribbleSegmentation
from rloss.regularizers import REGISTRY

TOOLS: dict[tuple[str, ...], str] = {
    ("data", "prepare"): "rloss.data.prepare",
    ("propagate",): "rloss.propagate",
    ("demo",): "rloss.demo",
}
"""Leading words of a command line -> module whose ``main(argv)`` handles the rest."""

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


def checkpoint_run_id(path: Path) -> str | None:
    """The W&B run id stored in a checkpoint by ScribbleSegmentation.on_save_checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get("wandb_run_id")


class RLossArgumentParser(LightningArgumentParser):
    """Argument parser whose errors about ``model.regularizers`` list the registered ones."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if "regularizers" in message:
            names = ", ".join(f"{cls.__name__} ({name})" for name, cls in sorted(REGISTRY.items()))
            message = (
                f"{message}\nregistered regularizers: {names}; "
                "use class_path: rloss.regularizers.<ClassName> or the class name"
            )
        super().error(message, ex)


class RLossCLI(LightningCLI):
    """LightningCLI with rloss defaults: W&B logger (offline unless logged in), best-mIoU and
    last checkpoints, W&B image panels, PNG mask writer for predict, num_classes linked."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/mIoU",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch}-step{step}",
                "checkpoint.auto_insert_metric_name": False,
                "trainer.logger": {"class_path": WANDB_LOGGER, "init_args": {"project": "rloss", "save_dir": "outputs"}},
            }
        )
        parser.add_lightning_class_args(ImagePanels, "panels")
        parser.add_lightning_class_args(MaskWriter, "predict_writer")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.trainer.fast_dev_run:
            # ModelCheckpoint.on_train_end writes last.ckpt even under fast_dev_run (Lightning 2.6).
            config.checkpoint.save_last = False
        logger = config.trainer.logger
        if not (logger and getattr(logger, "class_path", None) == WANDB_LOGGER):
            return
        if "WANDB_MODE" not in os.environ and not wandb_logged_in():
            os.environ["WANDB_MODE"] = "offline"
        ckpt_path = config.get("ckpt_path")
        if self.subcommand == "fit" and ckpt_path and logger.init_args.get("id") is None:
            path = self._resolve_ckpt_path(ckpt_path, config.checkpoint.dirpath)
            if path is not None and (run_id := checkpoint_run_id(path)):
                logger.init_args.id = run_id

    @staticmethod
    def _resolve_ckpt_path(ckpt_path: str, dirpath: str | None) -> Path | None:
        """The file ``--ckpt_path`` names: a path, or ``last`` = ``<checkpoint.dirpath>/last.ckpt``."""
        if ckpt_path == "last":
            return Path(dirpath) / "last.ckpt" if dirpath and (Path(dirpath) / "last.ckpt").is_file() else None
        return Path(ckpt_path) if Path(ckpt_path).is_file() else None


def run_cli(args: list[str] | None = None) -> RLossCLI:
    """Run the Lightning CLI on ``args`` (default: sys.argv[1:]) and return it."""
    with warnings.catch_warnings():
        # ``args`` given while sys.argv holds another command's words (rloss demo, pytest) is intended
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return RLossCLI(
            ScribbleSegmentation,
            SegmentationDataModule,
            subclass_mode_data=True,
            args=args,
            parser_class=RLossArgumentParser,
            save_config_kwargs={"overwrite": True},
        )


def main(args: list[str] | None = None) -> int | None:
    """Entry point of ``rloss`` and ``python -m rloss``; returns the tool's exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    keep_freed_memory()
    for words, module in TOOLS.items():
        if tuple(argv[: len(words)]) == words:
            tool: Callable[[list[str]], int | None] = import_module(module).main
            return tool(argv[len(words) :])
    run_cli(argv)
    return None
