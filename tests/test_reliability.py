"""Short named errors (one line, exit 2, no traceback), bad data found before step 1, offline weights,
settings that cannot train silently wrong."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rloss.data.verify
from helpers import cli_error, demo_args
from rloss.commands import main
from rloss.data.constants import IGNORE_INDEX, VOC_DIR
from rloss.data.voc import VOCScribbleDataModule
from rloss.models import ScribbleSegmentation
from rloss.regularizers import DenseCRFLoss, SizeLoss
from rloss.training.cli import drop_noise
from rloss.utils.errors import DataError
from voc_fixtures import save_label

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("in_tmp"),
]


def voc_fit(root: Path, *extra: str) -> list[str]:
    return [
        "fit", "--data", "rloss.data.voc.VOCScribbleDataModule", "--data.root", str(root),
        "--data.crop_size", "32", "--data.batch_size", "2", "--data.num_workers", "0",
        "--model.backbone", "lraspp_mobilenet_v3_large", "--model.weights_backbone", "null",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", "ckpt", *extra,
    ]


demo_fit = partial(demo_args, "fit")
short_error = cli_error


def test_argument_error_is_one_line_with_a_hint(capsys: pytest.CaptureFixture) -> None:
    err = short_error(capsys, demo_fit("--trainer.max_steps", "abc"))
    assert 'rloss: error: Parser key "trainer.max_steps": Expected a <class \'int\'>. Got value: abc' in err
    assert "usage:" not in err and len(err.strip().splitlines()) == 2


def test_unknown_command_and_help(capsys: pytest.CaptureFixture) -> None:
    assert "rloss: error:" in short_error(capsys, ["fitt"])
    with pytest.raises(SystemExit) as exit:
        main(["data", "prepare", "--root"])
    assert exit.value.code == 2 and "rloss: error: rloss data prepare: argument --root" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "propagate", "demo", "data prepare"):
        assert f"\n  {command} " in out, command


@pytest.mark.parametrize(("weight", "match"), [(".nan", "nan"), ("-1.0", "-1.0")])
def test_bad_regularizer_weight_in_yaml_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture, weight: str, match: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"model:\n  regularizers:\n  - class_path: rloss.regularizers.SizeLoss\n"
        f"    init_args:\n      weight: {weight}\n"
    )
    err = short_error(capsys, demo_fit("--config", str(config)))
    assert f"rloss: error: weight must be a finite number >= 0, got {match}" in err


def test_regularizer_weight_checked_at_construction() -> None:
    for weight in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="weight"):
            DenseCRFLoss(weight=weight)


def test_missing_data_root_and_checkpoint_are_short_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = short_error(capsys, voc_fit(tmp_path / "nowhere"))
    assert f"rloss: error: VOC dataset root {tmp_path / 'nowhere'} has no" in err
    assert "rloss: error: --ckpt_path nothere.ckpt: no such checkpoint file" in short_error(
        capsys, demo_fit("--ckpt_path", "nothere.ckpt")
    )
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 truncated")
    assert f"--ckpt_path {tmp_path / 'broken.ckpt'}: the checkpoint is unreadable" in short_error(
        capsys, demo_fit("--ckpt_path", str(tmp_path / "broken.ckpt"))
    )


def test_debug_mode_keeps_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLOSS_DEBUG", "1")
    with pytest.raises(Exception, match="has no"):
        main(voc_fit(tmp_path / "nowhere"))


def test_console_command_exits_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rloss", *voc_fit(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "rloss: error: VOC dataset root" in result.stderr


def test_offline_weights_fail_fast_naming_backbone_and_fix(
    voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setattr("rloss.models.pretrained.unreachable", lambda url: "download.pytorch.org unreachable: test")
    args = [a for a in voc_fit(voc_root) if a not in ("--model.weights_backbone", "null")]
    err = short_error(capsys, args)
    assert "rloss: error: backbone 'lraspp_mobilenet_v3_large': its ImageNet weights are not cached" in err
    assert "--model.weights_backbone null" in err and str(tmp_path / "hub" / "checkpoints") in err
    # the data root is checked first
    assert "VOC dataset root" in short_error(capsys, [*args, "--data.root", str(tmp_path / "nowhere")])


def corrupt_copy(voc_root: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the miniature VOC tree with a truncated train JPEG and a mask holding class 40."""
    root = Path(shutil.copytree(voc_root, tmp_path / "voc", ignore=shutil.ignore_patterns(".rloss-cache")))
    jpeg = root / VOC_DIR / "JPEGImages" / "2007_000001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    mask = root / VOC_DIR / "SegmentationClassAug" / "2007_000002.png"
    array = np.array(Image.open(mask))
    array[0, 0] = 40
    save_label(array, mask)
    return root, jpeg, mask


