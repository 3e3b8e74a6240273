"""Checkpoints that survive kills: atomic writes, last.ckpt on its own schedule, resuming past corrupt files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Trainer

from helpers import demo_args
from rloss.commands import main
from rloss.models import ScribbleSegmentation
from rloss.training.checkpoints import AtomicCheckpointIO, checkpoint_files, newest_usable_checkpoint
from rloss.utils.atomic import temp_files
from rloss.utils.errors import UserError

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("in_tmp"),
]


def demo_fit(*extra: str) -> list[str]:
    """A small CPU fit on the synthetic data with the default checkpointing (best val/mIoU monitor)."""
    return demo_args("fit", "--checkpoint.monitor", "val/mIoU", "--checkpoint.save_last", "false", *extra, num_train=32)


def save(path: Path, step: int) -> Path:
    torch.save({"global_step": step, "weights": torch.arange(1000)}, path)
    return path


KILLED_WRITER = """
import os, signal, sys, torch
from rloss.training.checkpoints import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({"global_step": 1}, sys.argv[1])
def dying_save(obj, f):  # writes part of the file, then the process is killed
    f.write(b"PK\\x03\\x04 partial")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
io.save_checkpoint({"global_step": 2}, sys.argv[1])
"""


def test_kill_during_checkpoint_write_leaves_previous_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "ckpt" / "last.ckpt"
    target.parent.mkdir()
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert torch.load(target, weights_only=True)["global_step"] == 1
    leftovers = temp_files(target.parent, ".ckpt")
    assert len(leftovers) == 1 and leftovers[0].parent == target.parent  # beside the target, not in TMPDIR
    assert checkpoint_files(target.parent) == [target]  # never taken for a checkpoint


def test_truncated_last_is_moved_aside_and_the_older_checkpoint_used(tmp_path: Path) -> None:
    best = save(tmp_path / "best-epoch0-step4.ckpt", 4)
    last = save(tmp_path / "last.ckpt", 8)
    os.utime(best, (time.time() - 60, time.time() - 60))
    last.write_bytes(last.read_bytes()[:500])
    with pytest.warns(UserWarning, match=f"checkpoint {last} is unreadable"):
        assert newest_usable_checkpoint(tmp_path) == best
    assert not last.exists() and (tmp_path / "last.ckpt.corrupt").is_file()


def test_only_corrupt_checkpoints_give_a_short_error(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"not a zip")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no usable checkpoint in"):
        newest_usable_checkpoint(tmp_path)
    assert newest_usable_checkpoint(tmp_path / "fresh") is None  # no folder yet: a fresh run


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_sigkill_during_fit_then_resume_from_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Default checkpointing waits for val/mIoU, which this run never computes before the kill:
    the periodic last.ckpt is all that survives, and --ckpt_path last continues from its step."""
    args = demo_fit("--trainer.max_steps", "100000", "--last_checkpoint.every_n_train_steps", "5")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "rloss", *args], stderr=subprocess.PIPE, env=env)
    try:
        wait_for(tmp_path / "ckpt" / "last.ckpt", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"]
    assert saved >= 5 and saved % 5 == 0
    assert checkpoint_files(tmp_path / "ckpt") == [tmp_path / "ckpt" / "last.ckpt"]  # no best-* without val

    start_steps: list[int] = []
    monkeypatch.setattr(ScribbleSegmentation, "on_train_start", lambda self: start_steps.append(self.global_step))
    assert main(demo_fit("--trainer.max_steps", str(saved + 2), "--ckpt_path", "last")) is None
    assert start_steps == [saved]
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == saved + 2  # at the end
    assert not temp_files(tmp_path / "ckpt", ".ckpt")


def test_resume_skips_a_truncated_last_ckpt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    steps = ("--checkpoint.monitor", "null", "--checkpoint.every_n_train_steps", "2")
    assert main(demo_fit("--trainer.max_steps", "3", *steps)) is None
    folder = tmp_path / "ckpt"
    [older] = [p for p in checkpoint_files(folder) if p.name != "last.ckpt"]  # ModelCheckpoint's, step 2
    last = folder / "last.ckpt"
    os.utime(older, (time.time() - 60, time.time() - 60))
    last.write_bytes(last.read_bytes()[:1000])
    start_steps: list[int] = []
    monkeypatch.setattr(ScribbleSegmentation, "on_train_start", lambda self: start_steps.append(self.global_step))
    with pytest.warns(UserWarning, match="last.ckpt is unreadable"):
        assert main(demo_fit("--trainer.max_steps", "4", *steps, "--ckpt_path", "last")) is None
    assert start_steps == [2] and (folder / "last.ckpt.corrupt").is_file()


def test_last_checkpoint_on_a_time_schedule_removes_stale_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ckpt").mkdir()
    stale = tmp_path / "ckpt" / ".last.ckpt.abc123.tmp.ckpt"  # what a killed write leaves
    stale.write_bytes(b"partial")
    saved: list[int] = []
    original = Trainer.save_checkpoint
    monkeypatch.setattr(Trainer, "save_checkpoint", lambda self, path, *a, **k: saved.append(self.global_step)
                        or original(self, path, *a, **k))
    args = ("--last_checkpoint.every_n_train_steps", "0", "--last_checkpoint.every_minutes", "1e-9")
    assert main(demo_fit("--trainer.max_steps", "3", *args)) is None
    assert saved == [1, 2, 3]  # every step (the time is always up), nothing more at the end
    assert not stale.exists()


def test_a_save_writes_the_checkpoint_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Saving every step costs one write and two fsyncs (the file, then its folder) per checkpoint:
    nothing reloads it, nothing is logged."""
    saves: list[Path] = []
    fsyncs: list[int] = []
    loads: list[object] = []
    save, fsync, load = AtomicCheckpointIO.save_checkpoint, os.fsync, torch.load

    def counted_save(self: AtomicCheckpointIO, checkpoint: dict, path: Path, **options: object) -> None:
        saves.append(path)
        save(self, checkpoint, path, **options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", counted_save)
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd) or fsync(fd))
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    caplog.set_level(logging.INFO)
    assert main(demo_fit("--trainer.max_steps", "3", "--last_checkpoint.every_n_train_steps", "1")) is None
    assert [Path(path).name for path in saves].count("last.ckpt") == 3
    assert len(fsyncs) == 2 * len(saves) and not loads
    assert "weights_only" not in caplog.text
