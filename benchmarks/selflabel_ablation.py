"""Soft self-labeling ablation on the ``rloss demo`` data: Potts relaxations, grid vs dense neighbourhood.

    python benchmarks/selflabel_ablation.py --output outputs/selflabel_ablation --seeds 0,1 --jobs 2 --threads 1

Per seed: the demo's phase 1 (pCE) once (reused when its last.ckpt exists), then phase-2 fine-tunes of
it with the demo's commands (``rloss.tools.demo.runs.cli_args``): pCE continued (the baseline), and
pCE + self-labeling with each relaxation on the 8-grid and bilinear / quadratic on the 4-grid and the
dense lattice; every other setting is the demo's ``configs/demo/selflabel.yaml``. Each run is
``python -m rloss fit`` (validated after its last step) then ``python -m rloss test`` of its last
checkpoint; scores are read from the CSV logs. Choices are to be made on val; test is reported beside
it. Prints a markdown table; writes ``OUTPUT/results.json`` (mIoU in %, seconds = fit + validation).
"""

from __future__ import annotations

import argparse
import copy
import csv
import inspect
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from rloss.data.synthetic import SyntheticScribbleDataModule
from rloss.tools.demo import parse_args as demo_args
from rloss.tools.demo.runs import RUNS, Run, cli_args, phase_steps

DEMO_RUNS = {run.name: run for run in RUNS}
GRID8 = ("bilinear", "quadratic", "normalized_quadratic", "collision_cross_entropy", "collision_divergence",
         "log_quadratic")
VARIANTS: tuple[tuple[str, str], ...] = (
    *(("grid8", relaxation) for relaxation in GRID8),
    *((neighbourhood, relaxation) for neighbourhood in ("grid4", "dense") for relaxation in ("bilinear", "quadratic")),
)
"""(neighbourhood, relaxation) of each self-labeling run."""


@dataclass(frozen=True)
class Job:
    seed: int
    run: Run
    key: str


def demo_namespace(seed: int, quick: bool) -> argparse.Namespace:
    """The demo's options for ``seed`` (its defaults: config folder, steps, image counts)."""
    return demo_args(["--seed", str(seed), *(["--quick"] if quick else [])])


def selflabel_config(config_dir: Path, neighbourhood: str, relaxation: str, folder: Path) -> Path:
    """A phase-2 config file: the demo's selflabel.yaml with ``neighbourhood`` and ``relaxation`` replaced."""
    demo = yaml.safe_load((config_dir / "selflabel.yaml").read_text())
    entry = demo["model"]["regularizers"][0]
    regularizer = copy.deepcopy(yaml.safe_load((config_dir / entry).read_text()) if isinstance(entry, str) else entry)
    regularizer["init_args"].update(neighbourhood=neighbourhood, relaxation=relaxation)
    path = folder / f"selflabel_{neighbourhood}_{relaxation}.yaml"
    path.write_text(yaml.safe_dump({"model": {"regularizers": [regularizer]}}))
    return path


