"""Users' own data without code: a folder of images, scribble PNGs, masks and split lists.

Layout under ``root``::

    images/<id>.{png,jpg,tif,npy,...}   any channel count (.npy: (H, W) or (C, H, W) float)
    scribbles/<id>.png                  uint8 class ids, 255 = unlabeled (required for training ids)
    masks/<id>.png                      uint8 class ids, 255 = void (required for val/test ids; used
                                        for full supervision when present on training ids)
    splits/{train,val,test}.txt         ids, one a line (val and test optional)
    classes.txt                         optional, one class name a line (else --data.num_classes)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from rloss.data.base import SegmentationDataModule, Split
from rloss.data.constants import IGNORE_INDEX
from rloss.data.files import IMAGE_SUFFIXES, read_image, read_label
from rloss.data.layout import LABEL_FOLDERS, FolderLayout, read_lines
from rloss.data.transforms import apply_transform, train_transform
from rloss.data.verify import Sample
from rloss.utils.errors import DataError


class ScribbleFolderDataset(Dataset):
    """The ids of one split: items {"image" (C,H,W), "scribble", "mask" (H,W), "name"}; a label
    file that is absent reads as all-255 (unlabeled / void)."""

    def __init__(
        self, files: dict[str, Sample], num_classes: int, channels: int, transform: Any = None, description: str = ""
    ) -> None:
        self.files, self.ids, self.channels = files, list(files), channels
        self.num_classes, self.transform, self.description = num_classes, transform, description

    def samples(self) -> dict[str, Sample]:
        return self.files

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        files = self.files[self.ids[index]]
        image = read_image(files["image"], self.channels)
        size = image.shape[-2:]
        item: dict[str, Any] = {"image": image, "name": self.ids[index]}
        for key in LABEL_FOLDERS:
            path = files.get(key)
            item[key] = read_label(path, self.num_classes, size) if path else torch.full(tuple(size), IGNORE_INDEX)
        return apply_transform(self.transform, item)


class ScribbleFolderDataModule(SegmentationDataModule):
    """A scribble dataset laid out as in this module's docstring; ``in_channels`` is read from the
    first training image, class names from ``classes.txt``.

    Args:
        root: the dataset folder.
        num_classes: K when there is no ``classes.txt`` (ignored otherwise).
        crop_size: training crop (random scale in ``scale_range``, crop, h-flip).
        Others: see :class:`~rloss.data.base.SegmentationDataModule`.
    """

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        crop_size: int = 256,
        scale_range: tuple[float, float] = (0.5, 2.0),
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int = 2,
        predict_dir: str | None = None,
        verify: bool = True,
    ) -> None:
        self.root = Path(root)
        self.layout = FolderLayout(self.root)
        names = self.class_file_names()
        if names is None and num_classes is None:
            raise ValueError(f"--data.root {self.root}: no classes.txt; set --data.num_classes K")
        count = len(names) if names is not None else int(num_classes or 0)
        self.ids = {split: self.split_ids(split) for split in ("train", "val", "test")}
        if not self.ids["train"] and predict_dir is None:
            raise FileNotFoundError(f"--data.root {self.root}: no splits/train.txt listing training ids")
        channels = read_image(self.image_path(self.ids["train"][0])).shape[0] if self.ids["train"] else 3
        super().__init__(count, names, batch_size, val_batch_size, num_workers, predict_dir, channels, verify)
        self.crop_size, self.scale_range = crop_size, scale_range

    @property
    def cache_dir(self) -> Path:
        return self.root / ".rloss-cache"

    def class_file_names(self) -> list[str] | None:
        path = self.layout.classes_file
        if not path.is_file():
            return None
        names = read_lines(path)
        if not names:
            raise ValueError(f"{path}: lists no class name; expected one name a line")
        return names

    def split_ids(self, split: str) -> list[str]:
        """Ids of ``splits/<split>.txt`` (empty when the file does not exist)."""
        return read_lines(self.layout.split_file(split))

    def image_path(self, sample_id: str) -> Path:
        """``images/<id>.<any image suffix>``; FileNotFoundError naming the id when there is none."""
        for suffix in IMAGE_SUFFIXES:
            path = self.layout.images / f"{sample_id}{suffix}"
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"{self.layout.images}: no image for id {sample_id!r}; "
            f"expected {sample_id}.<{'|'.join(s[1:] for s in IMAGE_SUFFIXES)}>"
        )

    def make_dataset(self, split: Split) -> ScribbleFolderDataset:
        required = "scribble" if split == "train" else "mask"
        files: dict[str, Sample] = {}
        missing: list[str] = []
        for sample_id in self.ids[split]:
            try:
                sample: dict[str, Path] = {"image": self.image_path(sample_id)}
            except FileNotFoundError as error:
                missing.append(str(error))
                continue
            for key, folder in LABEL_FOLDERS.items():
                path = self.layout.label_file(key, sample_id)
                if path.is_file():
                    sample[key] = path
                elif key == required:
                    missing.append(f"{path}: missing; the {split} split needs a {folder[:-1]} PNG for every id")
            files[sample_id] = sample
        if missing:
            shown = "\n".join(f"  {m}" for m in missing[:20])
            raise DataError(f"{len(missing)} missing file(s) in the {split} split of {self.root}:\n{shown}")
        transform = train_transform(self.crop_size, self.scale_range, self.in_channels) if split == "train" else None
        description = f"the {split} split of {self.root}"
        return ScribbleFolderDataset(files, self.num_classes, self.in_channels, transform, description)
