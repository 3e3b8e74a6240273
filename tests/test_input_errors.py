"""Issue 20: every failure a named line, no silent garbage. One test per class of input error, each
with several inputs: the run stops with one ``rloss: error:`` line (exit 2, no traceback) naming what
was wrong and what is expected, before it writes anything that looks like a result."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.cli import LightningCLI
from torch.utils.data import Dataset

from helpers import cli_error, demo_args
from rloss.commands import main
from rloss.data.base import SegmentationDataModule
from rloss.data.constants import IGNORE_INDEX, PAD_INDEX
from rloss.data.synthetic import SYNTHETIC_CLASSES
from rloss.models import ScribbleSegmentation
from rloss.training.cli import short_parser_error

K = len(SYNTHETIC_CLASSES)

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("in_tmp"),
]


def demo(command: str, *extra: str) -> list[str]:
    """A two-step run of the demo config on 8 synthetic images."""
    return demo_args(command, "--trainer.max_steps", "2", *extra, num_train=8, num_val=2)


def error_line(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """The one ``rloss: error:`` line of ``rloss args`` (see helpers.cli_error)."""
    return next(line for line in cli_error(capsys, args).splitlines() if line.startswith("rloss: error: "))


def save_checkpoint(path: Path, hyper_parameters: bool = True, **settings: object) -> Path:
    """A checkpoint as Lightning writes it (state_dict, hyper_parameters, version) of a random network."""
    model = ScribbleSegmentation(weights_backbone=None, **{"num_classes": K, "backbone": "tiny", **settings})
    checkpoint = {"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__}
    if hyper_parameters:
        checkpoint["hyper_parameters"] = dict(model.hparams)
    torch.save(checkpoint, path)
    return path


def test_bad_model_and_trainer_settings_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {"lr": (-1.0, 0.0), "head_lr_mult": (0.0, -2.0), "momentum": (-0.1, 1.0), "weight_decay": (-1e-4,),
           "poly_power": (-1.0,)}
    for name, values in bad.items():
        for value in (*values, math.nan, math.inf):
            with pytest.raises(ValueError, match=f"model.{name} must be a finite number"):
                ScribbleSegmentation(num_classes=2, backbone="tiny", weights_backbone=None, **{name: value})
    for args, expected in [
        (["--model.lr", "-1"], "model.lr must be a finite number > 0, got -1.0"),
        (["--model.momentum", "1.5"], "model.momentum must be a finite number >= 0 and < 1, got 1.5"),
        (["--model.weight_decay", "-0.1"], "model.weight_decay must be a finite number >= 0, got -0.1"),
        (["--model.poly_power", "-1"], "model.poly_power must be a finite number >= 0, got -1.0"),
        (["--model.head_lr_mult", "0"], "model.head_lr_mult must be a finite number > 0, got 0.0"),
        (["--trainer.max_steps", "-5"], "--trainer settings: `max_steps` must be a non-negative integer or -1"),
        (["--trainer.devices", "x"], "--trainer settings: `devices` selected with `CPUAccelerator` should be an int"),
    ]:
        assert expected in error_line(capsys, demo("fit", *args))
    for setting, shown in [("lr: .nan", "model.lr must be a finite number > 0, got nan"),
                           ("weight_decay: .inf", "model.weight_decay must be a finite number >= 0, got inf")]:
        config = tmp_path / "bad.yaml"
        config.write_text(f"model:\n  {setting}\n")  # YAML reads NaN and inf, the command line does not
        assert shown in error_line(capsys, demo("fit", "--config", str(config)))
    if not torch.cuda.is_available():
        assert "--trainer settings: No supported gpu backend" in error_line(
            capsys, demo("fit", "--trainer.accelerator", "gpu")
        )
    assert not (tmp_path / "ckpt").exists()

    def bug(self: LightningCLI, **kwargs: object) -> None:
        raise ValueError("an internal bug while the Trainer is built")

    monkeypatch.setattr(LightningCLI, "instantiate_trainer", bug)
    with pytest.raises(ValueError, match="internal bug"):  # not Lightning's own check: the traceback is kept
        main(demo("fit"))


class Foreign:
    """An object that ``torch.load(weights_only=True)`` refuses to unpickle."""


def test_checkpoint_of_another_model_or_no_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other_classes = save_checkpoint(tmp_path / "k5.ckpt", num_classes=5)
    other_backbone = save_checkpoint(tmp_path / "unet.ckpt", hyper_parameters=False, backbone="unet")
    weights_alone = tmp_path / "weights.pt"
    torch.save(torch.load(other_classes, weights_only=True)["state_dict"], weights_alone)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(save_checkpoint(tmp_path / "good.ckpt").read_bytes()[:4000])
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "note": Foreign()}, foreign)
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("notes.txt", "not a checkpoint")
    held = f"this run builds (backbone tiny, num_classes {K}, in_channels 3)"
    for option in ("--ckpt_path", "--model.init_weights"):
        for command in ("fit", "predict"):
            line = error_line(capsys, demo(command, option, str(other_classes)))
            assert f"{option} {other_classes} holds another network (backbone tiny, num_classes 5" in line
            assert held in line and "model.head.2.weight has shape (5, 32, 1, 1)" in line
        line = error_line(capsys, demo("fit", option, str(other_backbone)))
        assert f"{other_backbone} holds another network (no hyper_parameters) than {held}" in line
        assert "missing weight(s) (e.g. model.stem.0.weight)" in line
        assert f"{truncated}: the checkpoint is unreadable" in error_line(capsys, demo("fit", option, str(truncated)))
        assert f"{jpeg}: the checkpoint is unreadable" in error_line(capsys, demo("predict", option, str(jpeg)))
        assert f"{foreign}: torch cannot load it (Unsupported global: GLOBAL {__name__}.Foreign" in error_line(
            capsys, demo("fit", option, str(foreign))
        )
        assert f"{archive}: the checkpoint is a zip archive but not a PyTorch file" in error_line(
            capsys, demo("fit", option, str(archive))
        )
    assert f"--ckpt_path {weights_alone}: holds no Lightning training state" in error_line(
        capsys, demo("fit", "--ckpt_path", str(weights_alone))
    )
    assert not (tmp_path / "ckpt").exists()


def test_predict_refuses_an_untrained_network(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16)).save(images / "a.png")
    predict = ("--data.init_args.predict_dir", str(images), "--predict_writer.output_dir", "masks")
    for extra in ((), ("--ckpt_path", "last"), ("--model.weights_backbone", "imagenet")):
        line = error_line(capsys, demo("predict", *predict, *extra))
        assert "predict: no --ckpt_path (nor --model.init_weights): the masks would come from an untrained" in line
    assert not (tmp_path / "masks").exists()
    assert main(demo("predict", *predict, "--model.init_weights", str(save_checkpoint(tmp_path / "w.ckpt")))) is None
    assert (tmp_path / "masks" / "a.png").is_file()


class ConstantDataset(Dataset):
    """Four 16x16 images, half class 0, half class 1, whose scribbles are all ``scribble``."""

    def __init__(self, scribble: int) -> None:
        self.scribble = scribble

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, object]:
        mask = torch.zeros(16, 16, dtype=torch.long)
        mask[:, 8:] = 1
        image = mask[None].float().expand(3, -1, -1) * 200.0
        return {"image": image, "scribble": torch.full_like(mask, self.scribble), "mask": mask, "name": str(index)}


class ConstantScribbles(SegmentationDataModule):
    """Two classes; every scribble pixel is ``scribble`` (255 unlabeled, 254 padding)."""

    def __init__(self, scribble: int = IGNORE_INDEX) -> None:
        super().__init__(num_classes=2, batch_size=2, val_batch_size=2, num_workers=0)
        self.scribble = scribble

    def make_dataset(self, split: str) -> Dataset:
        return ConstantDataset(self.scribble)


def test_training_without_labeled_pixels_stops(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def fit(*extra: str) -> list[str]:
        return [
            "fit", "--data", f"{__name__}.ConstantScribbles", "--model.backbone", "tiny",
            "--model.weights_backbone", "null", "--trainer.accelerator", "cpu", "--trainer.max_steps", "20",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0",
            "--checkpoint.dirpath", "ckpt", *extra,
        ]

    for value in (IGNORE_INDEX, PAD_INDEX):
        line = error_line(capsys, fit("--data.init_args.scribble", str(value)))
        assert "no labeled pixel in the first 20 training batches: every scribble pixel is 255" in line
        assert not (tmp_path / "ckpt" / "last.ckpt").exists()
    assert main(fit("--model.supervision", "full")) is None  # full supervision trains on the masks
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_config_file_errors_name_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for text, expected in [
        ("model:\n  lr: 0.1\n bad: [\n", ": line 3, column 2: "),
        ("model:\n\tlr: 0.1\n", ": line 2, column 1: found character '\\t' that cannot start any token"),
        ("- model\n- trainer\n", ": the top level is a list; expected a mapping (key: value)"),
        ("just text\n", ": the top level is a str; expected a mapping"),
    ]:
        config = tmp_path / "config.yaml"
        config.write_text(text)
        for form in (["--config", str(config)], [f"--config={config}"], ["-c", str(config)]):
            line = error_line(capsys, ["fit", *form])
            assert line.startswith(f"rloss: error: --config {config}{expected}"), line
            assert "<unicode string>" not in line


def test_long_parser_errors_are_one_short_line(capsys: pytest.CaptureFixture) -> None:
    for args, expected in [
        (["--trainer.precision", "17"], "trainer.precision: got 17; expected one of: 64, 32, 16, transformer-engine"),
        (["--model.regularizers", '[{"class_path": "SizeLoss", "init_args": {"weight": "heavy"}}]'],
         "model.regularizers: rloss.regularizers.SizeLoss: weight: got heavy; expected float"),
        (["--model.regularizers", '[{"class_path": "rloss.regularizers.Nope"}]'],
         "model.regularizers: rloss.regularizers.Nope: module 'rloss.regularizers' has no attribute 'Nope'"),
        (["--data.init_args.batch_size", "x"],
         "data: rloss.data.synthetic.SyntheticScribbleDataModule: batch_size: got x; expected int"),
        (["--data", "Nope"], "data: got Nope; expected one of: a class path (package.module.Class), null"),
    ]:
        line = error_line(capsys, demo("fit", *args))
        assert line == f"rloss: error: {expected}" or line.startswith(f"rloss: error: {expected}, "), line
        assert len(line) < 200 and "run '" not in line, line
    assert short_parser_error("unrecognized arguments:\n  --x 1") == "unrecognized arguments: --x 1"


def test_non_finite_weights_are_never_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = tmp_path / "ckpt" / "last.ckpt"
    # lr 1e6: the BatchNorm statistics overflow at step 3 (the loss is still finite), the loss after it
    line = error_line(capsys, demo("fit", "--model.lr", "1e6", "--data.init_args.num_train", "16",
                                   "--trainer.max_steps", "8", "--last_checkpoint.every_n_train_steps", "1"))
    assert "(e.g. net.model.context.0.1.running_var) became NaN/inf by training step 3; last.ckpt not written" in line
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values() if value.is_floating_point())
    # the last update of a run overflows: the end-of-training save stops the run instead of exit 0
    last.unlink()
    monkeypatch.setattr(ScribbleSegmentation, "on_train_batch_end",
                        lambda self, *args: self.net.model.head[2].bias.data.fill_(math.nan), raising=False)
    line = error_line(capsys, demo("fit", "--trainer.max_steps", "1"))
    assert "1 weight(s) or statistic(s) (e.g. net.model.head.2.bias) became NaN/inf by training step 1" in line
    assert not last.exists()
