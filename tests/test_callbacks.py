"""WandbRunId: the W&B run id is written into checkpoints and given back to a resumed run."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from rloss.training.callbacks import WandbRunId


def saved(path: Path, *loggers: object) -> Path:
    """A checkpoint saved by WandbRunId for a Trainer with ``loggers``."""
    checkpoint: dict = {"state_dict": {}}
    WandbRunId().on_save_checkpoint(types.SimpleNamespace(loggers=list(loggers)), None, checkpoint)
    torch.save(checkpoint, path)
    return path


def test_run_id_survives_save_and_resume(tmp_path: Path) -> None:
    logger = WandbLogger(id="run-abc123", save_dir=str(tmp_path), offline=True)  # no W&B run starts
    path = saved(tmp_path / "last.ckpt", CSVLogger(tmp_path), logger)
    assert torch.load(path, weights_only=True)[WandbRunId.KEY] == "run-abc123"
    resumed = Namespace(project="rloss", id=None)
    WandbRunId.restore(resumed, path)
    assert resumed.id == "run-abc123"
    given = Namespace(project="rloss", id="chosen")
    WandbRunId.restore(given, path)
    assert given.id == "chosen"  # an explicit id wins


def test_no_wandb_logger_no_run_id(tmp_path: Path) -> None:
    path = saved(tmp_path / "last.ckpt", CSVLogger(tmp_path))
    assert WandbRunId.KEY not in torch.load(path, weights_only=True)
    resumed = Namespace(id=None)
    WandbRunId.restore(resumed, path)
    assert resumed.id is None


def test_unreadable_checkpoint_warns_and_gives_a_new_run(tmp_path: Path) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"not a checkpoint")
    resumed = Namespace(id=None)
    with pytest.warns(UserWarning, match="no W&B run id read"):
        WandbRunId.restore(resumed, path)
    assert resumed.id is None
