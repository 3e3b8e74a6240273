"""Pluggable regularized losses, built by name from :data:`REGISTRY`."""

from __future__ import annotations

from typing import Any

from rloss.regularizers.base import Regularizer
from rloss.regularizers.densecrf import DenseCRFLoss
from rloss.regularizers.gatedcrf import GatedCRFLoss
from rloss.regularizers.ncut import NormalizedCutLoss
from rloss.regularizers.size import SizeLoss

REGISTRY: dict[str, type[Regularizer]] = {
    cls.name: cls for cls in (DenseCRFLoss, GatedCRFLoss, NormalizedCutLoss, SizeLoss)
}
"""Short name (declared on each class as ``name``) -> regularizer class."""


def build_regularizer(name: str, **kwargs: Any) -> Regularizer:
    """Build the regularizer registered as ``name`` (e.g. ``"densecrf"``) with ``kwargs``."""
    try:
        cls = REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown regularizer {name!r}; registered names: {', '.join(sorted(REGISTRY))}"
        ) from None
    return cls(**kwargs)


__all__ = [
    "REGISTRY",
    "DenseCRFLoss",
    "GatedCRFLoss",
    "NormalizedCutLoss",
    "Regularizer",
    "SizeLoss",
    "build_regularizer",
]
