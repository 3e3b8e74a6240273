"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import stat

import pytest

from rloss.utils.atomic import atomic_path, write_text_atomic


def test_success_replaces_with_normal_permissions(tmp_path) -> None:
    target = tmp_path / "out" / "result.json"
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_failure_keeps_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "mask.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]
