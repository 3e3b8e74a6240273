"""``rloss data prepare [voc|acdc]``: a dataset, downloaded, verified and converted in one command.

``rloss data prepare acdc --root DIR`` fetches the WSL4MIS ACDC files (see :mod:`rloss.data.acdc_files`).
``rloss data prepare [voc] --root DIR`` (or ``python -m rloss.tools.prepare_data --root DIR``) prepares
PASCAL VOC2012 + SBD ``train_aug`` + ScribbleSup scribbles. It

1. downloads the three archives (resuming interrupted downloads) into ``DIR/downloads``,
   or takes them from ``--from-dir``, and verifies their checksums;
2. extracts them safely below ``DIR``;
3. writes ``SegmentationClassAug`` (SBD ``.mat`` masks converted to PNG, merged with the
   VOC masks) and ``ImageSets/Segmentation/train_aug.txt``;
4. converts the scribble XML files to PNG masks in ``VOCdevkit/VOC2012/pascal_2012_scribble``;
5. prints a summary and the ``rloss fit`` line to run next.

Every step is idempotent: extracted archives are recorded in ``DIR/.rloss-prepare/`` and
existing output files are kept, so a second run only checks and summarizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from rloss.data.acdc_files import BASE_URL as ACDC_BASE_URL
from rloss.data.acdc_files import prepare_acdc
from rloss.data.archives import CorruptArchiveError, UnknownArchiveError, UnsafeArchiveError, safe_extract
from rloss.data.constants import IGNORE_INDEX, SCRIBBLE_DIR, VOC_CLASSES
from rloss.data.download import Checksum, ChecksumError, DownloadError, download, file_digest, verify
from rloss.data.files import write_label_png
from rloss.data.layout import VOCLayout, read_lines
from rloss.data.scribbles import ScribbleFormatError, convert_scribble_xml
from rloss.utils.atomic import write_text_atomic
from rloss.utils.errors import ArgumentParser, UserError, print_error

DATASETS = ("voc", "acdc")
"""First word of the command line (voc when it is left out)."""
EXPECTED_SPLIT_SIZES = {"train_aug": 10_582, "val": 1_449}
"""Split sizes produced by the official archives."""

@dataclass(frozen=True)
class ArchiveSpec:
    """One archive to fetch: its file name, URL, expected checksum and the folder it must create."""

    name: str
    filename: str
    url: str
    checksum: Checksum | None
    content: str
    """Path (relative to the root) that extracting the archive must create."""
    only: tuple[str, ...] = ()
    """Extract only the members starting with these prefixes (all when empty)."""


ARCHIVES: tuple[ArchiveSpec, ...] = (
    # URL: the VOC2012 page (host.robots.ox.ac.uk/pascal/VOC/voc2012/). MD5: the value torchvision's
    # VOCSegmentation pins for this file.
    ArchiveSpec("voc", "VOCtrainval_11-May-2012.tar",
                "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                Checksum("md5", "6cd6e144f989b92b3379bac3b3de84fd"), "VOCdevkit/VOC2012"),
    # URL and MD5: the SBD page (Hariharan et al.), as pinned by torchvision's SBDataset.
    ArchiveSpec("sbd", "benchmark.tgz",
                "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
                Checksum("md5", "82b4d87ceb2ed10f6038a1cba92111cb"), "benchmark_RELEASE/dataset",
                # the class masks and split lists; not the images (VOC has them) nor the instance masks
                ("benchmark_RELEASE/dataset/cls/", "benchmark_RELEASE/dataset/train.txt",
                 "benchmark_RELEASE/dataset/val.txt")),
    # The ScribbleSup page (jifengdai.org/downloads/scribble_sup/) links this Dropbox file, also used by the
    # authors' rloss repository (data/pascal_scribble/fetchPascalScribble.sh). No checksum is published for it
    # and none could be taken from the official file offline, so none is pinned: every member's CRC-32 is
    # checked before anything is extracted (zipfile.testzip; a corrupt download is named, not extracted), the
    # folder structure is checked and every XML must parse; the SHA-256 of the file used is printed (pin it with
    # --checksum scribbles=...).
    ArchiveSpec("scribbles", "scribble_annotation.zip",
                "https://www.dropbox.com/s/9vh3kvtd742red8/scribble_annotation.zip?dl=1",
                None, "scribble_annotation/pascal_2012"),
)


class PrepareError(RuntimeError):
    """Data preparation cannot continue (a missing archive or file, an unexpected archive content)."""


class PrepareLayout(VOCLayout):
    """The VOC layout plus the folders only ``prepare`` uses: extracted SBD and scribble XML
    archives, downloads and extraction records."""

    @property
    def sbd(self) -> Path:
        return self.root / "benchmark_RELEASE" / "dataset"

    @property
    def scribble_xml(self) -> Path:
        return self.root / "scribble_annotation" / "pascal_2012"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def stamps(self) -> Path:
        return self.root / ".rloss-prepare"


@dataclass
class PrepareReport:
    """What ``prepare`` found and did."""

    root: Path
    split_sizes: dict[str, int]
    scribbled: int
    """Number of ``train_aug`` images with a scribble mask."""
    coverage: float
    """Share of scribble pixels (label != 255) over all ``train_aug`` scribble masks."""
    unpinned: dict[str, str] = field(default_factory=dict)
    """SHA-256 of archives used without a known checksum, by archive name."""
    actions: list[str] = field(default_factory=list)
    """Work done by this run; empty when everything was already in place."""

    def render(self) -> str:
        """A human-readable summary ending with the ``rloss fit`` line."""
        lines = [f"Data ready in {self.root}" + ("" if self.actions else " (already prepared, nothing to do)")]
        lines += [f"  {split:9s} {count:6d} images (official archives: {EXPECTED_SPLIT_SIZES[split]})"
                  for split, count in self.split_sizes.items()]
        lines.append(f"  scribbles {self.scribbled:6d} of {self.split_sizes['train_aug']} train_aug images, "
                     f"{100 * self.coverage:.2f}% of their pixels labeled (ScribbleSup: about 3%)")
        lines += [f"  {name}: no published checksum; SHA-256 of the file used: {digest}"
                  for name, digest in self.unpinned.items()]
        lines += ["Next:", f"  {fit_command(self.root)}"]
        return "\n".join(lines)


def fit_command(root: Path) -> str:
    """The command line that trains on the prepared data."""
    return (f"rloss fit --data rloss.data.voc.VOCScribbleDataModule --data.root {shlex.quote(str(root))} "
            f"--data.scribble_dir {SCRIBBLE_DIR}")


def prepare(root: Path, archives: Iterable[ArchiveSpec] = ARCHIVES, from_dir: Path | None = None) -> PrepareReport:
    """Fetch, verify and extract ``archives`` below ``root`` and build the training layout."""
    layout = PrepareLayout(Path(root).expanduser().resolve())
    actions: list[str] = []
    unpinned: dict[str, str] = {}
    for spec in archives:
        stamp = _read_stamp(layout, spec)
        if stamp is None:
            stamp = _fetch_and_extract(spec, layout, from_dir)
            actions.append(f"extracted {spec.filename}")
        if spec.checksum is None:
            unpinned[spec.name] = stamp["sha256"]
    train_ids, val_ids = _read_splits(layout)
    if _write_lines(layout.split_list("train_aug"), train_ids):
        actions.append("wrote train_aug.txt")
    if written := _build_masks(layout, train_ids, set(val_ids)):
        actions.append(f"wrote {written} SegmentationClassAug masks")
    if written := _build_scribble_masks(layout):
        actions.append(f"wrote {written} scribble masks")
    scribbled, coverage = _scribble_stats(layout, train_ids)
    return PrepareReport(layout.root, {"train_aug": len(train_ids), "val": len(val_ids)}, scribbled, coverage,
                         unpinned, actions)


def _fetch_and_extract(spec: ArchiveSpec, layout: PrepareLayout, from_dir: Path | None) -> dict[str, str]:
    """Get ``spec``'s archive (``from_dir``, an earlier download, or the network), verify and extract it."""
    if from_dir is not None:
        archive = from_dir / spec.filename
        if not archive.is_file():
            raise PrepareError(f"{archive} not found (--from-dir): download {spec.url} there first")
    else:
        archive = layout.downloads / spec.filename
    if archive.is_file():
        if spec.checksum is not None:
            verify(archive, spec.checksum)
    else:
        download(spec.url, archive, spec.checksum)
    safe_extract(archive, layout.root, spec.only)
    if not (layout.root / spec.content).is_dir():
        raise PrepareError(f"{archive} did not contain {spec.content}/ (is it the right archive?)")
    stamp = {"filename": spec.filename, "checksum": str(spec.checksum),
             "sha256": file_digest(archive, "sha256") if spec.checksum is None else ""}
    write_text_atomic(layout.stamps / f"{spec.name}.json", json.dumps(stamp, indent=1) + "\n")
    return stamp


