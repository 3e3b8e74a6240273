"""rloss demo end to end at a tiny size: results.json and predictions.png are written and sane."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from rloss.commands import main as cli_main
from rloss.tools.demo import main, parse_args
from rloss.tools.demo.runs import RESULT_KEYS, RUNS, cli_args


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    assert main(["--output", str(tmp_path), "--quick"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == list(RESULT_KEYS)
    for key, value in results.items():
        assert isinstance(value, float) and 0.0 <= value <= 100.0, (key, value)
    width, height = png_size(tmp_path / "predictions.png")
    assert 400 <= width <= 3000 and 200 <= height <= 3000
    # phase 2 started from the phase-1 checkpoint; every run left its checkpoint and CSV log
    assert (tmp_path / "pce_phase1" / "checkpoints" / "last.ckpt").is_file()
    for run in RUNS:
        assert list((tmp_path / "logs" / run.name).glob("version_*/metrics.csv")), run.name
    assert not list(tmp_path.glob("*.tmp*"))


def test_demo_command_lines(tmp_path: Path) -> None:
    """Phase-2 runs load the phase-1 weights; full supervision trains phases 1 + 2 steps."""
    args = parse_args(["--output", str(tmp_path), "--steps", "7", "--finetune-steps", "5"])
    by_name = {run.name: run for run in RUNS}
    ckpt = tmp_path / "phase1.ckpt"
    crf = cli_args(by_name["densecrf"], args, tmp_path, ckpt)
    assert f"--model.init_weights={ckpt}" in crf and "--trainer.max_steps=5" in crf
    assert any(a.endswith("densecrf.yaml") for a in crf)
    assert "--trainer.max_steps=12" in cli_args(by_name["full"], args, tmp_path, None)
    assert "--trainer.max_steps=7" in cli_args(by_name["pce_phase1"], args, tmp_path, None)


def test_demo_dispatched_from_cli(tmp_path: Path, capsys) -> None:
    """`rloss demo --help` reaches the demo's own parser."""
    try:
        cli_main(["demo", "--help"])
    except SystemExit as exit:
        assert exit.code == 0
    assert "--quick" in capsys.readouterr().out


def test_tiny_backbone() -> None:
    """The demo's network: full-resolution logits, a few tens of k parameters, both LR groups filled."""
    import torch

    from rloss.models import backbone_names, build_backbone

    assert "tiny" in backbone_names()
    net = build_backbone("tiny", 4, weights_backbone=None)
    assert net(torch.zeros(2, 3, 37, 50)).shape == (2, 4, 37, 50)
    assert 10_000 < sum(p.numel() for p in net.parameters()) < 100_000
    backbone, head = net.parameter_groups()
    assert backbone and head
