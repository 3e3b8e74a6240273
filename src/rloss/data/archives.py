"""Safe extraction of tar and zip archives.

Every member is checked before anything is written: absolute paths, ``..`` components,
links that point outside the destination and device/FIFO members are rejected, so an
archive can only create files below the destination folder.
"""

from __future__ import annotations

import posixpath
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

from tqdm import tqdm

_Member = TypeVar("_Member", tarfile.TarInfo, zipfile.ZipInfo)


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder (or is not a plain file)."""


class UnknownArchiveError(ValueError):
    """A file is neither a tar nor a zip archive."""


def safe_extract(archive: Path, dest: Path, only: tuple[str, ...] = ()) -> None:
    """Extract ``archive`` (tar, tar.gz or zip) below ``dest`` after checking every member.

    With ``only``, just the members whose names start with one of these prefixes are written
    (all members are still checked).
    """
    dest.mkdir(parents=True, exist_ok=True)
    if tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, only)
    elif zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, only)
    else:
        raise UnknownArchiveError(f"{archive} is neither a tar nor a zip archive (a truncated or corrupt download? "
                                  "delete it and run again)")


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


def _extract_tar(archive: Path, dest: Path, only: tuple[str, ...]) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check_tar_member(archive, member)
        for member in _bar(_selected(members, lambda m: m.name, only), archive):
            tar.extract(member, dest, **_TAR_FILTER)


def _extract_zip(archive: Path, dest: Path, only: tuple[str, ...]) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for member in members:
            check_member_name(archive, member.filename)
        for member in _bar(_selected(members, lambda m: m.filename, only), archive):
            zipped.extract(member, dest)  # reading a member checks its CRC-32


def _selected(members: list[_Member], name: Callable[[_Member], str], only: tuple[str, ...]) -> list[_Member]:
    return [member for member in members if not only or name(member).startswith(only)]


def _bar(members: list[_Member], archive: Path) -> tqdm:
    return tqdm(members, desc=f"extract {archive.name}", unit="file", file=sys.stderr, leave=False)


# Python >= 3.10.12 / 3.11.4 also filter tar members themselves (PEP 706); keep the checks above for older ones.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
