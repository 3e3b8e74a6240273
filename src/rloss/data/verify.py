"""Check every file of a dataset split once, before training: images decode, labels are
single-channel PNGs of the image's size holding valid class ids.

Files are checked in parallel threads (decoding releases the GIL) with a progress bar. The
samples found good are recorded in a per-split JSON cache keyed by each file's path, size and
modification time, so a second run only re-checks what changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from rloss.data.files import read_image, read_label
from rloss.utils.atomic import write_text_atomic
from rloss.utils.errors import DataError

Sample = Mapping[str, Path]
"""One item's files: ``"image"`` first, then its label PNGs (``"mask"``, ``"scribble"``)."""

CACHE_VERSION = 1
MAX_WORKERS = 16


def check_sample(files: Sample, num_classes: int) -> list[str]:
    """The problems of one sample's files (each naming its file); empty when all are good."""
    try:
        size = read_image(files["image"]).shape[-2:]
    except (ValueError, OSError) as error:
        return [str(error)]
    problems = []
    for key, path in files.items():
        if key != "image":
            try:
                read_label(path, num_classes, size)
            except (ValueError, OSError) as error:
                problems.append(str(error))
    return problems


def signature(files: Sample) -> list[list[str | int]]:
    """[path, size, mtime_ns] of each file: a changed, moved or replaced file changes it."""
    out: list[list[str | int]] = []
    for path in files.values():
        stat = path.stat()
        out.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def load_cache(path: Path | None, num_classes: int) -> dict[str, list]:
    """Signatures of the samples found good by an earlier run (empty when none or unreadable)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != CACHE_VERSION or data.get("num_classes") != num_classes:
        return {}
    return data.get("samples", {})


def save_cache(path: Path | None, num_classes: int, samples: dict[str, list]) -> None:
    """Record the good samples' signatures; a read-only dataset folder just goes uncached."""
    if path is None:
        return
    try:
        write_text_atomic(path, json.dumps({"version": CACHE_VERSION, "num_classes": num_classes, "samples": samples}))
    except OSError:
        pass


SampleCheck = Callable[[Sample, int], list[str]]
"""(files, num_classes) -> the problems of one sample (each naming its file)."""


def verify_samples(
    samples: Mapping[str, Sample],
    num_classes: int,
    cache: Path | None = None,
    description: str = "checking data",
    check: SampleCheck | None = None,
) -> list[str]:
    """Check every sample not already recorded good in ``cache`` with ``check`` (default
    :func:`check_sample`: an image and its label PNGs); return all problems found."""
    check = check or check_sample
    known = load_cache(cache, num_classes)
    signatures = {name: signature(files) for name, files in samples.items()}
    todo = [name for name in samples if known.get(name) != signatures[name]]
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda name: check(samples[name], num_classes), todo)
        progress = tqdm(results, total=len(todo), desc=description, unit="image", disable=not todo)
        found = dict(zip(todo, progress, strict=True))
    good = {name: signatures[name] for name in samples if not found.get(name)}
    if good != known:
        save_cache(cache, num_classes, good)
    return [problem for name in todo for problem in found[name]]


def problems_error(problems: list[str], what: str, report: Path | None, shown: int = 20) -> DataError:
    """The error listing ``problems`` of ``what``: the first ``shown`` in the message, every one
    in ``report`` (a text file) when there are more."""
    lines = [f"{len(problems)} bad file(s) or value(s) in {what}:", *(f"  {p}" for p in problems[:shown])]
    if len(problems) > shown:
        where = ""
        if report is not None:
            try:
                write_text_atomic(report, "".join(f"{p}\n" for p in problems))
                where = f": all listed in {report}"
            except OSError:
                pass
        lines.append(f"  ... and {len(problems) - shown} more{where}")
    return DataError(
        "\n".join(lines), "fix or re-create these files, or remove their names from the split list"
    )
