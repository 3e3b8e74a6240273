"""``rloss demo`` (``make demo``): the paper's protocol on the synthetic data, on CPU, in minutes.

Runs eight trainings through the Lightning CLI with the configs of ``configs/demo/`` (a tiny CNN on
64x64 synthetic images with ~3% of pixels scribbled):

1. ``pce`` phase 1: partial cross-entropy on the scribbles (``base.yaml + pce.yaml``);
2. phase 2, each fine-tuned from the phase-1 weights (``--model.init_weights``) for the same steps
   (``finetune.yaml``): pCE alone (the fair baseline: as many steps as the others), pCE + DenseCRF,
   pCE + normalized cut, pCE + gated CRF, pCE + size constraint, pCE + soft self-labeling;
3. ``full``: cross-entropy on the full masks for phases 1 + 2 steps (``full.yaml``).

Prints a table (validation mIoU and seconds per run), writes ``<output>/results.json`` (mIoU in %,
keys ``pce``, ``pce+densecrf``, ``pce+ncut``, ``pce+gatedcrf``, ``pce+size``, ``pce+selflabel``,
``full``; ``pce`` is the phase-2 pCE run), ``<output>/predictions.png`` (image / scribbles / pCE /
pCE+DenseCRF / ground truth of a few
validation images), CSV logs under ``<output>/logs`` and checkpoints under ``<output>/<run>/``.

    rloss demo --output outputs/demo            # the full demo (a few minutes on 2 cores)
    rloss demo --output /tmp/demo --quick       # a few steps on a few images (the test)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from rloss import lattice
from rloss.tools.demo.figure import save_predictions
from rloss.tools.demo.runs import RESULT_KEYS, RUNS, Run, cli_args, phase_steps
from rloss.training.config_files import configs_path
from rloss.utils.atomic import write_text_atomic
from rloss.utils.errors import ArgumentParser

CONFIG_DIR = configs_path() / "demo"
"""The shipped ``configs/demo`` (the repository's folder, installed with the package)."""

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="rloss demo", description="Weakly-supervised segmentation demo on synthetic data (CPU)."
    )
    parser.add_argument("--output", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--steps", type=int, default=None, help="phase-1 steps (default: configs/demo, 300)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="phase-2 steps (default: 150)")
    parser.add_argument("--num-train", type=int, default=None, help="training images (default: the DataModule's, 400)")
    parser.add_argument("--num-val", type=int, default=None, help="validation images (default: 100)")
    parser.add_argument("--size", type=int, default=None, help="image side in px (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default: 0)")
    parser.add_argument("--panels", type=int, default=4, help="validation images in predictions.png")
    parser.add_argument("--config-dir", default=str(CONFIG_DIR), help="folder of the demo configs")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch and Numba-lattice threads (default 1: on a loaded 2-core machine 2 threads were 6x slower)",
    )
    parser.add_argument("--quick", action="store_true", help="a few steps on a few images (smoke test)")
    args = parser.parse_args(list(argv))
    if args.quick:
        defaults = {"steps": 3, "finetune_steps": 2, "num_train": 8, "num_val": 4}
        for key, value in defaults.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    for key in ("steps", "finetune_steps", "num_train", "num_val", "size", "threads"):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    return args


def train(run: Run, args: argparse.Namespace, output: Path, phase1: Path | None):
    """Fit ``run`` through the CLI, validate it; returns (cli, mIoU %, seconds)."""
    from rloss.training.cli import run_cli

    tic = time.perf_counter()
    cli = run_cli(cli_args(run, args, output, phase1))
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    seconds = time.perf_counter() - tic
    return cli, 100.0 * float(metrics[0]["val/mIoU"]), seconds


def last_checkpoint(cli) -> Path:
    """The last.ckpt that the fit of ``cli`` wrote."""
    path = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"phase 1 wrote no checkpoint at {path}")
    return path


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def format_table(rows: list[tuple[str, str, float, float]], steps: str) -> str:
    lines = [
        f"{'run':<28} {'key':<14} {'val mIoU %':>10} {'seconds':>8}",
        "-" * 63,
        *[f"{label:<28} {key:<14} {miou:>10.1f} {sec:>8.1f}" for label, key, miou, sec in rows],
    ]
    return "\n".join([*lines, steps])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 on success."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")
    threads = torch.get_num_threads(), lattice.get_num_threads()
    torch.set_num_threads(args.threads)
    lattice.set_num_threads(args.threads)  # the Numba lattice's host threads
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
            return run_demo(args, output)
    finally:  # restore the caller's (e.g. a test session's) thread settings
        torch.set_num_threads(threads[0])
        lattice.set_num_threads(threads[1])


def run_demo(args: argparse.Namespace, output: Path) -> int:
    """The trainings of RUNS, the table, results.json and predictions.png."""
    start = time.perf_counter()
    rows: list[tuple[str, str, float, float]] = []
    results: dict[str, float] = {}
    models = {}
    phase1: Path | None = None
    datamodule = None
    for run in RUNS:
        print(f"\n=== rloss demo: {run.label} ({' + '.join(run.configs)}) ===", flush=True)
        cli, miou, seconds = train(run, args, output, phase1)
        if run.phase == "phase1":
            phase1 = last_checkpoint(cli)
        if run.result:
            results[run.result] = round(miou, 2)
        if run.panel:
            models[run.panel] = cli.model
        datamodule = cli.datamodule
        rows.append((run.label, run.result or "-", miou, seconds))
        print(f"=== {run.label}: val mIoU {miou:.1f}% in {seconds:.0f} s ===", flush=True)

    write_json(output / "results.json", {key: results[key] for key in RESULT_KEYS})
    save_predictions(output / "predictions.png", models, datamodule.val_dataset, args.panels)
    steps, finetune = phase_steps(args)
    note = (
        f"Phase 1 (pCE): {steps} steps. Phase 2 runs fine-tune the phase-1 weights for {finetune} steps;\n"
        f"'pce' is phase 1 continued with pCE alone for those {finetune} steps (same total training as the\n"
        f"regularized runs); 'full' trains on the full masks for {steps + finetune} steps. mIoU on "
        f"{len(datamodule.val_dataset)} validation images."
    )
    print("\n" + format_table(rows, note))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; results: {output / 'results.json'}, "
          f"figure: {output / 'predictions.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
