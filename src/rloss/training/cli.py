"""``rloss`` command line: Lightning CLI (fit/validate/test/predict) plus tool subcommands.

``rloss data prepare ...``, ``rloss propagate ...`` and ``rloss demo ...`` go to their own
modules; every other command line goes to :class:`RLossCLI`. Input errors of any of them are
reported as one ``rloss: error:`` line, exit code 2 (:mod:`rloss.utils.errors`).
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import lightning_fabric
import pytorch_lightning
import yaml
from lightning_fabric.utilities.exceptions import MisconfigurationException
from lightning_utilities.core import rank_zero
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from rloss.data.base import SegmentationDataModule
from rloss.models import ScribbleSegmentation
from rloss.regularizers import REGISTRY
from rloss.training.callbacks import ImagePanels, MaskWriter, WandbRunId
from rloss.training.checkpoints import (
    LastCheckpoint,
    load_checkpoint,
    network_weights,
    newest_usable_checkpoint,
    read_checkpoint,
    use_atomic_checkpoint_io,
)
from rloss.training.config_files import resolve_config_args
from rloss.utils.errors import EXIT_USER_ERROR, CheckpointError, UserError, debug_mode, one_line, print_error, raised_in

NOISE_WARNINGS: tuple[str, ...] = (
    # Lightning 2.6 on torch >= 2.10 tests isinstance(x, LeafSpec) on every run
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # ``args`` given while sys.argv holds another command's words (rloss demo, pytest) is intended
    "LightningCLI's args parameter is intended",
)
NOISE_LOG_WORDS: tuple[str, ...] = ("litlogger", "litmodels")
"""Lightning's advertising tips (one per run) contain these words; other messages are kept."""

WANDB_LOGGER = "pytorch_lightning.loggers.WandbLogger"
LIGHTNING_DIRS = tuple(Path(package.__file__).resolve().parent for package in (pytorch_lightning, lightning_fabric))
TRAINER_SETTING_ERRORS = (MisconfigurationException, ValueError, TypeError)
"""What Lightning's own code raises for trainer settings it rejects while the Trainer is built."""
LONG_ERROR = 150
"""Parser errors longer than this (on one line) are summarized by :func:`short_parser_error`."""


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
    must be a Lightning checkpoint that loads; other values (``best``, URLs, ``last`` without a
    dirpath) go to Lightning. Whether it holds this run's network is checked once the model exists
    (:meth:`RLossCLI.after_instantiate_classes`)."""
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
    if "pytorch-lightning_version" not in load_checkpoint(path, "--ckpt_path"):
        raise CheckpointError(
            f"--ckpt_path {path}: holds no Lightning training state (network weights alone?)",
            "start from weights alone with --model.init_weights FILE",
        )
    return ckpt_path


def config_files(argv: Sequence[str]) -> list[Path]:
    """The existing files given to ``--config`` / ``-c`` in ``argv`` (a value may also be YAML text)."""
    values = [arg.removeprefix("--config=") for arg in argv if arg.startswith("--config=")]
    values += [value for option, value in zip(argv, argv[1:], strict=False) if option in ("--config", "-c")]
    return [Path(value) for value in values if Path(value).is_file()]


def check_config_files(argv: Sequence[str]) -> None:
    """Read every ``--config FILE`` of ``argv`` with yaml.safe_load: UserError naming the file (and the
    line) for a YAML error or a top level that is not a mapping; jsonargparse names neither."""
    for path in config_files(argv):
        try:
            settings = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise UserError(f"--config {path}: not a UTF-8 text file", "pass a YAML config file") from error
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            context = f" ({error.context})" if getattr(error, "context", None) else ""
            problem = getattr(error, "problem", None) or one_line(str(error))
            hint = "YAML indents with spaces, not tabs" if "\\t" in problem else None
            raise UserError(f"--config {path}: {where}{problem}{context}", hint) from error
        if settings is not None and not isinstance(settings, dict):
            raise UserError(
                f"--config {path}: the top level is a {type(settings).__name__}; expected a mapping (key: value)",
                "e.g. 'trainer:' and 'model:' sections, as in configs/",
            )


def allowed_values(expected: str) -> list[str]:
    """What jsonargparse's ``Expected a <expected>`` allows, readable: Literal values, type names, null."""
    if literal := re.fullmatch(r"typing\.Literal\[(.*)\]", expected):
        return [value.strip().strip("'\"") for value in literal[1].split(",")]
    if expected.startswith("dot import path string"):
        return ["a class path (package.module.Class)"]
    if type_name := re.fullmatch(r"<class '(?:[\w.]*\.)?(\w+)'>", expected):
        return ["null" if type_name[1] == "NoneType" else type_name[1]]
    return [expected]