def _read_stamp(layout: PrepareLayout, spec: ArchiveSpec) -> dict[str, str] | None:
    """The record of an earlier extraction of ``spec``, if it was verified against the same checksum
    and its content is still there."""
    path = layout.stamps / f"{spec.name}.json"
    if not (path.is_file() and (layout.root / spec.content).is_dir()):
        return None
    stamp = json.loads(path.read_text())
    return stamp if stamp.get("checksum") == str(spec.checksum) else None


def _read_splits(layout: PrepareLayout) -> tuple[list[str], list[str]]:
    """``train_aug`` = (SBD train + SBD val + VOC train) - VOC val, and VOC val."""
    voc_train, voc_val = (_read_ids(layout.split_list(split)) for split in ("train", "val"))
    sbd_train, sbd_val = (_read_ids(layout.sbd / f"{split}.txt") for split in ("train", "val"))
    train_aug = sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))
    return train_aug, voc_val


def _build_masks(layout: PrepareLayout, train_ids: Sequence[str], val_ids: set[str]) -> int:
    """Write missing ``SegmentationClassAug`` masks; return how many were written.

    Validation images keep their VOC masks (with the 255 boundary band). Training images
    use the SBD mask when SBD has the image, else the VOC mask.
    """
    todo = [i for i in [*train_ids, *sorted(val_ids)] if not layout.mask(i).is_file()]
    for image_id in tqdm(todo, desc="SegmentationClassAug", unit="mask", file=sys.stderr, leave=False):
        sbd_mat = layout.sbd / "cls" / f"{image_id}.mat"
        use_sbd = image_id not in val_ids and sbd_mat.is_file()
        mask = _read_sbd_mask(sbd_mat) if use_sbd else _read_voc_mask(layout.voc_masks / f"{image_id}.png")
        write_label_png(mask, layout.mask(image_id), palette=False)
    return len(todo)


