"""Make sure Numba's on-disk cache (``cache=True``) has a writable directory."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def ensure_writable_numba_cache() -> None:
    """If NUMBA_CACHE_DIR is unset and the package folder is read-only (e.g. a system install),
    point Numba's cache at a user cache folder (or the temp dir). Call before importing numba."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        Path(os.environ["NUMBA_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
        return
    if os.access(Path(__file__).parent, os.W_OK):
        return  # Numba caches next to the sources (__pycache__)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    for candidate in (base / "rloss" / "numba", Path(tempfile.gettempdir()) / "rloss-numba"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(candidate)
            if "numba" in sys.modules:  # imported earlier: its config has read the environment
                sys.modules["numba"].config.CACHE_DIR = str(candidate)
            return
