"""Shared DataModule plumbing: the predict folder, padded loaders (file reading: :mod:`rloss.data.files`).

Every dataset item is a dict:
``{"image": float32 (3,H,W) RGB 0..255 (not normalized), "scribble": int64 (H,W)
(255 unlabeled, 254 padding), "mask": int64 (H,W) full mask (255 ignore, 254 padding),
"name": str}``. Predict items hold ``"image"``, ``"name"`` and ``"size"`` (int64 (2,) = H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from rloss.data.constants import class_names_or_default
from rloss.data.files import IMAGE_SUFFIXES, read_image
from rloss.data.transforms import pad_collate


class ImageFolderDataset(Dataset):
    """All images of a folder (sorted by name), for prediction; items hold image, name, size."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
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
        image = read_image(path)
        return {"image": image, "name": path.stem, "size": torch.tensor(image.shape[-2:])}


class SegmentationDataModule(pl.LightningDataModule):
    """Base DataModule: subclasses fill ``train_dataset``/``val_dataset``/``test_dataset``
    in :meth:`setup`; this class builds the loaders (padding collate) and the predict set.

    Args:
        num_classes: number of classes K (linked to ``model.num_classes`` by the CLI).
        class_names: K names for per-class metrics; default "0".."K-1".
        batch_size: training batch size (per device); the last incomplete batch is dropped.
        val_batch_size: validation/test/predict batch size; whole images are padded to the
            largest of the batch (254 labels, mean colour), excluded from the metrics.
        num_workers: DataLoader workers.
        predict_dir: folder of arbitrary images for ``predict``.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        batch_size: int = 12,
        val_batch_size: int = 1,
        num_workers: int = 4,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = class_names_or_default(class_names, num_classes)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.predict_dir = predict_dir
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    def _loader(self, dataset: Dataset | None, batch_size: int, train: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create this dataset")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=self.num_workers,
            collate_fn=pad_collate,
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
        return self._loader(ImageFolderDataset(self.predict_dir), self.val_batch_size)
