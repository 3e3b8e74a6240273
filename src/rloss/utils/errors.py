"""How the ``rloss`` command reports errors: a user's input error is one line
``rloss: error: <what, where, what was expected>`` (plus at most a hint line) and exit code 2,
without a traceback unless ``RLOSS_DEBUG=1``; internal errors keep their traceback.

Input errors are :class:`UserError`, the ValueError / FileNotFoundError of rloss's own checks, and
an OSError naming a file it cannot read or write (:data:`FILE_PROBLEMS`), also when a DataLoader
worker raised it (:func:`worker_error`).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

EXIT_USER_ERROR = 2
"""Exit status of a reported input error (as argparse's for a bad argument)."""

PACKAGE_DIR = Path(__file__).resolve().parent.parent

INPUT_ERRORS = (ValueError, FileNotFoundError)
"""Errors that are input errors when one of rloss's checks raised them (the innermost frame of their
traceback is rloss's code, under :data:`PACKAGE_DIR`)."""

FILE_PROBLEMS: dict[int, str] = {
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied; expected a file or folder this user may read (or write)",
    errno.EPERM: "operation not permitted; expected a file or folder this user may read (or write)",
    errno.EROFS: "on a read-only file system; expected a writable folder",
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EISDIR: "is a folder; expected a file",
    errno.ENOTDIR: "a part of the path is a file; expected a folder",
    errno.EEXIST: "exists as a file; expected a folder",
    errno.ENAMETOOLONG: "the name is too long",
}
"""What an OSError naming a file means for the user (by errno): such errors are input errors,
reported as ``<file>: <problem>``."""

WORKER_ERROR = re.compile(
    r"Caught (?P<name>\w+) in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call last\):\n"
)
"""The message torch gives the exception a DataLoader worker raised, re-raised in the main process
(the worker's formatted traceback follows)."""
FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+', re.MULTILINE)
OS_ERROR = re.compile(r"\[Errno (?P<errno>\d+)\] (?P<strerror>.+?): '(?P<filename>.+)'", re.DOTALL)
"""``str()`` of an OSError naming a file."""


class UserError(Exception):
    """An error of the user's input, settings or environment, reported in one line plus ``hint``."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class DataError(UserError, ValueError):
    """Files of a dataset are missing, undecodable or hold invalid values (each one named)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file is unreadable, not a checkpoint, or holds another network than the run builds."""


class TrainingStoppedError(UserError):
    """Training cannot go on and its latest state is not worth keeping, or cannot be written: no
    checkpoint is written on the way out (the previous ones are kept)."""


class NonFiniteLossError(TrainingStoppedError, FloatingPointError):
    """A loss term became NaN or inf (the run stops at that step before the weights are updated), or
    the weights did after an update (the run stops before saving them)."""


def debug_mode() -> bool:
    """True when ``RLOSS_DEBUG=1``: errors are raised with their full traceback."""
    return os.environ.get("RLOSS_DEBUG", "") not in ("", "0")


def innermost_file(error: BaseException) -> Path | None:
    """The source file of the innermost frame of ``error``'s traceback (None without a traceback)."""
    tb = error.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename)


def in_folders(file: Path | None, *folders: Path) -> bool:
    """True when ``file`` lies under one of ``folders``."""
    return file is not None and any(file.resolve().is_relative_to(folder) for folder in folders)


def raised_in(error: BaseException, *folders: Path) -> bool:
    """True when the innermost frame of ``error``'s traceback is code under one of ``folders``."""
    return in_folders(innermost_file(error), *folders)


def file_problem(error: OSError) -> str | None:
    """``<file>: <problem>`` for an OSError that names a file and has a :data:`FILE_PROBLEMS` errno, else None."""
    problem = FILE_PROBLEMS.get(error.errno)
    return f"{error.filename}: {problem}" if problem and error.filename is not None else None


def worker_error(error: BaseException) -> tuple[BaseException, Path | None] | None:
    """The exception a DataLoader worker raised, rebuilt from the message of ``error`` (torch re-raises
    it in the main process with the worker's traceback as its message), and the file its innermost
    frame ran; None when ``error`` is not such an exception or its traceback cannot be read."""
    text = str(error)
    head = WORKER_ERROR.match(text)
    frames = list(FRAME.finditer(text, head.end())) if head else []
    if head is None or not frames:
        return None
    name = re.escape(head["name"])  # the exception line: its (module-qualified) type name, ": ", its message
    line = re.search(rf"^(?:[\w.]+\.)?{name}(?:: |$)", text[frames[-1].end():], re.MULTILINE)
    if line is None:
        return None
    message = text[frames[-1].end() + line.end():].rstrip("\n")
    if isinstance(error, OSError) and (named := OS_ERROR.fullmatch(message)):
        original: BaseException = OSError(int(named["errno"]), named["strerror"], named["filename"])
    else:
        original = type(error)(message)  # torch built one from a message alike
    return original, Path(frames[-1]["file"])


def reported_error(error: BaseException, origin: Path | None) -> UserError | None:
    """``error`` as the UserError to report, when it is an input error (see the module's docstring)
    whose innermost frame ran ``origin``; None for internal errors."""
    if isinstance(error, UserError):
        return error
    if isinstance(error, OSError) and (problem := file_problem(error)):
        return UserError(problem)
    if isinstance(error, INPUT_ERRORS) and in_folders(origin, PACKAGE_DIR):
        return UserError(str(error))
    return None


def user_error(error: BaseException | None) -> UserError | None:
    """The input error that ``error`` is, or was raised from (``raise ... from``: jsonargparse wraps
    errors of a class's ``__init__``), or that a DataLoader worker raised, as the UserError to
    report (:func:`reported_error`); None for internal errors."""
    while error is not None:
        original, origin = worker_error(error) or (error, innermost_file(error))
        if (reported := reported_error(original, origin)) is not None:
            return reported
        error = error.__cause__
    return None


def print_error(message: str, hint: str | None = None) -> int:
    """Print ``rloss: error: message`` (and ``hint``) to stderr; return the exit status 2."""
    print(f"rloss: error: {message}", file=sys.stderr)
    if hint:
        print(hint, file=sys.stderr)
    return EXIT_USER_ERROR


def one_line(message: str) -> str:
    """``message`` with its lines joined by single spaces (argument errors are often indented blocks)."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


class ArgumentParser(argparse.ArgumentParser):
    """argparse parser whose errors are the one-line ``rloss: error:`` form with a --help hint."""

    def error(self, message: str) -> NoReturn:
        if debug_mode():
            super().error(message)
        print_error(f"{self.prog}: {one_line(message)}", f"run '{self.prog} --help' for the options")
        sys.exit(EXIT_USER_ERROR)
