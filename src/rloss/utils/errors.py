"""How the ``rloss`` command reports errors: a user's input error is one line
``rloss: error: <what, where, what was expected>`` (plus at most a hint line) and exit code 2,
without a traceback unless ``RLOSS_DEBUG=1``; internal errors keep their traceback."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

EXIT_USER_ERROR = 2
"""Exit status of a reported input error (as argparse's for a bad argument)."""

PACKAGE_DIR = Path(__file__).resolve().parent.parent


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
    """Training cannot go on and its latest state is not worth keeping: no checkpoint is written on
    the way out (the previous ones are kept)."""


class NonFiniteLossError(TrainingStoppedError, FloatingPointError):
    """A loss term became NaN or inf (the run stops at that step before the weights are updated), or
    the weights did after an update (the run stops before saving them)."""


def debug_mode() -> bool:
    """True when ``RLOSS_DEBUG=1``: errors are raised with their full traceback."""
    return os.environ.get("RLOSS_DEBUG", "") not in ("", "0")


def raised_in(error: BaseException, *folders: Path) -> bool:
    """True when the innermost frame of ``error``'s traceback is code under one of ``folders``."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    file = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(file.is_relative_to(folder) for folder in folders)


def raised_by_rloss(error: BaseException) -> bool:
    """True when the innermost frame of ``error``'s traceback is rloss's own code (one of its checks)."""
    return raised_in(error, PACKAGE_DIR)


def user_error(error: BaseException) -> BaseException | None:
    """The input error that ``error`` is or was raised from (``raise ... from``: jsonargparse wraps
    errors of a class's ``__init__``): a UserError, or a ValueError / FileNotFoundError raised by one
    of rloss's input checks. None for internal errors."""
    while error is not None:
        if isinstance(error, UserError) or (
            isinstance(error, (ValueError, FileNotFoundError)) and raised_by_rloss(error)
        ):
            return error
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
