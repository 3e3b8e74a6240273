"""Where the files of a prepared PASCAL VOC2012 scribble dataset lie below its root: what
``rloss data prepare`` writes and :class:`rloss.data.voc.VOCScribbleDataModule` reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rloss.data.constants import SCRIBBLE_DIR, VOC_DIR


@dataclass(frozen=True)
class VOCLayout:
    """The VOC2012 folders below ``root`` and the file of each image name in them."""

    root: Path

    @property
    def voc(self) -> Path:
        return self.root / VOC_DIR

    @property
    def images(self) -> Path:
        return self.voc / "JPEGImages"

    @property
    def voc_masks(self) -> Path:
        """The VOC masks (``SegmentationClass``), merged into :attr:`masks` by ``rloss data prepare``."""
        return self.voc / "SegmentationClass"

    @property
    def masks(self) -> Path:
        """The full masks of ``train_aug`` and ``val`` (``SegmentationClassAug``, 255 = ignore)."""
        return self.voc / "SegmentationClassAug"

    @property
    def splits(self) -> Path:
        return self.voc / "ImageSets" / "Segmentation"

    @property
    def scribble_masks(self) -> Path:
        """The default scribble PNG folder (class id on scribbles, 255 elsewhere)."""
        return self.root / SCRIBBLE_DIR

    def image(self, name: str) -> Path:
        return self.images / f"{name}.jpg"

    def mask(self, name: str) -> Path:
        return self.masks / f"{name}.png"

    def scribble_mask(self, name: str) -> Path:
        """The scribble PNG of an image in the default folder :attr:`scribble_masks`."""
        return self.scribble_masks / f"{name}.png"

    def split_list(self, split: str) -> Path:
        """The list of a split's image names (one a line)."""
        return self.splits / f"{split}.txt"

    def describe(self, scribble_dir: Path | None = None) -> str:
        """The expected layout (scribbles in ``scribble_dir``, default :attr:`scribble_masks`) and the
        command that prepares it."""
        return (
            f"expected layout:\n"
            f"  {self.image('<name>')}\n"
            f"  {self.mask('<name>')}   (full masks, 255 = ignore)\n"
            f"  {self.split_list('{train_aug,val}')}   (one <name> a line)\n"
            f"  {scribble_dir or self.scribble_masks}/<name>.png   (class id on scribbles, 255 elsewhere)\n"
            f"prepare it with: rloss data prepare --root {self.root}"
        )


LABEL_FOLDERS: dict[str, str] = {"scribble": "scribbles", "mask": "masks"}
"""Item key -> folder of its label PNGs in a :class:`FolderLayout`."""


@dataclass(frozen=True)
class FolderLayout:
    """A users' own dataset below ``root``: what ``rloss annotate`` writes and
    :class:`rloss.data.folder.ScribbleFolderDataModule` reads (layout in :mod:`rloss.data.folder`)."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.txt"

    def split_file(self, split: str) -> Path:
        return self.root / "splits" / f"{split}.txt"

    def label_file(self, key: str, sample_id: str) -> Path:
        """The label PNG of ``sample_id``; ``key``: "scribble" or "mask"."""
        return self.root / LABEL_FOLDERS[key] / f"{sample_id}.png"


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of text file ``path``, stripped (a list file: split ids, class names);
    empty when the file does not exist."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
