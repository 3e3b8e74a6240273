"""The DataModule base every dataset builds on: splits, pre-flight verification, padded loaders, the
predict folder, and the facts the CLI links into the model (num_classes, class_names, in_channels).

A new dataset implements :meth:`SegmentationDataModule.make_dataset` (reading its samples) and
nothing else. Every dataset item is a dict:
``{"image": float32 (C,H,W) raw intensities (0..255 for 8-bit images; not normalized), "scribble": int64 (H,W)
(255 unlabeled, 254 padding), "mask": int64 (H,W) full mask (255 ignore, 254 padding),
"name": str}``. Predict items hold ``"image"``, ``"name"`` and ``"size"`` (int64 (2,) = H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from rloss.data.constants import class_names_or_default
from rloss.data.files import IMAGE_SUFFIXES, read_image
from rloss.data.transforms import pad_collate
from rloss.data.verify import Sample, problems_error, verify_samples
from rloss.utils.checks import check_integer

Split = Literal["train", "val", "test"]

STAGE_SPLITS: dict[str, tuple[Split, ...]] = {
    "fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()
}
"""Splits each Lightning stage needs."""


class ImageFolderDataset(Dataset):
    """All images of a folder (sorted by name), for prediction; items hold image (``channels``, H, W),
    name, size."""

    def __init__(self, folder: str | Path, channels: int) -> None:
        self.folder, self.channels = Path(folder), channels
        if not self.folder.is_dir():
            raise FileNotFoundError(f"predict folder {self.folder} does not exist")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(
                f"predict folder {self.folder} holds no image ({', '.join(IMAGE_SUFFIXES)})"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        image = read_image(path, self.channels)
        return {"image": image, "name": path.stem, "size": torch.tensor(image.shape[-2:])}


class SegmentationDataModule(pl.LightningDataModule):
    """Base DataModule: :meth:`setup` creates the splits a stage needs with :meth:`make_dataset`
    and verifies them before step 1; this class builds the loaders (padding collate, 254 labels
    outside the ROI) and the predict set.

    Args:
        num_classes: number of classes K (linked to ``model.num_classes`` by the CLI).
        class_names: K names for per-class metrics; default "0".."K-1".
        in_channels: image channels C (linked to ``model.in_channels``).
        batch_size: training batch size (per device); the last incomplete batch is dropped.
        val_batch_size: validation/test/predict batch size; whole images are padded to the
            largest of the batch (254 labels), excluded from the metrics.
        num_workers: DataLoader workers.
        predict_dir: folder of arbitrary images for ``predict``.
        verify: before training (or evaluating), check every file of a split once (datasets that
            list their files: ``samples()``, optionally ``check_sample(files, num_classes)`` and a
            ``description`` for messages), reporting every bad file;
            the good ones are cached in :attr:`cache_dir` so a second run starts at once.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        batch_size: int = 12,
        val_batch_size: int = 1,
        num_workers: int = 4,
        predict_dir: str | None = None,
        in_channels: int = 3,
        verify: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = check_integer(num_classes, "num_classes", 1)
        self.class_names = class_names_or_default(class_names, num_classes)
        self.in_channels = check_integer(in_channels, "in_channels", 1)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
        self.val_batch_size = check_integer(val_batch_size, "val_batch_size", 1)
        self.num_workers = check_integer(num_workers, "num_workers", 0)
        self.predict_dir = predict_dir
        self.verify = verify
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    def make_dataset(self, split: Split) -> Dataset:
        """The dataset of ``split`` (training items augmented); what a new dataset implements."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_dataset(split)")

    @property
    def cache_dir(self) -> Path | None:
        """Folder of the verification cache and problem lists (None: not cached)."""
        return None

    def setup(self, stage: str) -> None:
        for split in STAGE_SPLITS.get(stage, ("train", "val", "test")):
            setattr(self, f"{split}_dataset", self.verified(split, self.make_dataset(split)))

    def verified(self, split: Split, dataset: Dataset) -> Dataset:
        """``dataset`` once every file of it is checked (``verify``); DataError listing the bad ones."""
        samples = getattr(dataset, "samples", None)
        if not self.verify or samples is None:
            return dataset
        cache = self.cache_dir
        listed: dict[str, Sample] = samples()
        problems = verify_samples(
            listed,
            self.num_classes,
            None if cache is None else cache / f"verified-{type(dataset).__name__}-{split}.json",
            f"checking {split}", getattr(dataset, "check_sample", None),
        )
        if problems:
            report = None if cache is None else cache / f"problems-{split}.txt"
            what = getattr(dataset, "description", f"the {split} split of {type(self).__name__}")
            raise problems_error(problems, what, report)
        return dataset

    def _loader(self, dataset: Dataset | None, batch_size: int, train: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create this dataset")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=self.num_workers,
            collate_fn=getattr(dataset, "collate", pad_collate),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, self.val_batch_size)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            raise ValueError("predict needs a folder of images: set --data.predict_dir DIR")
        return self._loader(ImageFolderDataset(self.predict_dir, self.in_channels), self.val_batch_size)