def test_corrupt_jpeg_in_train_split_fails_before_step_1(
    voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root, jpeg, mask = corrupt_copy(voc_root, tmp_path)
    steps: list[int] = []
    monkeypatch.setattr(ScribbleSegmentation, "on_train_start", lambda self: steps.append(self.global_step))
    err = short_error(capsys, voc_fit(root))
    assert "rloss: error: 2 bad file(s) or value(s) in split 'train_aug'" in err
    assert f"{jpeg}: cannot decode the image" in err and f"{mask}: holds class id 40" in err
    assert steps == [] and not (tmp_path / "ckpt").exists()


def test_verification_is_cached_per_split_and_rechecks_changed_files(
    voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(shutil.copytree(voc_root, tmp_path / "voc", ignore=shutil.ignore_patterns(".rloss-cache")))
    checked: list[str] = []
    check = rloss.data.verify.check_sample
    monkeypatch.setattr(rloss.data.verify, "check_sample", lambda f, k: checked.append(f["image"].stem) or check(f, k))
    dm = VOCScribbleDataModule(str(root), crop_size=32, num_workers=0)
    dm.setup("fit")
    assert len(checked) == 6  # 4 train + 2 val
    checked.clear()
    dm.setup("fit")
    assert checked == []
    image = root / VOC_DIR / "JPEGImages" / "2007_000003.jpg"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(DataError, match="2007_000003.jpg: cannot decode"):
        dm.setup("fit")
    assert checked == ["2007_000003"]
    assert VOCScribbleDataModule(str(root), verify=False).setup("fit") is None  # the switch skips it


def test_non_finite_loss_stops_naming_the_term_and_keeps_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    size = ("--config", str(CONFIGS / "demo" / "size.yaml"))
    assert main(demo_fit(*size, "--trainer.max_steps", "3")) is None
    last = tmp_path / "ckpt" / "last.ckpt"
    before = last.read_bytes()
    monkeypatch.setattr(SizeLoss, "energy", lambda self, *args, **kwargs: torch.tensor(float("nan")))
    err = short_error(capsys, demo_fit(*size, "--trainer.max_steps", "6", "--ckpt_path", "last"))
    assert "rloss: error: non-finite loss at training step 3: SizeLoss = nan" in err
    assert last.read_bytes() == before


def test_pce_is_computed_in_float32_under_half_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ScribbleSegmentation(num_classes=3, backbone="tiny", weights_backbone=None)
    logits = torch.full((1, 3, 8, 8), 0.0, dtype=torch.float16)
    logits[:, 0] = 60000.0  # log-softmax in half precision overflows
    monkeypatch.setattr(model, "forward", lambda images: logits)
    scribble = torch.full((1, 8, 8), IGNORE_INDEX)
    scribble[0, 0, :4] = 1
    batch = {"image": torch.zeros(1, 3, 8, 8), "scribble": scribble, "mask": torch.zeros(1, 8, 8, dtype=torch.long)}
    loss = model.training_step(batch, 0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 1000


def test_size_loss_rejects_scribble_ids_not_below_k() -> None:
    probs = torch.full((1, 3, 4, 4), 1 / 3)
    labels = torch.full((1, 4, 4), IGNORE_INDEX)
    labels[0, 0, 0] = 3
    with pytest.raises(ValueError, match="class id 3; expected 0..2"):
        SizeLoss()(torch.zeros(1, 3, 4, 4), probs, None, labels)


@pytest.mark.parametrize("message", ["💡 Tip: try installing litlogger", "💡 Tip: try installing litmodels"])
def test_known_noise_filtered_and_other_messages_kept(message: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)
    assert not drop_noise(record)
    assert drop_noise(logging.LogRecord("x", logging.INFO, __file__, 1, "GPU available: False", None, None))


def test_fit_output_has_no_tip_or_leafspec_warning(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    result = subprocess.run(
        [sys.executable, "-m", "rloss", *demo_fit("--trainer.max_steps", "1")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "litlogger" not in output and "LeafSpec" not in output
    assert "GPU available" in output  # Lightning's other messages are kept
