"""Start-up time of the ``rloss`` command as a user meets it: wall seconds of whole processes (best
and median of N), for this checkout and, with ``--compare REF``, for another commit in the same run
(a temporary ``git worktree`` of REF on PYTHONPATH), so both are measured on the same machine state.

    python benchmarks/startup.py [--repeat 5] [--compare 4017679]

Commands timed: ``rloss --help``, ``rloss propagate --help``, ``rloss fit --help`` and one
propagation of a real VOC image of ``tests/data`` (``rloss propagate``, process start, JIT cache warm
after the first untimed run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "tests" / "data" / "2011_003223.jpg"
SCRIBBLES = REPO / "tests" / "data" / "2011_003223_scribble.png"


def commands(output: Path) -> dict[str, list[str]]:
    """Label -> the ``rloss`` arguments timed."""
    return {
        "rloss --help": ["--help"],
        "rloss propagate --help": ["propagate", "--help"],
        "rloss fit --help": ["fit", "--help"],
        "rloss propagate (one 500x375 image)": [
            "propagate", "--image", str(IMAGE), "--scribbles", str(SCRIBBLES), "--output", str(output)],
    }


def seconds(args: list[str], src: Path, repeat: int) -> list[float]:
    """Wall seconds of ``python -m rloss ARGS`` with ``src`` first on PYTHONPATH, ``repeat`` times
    after one untimed warm-up run (fills the OS file cache and Numba's on-disk cache)."""
    env = {**os.environ, "PYTHONPATH": str(src), "WANDB_MODE": "offline"}
    run = [sys.executable, "-m", "rloss", *args]
    subprocess.run(run, env=env, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(run, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", help="a git ref to time beside this checkout (e.g. the commit before a change)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"this checkout": REPO / "src"}
        if args.compare:
            tree = Path(tmp) / "compare"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.compare],
                           check=True, capture_output=True)
            sources[args.compare] = tree / "src"
        try:
            print("| command | " + " | ".join(f"{name}: best / median s" for name in sources) + " |")
            print("|---|" + "---|" * len(sources))
            for label, argv in commands(Path(tmp) / "mask.png").items():
                cells = []
                for src in sources.values():
                    try:
                        times = seconds(argv, src, args.repeat)
                        cells.append(f"{min(times):.2f} / {statistics.median(times):.2f}")
                    except subprocess.CalledProcessError:
                        cells.append("fails")
                print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        finally:
            if args.compare:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
