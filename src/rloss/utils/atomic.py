"""Atomic file writes: nothing is left half-written when a run fails or is interrupted."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process's umask: from /proc on Linux (read-only), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_files(folder: str | Path, suffix: str = "") -> list[Path]:
    """The temporary files :func:`atomic_path` creates in ``folder`` for targets ending in ``suffix``
    (left behind only when the process was killed while writing)."""
    return sorted(Path(folder).glob(f".*.tmp{suffix}"))


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to the storage device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def naming(path: Path, keep_named: bool = False) -> Iterator[None]:
    """Re-raise an OSError as naming ``path``, the file or folder being written, not the temp file
    it is written to nor no file (a write to a full disk names none). ``keep_named``: only the
    errors that name no file."""
    try:
        yield
    except OSError as error:
        if error.errno is None or (keep_named and error.filename is not None):
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename, on
    error it is removed and an earlier ``path`` is left as it was. The file gets the usual
    permissions (0666 less the umask). An OSError while creating the folder names the folder;
    one while writing or renaming (permission denied, a full disk) names ``path``.

    ``durable``: fsync the file before the rename and the folder after it, so that the new
    content survives a power loss or a node failure (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with naming(path):
            yield tmp
            os.chmod(tmp, 0o666 & ~current_umask())
            if durable:
                fsync_path(tmp)
            os.replace(tmp, path)
            if durable:
                fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
