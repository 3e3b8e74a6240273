"""The ``rloss`` command: one table of subcommands, each dispatched to the module that runs it.

Only the module of the command given is imported, so ``rloss --help`` and the tools start without
Lightning or W&B. Input errors of any command are one ``rloss: error:`` line, exit code 2
(:mod:`rloss.utils.errors`); internal errors keep their traceback.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from importlib import import_module
from typing import NamedTuple

from rloss.utils.allocator import keep_freed_memory
from rloss.utils.errors import EXIT_USER_ERROR, debug_mode, print_error, user_error

LIGHTNING_CLI = "rloss.training.cli"


class Command(NamedTuple):
    """Leading words of a command line, its one-line summary, and the module whose ``main(argv)``
    receives the rest of the line (the Lightning CLI module receives the whole line)."""

    words: tuple[str, ...]
    summary: str
    module: str = LIGHTNING_CLI


COMMANDS: tuple[Command, ...] = (
    Command(("fit",), "train a model (pCE + regularizers) on scribbles"),
    Command(("validate",), "metrics of a checkpoint on the validation split"),
    Command(("test",), "metrics of a checkpoint on the test split (optionally with CRF post-processing)"),
    Command(("predict",), "write palette PNG masks of a folder of images"),
    Command(("propagate",), "scribbles -> dense mask of one image (or folder)", "rloss.tools.propagate"),
    Command(("annotate",), "scribble in a browser, see the dense mask, save both", "rloss.tools.annotate"),
    Command(("demo",), "the paper's protocol on synthetic data, on CPU, in minutes", "rloss.tools.demo"),
    Command(("data", "prepare"), "download, verify and convert a dataset (voc, acdc)", "rloss.tools.prepare_data"),
)
"""Every ``rloss`` subcommand (``rloss --help`` lists them in this order)."""

PILLOW_SIZE_WARNING = r"Image size \(\d+ pixels\) exceeds limit"
"""Pillow's decompression-bomb warning: rloss checks image sizes itself (rloss.data.files.MAX_IMAGE_PIXELS)."""


def usage() -> str:
    """``rloss --help``: every subcommand with its one-line summary."""
    names = [" ".join(c.words) for c in COMMANDS]
    width = max(map(len, names))
    lines = [f"  {name:<{width}}  {c.summary}" for name, c in zip(names, COMMANDS, strict=True)]
    return "\n".join(
        ["usage: rloss <command> [options]", "", "commands:", *lines, "",
         "run 'rloss <command> --help' for the options of a command; RLOSS_DEBUG=1 shows tracebacks"]
    )


def dispatch(argv: list[str]) -> int | None:
    """Run the command line ``argv`` with its command's module; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USER_ERROR
    for command in COMMANDS:
        if tuple(argv[: len(command.words)]) == command.words:
            run: Callable[[list[str]], int | None] = import_module(command.module).main
            return run(argv if command.module == LIGHTNING_CLI else argv[len(command.words) :])
    return import_module(LIGHTNING_CLI).main(argv)  # Lightning names the unknown command and its choices


def main(args: list[str] | None = None) -> int | None:
    """Entry point of ``rloss`` and ``python -m rloss``; returns the exit status. Input errors (see
    :func:`rloss.utils.errors.user_error`) print one line and return 2; others raise."""
    argv = list(sys.argv[1:] if args is None else args)
    keep_freed_memory()
    warnings.filterwarnings("ignore", PILLOW_SIZE_WARNING, RuntimeWarning)
    try:
        return dispatch(argv)
    except Exception as error:
        reported = user_error(error)
        if debug_mode() or reported is None:
            raise
        return print_error(str(reported), reported.hint)
