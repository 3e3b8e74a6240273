"""ACDC: the DataModule on the real fixture (tests/data/acdc), the published folds and the
validation patients, the augmentation, per-volume Dice / HD95 against an independent computation,
and a fit + test of the UNet through the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage

from rloss.commands import main
from rloss.data.acdc import ACDCDataModule, augment, fold_patients, patient_of, validation_patients
from rloss.data.constants import IGNORE_INDEX, PAD_INDEX
from rloss.metrics import dice_hd95, volume_scores
from rloss.models import build_backbone
from rloss.tools.prior import load_predictor

FIXTURE = Path(__file__).parent / "data" / "acdc"


@pytest.fixture
def acdc_root(tmp_path: Path) -> Path:
    """A writable copy of the fixture (verification writes its cache under the root)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "acdc"))


def test_folds_partition_the_patients_and_validation_never_touches_the_test_fold() -> None:
    folds = [fold_patients(k) for k in range(1, 6)]
    assert set().union(*folds) == set(range(1, 101)) and sum(map(len, folds)) == 100
    assert fold_patients(3) == set(range(41, 61))
    for k in range(1, 6):
        val = validation_patients(k, 8)
        assert len(val) == 8 and not val & folds[k - 1]
        assert {(p - 1) // 20 for p in val} == set(range(5)) - {k - 1}  # every other pathology group
    with pytest.raises(ValueError, match="fold must be an integer in 1..5"):
        fold_patients(6)


def test_splits_by_patient_on_the_fixture(acdc_root: Path) -> None:
    data = ACDCDataModule(str(acdc_root), fold=3, val_patients=0, size=64, num_workers=0)  # 041 is in fold 3
    data.setup("fit")
    data.setup("test")
    assert {patient_of(p) for p in data.train_dataset.paths} == {91}
    assert {p.stem for p in data.test_dataset.paths} == {"patient041_frame01", "patient041_frame11"}
    item = data.train_dataset[0]
    assert item["image"].shape == (1, 64, 64) and item["scribble"].shape == (64, 64)
    assert set(item["scribble"].unique().tolist()) <= {0, 1, 2, 3, IGNORE_INDEX, PAD_INDEX}
    volume = data.test_dataset.collate([data.test_dataset[0]])
    with h5py.File(acdc_root / "ACDC_training_volumes" / "patient041_frame01.h5") as h5:
        assert torch.equal(volume["mask"][0], torch.from_numpy(h5["label"][()].astype(np.int64)))
        assert volume["image"].shape == (1, h5["image"].shape[0], 1, *h5["image"].shape[1:])


def test_scribble_value_4_is_unlabeled_and_bad_files_are_named(acdc_root: Path) -> None:
    data = ACDCDataModule(str(acdc_root), fold=3, val_patients=0, size=256, num_workers=0)
    data.setup("fit")
    path = data.train_dataset.paths[0]
    with h5py.File(path) as h5:
        raw = h5["scribble"][()]
    item = data.train_dataset.__class__([path], 256, train=False)[0]
    if raw.shape == (256, 256):
        assert torch.equal(item["scribble"] == IGNORE_INDEX, torch.from_numpy(raw == 4))
    with h5py.File(path, "r+") as h5:
        h5["scribble"][0, 0] = 7
    broken = data.train_dataset.paths[1]
    with h5py.File(broken, "r+") as h5:
        del h5["image"]
    with pytest.raises(ValueError) as error:
        ACDCDataModule(str(acdc_root), fold=3, val_patients=0, num_workers=0).setup("fit")
    message = str(error.value)
    assert f"{path}: scribble holds values in [0, 7]; expected 0..4" in message
    assert f"{broken}: has no dataset 'image'" in message


def test_augmentation_moves_image_and_labels_together() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 24, 24)
    label = (image[0] * 3).long()
    for seed in range(20):
        import random

        random.seed(seed)
        out, (moved,) = augment(image, [label])
        inside = moved != PAD_INDEX
        assert torch.equal((out[0] * 3).long()[inside], moved[inside])  # same geometric transform


def brute_hd95(a: np.ndarray, b: np.ndarray) -> float:
    """95th percentile of the symmetric surface distances, by exhaustive pairwise distances."""
    def surface(m: np.ndarray) -> np.ndarray:
        return np.argwhere(m & ~ndimage.binary_erosion(m, ndimage.generate_binary_structure(m.ndim, 1)))

    sa, sb = surface(a), surface(b)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.hstack([d.min(1), d.min(0)]), 95))


def test_dice_and_hd95_against_an_independent_computation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = ndimage.binary_dilation(rng.random((4, 20, 20)) > 0.97, iterations=2)
        b = ndimage.binary_dilation(rng.random((4, 20, 20)) > 0.97, iterations=2)
        dice, hd95 = dice_hd95(a, b)
        assert dice == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
        assert hd95 == pytest.approx(brute_hd95(a, b))
    empty = np.zeros((3, 8, 8), bool)
    full = empty.copy()
    full[1, 2:4, 2:4] = True
    assert dice_hd95(empty, empty) == (1.0, 0.0)
    assert dice_hd95(empty, full) == (0.0, pytest.approx(np.sqrt(4 + 49 + 49)))
    scores = volume_scores(torch.from_numpy(full.astype(np.int64) * 2), torch.from_numpy(full.astype(np.int64) * 2), 4)
    assert scores.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]  # absent RV/LV in both: 1, 0


def test_unet_matches_the_protocol() -> None:
    net = build_backbone("unet", num_classes=4, weights_backbone=None, in_channels=1)
    assert sum(p.numel() for p in net.parameters()) == 1_813_764  # the protocol's "1.81M"
    assert not net.normalized
    with torch.no_grad():
        assert net.eval()(torch.rand(2, 1, 40, 56)).shape == (2, 4, 40, 56)


def test_fit_and_test_through_the_cli(acdc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = [
        "--config", "configs/experiments/acdc/unet.yaml", "--config", "configs/protocol/acdc_cpu.yaml",
        "--config", "configs/logger/csv.yaml", "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--data.init_args.root", str(acdc_root), "--data.init_args.fold", "3", "--data.init_args.val_patients", "0",
        "--data.init_args.size", "32", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
    ]
    ckpt = tmp_path / "ckpt"
    common += ["--checkpoint.dirpath", str(ckpt), "--last_checkpoint.dirpath", str(ckpt)]
    assert main(["fit", *common, "--trainer.max_steps", "2", "--trainer.val_check_interval", "1",
                 "--model.regularizers+=configs/regularizer/acdc_gatedcrf.yaml"]) is None
    assert main(["test", *common, "--ckpt_path", str(ckpt / "last.ckpt")]) is None
    assert load_predictor(ckpt / "last.ckpt", 4, "--classes").prediction_size == 32  # predicted as trained
    metrics = next(tmp_path.glob("csv/*/metrics.csv")).read_text() if list(tmp_path.glob("csv/*/metrics.csv")) else ""
    out = capsys.readouterr().out
    assert "test/dice" in out + metrics and "test/hd95/RV" in out + metrics
