"""ACDC cardiac MRI with expert scribbles (Valvano et al.), as preprocessed by WSL4MIS: 2-D training
slices and 3-D evaluation volumes read directly from their HDF5 files.

Layout under ``root`` (``rloss data prepare acdc``): ``ACDC_training_slices/patientNNN_frameFF_slice_S.h5``
and ``ACDC_training_volumes/patientNNN_frameFF.h5``, each with ``image`` float32 0..1, ``label``
uint8 0..3 (background, RV, Myo, LV) and ``scribble`` uint16 0..4 (4 = unlabeled).

The published protocol (Luo et al., MICCAI 2022): 5 folds by patient, fold k tests patients
20(k-1)+1..20k; training on the slices of the other 80 patients. Validation patients, for every
choice we make, are carved out of those 80 (never the test fold).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from rloss.data.base import SegmentationDataModule, Split
from rloss.data.constants import IGNORE_INDEX, PAD_INDEX
from rloss.data.verify import Sample
from rloss.utils.checks import check_integer

ACDC_CLASSES: tuple[str, ...] = ("background", "RV", "Myo", "LV")
SLICES_DIR = "ACDC_training_slices"
VOLUMES_DIR = "ACDC_training_volumes"
UNLABELED_SCRIBBLE = 4
"""Scribble value of unlabeled pixels in the h5 files (255 in rloss)."""
NUM_PATIENTS, NUM_FOLDS = 100, 5
NAME = re.compile(r"patient(\d{3})_frame\d{2}")


def patient_of(path: Path) -> int:
    """Patient number of an ACDC h5 file name (``patient012_frame01...`` -> 12)."""
    match = NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: not an ACDC file name; expected patientNNN_frameFF[_slice_S].h5")
    return int(match.group(1))


def fold_patients(fold: int) -> set[int]:
    """Test patients of the published fold 1..5: 20(fold-1)+1 .. 20 fold."""
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= NUM_FOLDS:
        raise ValueError(f"fold must be an integer in 1..{NUM_FOLDS}, got {fold!r}")
    return set(range(20 * (fold - 1) + 1, 20 * fold + 1))


def validation_patients(fold: int, count: int) -> set[int]:
    """``count`` training patients of ``fold`` held out for validation: evenly spaced over the
    80 training patients (every ACDC pathology group is 20 consecutive patients, so each is sampled)."""
    train = sorted(set(range(1, NUM_PATIENTS + 1)) - fold_patients(fold))
    if not 0 <= count < len(train):
        raise ValueError(f"val_patients must be in 0..{len(train) - 1}, got {count}")
    return {train[round(i * len(train) / count)] for i in range(count)} if count else set()


def read_h5(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The datasets ``keys`` of one h5 file, checked: image finite, label 0..3, scribble 0..4;
    ValueError naming the file and what was expected."""
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in keys if k not in h5]
            if missing:
                raise ValueError(f"{path}: has no dataset {', '.join(map(repr, missing))}; expected {', '.join(keys)}")
            arrays = {k: h5[k][()] for k in keys}
    except OSError as error:
        raise ValueError(f"{path}: cannot read the HDF5 file ({error})") from None
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or arrays[keys[0]].ndim not in (2, 3):
        raise ValueError(f"{path}: datasets of shapes {sorted(shapes)}; expected one 2-D (slice) or 3-D (volume) shape")
    limits = {"label": len(ACDC_CLASSES) - 1, "scribble": UNLABELED_SCRIBBLE}
    for key, high in limits.items():
        if key in arrays and arrays[key].size and (arrays[key].min() < 0 or arrays[key].max() > high):
            low, top = arrays[key].min(), arrays[key].max()
            raise ValueError(f"{path}: {key} holds values in [{low}, {top}]; expected 0..{high}")
    if "image" in arrays and not np.isfinite(arrays["image"]).all():
        raise ValueError(f"{path}: image holds NaN/inf values")
    return arrays


def check_h5(files: Sample, num_classes: int) -> list[str]:
    """Verification of one ACDC sample (its h5 file): the problems found, each naming the file."""
    try:
        read_h5(files["h5"], ("image", "label", "scribble"))
    except ValueError as error:
        return [str(error)]
    return []


def to_labels(array: np.ndarray, unlabeled: int | None = None) -> Tensor:
    """int64 labels; ``unlabeled`` values become 255 (rloss's unlabeled)."""
    labels = torch.from_numpy(array.astype(np.int64))
    return labels.masked_fill(labels == unlabeled, IGNORE_INDEX) if unlabeled is not None else labels


