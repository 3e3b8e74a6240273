"""Lightning DDP with 2 CPU processes (gloo): the synced val mIoU equals the single-process one."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rloss.training.cli import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


def common(voc_root: Path) -> list[str]:
    """Tiny LargeFOV runs (no batch norm, so both ranks keep identical weights) on the CPU."""
    return [
        "--data", "rloss.data.voc.VOCScribbleDataModule", "--data.root", str(voc_root),
        "--data.crop_size", "32", "--data.batch_size", "2", "--data.num_workers", "0",
        "--model.backbone", "deeplab_largefov", "--model.weights_backbone", "null",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]


def test_ddp_two_cpu_processes_match_single_process_miou(
    voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PL_DISABLE_FORK": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "rloss", "fit", *common(voc_root),
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "1", "--data.batch_size", "1",
        "--trainer.limit_train_batches", "2", "--trainer.num_sanity_val_steps", "0",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "logs",
        "--checkpoint.dirpath", "ckpt",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    (metrics,) = (tmp_path / "logs").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    ddp_miou = [float(r["val/mIoU"]) for r in rows if r.get("val/mIoU")]
    assert len(ddp_miou) == 1
    assert (tmp_path / "ckpt" / "best-epoch0-step2.ckpt").is_file()  # 2 images per rank, batch 1

    single = run_cli([
        "validate", *common(voc_root), "--trainer.devices", "1", "--trainer.logger", "false",
        "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"),
    ])
    assert single.trainer.callback_metrics["val/mIoU"].item() == pytest.approx(ddp_miou[0], abs=1e-6)