def _read_sbd_mask(path: Path) -> np.ndarray:
    """The class-id mask (``GTcls.Segmentation``) of an SBD ``.mat`` file."""
    try:
        mask = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    except (KeyError, AttributeError, ValueError) as error:
        raise PrepareError(f"{path} has no GTcls.Segmentation mask ({error!r})") from error
    return _checked_mask(np.asarray(mask), path)


def _read_voc_mask(path: Path) -> np.ndarray:
    """The class-id mask of a VOC ``SegmentationClass`` palette PNG."""
    if not path.is_file():
        raise PrepareError(f"no mask for this image: {path} is missing and SBD has no .mat for it")
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise PrepareError(f"{path} is a {image.mode} image, expected a palette (P) or L mask of class ids")
        return _checked_mask(np.asarray(image), path)


def _checked_mask(mask: np.ndarray, source: Path) -> np.ndarray:
    labels = set(np.unique(mask).tolist()) - set(range(len(VOC_CLASSES))) - {IGNORE_INDEX}
    if mask.ndim != 2 or labels:
        raise PrepareError(f"{source}: expected a 2-D mask of class ids 0..{len(VOC_CLASSES) - 1} or "
                           f"{IGNORE_INDEX}, found shape {mask.shape} and labels {sorted(labels)}")
    return mask.astype(np.uint8)


def _build_scribble_masks(layout: PrepareLayout) -> int:
    """Convert scribble XML files without a PNG mask; return how many were written."""
    todo = [xml for xml in sorted(layout.scribble_xml.glob("*.xml"))
            if not layout.scribble_mask(xml.stem).is_file()]
    for xml in tqdm(todo, desc="scribbles", unit="mask", file=sys.stderr, leave=False):
        image = layout.image(xml.stem)
        if not image.is_file():
            raise PrepareError(f"scribble file {xml} has no image {image}")
        with Image.open(image) as opened:
            size = opened.size
        convert_scribble_xml(xml, layout.scribble_mask(xml.stem), size)
    return len(todo)


def _scribble_stats(layout: PrepareLayout, train_ids: Sequence[str]) -> tuple[int, float]:
    """Number of ``train_aug`` images with a scribble mask, and the share of labeled pixels in them."""
    labeled = total = count = 0
    for image_id in tqdm(train_ids, desc="scribble coverage", unit="mask", file=sys.stderr, leave=False):
        path = layout.scribble_mask(image_id)
        if path.is_file():
            with Image.open(path) as image:
                mask = np.asarray(image)
            labeled += int(np.count_nonzero(mask != IGNORE_INDEX))
            total += mask.size
            count += 1
    return count, labeled / total if total else 0.0


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise PrepareError(f"split file {path} is missing (was its archive extracted completely?)")
    return read_lines(path)


def _write_lines(path: Path, lines: Sequence[str]) -> bool:
    """Write ``lines`` unless the file already holds exactly them; return whether it was written."""
    text = "".join(f"{line}\n" for line in lines)
    if path.is_file() and path.read_text() == text:
        return False
    write_text_atomic(path, text)
    return True


