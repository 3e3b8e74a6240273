"""Where the shipped configs are: the repository's ``configs/`` folder, installed as the data
package ``rloss.configs`` (editable or not), so that command lines work from any folder."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from pathlib import Path


def configs_path() -> Path:
    """The folder of the shipped configs (``experiments/``, ``demo/``, ``regularizer/``, ...)."""
    return Path(import_module("rloss.configs").__file__).parent


def resolve_config(value: str) -> str:
    """``value`` when it names an existing file; else the shipped config of that name, given
    relative to the configs folder with or without a leading ``configs/``
    (``experiments/x.yaml`` or ``configs/experiments/x.yaml``); else ``value`` unchanged."""
    if Path(value).exists():
        return value
    name = Path(value)
    if name.parts[:1] == ("configs",):
        name = Path(*name.parts[1:])
    shipped = configs_path() / name
    return str(shipped) if not name.is_absolute() and shipped.is_file() else value


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of each ``--config`` (``--config X`` or ``--config=X``) resolved by
    :func:`resolve_config`."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + resolve_config(arg.removeprefix("--config="))
        elif i > 0 and out[i - 1] == "--config":
            out[i] = resolve_config(arg)
    return out
