"""Resumable HTTP downloads (``Range`` requests) and archive checksums.

An interrupted download keeps its bytes in ``NAME.part`` next to the destination and the
next attempt (in the same run or a later one) asks the server for the rest only. A file
is moved to its final name only after its checksum matches; a file that fails its
checksum is never used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

CHUNK_SIZE = 1 << 20
DIGEST_LENGTHS = {32: "md5", 64: "sha256"}


class ChecksumError(ValueError):
    """A file's checksum differs from the expected one."""

    def __init__(self, path: Path, expected: Checksum, found: str, note: str = "") -> None:
        self.path, self.expected, self.found = path, expected, found
        message = (
            f"checksum mismatch for {path}: expected {expected.algorithm} {expected.hexdigest}, "
            f"found {found}"
        )
        super().__init__(f"{message}. {note}" if note else message)


class DownloadError(RuntimeError):
    """A download failed (HTTP error, refused connection, too many interruptions)."""


class _Truncated(Exception):
    """The connection closed before the announced length arrived."""


@dataclass(frozen=True)
class Checksum:
    """An expected digest, e.g. ``Checksum("md5", "6cd6...")``."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Parse ``"md5:HEX"``, ``"sha256:HEX"`` or a bare 32/64-digit hex digest."""
        algorithm, _, hexdigest = text.strip().lower().rpartition(":")
        algorithm = algorithm or DIGEST_LENGTHS.get(len(hexdigest), "")
        if algorithm not in DIGEST_LENGTHS.values() or len(hexdigest) != hashlib.new(algorithm).digest_size * 2:
            raise ValueError(f"not an md5/sha256 checksum: {text!r} (expected 'md5:<32 hex>' or 'sha256:<64 hex>')")
        int(hexdigest, 16)  # raises ValueError on non-hex digits
        return cls(algorithm, hexdigest)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, with a progress bar."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file, _bar(path.stat().st_size, f"{algorithm} {path.name}") as bar:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify(path: Path, expected: Checksum) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the expected digest."""
    found = file_digest(path, expected.algorithm)
    if found != expected.hexdigest:
        raise ChecksumError(path, expected, found)


def download(url: str, dest: Path, expected: Checksum | None, attempts: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part``, and verify it against ``expected``.

    Interrupted transfers are resumed up to ``attempts`` times in this call; the partial
    file is kept on failure so that a later call resumes it. Without ``expected`` the file
    is accepted once the server's announced length has arrived.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, timeout)
            break
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, _Truncated) as error:
            size = part.stat().st_size if part.exists() else 0
            tqdm.write(f"{dest.name}: transfer interrupted at {size} bytes ({error!r}), attempt {attempt}/{attempts}",
                       file=sys.stderr)
    else:
        raise DownloadError(f"download of {url} interrupted {attempts} times; partial file kept at {part}, "
                            "run the command again to resume it")
    if expected is not None:
        found = file_digest(part, expected.algorithm)
        if found != expected.hexdigest:
            rejected = dest.with_name(dest.name + ".rejected")
            os.replace(part, rejected)
            raise ChecksumError(dest, expected, found,
                                f"Downloaded from {url}; moved to {rejected} and not used, run again to re-download")
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path, timeout: float) -> None:
    """Fetch the rest of ``url`` into ``part`` (a ``Range`` request when ``part`` has bytes)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the partial file is complete
            return
        raise DownloadError(f"HTTP {error.code} {error.reason} for {url}") from error
    except urllib.error.URLError as error:
        raise DownloadError(f"cannot reach {url}: {error.reason} (offline? see --from-dir)") from error
    with response:
        if offset and not _resumes_at(response, offset):
            offset = 0  # the server ignored the Range header: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as file, _bar(total, part.name, offset) as bar:
            while chunk := response.read(CHUNK_SIZE):
                file.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise _Truncated(f"{part.stat().st_size} of {total} bytes")


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """Whether ``response`` is a 206 answer whose ``Content-Range`` starts at ``offset``."""
    content_range = response.headers.get("Content-Range", "")
    return response.status == 206 and content_range.startswith(f"bytes {offset}-")


def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False)
