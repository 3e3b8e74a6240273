"""The rloss command line: experiment configs, phase 1 -> 2, W&B offline, resume, predict."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import network_checkpoint
from rloss.commands import main
from rloss.models import ScribbleSegmentation
from rloss.training.callbacks import WandbRunId
from rloss.training.cli import run_cli, wandb_logged_in
from voc_fixtures import SIZES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*.yaml"))
SLOW_BACKBONES = ("deeplab_resnet101",)

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("in_tmp"),
]


def tiny(voc_root: Path, *extra: str) -> list[str]:
    """Overrides that make any run tiny: miniature VOC, 32 px crops, LR-ASPP, CPU."""
    return [
        "--data", "rloss.data.voc.VOCScribbleDataModule", "--data.root", str(voc_root),
        "--data.crop_size", "32", "--data.batch_size", "2", "--data.num_workers", "0",
        "--model.backbone", "lraspp_mobilenet_v3_large", "--model.weights_backbone", "null",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
        *extra,
    ]


@pytest.mark.parametrize(
    "config",
    [pytest.param(c, id=c.stem, marks=[pytest.mark.slow] if c.stem.startswith(SLOW_BACKBONES) else [])
     for c in EXPERIMENTS],
)
def test_experiment_config_runs(config: Path, voc_root: Path) -> None:
    cli = run_cli([
        "fit", "--config", str(config), "--data.root", str(voc_root), "--data.crop_size", "32",
        "--data.batch_size", "2", "--data.num_workers", "0", "--model.weights_backbone", "null",
        "--model.init_weights", "null", "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and 0 <= metrics["val/mIoU"] <= 1
    assert len(cli.model.regularizers) == (0 if config.stem.endswith(("_pce", "_full")) else 1)


def test_phase2_starts_from_phase1_weights(voc_root: Path, tmp_path: Path) -> None:
    phase1 = run_cli(["fit", *tiny(voc_root, "--trainer.max_steps", "1", "--trainer.logger", "false",
                                    "--checkpoint.dirpath", "phase1")])
    checkpoint = tmp_path / "phase1" / "last.ckpt"
    assert checkpoint.is_file()
    trained = phase1.model.net.state_dict()
    phase2 = run_cli(["fit", *tiny(voc_root, "--model.init_weights", str(checkpoint), "--trainer.max_steps", "0",
                                    "--trainer.logger", "false")])
    for name, value in phase2.model.net.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert phase2.trainer.global_step == 0


def wandb_run(tmp_path: Path) -> Path:
    runs = sorted((tmp_path / "outputs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def test_offline_wandb_run_and_resume_from_last(
    voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = tiny(voc_root, "--checkpoint.dirpath", "ckpt", "--trainer.limit_train_batches", "2",
                "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1", "--panels.every_n_steps", "1")
    first = run_cli(["fit", *args, "--trainer.max_epochs", "1"])
    run_id = first.trainer.logger.version
    assert first.trainer.global_step == 2
    first.trainer.logger.experiment.finish()  # as at the exit of a `rloss fit` process
    records = next(wandb_run(tmp_path).glob(f"run-{run_id}.wandb")).read_bytes()
    for key in ("train/loss", "train/loss_pce", "val/mIoU", "val/pixel_acc", "val/IoU/person", "train/panels"):
        assert key.encode() in records, key
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["wandb_run_id"] == run_id

    start_steps = []
    monkeypatch.setattr(ScribbleSegmentation, "on_train_start", lambda self: start_steps.append(self.global_step))
    resumed = run_cli(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert start_steps == [2] and resumed.trainer.global_step == 4
    assert resumed.trainer.logger.version == run_id
    resumed.trainer.logger.experiment.finish()


def test_predict_writes_palette_masks_of_input_sizes(voc_root: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(images / f"photo{i}.jpg")
    weights = network_checkpoint(tmp_path / "net.ckpt", "lraspp_mobilenet_v3_large", 21)
    run_cli(["predict", *tiny(voc_root, "--data.predict_dir", str(images), "--data.val_batch_size", "2",
                              "--predict_writer.output_dir", "masks", "--trainer.logger", "false",
                              "--model.init_weights", str(weights))])
    for i, (h, w) in enumerate(SIZES):
        with Image.open(tmp_path / "masks" / f"photo{i}.png") as mask:
            assert mask.mode == "P" and mask.size == (w, h)
            assert np.asarray(mask).max() < 21


def test_unknown_regularizer_lists_registered_names(voc_root: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", *tiny(voc_root, "--model.regularizers+=NoSuchLoss")])
    assert "registered regularizers: DenseCRFLoss (densecrf)" in capsys.readouterr().err


def test_tool_subcommands_dispatch_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    for module in ("rloss.tools.prepare_data", "rloss.tools.propagate", "rloss.tools.demo"):
        fake = types.ModuleType(module)
        fake.main = lambda argv, module=module: calls.append((module, argv)) or 0
        monkeypatch.setitem(sys.modules, module, fake)
    assert main(["data", "prepare", "--root", "x"]) == 0
    assert main(["propagate", "a"]) == 0
    assert main(["demo"]) == 0
    assert calls == [
        ("rloss.tools.prepare_data", ["--root", "x"]), ("rloss.tools.propagate", ["a"]), ("rloss.tools.demo", [])
    ]


def test_wandb_login_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("")
    monkeypatch.setenv("NETRC", str(netrc_file))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert not wandb_logged_in()
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert wandb_logged_in()
    netrc_file.write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    assert wandb_logged_in()


def test_runs_without_wandb_login_default_to_offline(voc_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr("rloss.training.cli.wandb_logged_in", lambda: False)
    run_cli(["fit", *tiny(voc_root, "--trainer.fast_dev_run", "true")])
    assert os.environ["WANDB_MODE"] == "offline"


def test_configured_densecrf_postprocess_reaches_the_model(voc_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "crf.yaml"
    config.write_text(
        "model:\n  postprocess:\n    class_path: rloss.crf.DenseCRF\n"
        "    init_args:\n      iterations: 10\n      sxy_app: 20.0\n      backend: torch\n"
    )
    quick = ("--trainer.max_steps", "0", "--trainer.logger", "false")
    from_yaml = run_cli(["fit", *tiny(voc_root, "--config", str(config), *quick)]).model.crf
    assert (from_yaml.iterations, from_yaml.sxy_app, from_yaml.backend, from_yaml.w_app) == (10, 20.0, "torch", 10.0)
    from_line = run_cli(["fit", *tiny(voc_root, "--model.postprocess", "rloss.crf.DenseCRF",
                                      "--model.postprocess.init_args.iterations", "3", *quick)])
    assert from_line.model.crf.iterations == 3
    assert any(isinstance(c, WandbRunId) for c in from_line.trainer.callbacks)  # registered by the CLI
    assert run_cli(["fit", *tiny(voc_root, *quick)]).model.crf is None


def test_demo_argument_error_is_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--steps", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == "rloss: error: rloss demo: --steps must be >= 1, got 0"


def test_a_shipped_config_name_works_from_any_folder(capsys) -> None:
    """`rloss fit --config experiments/<row>.yaml` resolves the packaged file (the cwd is a temp folder)."""
    with pytest.raises(SystemExit) as exit:
        main(["fit", "--config", "experiments/deeplabv3plus_mobilenet_gatedcrf.yaml", "--print_config"])
    assert exit.value.code == 0
    assert "rloss.regularizers.GatedCRFLoss" in capsys.readouterr().out