def resolve_archives(base_url: str | None = None, urls: dict[str, str] | None = None,
                     checksums: dict[str, Checksum] | None = None) -> list[ArchiveSpec]:
    """``ARCHIVES`` with URLs taken from ``base_url`` (+ file name) and per-archive URL/checksum overrides."""
    urls, checksums = urls or {}, checksums or {}
    resolved = []
    for spec in ARCHIVES:
        url = urls.get(spec.name) or (f"{base_url.rstrip('/')}/{spec.filename}" if base_url else spec.url)
        resolved.append(dataclasses.replace(spec, url=url, checksum=checksums.get(spec.name, spec.checksum)))
    return resolved


def _name_value(text: str) -> tuple[str, str]:
    """argparse type for ``NAME=VALUE`` with NAME one of the archive names."""
    name, sep, value = text.partition("=")
    names = [spec.name for spec in ARCHIVES]
    if not sep or name not in names:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME in {names}, got {text!r}")
    return name, value


def _folder(text: str) -> Path:
    """argparse type for ``--root``: a folder or a path to create, not a file."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(f"{spec.name} ({spec.filename})" for spec in ARCHIVES)
    parser = ArgumentParser(
        prog="rloss data prepare",
        usage="%(prog)s [voc] --root ROOT [options]  (or: %(prog)s acdc --root ROOT, see its --help)",
        description="Download, verify and convert PASCAL VOC2012 + SBD (train_aug) + ScribbleSup scribbles.",
        epilog=f"Archive names: {names}. Checksums are verified whatever the URL, so mirrors are safe, "
               "e.g. --url voc=http://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar")
    parser.add_argument("--root", type=_folder, required=True, help="data folder to fill (created if needed)")
    parser.add_argument("--from-dir", type=Path, help="take the archives from this folder instead of downloading")
    parser.add_argument("--base-url", help="mirror serving all archives under their file names")
    parser.add_argument("--url", type=_name_value, action="append", default=[], metavar="NAME=URL",
                        help="URL of one archive (repeatable; overrides --base-url)")
    parser.add_argument("--checksum", type=_name_value, action="append", default=[], metavar="NAME=ALGO:HEX",
                        help="expected md5:/sha256: checksum of one archive (repeatable), e.g. for a repackaged mirror")
    return parser


def build_acdc_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="rloss data prepare acdc",
        description="Download (or copy) and verify the WSL4MIS preprocessed ACDC slices and volumes (2,102 h5 "
                    "files, about 261 MB); files already in place with the right SHA-256 are kept.",
        epilog="The images are the ACDC challenge data (Bernard et al., IEEE TMI 2018): research use, ACDC's terms.")
    parser.add_argument("--root", type=_folder, required=True,
                        help="data folder to fill with ACDC_training_slices/ and ACDC_training_volumes/")
    parser.add_argument("--from-dir", type=Path,
                        help="take the files from a local copy: a clone of HiLab-git/WSL4MIS, its data/ or data/ACDC")
    parser.add_argument("--base-url", default=ACDC_BASE_URL,
                        help="URL serving data/ACDC's files under their relative paths (default: %(default)s)")
    return parser


def main_acdc(argv: list[str]) -> int:
    """``rloss data prepare acdc``; returns the exit status (2 when files are missing or corrupt)."""
    args = build_acdc_parser().parse_args(argv)
    try:
        report = prepare_acdc(args.root, args.from_dir, args.base_url.rstrip("/"))
    except (UserError, DownloadError) as error:
        return print_error(f"data prepare acdc: {error}", getattr(error, "hint", None))
    print(report.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rloss data prepare`` / ``python -m rloss.tools.prepare_data``; returns the exit
    status (2, after one ``rloss: error:`` line, when the data cannot be prepared)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    dataset = argv.pop(0) if argv and argv[0] in DATASETS else "voc"
    if dataset == "acdc":
        return main_acdc(argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-"):
        parser.error(f"unknown dataset {argv[0]!r} (choose from {', '.join(DATASETS)})")
    args = parser.parse_args(argv)
    try:
        checksums = {name: Checksum.parse(value) for name, value in args.checksum}
    except ValueError as error:
        parser.error(str(error))
    archives = resolve_archives(args.base_url, dict(args.url), checksums)
    try:
        report = prepare(args.root, archives, args.from_dir)
    except (PrepareError, ChecksumError, DownloadError, UnsafeArchiveError, UnknownArchiveError, CorruptArchiveError,
            ScribbleFormatError) as error:
        return print_error(f"data prepare: {error}")
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