def augment(image: Tensor, labels: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """The protocol's augmentation of (1,H,W) and (H,W) maps: with p = 0.5 rot90(k) and a flip of a
    random axis, else with p = 0.25 a rotation by randint(-20, 20) degrees (nearest; new corners
    are padding: image 0, labels 254, outside the ROI)."""
    if random.random() > 0.5:
        k, axis = random.randrange(4), random.randrange(2) - 2
        flip = lambda t: t.rot90(k, (-2, -1)).flip(axis)  # noqa: E731
        return flip(image), [flip(t) for t in labels]
    if random.random() > 0.5:
        angle = float(random.randrange(-20, 20))
        rotate = lambda t, fill: TF.rotate(t, angle, InterpolationMode.NEAREST, fill=fill)  # noqa: E731
        return rotate(image, 0.0), [rotate(t[None], PAD_INDEX)[0] for t in labels]
    return image, labels


def resize_nearest(tensor: Tensor, size: int) -> Tensor:
    """(..., H, W) -> (..., size, size), nearest (the protocol's zoom with order 0), dtype kept."""
    shape = tensor.shape
    flat = tensor.reshape(-1, 1, *shape[-2:]).float()
    out = F.interpolate(flat, size=(size, size), mode="nearest-exact")
    return out.reshape(*shape[:-2], size, size).to(tensor.dtype)


class ACDCSliceDataset(Dataset):
    """Training slices: {"image" (1,S,S) 0..1, "scribble" (S,S) (255 unlabeled, 254 padding),
    "mask" (S,S), "name"}, augmented and resized to ``size`` x ``size``."""

    def __init__(self, paths: list[Path], size: int, train: bool = True) -> None:
        self.paths, self.size, self.train = paths, size, train
        self.description = f"{len(paths)} ACDC training slices"

    def samples(self) -> dict[str, Sample]:
        return {p.stem: {"h5": p} for p in self.paths}

    check_sample = staticmethod(check_h5)
    collate = staticmethod(default_collate)  # every item is size x size: nothing to pad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        arrays = read_h5(path, ("image", "scribble", "label"))
        image = torch.from_numpy(arrays["image"].astype(np.float32))[None]
        labels = [to_labels(arrays["scribble"], UNLABELED_SCRIBBLE), to_labels(arrays["label"])]
        if self.train:
            image, labels = augment(image, labels)
        image, labels = resize_nearest(image, self.size), [resize_nearest(t, self.size) for t in labels]
        scribble, mask = labels[0].contiguous(), labels[1].contiguous()
        return {"image": image.contiguous(), "scribble": scribble, "mask": mask, "name": path.stem}


class ACDCVolumeDataset(Dataset):
    """Evaluation volumes at their own size: {"image" (D,1,H,W), "mask" (D,H,W), "name",
    "slice_size": S}; the model predicts them slice by slice at S x S and resizes back."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size
        self.description = f"{len(paths)} ACDC volumes"

    def samples(self) -> dict[str, Sample]:
        return {p.stem: {"h5": p} for p in self.paths}

    check_sample = staticmethod(check_h5)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays = read_h5(self.paths[index], ("image", "label"))
        if arrays["image"].ndim != 3:
            raise ValueError(f"{self.paths[index]}: expected a 3-D volume, got shape {arrays['image'].shape}")
        image = torch.from_numpy(arrays["image"].astype(np.float32))[:, None]
        mask = to_labels(arrays["label"])
        return {"image": image, "mask": mask, "name": self.paths[index].stem, "slice_size": self.size}

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        """One volume per batch (volumes differ in depth and size)."""
        if len(items) != 1:
            raise ValueError(f"ACDC volumes are evaluated one per batch; set --data.val_batch_size 1, got {len(items)}")
        item = items[0]
        return {**{k: v[None] for k, v in item.items() if isinstance(v, Tensor)}, "name": [item["name"]],
                "slice_size": item["slice_size"]}


class ACDCDataModule(SegmentationDataModule):
    """ACDC scribble-supervised segmentation, one published fold.

    Args:
        root: folder holding ``ACDC_training_slices/`` and ``ACDC_training_volumes/``.
        fold: test fold 1..5 (test patients 20(fold-1)+1..20 fold).
        val_patients: training patients held out as the validation split (their volumes); 0 = none
            (then validation uses no data and checkpoints follow ``last``).
        size: side of the training slices and of the slice-wise prediction (256 published).
        Others: see :class:`~rloss.data.base.SegmentationDataModule` (``model.supervision: full``
        trains on the masks: the full-supervision row).
    """

    def __init__(
        self,
        root: str,
        fold: int = 1,
        val_patients: int = 8,
        size: int = 256,
        batch_size: int = 12,
        val_batch_size: int = 1,
        num_workers: int = 2,
        predict_dir: str | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(
            len(ACDC_CLASSES), ACDC_CLASSES, batch_size, val_batch_size, num_workers, predict_dir, 1, verify
        )
        self.root = Path(root)
        self.test = fold_patients(fold)
        self.val = validation_patients(fold, check_integer(val_patients, "val_patients", 0))
        self.size = check_integer(size, "size", 16)
        # stored in the checkpoints: a network trained here predicts slices resized to size x size
        self.save_hyperparameters({"prediction_size": self.size})
        if predict_dir is None:
            self.files(SLICES_DIR)

    @property
    def cache_dir(self) -> Path:
        return self.root / ".rloss-cache"

    def files(self, folder: str) -> list[Path]:
        """The h5 files of ``folder`` under the root; FileNotFoundError naming what is missing."""
        path = self.root / folder
        paths = sorted(path.glob("patient*.h5")) if path.is_dir() else []
        if not paths:
            raise FileNotFoundError(
                f"ACDC root {self.root}: no {folder}/patient*.h5; run 'rloss data prepare acdc --root {self.root}'"
            )
        return paths

    def make_dataset(self, split: Split) -> Dataset:
        if split == "train":
            paths = [p for p in self.files(SLICES_DIR) if patient_of(p) not in self.test | self.val]
            return ACDCSliceDataset(paths, self.size)
        patients = self.val if split == "val" else self.test
        return ACDCVolumeDataset([p for p in self.files(VOLUMES_DIR) if patient_of(p) in patients], self.size)
