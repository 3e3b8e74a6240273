"""ACDC cardiac MRI with real scribbles: train and test each run through the ``rloss`` command and
print Dice (RV, Myo, LV, mean) and HD95 per run beside the published rows (Luo et al. 2022, Table 1).

    python benchmarks/acdc.py --root data/acdc --fold 1 --runs pce,densecrf,gatedcrf,full \\
        --output outputs/acdc [--protocol cpu|published] [--jobs 2] [--steps N]

A run is a name of RUNS, optionally with a regularizer weight chosen on the validation patients:
``densecrf@0.01``. Each run is ``rloss fit`` on the experiment config (+ the protocol file) then
``rloss test`` of the last checkpoint (the published protocol evaluates the last iteration; nothing
is chosen on the test fold). Validation Dice (held-out training patients) is printed beside it for
choosing weights. Writes ``OUTPUT/results.json``:
``{"runs": {run: {"dice", "dice_per_class", "hd95", "hd95_per_class", "val_dice", "seconds"}}}``.
HD95 is in pixels of the volumes (the h5 files carry no voxel spacing; the published column is mm).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXPERIMENT = CONFIGS / "experiments" / "acdc" / "unet.yaml"
PROTOCOLS = {"published": [], "cpu": [CONFIGS / "protocol" / "acdc_cpu.yaml"]}
CLASSES = ("RV", "Myo", "LV")

RUNS: dict[str, list[str]] = {
    "pce": ["--model.lr", "0.03"],
    "full": ["--model.lr", "0.015", "--model.weight_decay", "2e-4", "--model.supervision", "full",
             "--model.regularizers+=" + str(CONFIGS / "regularizer" / "acdc_dice.yaml")],
    "densecrf": ["--model.regularizers+=" + str(CONFIGS / "regularizer" / "acdc_densecrf.yaml")],
    "gatedcrf": ["--model.regularizers+=" + str(CONFIGS / "regularizer" / "acdc_gatedcrf.yaml")],
    "ncut": ["--model.regularizers+=" + str(CONFIGS / "regularizer" / "acdc_ncut.yaml")],
    "size": ["--model.regularizers+=" + str(CONFIGS / "regularizer" / "acdc_size.yaml")],
    "selflabel": ["--model.regularizers+=" + str(CONFIGS / "regularizer" / "selflabel.yaml")],
}
"""Each run's arguments on top of the experiment config. pCE: the published LR 0.03. full: the masks with
WSL4MIS's 0.5 (CE + Dice) at LR 0.03 and weight decay 1e-4, as CE + Dice at half the LR and twice the weight
decay (the same SGD steps)."""

PUBLISHED: dict[str, tuple[float, float, float, float, float]] = {
    "pCE": (0.625, 0.668, 0.766, 0.686, 173.3),
    "random walker pseudo labels": (0.813, 0.708, 0.844, 0.788, 10.0),
    "entropy minimization": (0.839, 0.812, 0.887, 0.846, 39.0),
    "Mumford-Shah loss": (0.809, 0.832, 0.876, 0.839, 27.7),
    "RLoss (DenseCRF loss)": (0.856, 0.817, 0.896, 0.856, 6.9),
    "DMPLS": (0.861, 0.842, 0.913, 0.872, 9.9),
    "full supervision": (0.882, 0.883, 0.930, 0.898, 7.0),
}
"""Luo et al. (MICCAI 2022) Table 1, 5-fold mean: Dice RV, Myo, LV, mean; HD95 (mm)."""


def run_arguments(spec: str, folder: Path) -> list[str]:
    """The arguments of run ``spec`` (``name`` or ``name@weight``: the regularizer's weight replaced
    through a copy of its config in ``folder``)."""
    name, _, weight = spec.partition("@")
    if name not in RUNS:
        raise SystemExit(f"acdc.py: error: unknown run {name!r}; expected one of {', '.join(RUNS)}")
    args = list(RUNS[name])
    if weight:
        source = Path(args[-1].split("+=", 1)[1])
        config = yaml.safe_load(source.read_text())
        config["init_args"]["weight"] = float(weight)
        copy = folder / f"{source.stem}_w{weight}.yaml"
        copy.write_text(yaml.safe_dump(config))
        args[-1] = f"--model.regularizers+={copy}"
    return args


def last_metrics(folder: Path, prefix: str) -> dict[str, float]:
    """The last logged value of every metric starting with ``prefix`` in the CSV logs under ``folder``."""
    values: dict[str, float] = {}
    for path in sorted(folder.glob("**/metrics.csv"), key=lambda p: p.stat().st_mtime):
        with path.open() as f:
            for row in csv.DictReader(f):
                values.update({k: float(v) for k, v in row.items() if k.startswith(prefix) and v not in ("", None)})
    return values


def run(spec: str, args: argparse.Namespace) -> dict[str, object]:
    """Train and test one run; its scores and wall time."""
    folder = args.output / spec.replace("@", "_w")
    folder.mkdir(parents=True, exist_ok=True)
    common = ["--config", str(EXPERIMENT)]
    for protocol_file in PROTOCOLS[args.protocol]:
        common += ["--config", str(protocol_file)]
    common += [
        "--config", str(CONFIGS / "logger" / "csv.yaml"),
        "--trainer.logger.init_args.save_dir", str(folder),
        "--data.init_args.root", str(args.root),
        "--data.init_args.fold", str(args.fold),
        "--data.init_args.num_workers", "0",
    ]
    fit = ["fit", *common, *run_arguments(spec, folder), "--checkpoint.dirpath", str(folder / "checkpoints"),
           "--last_checkpoint.dirpath", str(folder / "checkpoints")]
    if args.steps:
        fit += ["--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(max(1, args.steps // 3))]
    test = ["test", *common, *run_arguments(spec, folder), "--ckpt_path", str(folder / "checkpoints" / "last.ckpt")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    for command in (fit, test):
        with (folder / "log.txt").open("a") as log:
            rloss = [sys.executable, "-m", "rloss", *command]
            done = subprocess.run(rloss, stdout=log, stderr=subprocess.STDOUT, env=env)
        if done.returncode:
            raise SystemExit(f"acdc.py: error: run {spec} failed ({command[0]}); see {folder / 'log.txt'}")
    seconds = time.perf_counter() - start
    scores = last_metrics(folder, "test/")
    val = last_metrics(folder, "val/")
    return {
        "dice": scores["test/dice"],
        "dice_per_class": {c: scores[f"test/dice/{c}"] for c in CLASSES},
        "hd95": scores["test/hd95"],
        "hd95_per_class": {c: scores[f"test/hd95/{c}"] for c in CLASSES},
        "val_dice": val.get("val/dice"),
        "seconds": round(seconds, 1),
    }


def table(results: dict[str, dict], args: argparse.Namespace) -> str:
    """Markdown table: our runs, then the published rows."""
    lines = [
        f"ACDC fold {args.fold}, {args.protocol} protocol (ours: test fold = 40 volumes, HD95 in pixels; "
        "published: 5-fold mean, HD95 in mm)",
        "",
        "| run | RV | Myo | LV | mean Dice | mean HD95 | val Dice | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        per = " | ".join(f"{r['dice_per_class'][c]:.3f}" for c in CLASSES)
        val = f"{r['val_dice']:.3f}" if r.get("val_dice") is not None else "-"
        minutes = r["seconds"] / 60
        lines.append(f"| rloss {name} | {per} | {r['dice']:.3f} | {r['hd95']:.1f} px | {val} | {minutes:.1f} |")
    for name, (rv, myo, lv, mean, hd) in PUBLISHED.items():
        lines.append(f"| published {name} | {rv:.3f} | {myo:.3f} | {lv:.3f} | {mean:.3f} | {hd:.1f} mm | - | - |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder with ACDC_training_slices/ and ..._volumes/")
    parser.add_argument("--fold", type=int, default=1, choices=range(1, 6))
    parser.add_argument("--runs", default="pce,densecrf,gatedcrf,full", help="comma-separated run specs")
    parser.add_argument("--output", type=Path, default=Path("outputs/acdc"))
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="cpu")
    parser.add_argument("--steps", type=int, default=0, help="override the protocol's iterations (0: keep)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores / jobs)")
    args = parser.parse_args()
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    specs = [s for s in args.runs.split(",") if s]
    args.output.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        run_arguments(spec, args.output)  # unknown names fail before any training
    results_path = args.output / "results.json"
    results = json.loads(results_path.read_text())["runs"] if results_path.is_file() else {}
    with ThreadPoolExecutor(args.jobs) as pool:
        for spec, result in zip(specs, pool.map(lambda s: run(s, args), specs), strict=True):
            results[spec] = result
            results_path.write_text(json.dumps({"runs": results}, indent=2))
    print(table({s: results[s] for s in results}, args))


if __name__ == "__main__":
    main()
