"""configs/: includes that jsonargparse honours, experiments that name themselves, phase 2 wired to
phase 1 (the weights a phase-2 experiment starts from are its phase-1 experiment's last checkpoint)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from rloss.training.cli import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*.yaml"))
PHASE2 = ("densecrf", "ncut", "gatedcrf", "size", "selflabel")
NETWORKS = sorted({path.stem.rsplit("_", 1)[0] for path in EXPERIMENTS})

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def included_keys(path: Path) -> set[str]:
    """Top-level keys (dotted keys by their first part) set by ``path`` and the files it includes."""
    document = yaml.safe_load(path.read_text()) or {}
    keys = {key.split(".")[0] for key in document if key != "config"}
    return keys | (included_keys(path.parent / document["config"]) if "config" in document else set())


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_includes_are_honoured(path: Path) -> None:
    """``config: FILE`` (a whole-config include) is jsonargparse's only include, and it is fragile:
    a list of files is ignored without an error, and a nested block after it replaces the included
    block of the same key. So: one path, first, then dotted keys or keys the include does not set."""
    document = yaml.safe_load(path.read_text()) or {}
    if "config" not in document:
        return
    assert list(document)[0] == "config" and isinstance(document["config"], str), path
    parent = path.parent / document["config"]
    assert parent.is_file(), parent
    replaced = {key for key, value in document.items() if isinstance(value, dict)} & included_keys(parent)
    assert not replaced, f"{path}: use dotted keys for {sorted(replaced)} (a block would replace the included one)"


def print_config(path: Path) -> dict:
    """The parsed ``rloss fit --config <path> --print_config``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit:
        run_cli(["fit", "--config", str(path), "--print_config"])
    assert not exit.value.code
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_names_its_outputs_and_phase(path: Path) -> None:
    config = print_config(path)
    network, row = path.stem.rsplit("_", 1)
    assert config["trainer"]["logger"]["init_args"]["name"] == path.stem
    assert config["checkpoint"]["dirpath"] == f"outputs/{path.stem}/checkpoints"
    assert config["seed_everything"] == 0 and config["data"]["init_args"]["root"] == "data/voc"
    assert config["model"]["supervision"] == ("full" if row == "full" else "scribble")
    if row in PHASE2:
        assert len(config["model"]["regularizers"]) == 1
        assert config["model"]["init_weights"] == f"outputs/{network}_pce/checkpoints/last.ckpt"
    else:
        assert config["model"]["regularizers"] is None and config["model"]["init_weights"] is None


def tiny(config: Path, voc_root: Path, *extra: str) -> list[str]:
    """``rloss fit`` of an experiment at a tiny size (miniature VOC, 32 px crops, the demo's network)."""
    return [
        "fit", "--config", str(config), "--data.root", str(voc_root), "--data.crop_size", "32",
        "--data.batch_size", "2", "--data.num_workers", "0", "--model.backbone", "tiny",
        "--model.weights_backbone", "null", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra,
    ]


@pytest.mark.parametrize("network", NETWORKS)
def test_phase2_experiments_start_from_the_phase1_checkpoint(
    network: str, voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phase 1 writes its last checkpoint where the phase-2 experiments' init_weights point; each
    phase-2 model starts with exactly those network weights."""
    monkeypatch.chdir(tmp_path)
    run_cli(tiny(CONFIGS / "experiments" / f"{network}_pce.yaml", voc_root, "--trainer.max_steps", "1"))
    checkpoint = tmp_path / "outputs" / f"{network}_pce" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    phase1 = {name.removeprefix("net."): value for name, value in state.items() if name.startswith("net.")}

    def initial_weights(row: str, *extra: str) -> dict[str, torch.Tensor]:
        config = CONFIGS / "experiments" / f"{network}_{row}.yaml"
        return run_cli(tiny(config, voc_root, "--trainer.max_steps", "0", *extra)).model.net.state_dict()

    # the control: the same seed without init_weights gives other weights (phase 1 trained a step)
    fresh = initial_weights(PHASE2[0], "--model.init_weights", "null")
    assert any(not torch.equal(value, phase1[name]) for name, value in fresh.items())
    for row in PHASE2:
        weights = initial_weights(row)
        assert weights.keys() == phase1.keys(), row
        for name, value in weights.items():
            assert torch.equal(value, phase1[name]), (row, name)
