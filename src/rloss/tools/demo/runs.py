"""The trainings of ``rloss demo`` as data, and the ``rloss fit`` command line of each."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

Phase = Literal["phase1", "phase2", "both"]


@dataclass(frozen=True)
class Run:
    """One training, described by data: ``name`` (output folder and log name), ``label`` (table row),
    ``configs`` (files of the config folder, composed in order), ``phase``: "phase1" (from scratch,
    phase-1 steps; its last checkpoint starts the phase-2 runs), "phase2" (fine-tunes the phase-1
    weights for the phase-2 steps) or "both" (from scratch for phase 1 + 2 steps); ``result``: its
    key in results.json (None: not reported); ``panel``: its column title in predictions.png."""

    name: str
    label: str
    configs: tuple[str, ...]
    phase: Phase
    result: str | None = None
    panel: str | None = None


RUNS: tuple[Run, ...] = (
    Run("pce_phase1", "pCE, phase 1", ("base.yaml", "pce.yaml"), "phase1"),
    Run("pce", "pCE (phase 1 + continued)", ("base.yaml", "pce.yaml", "finetune.yaml"), "phase2", "pce", "pCE"),
    Run("densecrf", "pCE + DenseCRF", ("base.yaml", "finetune.yaml", "densecrf.yaml"), "phase2", "pce+densecrf",
        "pCE + DenseCRF"),
    Run("ncut", "pCE + normalized cut", ("base.yaml", "finetune.yaml", "ncut.yaml"), "phase2", "pce+ncut"),
    Run("gatedcrf", "pCE + gated CRF", ("base.yaml", "finetune.yaml", "gatedcrf.yaml"), "phase2", "pce+gatedcrf"),
    Run("size", "pCE + size", ("base.yaml", "finetune.yaml", "size.yaml"), "phase2", "pce+size"),
    Run("selflabel", "pCE + soft self-labeling", ("base.yaml", "finetune.yaml", "selflabel.yaml"), "phase2",
        "pce+selflabel"),
    Run("full", "full supervision", ("base.yaml", "full.yaml"), "both", "full"),
)
RESULT_KEYS: tuple[str, ...] = tuple(run.result for run in RUNS if run.result)


def cli_args(run: Run, args: argparse.Namespace, output: Path, phase1: Path | None) -> list[str]:
    """The ``rloss fit`` command line of ``run`` (its configs plus the demo's overrides)."""
    argv = ["fit"]
    for name in run.configs:
        argv += ["--config", str(Path(args.config_dir) / name)]
    argv += [
        f"--seed_everything={args.seed}",
        f"--data.init_args.seed={args.seed}",
        f"--trainer.logger.init_args.save_dir={output / 'logs'}",
        f"--trainer.logger.init_args.name={run.name}",
        f"--checkpoint.dirpath={output / run.name / 'checkpoints'}",
        f"--trainer.default_root_dir={output / run.name}",
    ]
    for key, value in (("num_train", args.num_train), ("num_val", args.num_val), ("size", args.size)):
        if value is not None:
            argv.append(f"--data.init_args.{key}={value}")
    if args.quick:
        argv += ["--data.init_args.batch_size=4", "--data.init_args.num_test=2", "--trainer.log_every_n_steps=1"]
    if run.phase == "phase2":
        assert phase1 is not None
        argv.append(f"--model.init_weights={phase1}")
        if args.finetune_steps is not None:
            argv.append(f"--trainer.max_steps={args.finetune_steps}")
    elif run.phase == "both":
        argv.append(f"--trainer.max_steps={total_steps(args)}")
    elif args.steps is not None:
        argv.append(f"--trainer.max_steps={args.steps}")
    return argv


def phase_steps(args: argparse.Namespace) -> tuple[int, int]:
    """(phase-1 steps, phase-2 steps): the options, else the configs' trainer.max_steps."""
    def config_steps(name: str) -> int:
        return int(yaml.safe_load((Path(args.config_dir) / name).read_text())["trainer"]["max_steps"])

    steps = args.steps if args.steps is not None else config_steps("base.yaml")
    finetune = args.finetune_steps if args.finetune_steps is not None else config_steps("finetune.yaml")
    return steps, finetune


def total_steps(args: argparse.Namespace) -> int:
    """Phase-1 + phase-2 steps (full supervision trains this long)."""
    return sum(phase_steps(args))
