"""The images being annotated and the dataset folder the annotations go to.

Reads the images directly under ``--images`` (files ending in one of
:data:`rloss.data.files.IMAGE_SUFFIXES`, hidden files and links that lead outside the folder left
out); an image's id is its file name without the suffix. Writes, under ``--output``, the layout
:class:`rloss.data.folder.ScribbleFolderDataModule` reads: ``images/<id>.<suffix>`` (a copy),
``scribbles/<id>.png`` (uint8 class ids, 255 unlabeled), ``masks/<id>.png`` (VOC-palette class
ids), ``splits/train.txt`` (every saved id) and ``classes.txt``. Every file is written atomically.
"""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from rloss.data.files import IMAGE_SUFFIXES, read_image, read_label, write_label_png
from rloss.data.layout import FolderLayout, read_lines
from rloss.utils.atomic import atomic_path, write_text_atomic


class UnknownImage(KeyError):
    """An id that is not one of the listed images (also ids with '..', '/', or an absolute path)."""


def inside(path: Path, folder: Path) -> bool:
    """True when ``path``, links followed, is ``folder`` (resolved) or under it."""
    try:
        return path.resolve(strict=True).is_relative_to(folder)
    except (OSError, RuntimeError):  # missing, or a link loop
        return False


def list_images(folder: Path) -> dict[str, Path]:
    """id -> file of the images directly in ``folder``, in name order; ValueError naming ``--images``
    when two files share an id (``a.png`` and ``a.jpg``)."""
    root = folder.resolve()
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not path.is_file() or not inside(path, root):
            continue
        if path.stem in images:
            raise ValueError(
                f"--images {folder}: {images[path.stem].name} and {path.name} share the id {path.stem!r}; "
                "expected one image per file name stem"
            )
        images[path.stem] = path
    return images


def display_png(image: np.ndarray) -> bytes:
    """8-bit PNG for the browser of a float (C,H,W) image: 1 channel -> grayscale, 3 or more -> RGB
    of the first three, 2 -> grayscale of their mean. Intensities already in 0..255 integers are kept;
    others are scaled linearly from their 0.5 and 99.5 percentiles to 0..255 (16-bit MRI, floats)."""
    pixels = image[:3] if image.shape[0] >= 3 else image.mean(0, keepdims=True)
    eight_bit = pixels.min() >= 0 and pixels.max() <= 255 and np.array_equal(pixels, np.round(pixels))
    if not eight_bit:
        low, high = np.percentile(pixels, [0.5, 99.5])
        if high <= low:
            low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) * (255.0 / max(high - low, 1e-12))
    array = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    picture = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class Store:
    """The images of ``images`` (listed once) and the output dataset folder ``output`` with
    ``classes`` (names; the ids are their positions)."""

    def __init__(self, images: Path, output: Path, classes: list[str]) -> None:
        self.root, self.output, self.classes = images.resolve(), output, classes
        self.layout = FolderLayout(output)
        self.images = list_images(images)
        self.lock = threading.Lock()

    def path(self, image_id: str) -> Path:
        """The file of ``image_id``; UnknownImage unless it is a listed image still inside the folder."""
        path = self.images.get(image_id) if isinstance(image_id, str) else None
        if path is None or not inside(path, self.root):
            raise UnknownImage(image_id)
        return path

    def read(self, image_id: str) -> np.ndarray:
        """float32 (C,H,W) intensities (:func:`rloss.data.files.read_image`); ValueError naming the
        file when it cannot be decoded."""
        return read_image(self.path(image_id)).numpy()

    def scribble_path(self, image_id: str) -> Path:
        return self.layout.label_file("scribble", image_id)

    def mask_path(self, image_id: str) -> Path:
        return self.layout.label_file("mask", image_id)

    def done(self, image_id: str) -> bool:
        """True when scribbles of ``image_id`` were saved."""
        return self.scribble_path(image_id).is_file()

    def saved_scribbles(self, image_id: str, size: tuple[int, int]) -> np.ndarray | None:
        """uint8 (H,W) saved scribbles of ``image_id``, or None; ValueError naming the file when it
        does not fit the image or the classes."""
        path = self.scribble_path(image_id)
        if not path.is_file():
            return None
        return read_label(path, len(self.classes), size).numpy().astype(np.uint8)

    def check_classes_file(self) -> None:
        """ValueError naming ``--output`` when its classes.txt lists other classes than ours."""
        path = self.layout.classes_file
        if path.is_file():
            names = read_lines(path)
            if names != self.classes:
                raise ValueError(
                    f"--output {self.output}: classes.txt lists {len(names)} other classes ({', '.join(names[:5])}"
                    f"{', ...' if len(names) > 5 else ''}); expected the --classes given, or another output folder"
                )

    def write_classes(self) -> None:
        path = self.layout.classes_file
        if not path.is_file():
            write_text_atomic(path, "".join(f"{name}\n" for name in self.classes))

    def save(self, image_id: str, scribbles: np.ndarray, mask: np.ndarray) -> None:
        """Write scribbles/<id>.png (L, class ids, 255 unlabeled) and masks/<id>.png (VOC palette),
        copy the image to images/<id>.<suffix> and list the id in splits/train.txt; each atomically."""
        source = self.path(image_id)
        with self.lock:
            self.write_classes()
            target = self.layout.images / f"{image_id}{source.suffix.lower()}"  # the suffixes the folder reads
            for suffix in IMAGE_SUFFIXES:  # an older copy with another suffix would make the id ambiguous
                other = target.with_name(f"{image_id}{suffix}")
                if other != target and other.is_file():
                    other.unlink()
            if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime or (
                target.stat().st_size != source.stat().st_size
            ):
                with atomic_path(target) as tmp:
                    shutil.copyfile(source, tmp)
                    shutil.copystat(source, tmp)
            write_label_png(mask, self.mask_path(image_id), palette=True)
            write_label_png(scribbles, self.scribble_path(image_id), palette=False)
            split = self.layout.split_file("train")
            ids = read_lines(split)
            if image_id not in ids:
                write_text_atomic(split, "".join(f"{i}\n" for i in [*ids, image_id]))
