"""A user's own scribble folder (rloss.data.folder) trains through the CLI with no code, at its own
channel count, and names what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_folder
from rloss.data import ScribbleFolderDataModule
from rloss.training.cli import run_cli
from rloss.utils.errors import DataError


def test_grayscale_folder_trains_and_validates_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_folder(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    cli = run_cli([
        "fit", "--config", str(Path(__file__).parents[1] / "configs" / "data" / "folder.yaml"),
        "--data.root", str(root), "--data.crop_size", "16", "--data.batch_size", "2", "--data.num_workers", "0",
        "--model.backbone", "tiny", "--model.weights_backbone", "null", "--trainer.max_steps", "2",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
    ])
    assert cli.trainer.global_step == 2 and cli.model.hparams.in_channels == 1
    assert 0 <= cli.trainer.callback_metrics["val/mIoU"] <= 1
    dm = ScribbleFolderDataModule(str(root))
    assert dm.in_channels == 1 and dm.num_classes == 2 and dm.class_names == ["ground", "square"]
    dm.setup("fit")
    item = dm.val_dataset[0]
    assert item["image"].shape == (1, 24, 24) and set(item["mask"].unique().tolist()) == {0, 1}


def test_missing_scribble_and_bad_folder_are_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "mine")
    (root / "scribbles" / "case2.png").unlink()
    with pytest.raises(DataError, match=r"scribbles/case2.png: missing"):
        ScribbleFolderDataModule(str(root)).setup("fit")
    (root / "classes.txt").unlink()
    with pytest.raises(ValueError, match="no classes.txt; set --data.num_classes"):
        ScribbleFolderDataModule(str(root))
    with pytest.raises(FileNotFoundError, match="no splits/train.txt"):
        ScribbleFolderDataModule(str(tmp_path / "empty"), num_classes=2)
