"""PASCAL VOC2012 (+SBD train_aug) with ScribbleSup scribbles as PNG masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from rloss.data.base import SegmentationDataModule, Split
from rloss.data.constants import IGNORE_INDEX, SCRIBBLE_DIR, VOC_CLASSES, VOC_DIR
from rloss.data.files import read_image, read_label
from rloss.data.layout import VOCLayout
from rloss.data.transforms import apply_transform, train_transform

CACHE_DIR = ".rloss-cache"
"""Folder under the dataset root for the per-split verification cache and problem lists."""


class VOCScribbleDataset(Dataset):
    """The images of one split list, with scribbles (or none) and full masks.

    Args:
        root: folder holding ``VOCdevkit/VOC2012``.
        split: name of a list in ``ImageSets/Segmentation`` (``train_aug``, ``val``).
        scribble_dir: folder of scribble PNGs; None gives all-unlabeled scribbles (255).
        num_classes: labels must hold ids < num_classes (or 254/255).
        transform: joint v2 transform of the item (None: whole image).
    """

    def __init__(
        self,
        root: Path,
        split: str,
        scribble_dir: Path | None,
        num_classes: int,
        transform: v2.Transform | None = None,
    ) -> None:
        self.layout = VOCLayout(Path(root))
        self.scribble_dir = scribble_dir
        self.num_classes = num_classes
        self.transform = transform
        list_file = self.layout.split_list(split)
        self.description = f"split {split!r} of {self.layout.root}"
        help_text = self.layout.describe(scribble_dir)
        if not list_file.is_file():
            raise FileNotFoundError(f"VOC split list {list_file} not found under root {self.layout.root}\n{help_text}")
        self.names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        if not self.names:
            raise ValueError(f"{list_file} lists no image")
        missing = [p for name in self.names for p in self._paths(name).values() if not p.is_file()]
        if missing:
            shown = "\n".join(f"  {p}" for p in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} file(s) of split {split!r} ({list_file}) are missing, e.g.:\n"
                f"{shown}\n{help_text}"
            )

    def _paths(self, name: str) -> dict[str, Path]:
        paths = {"image": self.layout.image(name), "mask": self.layout.mask(name)}
        if self.scribble_dir is not None:
            paths["scribble"] = self.scribble_dir / f"{name}.png"
        return paths

    def samples(self) -> dict[str, dict[str, Path]]:
        """Each listed name -> its files (image, mask, scribble)."""
        return {name: self._paths(name) for name in self.names}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        paths = self._paths(name)
        image = read_image(paths["image"], channels=3)
        size = image.shape[-2:]
        mask = read_label(paths["mask"], self.num_classes, size)
        if "scribble" in paths:
            scribble = read_label(paths["scribble"], self.num_classes, size)
        else:
            scribble = torch.full_like(mask, IGNORE_INDEX)
        item = {"image": image, "scribble": scribble, "mask": mask, "name": name}
        return apply_transform(self.transform, item)


class VOCScribbleDataModule(SegmentationDataModule):
    """VOC2012 scribble-supervised segmentation: train on ``train_split`` crops, validate
    and test on whole images of ``val_split``/``test_split`` with their full masks.

    Args:
        root: folder holding ``VOCdevkit/VOC2012`` (see :class:`rloss.data.layout.VOCLayout`).
        scribble_dir: scribble PNG folder, relative to ``root`` unless absolute.
        crop_size: training crop (the paper: 513).
        scale_range: random scale factors of the training images.
        train_split, val_split, test_split: list names in ``ImageSets/Segmentation``.
        verify: check every listed file before step 1 (cached in ``<root>/.rloss-cache``).
        Others: see :class:`SegmentationDataModule`.

    The root is checked at construction (before the model fetches pretrained weights) unless
    ``predict_dir`` is set: predict needs no dataset.
    """

    def __init__(
        self,
        root: str,
        scribble_dir: str = SCRIBBLE_DIR,
        crop_size: int = 513,
        scale_range: tuple[float, float] = (0.5, 2.0),
        train_split: str = "train_aug",
        val_split: str = "val",
        test_split: str = "val",
        verify: bool = True,
        batch_size: int = 12,
        val_batch_size: int = 1,
        num_workers: int = 4,
        predict_dir: str | None = None,
        num_classes: int = len(VOC_CLASSES),
        class_names: Sequence[str] | None = VOC_CLASSES,
    ) -> None:
        super().__init__(num_classes, class_names, batch_size, val_batch_size, num_workers, predict_dir, 3, verify)
        self.root = Path(root)
        self.layout = VOCLayout(self.root)
        self.scribble_dir = self.root / scribble_dir
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        if predict_dir is None:
            self._check_root()

    def _check_root(self) -> None:
        if not self.layout.voc.is_dir():
            raise FileNotFoundError(
                f"VOC dataset root {self.root} has no {VOC_DIR}\n{self.layout.describe(self.scribble_dir)}"
            )

    @property
    def cache_dir(self) -> Path:
        return self.root / CACHE_DIR

    def make_dataset(self, split: Split) -> VOCScribbleDataset:
        self._check_root()
        train = split == "train"
        transform = train_transform(self.crop_size, self.scale_range) if train else None
        name = {"train": self.train_split, "val": self.val_split, "test": self.test_split}[split]
        return VOCScribbleDataset(self.root, name, self.scribble_dir if train else None, self.num_classes, transform)
