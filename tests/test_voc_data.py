"""VOCScribbleDataModule: layout checks, train crops, whole-image validation, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rloss.data.base import ImageFolderDataset
from rloss.data.constants import IGNORE_INDEX, PAD_INDEX, SCRIBBLE_DIR, VOC_DIR
from rloss.data.transforms import MEAN_RGB
from rloss.data.voc import VOCScribbleDataModule
from voc_fixtures import SIZES, make_voc_tree, save_label


def datamodule(root: Path, **kwargs) -> VOCScribbleDataModule:
    kwargs = {"crop_size": 32, "batch_size": 2, "num_workers": 0, **kwargs}
    return VOCScribbleDataModule(str(root), **kwargs)


def test_train_batches_are_crops_with_the_item_contract(voc_root: Path) -> None:
    dm = datamodule(voc_root)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["scribble"].shape == batch["mask"].shape == (2, 32, 32)
    assert batch["scribble"].dtype == batch["mask"].dtype == torch.int64
    assert 0 <= batch["image"].min() and batch["image"].max() <= 255
    assert len(batch["name"]) == 2
    for key in ("scribble", "mask"):
        values = set(batch[key].unique().tolist())
        assert values <= set(range(21)) | {IGNORE_INDEX, PAD_INDEX}


def test_crops_larger_than_the_image_pad_with_mean_and_254(voc_root: Path) -> None:
    dm = datamodule(voc_root, crop_size=150, scale_range=(1.0, 1.0))
    dm.setup("fit")
    item = dm.train_dataset[0]
    padded = item["mask"] == PAD_INDEX
    assert padded.any() and torch.equal(padded, item["scribble"] == PAD_INDEX)
    pixels = item["image"].permute(1, 2, 0)[padded]
    assert torch.allclose(pixels, torch.tensor(MEAN_RGB).expand_as(pixels))
    assert int((~padded).sum()) == SIZES[0][0] * SIZES[0][1]


def test_validation_scores_whole_images_padded_to_the_batch(voc_root: Path) -> None:
    dm = datamodule(voc_root, val_batch_size=2)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    (h0, w0), (h1, w1) = SIZES
    assert batch["image"].shape == (2, 3, h0, w0)
    assert (batch["mask"][1, h1:] == PAD_INDEX).all() and (batch["mask"][1, :, w1:] == PAD_INDEX).all()
    assert (batch["mask"][1, :h1, :w1] != PAD_INDEX).all()
    assert (batch["scribble"][0] == IGNORE_INDEX).all()  # validation needs no scribbles


def test_missing_root_names_path_layout_and_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        datamodule(tmp_path / "nowhere")  # at construction: before the model fetches weights
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "SegmentationClassAug" in message
    assert f"rloss data prepare --root {tmp_path / 'nowhere'}" in message


def test_missing_scribble_file_is_named(voc_root: Path, tmp_path: Path) -> None:
    root = shutil.copytree(voc_root, tmp_path / "voc")
    missing = root / SCRIBBLE_DIR / "2007_000001.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="rloss data prepare") as info:
        datamodule(root).setup("fit")
    assert str(missing) in str(info.value)


def test_missing_split_list_is_named(tmp_path: Path) -> None:
    root = make_voc_tree(tmp_path, num_train=1, num_val=1)
    (root / VOC_DIR / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        datamodule(root).setup("validate")


@pytest.mark.parametrize(
    ("label", "match"),
    [(np.full((10, 10), IGNORE_INDEX, np.uint8), "differs from its image"), (None, "class id 30")],
)
@pytest.mark.parametrize("verify", [True, False], ids=["verified_at_setup", "named_during_training"])
def test_bad_scribble_png_names_file_and_value(
    tmp_path: Path, label: np.ndarray | None, match: str, verify: bool
) -> None:
    root = make_voc_tree(tmp_path, num_train=1, num_val=1)
    path = root / SCRIBBLE_DIR / "2007_000000.png"
    if label is None:
        label = np.array(Image.open(path))
        label[0, 0] = 30
    save_label(label, path)
    dm = datamodule(root, verify=verify)
    with pytest.raises(ValueError, match=match) as info:
        dm.setup("fit")
        dm.train_dataset[0]
    assert str(path) in str(info.value)


def test_predict_folder_keeps_image_sizes(tmp_path: Path) -> None:
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path, 3)
    assert [item["name"] for item in dataset] == ["img0", "img1"]
    assert [tuple(item["size"].tolist()) for item in dataset] == list(SIZES)


def test_predict_folder_gives_images_the_model_channels(tmp_path: Path) -> None:
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(tmp_path / "gray.png")
    image = ImageFolderDataset(tmp_path, 3)[0]["image"]
    assert image.shape == (3, 3, 4)
    assert all(np.array_equal(image[c].numpy(), np.arange(12.0).reshape(3, 4)) for c in range(3))
    assert ImageFolderDataset(tmp_path, 1)[0]["image"].shape == (1, 3, 4)
