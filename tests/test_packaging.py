"""environment.yml and setup.cfg declare the same dependencies, and the code imports only those."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
IMPORT_TO_DIST = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "pytorch_lightning": "pytorch-lightning",
    "pydensecrf": "pydensecrf2",
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


def setup_cfg_names() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    names = {_name(r) for r in _requirements(config["options"]["install_requires"])}
    for extra in config["options.extras_require"].values():
        names |= {_name(r) for r in _requirements(extra)}
    return names


def environment_names() -> set[str]:
    names = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:") :].splitlines():
        match = re.match(r"^\s+- (?!pip:)([A-Za-z0-9_.\-\[\]]+)", line)
        if match and not match.group(1).startswith("-"):
            names.add(_name(match.group(1)))
    return names - {"python", "pip"}


def test_environment_matches_setup_cfg() -> None:
    assert environment_names() == setup_cfg_names()


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
