"""Safe extraction of tar and zip archives.

Every member is checked before anything is written: absolute paths, ``..`` components,
links that point outside the destination and device/FIFO members are rejected, so an
archive can only create files below the destination folder. The archive is read through
once before extraction too: a truncated or corrupt one (a bad zip CRC-32, a compressed stream
cut short, a tar without its end-of-archive marker) is named and nothing is written.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import posixpath
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TypeVar

from tqdm import tqdm

from rloss.utils.atomic import naming

_Member = TypeVar("_Member", tarfile.TarInfo, zipfile.ZipInfo)


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder (or is not a plain file)."""


class UnknownArchiveError(ValueError):
    """A file is neither a tar nor a zip archive."""


class CorruptArchiveError(ValueError):
    """An archive is truncated or corrupt."""


REFETCH = "delete it and download it again"
CORRUPT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)
"""What reading a truncated or corrupt archive raises (besides OSErrors without an errno, such as
gzip's BadGzipFile)."""
COMPRESSED_FILES = (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)
"""What ``tarfile`` reads a compressed tar through."""
CHUNK_SIZE = 1 << 20


def safe_extract(archive: Path, dest: Path, only: tuple[str, ...] = ()) -> None:
    """Extract ``archive`` (tar, tar.gz or zip) below ``dest`` after checking every member and
    reading the archive through (:class:`CorruptArchiveError` naming it when truncated or corrupt).

    With ``only``, just the members whose names start with one of these prefixes are written
    (all members are still checked). A failed write (a full disk) names ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with corrupt_named(archive), naming(dest, keep_named=True):
        if tarfile.is_tarfile(archive):
            _extract_tar(archive, dest, only)
        elif zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, only)
        else:
            raise UnknownArchiveError(f"{archive} is neither a tar nor a zip archive (a truncated or corrupt "
                                      f"download? {REFETCH})")


@contextmanager
def corrupt_named(archive: Path) -> Iterator[None]:
    """Re-raise the errors of reading a truncated or corrupt archive as a CorruptArchiveError naming it."""
    try:
        yield
    except (*CORRUPT_ERRORS, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:  # a file error, not the archive's content
            raise
        raise CorruptArchiveError(f"{archive}: truncated or corrupt archive ({error}); {REFETCH}") from error


def check_member_name(archive: Path, name: str) -> None:
    """Raise :class:`UnsafeArchiveError` if ``name`` is absolute or climbs out with ``..``."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")) or ".." in path.parts:
        raise UnsafeArchiveError(f"unsafe member {name!r} in {archive}: absolute paths and '..' are not allowed; "
                                 "nothing was extracted")


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    check_member_name(archive, member.name)
    if member.issym() or member.islnk():
        # a symlink's target is relative to its folder, a hard link's to the archive root
        base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
        target = posixpath.normpath(str(base / member.linkname))
        if target.startswith(("/", "../")) or target == "..":
            raise UnsafeArchiveError(f"link {member.name!r} -> {member.linkname!r} in {archive} points outside "
                                     "the destination; nothing was extracted")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"member {member.name!r} in {archive} is a device or FIFO; nothing was extracted")


def _check_tar_end(tar: tarfile.TarFile, archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Check what follows the last member: a compressed stream is read to its end (its own length
    and CRC checks find truncation); an uncompressed archive must have tar's end-of-archive marker
    there, a zero block (``getmembers`` stops silently at a truncated or corrupt header)."""
    if isinstance(tar.fileobj, COMPRESSED_FILES):
        while tar.fileobj.read(CHUNK_SIZE):
            pass
        return
    tar.fileobj.seek(tar.offset)
    if tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        last = f" after member {members[-1].name!r}" if members else ""
        raise CorruptArchiveError(f"{archive}: truncated or corrupt tar archive: no end-of-archive marker{last}; "
                                  f"{REFETCH}")


def _extract_tar(archive: Path, dest: Path, only: tuple[str, ...]) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        _check_tar_end(tar, archive, members)
        for member in members:
            _check_tar_member(archive, member)
        for member in _bar(_selected(members, lambda m: m.name, only), archive):
            tar.extract(member, dest, **_TAR_FILTER)


def _extract_zip(archive: Path, dest: Path, only: tuple[str, ...]) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for member in members:
            check_member_name(archive, member.filename)
        if (bad := zipped.testzip()) is not None:  # reads every member, checking its CRC-32
            raise CorruptArchiveError(f"{archive}: corrupt member {bad!r} (its CRC-32 differs); {REFETCH}")
        for member in _bar(_selected(members, lambda m: m.filename, only), archive):
            zipped.extract(member, dest)


def _selected(members: list[_Member], name: Callable[[_Member], str], only: tuple[str, ...]) -> list[_Member]:
    return [member for member in members if not only or name(member).startswith(only)]


def _bar(members: list[_Member], archive: Path) -> tqdm:
    return tqdm(members, desc=f"extract {archive.name}", unit="file", file=sys.stderr, leave=False)


# Python >= 3.10.12 / 3.11.4 also filter tar members themselves (PEP 706); keep the checks above for older ones.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
