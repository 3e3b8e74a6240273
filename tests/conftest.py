"""Shared test fixtures: offline W&B, a miniature VOC tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from voc_fixtures import make_voc_tree


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test talks to W&B servers."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature VOC tree (4 train_aug, 2 val images), shared by the session: do not modify."""
    return make_voc_tree(tmp_path_factory.mktemp("voc"))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in the test's own folder (runs write outputs/ and ckpt/ there) with RLOSS_DEBUG unset."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RLOSS_DEBUG", raising=False)
