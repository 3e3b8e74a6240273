"""glibc malloc tuning used by the rloss command."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from rloss.utils.allocator import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc() -> None:
    assert keep_freed_memory() is True


def test_keep_freed_memory_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLOSS_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False


def test_rloss_command_still_runs_with_it() -> None:
    command = [sys.executable, "-m", "rloss", "demo", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "--output" in done.stdout
