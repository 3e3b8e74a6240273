"""The synthetic scribble data as a Dataset and a DataModule (the data of ``make demo`` and of the
tests); the scenes themselves come from :mod:`rloss.data.synthetic_scenes`."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from rloss.data.base import SegmentationDataModule, Split
from rloss.data.synthetic_scenes import (
    MIN_SIZE,
    SPLITS,
    SYNTHETIC_CLASSES,
    SyntheticSample,
    generate_sample,
    sample_seed,
)
from rloss.utils.checks import check_fraction, check_integer


class SyntheticScribbleDataset(Dataset):
    """``num_images`` generated samples of one split, as dicts (the shared data contract):

    image: float32 (3, H, W) RGB 0..255, not normalized; scribble: int64 (H, W), 255 unlabeled;
    mask: int64 (H, W) full mask; name: str. Samples are generated on first access and cached.
    """

    def __init__(self, num_images: int, size: int = 64, seed: int = 0, split: str = "train",
                 coverage: float = 0.03) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.num_images = check_integer(num_images, "num_images", 1)
        self.size = check_integer(size, "size", MIN_SIZE)
        self.seed = check_integer(seed, "seed", 0)
        self.coverage = check_fraction(coverage, "coverage", 0.0, 0.5)
        self.split = split
        self._cache: dict[int, SyntheticSample] = {}

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int) -> SyntheticSample:
        """The raw arrays of image ``index`` (generated once, then cached)."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        if index not in self._cache:
            seed = sample_seed(self.seed, self.split, index)
            self._cache[index] = generate_sample(seed, self.size, self.coverage)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        sample = self.sample(int(index))
        return {
            "image": torch.from_numpy(sample.image).permute(2, 0, 1).float(),
            "scribble": torch.from_numpy(sample.scribble.copy()),
            "mask": torch.from_numpy(sample.mask.copy()),
            "name": f"synthetic_{self.split}_{index:05d}",
        }


class SyntheticScribbleDataModule(SegmentationDataModule):
    """Synthetic scribble data with the VOC DataModule's interface (``num_classes``, four loaders).

    Args:
        num_train, num_val, num_test: number of images of each split.
        size: side of the square images (>= 32).
        coverage: target fraction of scribbled pixels.
        seed: dataset seed; splits differ from each other for the same seed.
        predict_dir: folder of images for ``predict``; None predicts the test split.
        Others: see :class:`~rloss.data.base.SegmentationDataModule`.
    """

    def __init__(
        self,
        num_train: int = 400,
        num_val: int = 100,
        num_test: int = 100,
        size: int = 64,
        coverage: float = 0.03,
        seed: int = 0,
        batch_size: int = 16,
        val_batch_size: int = 16,
        num_workers: int = 0,
        predict_dir: str | None = None,
    ) -> None:
        for name, value, minimum in (("num_train", num_train, 1), ("num_val", num_val, 1),
                                     ("num_test", num_test, 1), ("batch_size", batch_size, 1),
                                     ("val_batch_size", val_batch_size, 1), ("num_workers", num_workers, 0)):
            check_integer(value, name, minimum)
        super().__init__(len(SYNTHETIC_CLASSES), SYNTHETIC_CLASSES, batch_size, val_batch_size, num_workers,
                         predict_dir)
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.size = check_integer(size, "size", MIN_SIZE)
        self.coverage = check_fraction(coverage, "coverage", 0.0, 0.5)
        self.seed = check_integer(seed, "seed", 0)

    def make_dataset(self, split: Split) -> SyntheticScribbleDataset:
        """The split's generated images (lazily, on first access)."""
        return SyntheticScribbleDataset(self.counts[split], self.size, self.seed, split, self.coverage)

    def setup(self, stage: str | None = None) -> None:
        """Create the three splits (predict uses the test split)."""
        for split in SPLITS:
            setattr(self, f"{split}_dataset", self.make_dataset(split))

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is not None:
            return super().predict_dataloader()
        return self._loader(self.test_dataset, self.val_batch_size)
