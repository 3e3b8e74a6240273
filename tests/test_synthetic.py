"""The synthetic scribble dataset: determinism, scribble statistics, the data contract, the DataModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from rloss.data.constants import IGNORE_INDEX
from rloss.data.synthetic import SyntheticScribbleDataModule, SyntheticScribbleDataset
from rloss.data.synthetic_scenes import SYNTHETIC_CLASSES, generate_sample

SIZE = 64
NUM_IMAGES = 50


@pytest.fixture(scope="module")
def samples():
    """50 training samples of the default configuration (about 1 s to generate)."""
    dataset = SyntheticScribbleDataset(NUM_IMAGES, SIZE, seed=0, split="train")
    return [dataset.sample(i) for i in range(NUM_IMAGES)]


def test_same_seed_gives_identical_arrays():
    first, second = generate_sample(7, SIZE), generate_sample(7, SIZE)
    for name in ("image", "mask", "scribble"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_different_seeds_give_different_arrays():
    first, second = generate_sample(7, SIZE), generate_sample(8, SIZE)
    assert not np.array_equal(first.image, second.image)
    assert not np.array_equal(first.scribble, second.scribble)


def test_splits_and_dataset_seeds_differ():
    train = SyntheticScribbleDataset(2, SIZE, seed=0, split="train")[0]
    val = SyntheticScribbleDataset(2, SIZE, seed=0, split="val")[0]
    other_seed = SyntheticScribbleDataset(2, SIZE, seed=1, split="train")[0]
    again = SyntheticScribbleDataset(2, SIZE, seed=0, split="train")[0]
    assert not torch.equal(train["image"], val["image"])
    assert not torch.equal(train["image"], other_seed["image"])
    assert torch.equal(train["image"], again["image"]) and torch.equal(train["scribble"], again["scribble"])


def test_sample_arrays_have_the_stated_shapes_dtypes_and_values(samples):
    for sample in samples:
        assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (SIZE, SIZE) and sample.mask.dtype == np.int64
        assert sample.scribble.shape == (SIZE, SIZE) and sample.scribble.dtype == np.int64
        assert set(np.unique(sample.mask)) <= set(range(len(SYNTHETIC_CLASSES)))
        assert set(np.unique(sample.scribble)) <= set(range(len(SYNTHETIC_CLASSES))) | {IGNORE_INDEX}


def test_scribble_coverage_is_about_three_percent(samples):
    per_image = np.array([(s.scribble != IGNORE_INDEX).mean() for s in samples])
    assert 0.025 <= per_image.mean() <= 0.035, per_image.mean()
    assert 0.015 <= per_image.min() and per_image.max() <= 0.05, (per_image.min(), per_image.max())


def test_every_scribble_pixel_agrees_with_the_mask(samples):
    for sample in samples:
        labeled = sample.scribble != IGNORE_INDEX
        np.testing.assert_array_equal(sample.scribble[labeled], sample.mask[labeled])


def test_every_class_appears_in_masks_and_scribbles(samples):
    in_masks = set().union(*(np.unique(s.mask) for s in samples))
    in_scribbles = set().union(*(np.unique(s.scribble) for s in samples)) - {IGNORE_INDEX}
    assert in_masks == in_scribbles == set(range(len(SYNTHETIC_CLASSES)))


def test_every_object_and_the_background_are_scribbled(samples):
    for sample in samples:
        assert (sample.scribble == 0).any()
        for label in range(1, len(SYNTHETIC_CLASSES)):
            objects, count = ndimage.label(sample.mask == label)
            for index in range(1, count + 1):
                assert (sample.scribble[objects == index] == label).any()


def test_scribbles_leave_most_of_each_object_unlabeled(samples):
    """Strokes are thin: pCE alone sees the interiors of objects, not their extent."""
    for sample in samples:
        objects = sample.mask > 0
        assert (sample.scribble[objects] != IGNORE_INDEX).mean() < 0.35


def test_object_boundaries_are_colour_edges(samples):
    """Across object boundaries the colour changes more than inside objects (a CRF on RGB helps)."""
    across, within = [], []
    for sample in samples:
        image = sample.image.astype(np.float64)
        step = np.linalg.norm(image[:, 1:] - image[:, :-1], axis=-1)
        boundary = sample.mask[:, 1:] != sample.mask[:, :-1]
        inside = (sample.mask[:, 1:] == sample.mask[:, :-1]) & (sample.mask[:, 1:] > 0)
        across.append(step[boundary])
        within.append(step[inside])
    assert np.median(np.concatenate(across)) > 2.0 * np.median(np.concatenate(within))


def test_dataset_items_follow_the_data_contract():
    item = SyntheticScribbleDataset(3, SIZE, seed=0, split="val")[2]
    assert set(item) == {"image", "scribble", "mask", "name"}
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 255.0
    assert float(item["image"].max()) > 1.0
    assert item["scribble"].shape == item["mask"].shape == (SIZE, SIZE)
    assert item["scribble"].dtype == item["mask"].dtype == torch.int64
    assert item["name"] == "synthetic_val_00002"


def test_scribble_width_scales_with_image_size():
    sample = generate_sample(3, 128)
    assert sample.image.shape == (128, 128, 3)
    coverage = (sample.scribble != IGNORE_INDEX).mean()
    assert 0.015 <= coverage <= 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1, "size": SIZE}, "seed"),
        ({"seed": 0, "size": 16}, "size"),
        ({"seed": 0, "size": SIZE, "coverage": 0.0}, "coverage"),
        ({"seed": 0, "size": SIZE, "scribble_width": 0}, "scribble_width"),
    ],
)
def test_generate_sample_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_sample(**kwargs)


def test_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticScribbleDataset(4, SIZE, split="training")
    with pytest.raises(ValueError, match="num_images"):
        SyntheticScribbleDataset(0, SIZE)
    with pytest.raises(IndexError):
        SyntheticScribbleDataset(4, SIZE)[4]


def test_datamodule_loaders_yield_batches_of_the_contract():
    datamodule = SyntheticScribbleDataModule(
        num_train=6, num_val=3, num_test=2, size=SIZE, batch_size=4, val_batch_size=2
    )
    assert datamodule.num_classes == len(SYNTHETIC_CLASSES)
    datamodule.setup("fit")
    train = next(iter(datamodule.train_dataloader()))
    assert train["image"].shape == (4, 3, SIZE, SIZE) and train["image"].dtype == torch.float32
    assert train["scribble"].shape == train["mask"].shape == (4, SIZE, SIZE)
    assert train["scribble"].dtype == train["mask"].dtype == torch.int64
    assert len(train["name"]) == 4
    assert len(datamodule.train_dataloader()) == 1  # drop_last: no batch of 2 for BatchNorm
    assert [len(b["name"]) for b in datamodule.val_dataloader()] == [2, 1]
    assert [len(b["name"]) for b in datamodule.test_dataloader()] == [2]
    assert [b["name"] for b in datamodule.predict_dataloader()] == [["synthetic_test_00000", "synthetic_test_00001"]]


def test_datamodule_predicts_a_folder_when_given_one(tmp_path):
    Image.fromarray(generate_sample(0, SIZE).image).save(tmp_path / "a.png")
    datamodule = SyntheticScribbleDataModule(predict_dir=str(tmp_path))
    datamodule.setup("predict")
    batch = next(iter(datamodule.predict_dataloader()))
    assert batch["name"] == ["a"] and batch["image"].shape == (1, 3, SIZE, SIZE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"batch_size": 0}, "batch_size"), ({"num_workers": -1}, "num_workers"), ({"size": 8}, "size"),
     ({"num_val": 0}, "num_val"), ({"coverage": 0.7}, "coverage")],
)
def test_datamodule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticScribbleDataModule(**kwargs)
