"""Issue 20: every failure a named line, no silent garbage. One test per class of input error, each
with several inputs: the run stops with one ``rloss: error:`` line (exit 2, no traceback) naming what
was wrong and what is expected, before it writes anything that looks like a result."""

from __future__ import annotations

import errno
import io
import math
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.cli import LightningCLI
from torch.utils.data import DataLoader, Dataset

from helpers import CONFIGS, cli_error, demo_args, write_folder
from prepare_fixtures import build_archives, md5
from rloss.commands import main
from rloss.data import files
from rloss.data.base import SegmentationDataModule
from rloss.data.constants import IGNORE_INDEX, PAD_INDEX
from rloss.data.synthetic import SYNTHETIC_CLASSES
from rloss.models import ScribbleSegmentation
from rloss.training.cli import short_parser_error
from rloss.utils.errors import DataError, user_error

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


class FullDisk(io.BytesIO):
    """A file on a device with no space left: every write fails as the operating system's does."""

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_files_that_cannot_be_read_or_written_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_folder(tmp_path / "mine", train=1, val=0)
    image, scribbles = tmp_path / "mine" / "images" / "case0.png", tmp_path / "mine" / "scribbles" / "case0.png"
    Path("afile").write_text("a file where a folder is expected")
    propagate = ["propagate", "--image", str(image), "--scribbles", str(scribbles), "--output"]
    for args, expected in [
        (["propagate", "--image", "nope.png", "--scribbles", str(scribbles), "--output", "o.png"],
         "--image nope.png: no such file or folder"),
        (["propagate", "--image", str(image), "--scribbles", "nope.png", "--output", "o.png"],
         "--scribbles nope.png: no such file or folder"),
        (demo("fit", "--checkpoint.dirpath", "afile/ckpt"),
         f"{tmp_path}/afile/ckpt: a part of the path is a file; expected a folder"),
        (demo("predict", "--model.init_weights", str(save_checkpoint(tmp_path / "w.ckpt")),
              "--data.init_args.predict_dir", str(image.parent), "--predict_writer.output_dir", "afile/masks"),
         "afile/masks: a part of the path is a file; expected a folder"),
    ]:
        assert error_line(capsys, args) == f"rloss: error: {expected}"
    if os.geteuid() != 0:  # root writes anywhere
        Path("locked").mkdir(mode=0o555)
        assert "locked/o.png: permission denied" in error_line(capsys, [*propagate, "locked/o.png"])
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", lambda *args, **kwargs: FullDisk().write(b""))
        assert error_line(capsys, [*propagate, "o.png"]) == (
            "rloss: error: o.png: no space left on the device; free some space or write elsewhere"
        )
    # the disk fills up after the first checkpoint: torch's own error becomes the named line, the file is kept
    open_file, writes = Path.open, []

    def fills_up(path: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if path.suffix == ".ckpt" and "w" in mode:
            writes.append(path)
            if len(writes) > 1:
                return FullDisk()
        return open_file(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", fills_up)
    line = error_line(capsys, demo("fit", "--trainer.max_steps", "3", "--last_checkpoint.every_n_train_steps", "1"))
    assert line == (f"rloss: error: cannot write a checkpoint: {tmp_path}/ckpt/last.ckpt: no space left on the device; "
                    "free some space or write elsewhere; the previous checkpoints are kept")
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.ckpt"]  # no temp file left


def test_truncated_or_corrupt_archives_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archives = build_archives(tmp_path / "archives")
    with tarfile.open(archives["voc"]) as tar:
        boundary = tar.getmembers()[3].offset  # cut there, tar lists 3 members and stops without a word

    def flip_first_xml_byte(data: bytes) -> bytes:
        at = data.index(b"<annotation") + 3
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]

    for name, corrupt, expected, content in [
        ("voc", lambda data: data[:boundary], "truncated or corrupt tar archive: no end-of-archive marker after member",
         "VOCdevkit"),
        ("voc", lambda data: data[: len(data) // 2 + 100], "truncated or corrupt", "VOCdevkit"),
        ("sbd", lambda data: data[: len(data) // 2], "truncated or corrupt archive (Compressed file ended",
         "benchmark_RELEASE"),
        ("scribbles", flip_first_xml_byte,
         "corrupt member 'scribble_annotation/pascal_2012/2007_000032.xml' (its CRC-32 differs)",
         "scribble_annotation"),
    ]:
        folder = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(archives["voc"].parent, folder)
        bad = folder / archives[name].name
        bad.write_bytes(corrupt(bad.read_bytes()))
        pins = [f"--checksum={key}=md5:{md5(folder / archives[key].name)}" for key in ("voc", "sbd")]
        root = folder / "data"
        line = error_line(capsys, ["data", "prepare", "--root", str(root), "--from-dir", str(folder), *pins])
        assert line.startswith(f"rloss: error: data prepare: {bad}: {expected}"), line
        assert line.endswith("; delete it and download it again"), line
        assert not (root / content).exists()  # checked before anything is extracted
    for dataset in ("voc", "acdc"):
        assert error_line(capsys, ["data", "prepare", dataset, "--root", str(archives["voc"])]).endswith(
            f"argument --root: {archives['voc']} exists and is not a folder"
        )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_above_the_pixel_limit_are_named_and_every_bad_file_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", 600)  # the 24 x 24 images pass
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow: a warning above 500 pixels, an error above 1,000
    root = write_folder(tmp_path / "mine", train=5, val=0)
    images = root / "images"
    Image.new("L", (30, 30)).save(images / "case1.png")  # rloss's limit
    Image.new("1", (40, 40)).save(images / "case2.png")  # Pillow's
    (images / "case3.png").write_bytes((images / "case3.png").read_bytes()[:100])
    Image.new("L", (8, 8)).save(root / "scribbles" / "case4.png")
    too_large = "expected at most 600 (rloss.data.files.MAX_IMAGE_PIXELS; tile larger images)"
    assert str(pytest.raises(ValueError, files.read_image, images / "case1.png").value) == (
        f"{images / 'case1.png'}: the image has 30 x 30 = 900 pixels; {too_large}"
    )
    err = cli_error(capsys, folder_fit(root))
    assert f"4 bad file(s) or value(s) in the train split of {root}:" in err
    assert f"{images / 'case1.png'}: the image has 30 x 30 = 900 pixels; {too_large}" in err
    assert f"{images / 'case2.png'}: the image has more than 1,000 pixels; {too_large}" in err
    assert f"{images / 'case3.png'}: cannot decode the image" in err
    assert f"{root / 'scribbles' / 'case4.png'}: label size 8x8 (HxW) differs from its image 24x24" in err
    line = error_line(capsys, ["propagate", "--image", str(images / "case2.png"), "--scribbles",
                               str(root / "scribbles" / "case2.png"), "--output", "o.png"])
    assert line == f"rloss: error: {images / 'case2.png'}: the image has more than 1,000 pixels; {too_large}"


class Raising(Dataset):
    """A dataset whose every item raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> object:
        raise self.error


def worker_raised(error: Exception) -> Exception:
    """What the main process receives when a DataLoader worker raises ``error``."""
    with pytest.raises(type(error)) as raised:
        next(iter(DataLoader(Raising(error), num_workers=1)))
    assert "in DataLoader worker process 0" in str(raised.value)
    return raised.value


def test_errors_in_dataloader_workers_arrive_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_folder(tmp_path / "mine", train=4, val=0)
    truncated = root / "images" / "case2.png"
    truncated.write_bytes(truncated.read_bytes()[:100])
    decode = f"rloss: error: {truncated}: cannot decode the image ("
    workers = ("--data.num_workers", "2")
    assert error_line(capsys, folder_fit(root, *workers, "--data.verify", "false")).startswith(decode)
    predict = ("--data.init_args.predict_dir", str(root / "images"), "--predict_writer.output_dir", "masks")
    assert error_line(capsys, demo("predict", "--model.init_weights", str(save_checkpoint(tmp_path / "w.ckpt")),
                                   "--data.init_args.num_workers", "2", *predict)).startswith(decode)
    assert not (tmp_path / "masks").exists()
    for error, expected in [
        (OSError(errno.ENOSPC, "No space left on device", "/data/x.png"), "/data/x.png: no space left on the device"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/y.png"), "/data/y.png: no such file or"),
        (DataError("2 bad file(s):\n  /data/a.png\n  /data/b.png"), "2 bad file(s):\n  /data/a.png\n  /data/b.png"),
    ]:
        assert str(user_error(worker_raised(error))).startswith(expected)
    assert user_error(worker_raised(ValueError("an internal bug"))) is None  # not one of rloss's checks: a traceback


def folder_fit(root: Path, *extra: str) -> list[str]:
    """Two training steps on the folder dataset ``root`` (tiny network, no validation)."""
    return [
        "fit", "--config", str(CONFIGS / "data" / "folder.yaml"), "--data.root", str(root), "--data.crop_size", "16",
        "--data.batch_size", "2", "--data.num_workers", "0", "--model.backbone", "tiny",
        "--model.weights_backbone", "null", "--trainer.max_steps", "2", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0",
        "--checkpoint.dirpath", "ckpt", *extra,
    ]
