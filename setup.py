"""Package layout (the rest is in setup.cfg): ``src/rloss`` and the top-level ``configs/`` folder,
shipped as the data package ``rloss.configs`` (one copy of each file, found by rloss.training.config_files)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "rloss.configs"],
    package_dir={"": "src", "rloss.configs": "configs"},
    package_data={"rloss.configs": ["*.md", "**/*.yaml"], "rloss.data": ["acdc_manifest.txt"],
                  "rloss.tools.annotate": ["static/*.html", "static/*.js", "static/*.css"]},
)
