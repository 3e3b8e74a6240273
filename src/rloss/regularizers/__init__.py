"""Pluggable regularized losses, built by name from :data:`REGISTRY`.

A regularizer registers itself by declaring ``name`` on its class (:class:`Regularizer`); adding
one shipped with rloss is its module plus its import line below (which also makes
``class_path: rloss.regularizers.<ClassName>`` work in YAML).
"""

from __future__ import annotations

from typing import Any

from rloss.regularizers.base import REGISTRY, Regularizer
from rloss.regularizers.densecrf import DenseCRFLoss
from rloss.regularizers.dice import DiceLoss
from rloss.regularizers.gatedcrf import GatedCRFLoss
from rloss.regularizers.ncut import NormalizedCutLoss
from rloss.regularizers.selflabel import SelfLabelingLoss
from rloss.regularizers.size import SizeLoss


def build_regularizer(name: str, **kwargs: Any) -> Regularizer:
    """Build the regularizer registered as ``name`` (e.g. ``"densecrf"``) with ``kwargs``."""
    try:
        cls = REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown regularizer {name!r}; registered names: {', '.join(sorted(REGISTRY))}"
        ) from None
    return cls(**kwargs)


__all__ = ["REGISTRY", "Regularizer", "build_regularizer", *sorted(c.__name__ for c in REGISTRY.values())]  # noqa: PLE0604