def short_parser_error(message: str) -> str:
    """jsonargparse's report of a bad value as one line: ``key: <class_path>: <its problem>`` when a
    class's own argument is wrong, else ``key: got <value>; expected <allowed values or types>``;
    other messages joined on one line."""
    lines = message.strip().splitlines()
    key = re.fullmatch(r'Parser key "(.+)":', lines[0].strip()) if lines else None
    if key is None:
        return one_line(message)
    for index, line in enumerate(lines):
        if problem := re.search(r"- Problem with given class_path '([^']+)':$", line):
            indent = len(line) - len(line.lstrip())
            nested = takewhile(lambda inner: len(inner) - len(inner.lstrip()) > indent, lines[index + 1 :])
            return f"{key[1]}: {problem[1]}: " + short_parser_error(textwrap.dedent("\n".join(nested)))
    expected: list[str] = []
    for line in lines:
        found = re.search(r"Expected a (.+?)(?:\. Got value: .*)?$", line)
        if found and not found[1].startswith("path but"):  # "the value may name a file": not the point
            expected += allowed_values(found[1])
    given = re.search(r"(?:Given|Got) value: (.*)$", message, re.MULTILINE)
    if not (expected and given):
        return f"{key[1]}: " + one_line("\n".join(lines[1:]))
    choices = list(dict.fromkeys(expected))
    allowed = choices[0] if len(choices) == 1 else f"one of: {', '.join(choices)}"
    value = given[1] if len(given[1]) <= 60 else f"{given[1][:57]}..."
    return f"{key[1]}: got {value}; expected {allowed}"


class RLossArgumentParser(LightningArgumentParser):
    """Argument parser whose errors are one ``rloss: error:`` line (long ones summarized by
    :func:`short_parser_error`) plus a hint (the registered regularizers for errors about
    ``model.regularizers``, else where to find the options), exit 2. ``RLOSS_DEBUG=1`` keeps
    jsonargparse's full report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a nested parser (a class's arguments): the outer one reports
            super().error(message, ex)
        if "regularizers" in message:
            names = ", ".join(f"{cls.__name__} ({name})" for name, cls in sorted(REGISTRY.items()))
            hint = (
                f"registered regularizers: {names}; "
                "use class_path: rloss.regularizers.<ClassName> or the class name"
            )
        else:
            hint = f"run '{self.prog.replace(' [options]', '')} --help' for the options"
        if debug_mode():
            super().error(f"{message}\n{hint}", ex)
        line = one_line(message)
        print_error(short_parser_error(message) if len(line) > LONG_ERROR else line, hint)
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
                "trainer.logger": {
                    "class_path": WANDB_LOGGER, "init_args": {"project": "rloss", "save_dir": "outputs"}
                },
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
        if self.subcommand == "predict" and not config.ckpt_path and not config.model.init_weights:
            raise UserError(
                "predict: no --ckpt_path (nor --model.init_weights): the masks would come from an untrained network",
                "pass --ckpt_path FILE, a checkpoint written by rloss fit",
            )
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

    def after_instantiate_classes(self) -> None:
        """Check, before anything runs, that the checkpoint to resume or evaluate holds this run's network."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():  # checked by checked_ckpt_path
            checkpoint = read_checkpoint(Path(ckpt_path))
            network_weights(checkpoint, self.model.net, self.model.hparams, f"--ckpt_path {ckpt_path}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, saving checkpoints atomically in their folder (:class:`AtomicCheckpointIO`).
        Trainer settings that Lightning's own code rejects (:data:`TRAINER_SETTING_ERRORS`) are UserErrors."""
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except TRAINER_SETTING_ERRORS as error:
            if not raised_in(error, *LIGHTNING_DIRS):
                raise
            raise UserError(
                f"--trainer settings: {one_line(str(error))}",
                f"run 'rloss {self.subcommand} --help' for the trainer options; "
                "--trainer.accelerator auto uses the devices this machine has",
            ) from error
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
    args = resolve_config_args(argv)
    check_config_files(args)
    run_cli(args)
