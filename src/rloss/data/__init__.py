"""Datasets and DataModules: VOC scribbles, ACDC, your own folder (``ScribbleFolderDataModule``),
synthetic demo data, data preparation. Submodules import on use, so tools that only read files
start without Lightning."""

from typing import Any

LAZY_EXPORTS: dict[str, str] = {
    "ScribbleFolderDataModule": "rloss.data.folder",
    "ACDCDataModule": "rloss.data.acdc",
    "VOCScribbleDataModule": "rloss.data.voc",
}
"""Public DataModule name -> the module that defines it."""


def __getattr__(name: str) -> Any:
    if name in LAZY_EXPORTS:
        from importlib import import_module

        return getattr(import_module(LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'rloss.data' has no attribute {name!r}")