def phase2_runs(config_dir: Path, folder: Path) -> dict[str, Run]:
    """Key -> phase-2 Run: ``pce`` (the demo's pCE continued) and ``<neighbourhood>/<relaxation>``."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = {"pce": DEMO_RUNS["pce"]}
    for neighbourhood, relaxation in VARIANTS:
        config = selflabel_config(config_dir, neighbourhood, relaxation, folder)
        name = f"selflabel_{neighbourhood}_{relaxation}"
        runs[f"{neighbourhood}/{relaxation}"] = Run(name, name, ("base.yaml", "finetune.yaml", str(config)), "phase2")
    return runs


def logged_values(path: Path) -> dict[str, list[float]]:
    """Every logged value of each column of a CSV logger's metrics.csv."""
    values: dict[str, list[float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value not in ("", None):
                    values.setdefault(key, []).append(float(value))
    return values


def rloss(argv: list[str], log: Path, threads: int) -> int:
    """``python -m rloss ARGV`` with its output appended to ``log``; its exit code."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    with log.open("a") as out:
        return subprocess.run([sys.executable, "-m", "rloss", *argv], stdout=out, stderr=subprocess.STDOUT,
                              env=env).returncode


def seed_folder(output: Path, seed: int) -> Path:
    return output / f"seed{seed}"


def phase1(seed: int, args: argparse.Namespace) -> Path:
    """The seed's phase-1 last.ckpt (trained unless it exists)."""
    demo, folder = demo_namespace(seed, args.quick), seed_folder(args.output, seed)
    run = DEMO_RUNS["pce_phase1"]
    checkpoint = folder / run.name / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        if rloss(cli_args(run, demo, folder, None), folder / f"{run.name}.log", args.threads):
            raise SystemExit(f"selflabel_ablation.py: error: phase 1 of seed {seed} failed; see {folder}")
    return checkpoint


def phase2(job: Job, args: argparse.Namespace) -> dict[str, object]:
    """Fit (validated after its last step) and test one phase-2 run; scores in %, seconds, failures."""
    demo, folder = demo_namespace(job.seed, args.quick), seed_folder(args.output, job.seed)
    init = folder / DEMO_RUNS["pce_phase1"].name / "checkpoints" / "last.ckpt"
    argv = cli_args(job.run, demo, folder, init)
    steps = phase_steps(demo)[1]
    log, logs = folder / f"{job.run.name}.log", folder / "logs" / job.run.name
    log.unlink(missing_ok=True)
    fit = [*argv, "--trainer.logger.init_args.version=fit", "--trainer.check_val_every_n_epoch=null",
           f"--trainer.val_check_interval={steps}"]
    start = time.perf_counter()
    code = rloss(fit, log, args.threads)
    seconds = time.perf_counter() - start
    checkpoint = folder / job.run.name / "checkpoints" / "last.ckpt"
    test = ["test", *argv[1:], "--trainer.logger.init_args.version=test", f"--ckpt_path={checkpoint}"]
    code = code or rloss(test, log, args.threads)
    if code:
        return {"error": f"exit {code}, see {log}", "seconds": round(seconds, 1)}
    fitted, tested = logged_values(logs / "fit" / "metrics.csv"), logged_values(logs / "test" / "metrics.csv")
    losses = fitted.get("train/loss", [])
    return {
        "val_miou": round(100 * fitted["val/mIoU"][-1], 2),
        "test_miou": round(100 * tested["test/mIoU"][-1], 2),
        "seconds": round(seconds, 1),
        "nonfinite_loss": not all(map(math.isfinite, losses)),
        "last_loss": losses[-1] if losses else None,
    }


def split_sizes(demo: argparse.Namespace) -> tuple[int, int]:
    """(val, test) images of the demo's runs: its options, else the DataModule's defaults (--quick tests 2)."""
    defaults = inspect.signature(SyntheticScribbleDataModule).parameters
    return demo.num_val or defaults["num_val"].default, 2 if demo.quick else defaults["num_test"].default


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def table(results: dict[str, dict[str, dict]], seeds: list[int], runs: dict[str, Run], note: str) -> str:
    """Markdown: per run, val and test mIoU (mean, per seed) and seconds per run."""
    per_seed = "/".join(f"s{s}" for s in seeds)
    lines = [f"| run | val mIoU % | val {per_seed} | test mIoU % | test {per_seed} | s / run | notes |",
             "|---|---|---|---|---|---|---|"]
    for key in runs:
        rows = [results[key].get(str(s), {}) for s in seeds]
        ok = [r for r in rows if "val_miou" in r]

        def cell(metric: str, rows: list[dict] = rows) -> str:
            return " / ".join(f"{r[metric]:.1f}" if metric in r else "-" for r in rows)

        notes = [f"seed {s}: {r['error']}" for s, r in zip(seeds, rows, strict=True) if "error" in r]
        notes += [f"seed {s}: non-finite train loss" for s, r in zip(seeds, rows, strict=True)
                  if r.get("nonfinite_loss")]
        label = "pCE continued (baseline)" if key == "pce" else f"selflabel {key}"
        lines.append(
            f"| {label} | {mean([r['val_miou'] for r in ok]):.1f} | {cell('val_miou')} "
            f"| {mean([r['test_miou'] for r in ok]):.1f} | {cell('test_miou')} "
            f"| {mean([r['seconds'] for r in rows if 'seconds' in r]):.0f} | {'; '.join(notes)} |"
        )
    return "\n".join([*lines, "", note])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/selflabel_ablation"))
    parser.add_argument("--seeds", default="0,1", help="comma-separated data and training seeds")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS)")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes (smoke test)")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.output = args.output.resolve()  # config files are given to rloss by absolute path
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    start = time.perf_counter()
    demo = demo_namespace(args.seeds[0], args.quick)
    runs = phase2_runs(Path(demo.config_dir), args.output / "configs")
    jobs = [Job(seed, run, key) for seed in args.seeds for key, run in runs.items()]
    results: dict[str, dict[str, dict]] = {key: {} for key in runs}
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda seed: phase1(seed, args), args.seeds))
        for job, result in zip(jobs, pool.map(lambda job: phase2(job, args), jobs), strict=True):
            results[job.key][str(job.seed)] = result
            print(f"seed {job.seed} {job.key}: {result}", flush=True)
    steps, finetune = phase_steps(demo)
    num_val, num_test = split_sizes(demo)
    wall = time.perf_counter() - start
    note = (f"Phase 1: pCE, {steps} steps per seed; each row fine-tunes it for {finetune} steps (the demo's phase 2). "
            f"mIoU on the demo's {num_val} val / {num_test} test images of each seed (choose on val); s / run = fit + "
            f"validation. Seeds {args.seeds}, --jobs {args.jobs} --threads {args.threads}, wall {wall / 60:.1f} min.")
    output = {"seeds": args.seeds, "phase1_steps": steps, "phase2_steps": finetune, "wall_seconds": round(wall),
              "runs": results}
    (args.output / "results.json").write_text(json.dumps(output, indent=2) + "\n")
    print("\n" + table(results, args.seeds, runs, note))


if __name__ == "__main__":
    main()
