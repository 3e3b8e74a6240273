"""environment.yml and setup.cfg declare the same dependencies, the code imports only those, and a
non-editable install runs with its shipped configs from any folder."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rloss.training.config_files import configs_path, resolve_config, resolve_config_args

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
IMPORT_TO_DIST = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "pytorch_lightning": "pytorch-lightning",
    "pydensecrf": "pydensecrf2",
    "skimage": "scikit-image",
}
# imported only through another declared package (e.g. torch pulls these in)
IMPLIED = {
    "jsonargparse": "pytorch-lightning",
    "pyyaml": "pytorch-lightning",
    "lightning-utilities": "pytorch-lightning",
    "fsspec": "pytorch-lightning",
    "lightning-fabric": "pytorch-lightning",
    "llvmlite": "numba",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!\[;]", requirement.strip(), maxsplit=1)[0].lower()


def _requirements(value: str) -> list[str]:
    """The requirement lines of a setup.cfg list (blank and comment lines dropped, as setuptools does)."""
    return [line for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def _pin(requirement: str) -> str:
    """The version specifier of a requirement, spaces and extras dropped (``numba>=0.68,<0.69`` -> ``>=0.68,<0.69``)."""
    return re.sub(r"\[.*?\]", "", requirement.split("#")[0]).replace(" ", "")[len(_name(requirement)) :]


def setup_cfg_pins() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = _requirements(config["options"]["install_requires"])
    for extra in config["options.extras_require"].values():
        lines += _requirements(extra)
    return {_name(r): _pin(r) for r in lines}


def setup_cfg_names() -> set[str]:
    return set(setup_cfg_pins())


def environment_pins() -> dict[str, str]:
    pins = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:") :].splitlines():
        match = re.match(r"^\s+- (?!pip:)([^#\s][^#]*)", line)
        if match and not match.group(1).startswith("-"):
            pins[_name(match.group(1))] = _pin(match.group(1).strip())
    return {name: pin for name, pin in pins.items() if name not in ("python", "pip")}


def test_environment_matches_setup_cfg() -> None:
    """Same packages and the same version specifiers in both files."""
    assert environment_pins() == setup_cfg_pins()


def test_code_imports_only_declared_packages() -> None:
    declared = setup_cfg_names()
    local = {"rloss"} | {p.stem for p in [*ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]}
    for path in [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in local:
                    continue
                dist = IMPORT_TO_DIST.get(top, top).replace("_", "-").lower()
                assert dist in declared or IMPLIED.get(dist) in declared, f"{path.name} imports {module}, not declared"


def test_configs_resolve_from_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Editable install: the shipped configs are the repository's folder (one copy of each file);
    names relative to it, with or without ``configs/``, resolve from any folder; files win."""
    assert configs_path() == ROOT / "configs"
    monkeypatch.chdir(tmp_path)
    experiment = str(ROOT / "configs" / "experiments" / "deeplab_largefov_pce.yaml")
    assert resolve_config("configs/experiments/deeplab_largefov_pce.yaml") == experiment
    assert resolve_config("experiments/deeplab_largefov_pce.yaml") == experiment
    assert resolve_config("experiments/no_such.yaml") == "experiments/no_such.yaml"
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "deeplab_largefov_pce.yaml").write_text("seed_everything: 1\n")
    assert resolve_config("experiments/deeplab_largefov_pce.yaml") == "experiments/deeplab_largefov_pce.yaml"
    argv = ["fit", "--config", "configs/experiments/deeplab_largefov_pce.yaml", "--config=nope.yaml", "--x", "y"]
    assert resolve_config_args(argv) == ["fit", "--config", experiment, "--config=nope.yaml", "--x", "y"]


def run(args: list[str], cwd: Path, pythonpath: Path | None = None) -> str:
    """stdout of a command (asserting exit status 0), with PYTHONPATH set to ``pythonpath``."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(pythonpath or "")}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_wheel_install_runs_from_any_folder(tmp_path: Path) -> None:
    """Build a wheel from a copy of the tree, install it (not editable) into a folder, and run the
    demo's and the Lightning CLI's config look-ups from an unrelated folder."""
    source, target, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    files = run(["git", "ls-files", "-co", "--exclude-standard", "src", "configs"], ROOT).split()
    for name in [*files, "setup.py", "setup.cfg", "pyproject.toml", "README.md"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path), str(source)], tmp_path)
    wheel = next(tmp_path.glob("rloss-*.whl"))
    run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], tmp_path)
    elsewhere.mkdir()

    installed = target / "rloss" / "configs"
    shipped = {p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".md")}
    assert {p.relative_to(installed) for p in installed.rglob("*") if p.suffix in (".yaml", ".md")} == shipped
    script = (
        "import rloss, rloss.tools.demo; from rloss.training.config_files import configs_path, resolve_config; "
        "print(rloss.__file__, rloss.tools.demo.CONFIG_DIR, "
        "resolve_config('configs/experiments/deeplab_largefov_pce.yaml'))"
    )
    module, demo_configs, experiment = run([sys.executable, "-c", script], elsewhere, target).split()
    assert Path(module).parent == target / "rloss"
    assert Path(demo_configs) == installed / "demo"
    assert Path(experiment) == installed / "experiments" / "deeplab_largefov_pce.yaml"
    assert "--quick" in run([str(target / "bin" / "rloss"), "demo", "--help"], elsewhere, target)
    printed = run([sys.executable, "-m", "rloss", "fit", "--config", experiment, "--print_config"], elsewhere, target)
    assert "backbone: deeplab_largefov" in printed and "crop_size: 321" in printed
