"""The WSL4MIS preprocessed ACDC files (github.com/HiLab-git/WSL4MIS, folder ``data/ACDC`` at a pinned
commit) and ``rloss data prepare acdc``: fetch them (download or a local copy), verify each one against
the shipped SHA-256 manifest (``acdc_manifest.txt``, ``sha256sum`` lines), and keep verified files
so that a second run fetches only what is missing or corrupt.

The images are the ACDC challenge data (Bernard et al., IEEE TMI 2018), under ACDC's own terms.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from rloss.data.download import Checksum, ChecksumError, DownloadError, download, file_digest
from rloss.utils.errors import DataError, UserError

COMMIT = "a594da8d99a42860bf1dad7cea02bd168e3683b1"
BASE_URL = f"https://raw.githubusercontent.com/HiLab-git/WSL4MIS/{COMMIT}/data/ACDC"
"""Serves every file under its path relative to ``data/ACDC``."""
SLICES_DIR, VOLUMES_DIR = "ACDC_training_slices", "ACDC_training_volumes"
MANIFEST = Path(__file__).with_name("acdc_manifest.txt")
SOURCE_LAYOUTS = (".", "ACDC", "data/ACDC")
"""Where ``--from-dir`` may hold the two folders: in itself (``data/ACDC``), below ``ACDC`` (the
repository's ``data`` folder) or below ``data/ACDC`` (a clone)."""
MAX_NAMED = 20
"""Failed files named one per line in the error; the rest are counted."""


@dataclass(frozen=True)
class ACDCReport:
    """What ``prepare_acdc`` found and did."""

    root: Path
    counts: dict[str, int]
    """Verified files per folder."""
    fetched: int
    """Files downloaded or copied by this run (the others were already in place)."""

    def render(self) -> str:
        """A summary ending with the ``rloss fit`` line."""
        done = f"{self.fetched} fetched, " if self.fetched else ""
        lines = [f"ACDC ready in {self.root} ({done}{sum(self.counts.values()) - self.fetched} already in place)"]
        lines += [f"  {folder}/ {count:5d} files, SHA-256 verified" for folder, count in self.counts.items()]
        fit = f"rloss fit --config configs/experiments/acdc/unet.yaml --data.root {shlex.quote(str(self.root))}"
        return "\n".join([*lines, "Next:", f"  {fit}"])


def read_manifest(path: Path | None = None) -> dict[str, str]:
    """Relative path -> SHA-256 hex digest, from ``path`` (default :data:`MANIFEST`)."""
    path = path or MANIFEST
    manifest = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        parts = PurePosixPath(name).parts
        if len(digest) != 64 or len(parts) != 2 or parts[0] not in (SLICES_DIR, VOLUMES_DIR):
            raise DataError(f"{path}:{number}: expected '<sha256>  {SLICES_DIR}|{VOLUMES_DIR}/<file>', got {line!r}")
        manifest[name] = digest
    return manifest


def find_source(folder: Path) -> Path:
    """The folder of ``folder``'s :data:`SOURCE_LAYOUTS` that holds the ACDC folders."""
    for layout in SOURCE_LAYOUTS:
        candidate = folder / layout
        if (candidate / SLICES_DIR).is_dir() or (candidate / VOLUMES_DIR).is_dir():
            return candidate
    raise UserError(f"--from-dir {folder}: no {SLICES_DIR}/ or {VOLUMES_DIR}/ in it, nor in its ACDC/ or data/ACDC/ "
                    "(expected a clone of HiLab-git/WSL4MIS, its data/ folder or data/ACDC)")


def prepare_acdc(root: Path, from_dir: Path | None = None, base_url: str = BASE_URL,
                 manifest: Mapping[str, str] | None = None) -> ACDCReport:
    """Put every file of ``manifest`` (default: the shipped one) below ``root``, verified.

    Files already there with the right digest are kept; the others are copied from ``from_dir``
    (hard-linked when possible) or downloaded from ``base_url`` (resuming partial downloads).
    Raises :class:`DataError` naming every file that is still missing or corrupt.
    """
    root = root.expanduser().resolve()
    manifest = read_manifest() if manifest is None else manifest
    source = find_source(from_dir.expanduser().resolve()) if from_dir is not None else None
    failures: list[str] = []
    fetched = 0
    for name, digest in tqdm(sorted(manifest.items()), desc="ACDC", unit="file", file=sys.stderr, leave=False):
        dest = root / name
        if dest.is_file() and file_digest(dest, "sha256") == digest:
            continue
        failure = _copy(source / name, dest, digest) if source else _download(f"{base_url}/{name}", dest, digest)
        if failure:
            failures.append(failure)
        else:
            fetched += 1
    if failures:
        head = (f"ACDC in {root}: {len(failures)} of {len(manifest)} files missing or corrupt "
                "(verified files are kept; run again to retry):")
        named = [f"  {failure}" for failure in failures[:MAX_NAMED]]
        more = [f"  ... and {len(failures) - MAX_NAMED} more"] if len(failures) > MAX_NAMED else []
        raise DataError("\n".join([head, *named, *more]))
    counts = {folder: sum(name.startswith(f"{folder}/") for name in manifest) for folder in (SLICES_DIR, VOLUMES_DIR)}
    return ACDCReport(root, counts, fetched)


def _copy(source: Path, dest: Path, digest: str) -> str | None:
    """Hard-link (else copy) ``source`` to ``dest`` if it has ``digest``; else the reason it was not."""
    if not source.is_file():
        return f"{source}: missing"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    if (found := file_digest(tmp, "sha256")) != digest:
        tmp.unlink()
        return f"{source}: SHA-256 {found}, expected {digest}"
    os.replace(tmp, dest)
    return None


def _download(url: str, dest: Path, digest: str) -> str | None:
    """Download ``url`` to ``dest`` and verify it; the reason it failed, for an HTTP error or a wrong
    digest. Other download errors (network down) are raised: every file would fail alike."""
    try:
        download(url, dest, Checksum("sha256", digest))
    except ChecksumError as error:
        return f"{url}: SHA-256 {error.found}, expected {digest} (kept as {dest.name}.rejected, not used)"
    except DownloadError as error:
        if not isinstance(error.__cause__, urllib.error.HTTPError):
            raise
        return str(error)
    return None
