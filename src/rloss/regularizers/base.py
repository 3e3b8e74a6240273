"""The interface every regularizer implements, and the input checks they share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from rloss.utils.checks import check_images, check_non_negative, check_probs, check_probs_shape, check_roi

REGISTRY: dict[str, type[Regularizer]] = {}
"""Short name -> regularizer class. A subclass that sets ``name`` registers itself when its module
is imported (the shipped ones by ``rloss.regularizers``, a user's by importing their module)."""


def scaled_size(size: tuple[int, int], scale_factor: float) -> tuple[int, int]:
    """(h, w) of an (H, W) grid downsampled by ``scale_factor`` in (0, 1], at least 1 px each."""
    if scale_factor == 1.0:
        return size
    return max(1, round(size[0] * scale_factor)), max(1, round(size[1] * scale_factor))


class Regularizer(nn.Module):
    """A weighted regularized-loss term R(S, image).

    Subclasses implement :meth:`energy`; :meth:`forward` returns ``weight * energy``.
    All regularizers take the same inputs so a YAML list of them configures a run:

    - ``images``: (B, C, H, W) intensities, any C >= 1 (denormalized crops; sigma_rgb in their units:
      0..255 for 8-bit images, the data's range for float images such as MRI in 0..1).
    - ``probs``: (B, K, H, W) soft masks S, summing to 1 over K at ROI pixels.
    - ``roi``: (B, H, W) bool, pixels that take part (padding excluded); None = all.
    - ``labels``: optional (B, H, W) int64 scribbles (255 unlabeled, 254 padding),
      used by regularizers that need them (size bounds from scribbles or tags).
    """

    name: ClassVar[str]
    """Short name in :data:`rloss.regularizers.REGISTRY` (``rloss propagate --regularizer NAME``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        if not (isinstance(name, str) and name.isidentifier() and name == name.lower()):
            raise TypeError(f"{cls.__qualname__}.name must be a lower-case identifier, got {name!r}")
        registered = REGISTRY.get(name)
        if registered is not None and registered.__qualname__ != cls.__qualname__:
            raise TypeError(f"regularizer name {name!r} of {cls.__qualname__} is taken by {registered.__qualname__}")
        REGISTRY[name] = cls

    @classmethod
    def propagation_settings(cls, width: int) -> dict[str, Any]:
        """Keyword arguments this regularizer takes in ``rloss propagate`` at a working long side of
        ``width`` px (losses are normalized per ROI pixel, so weight 1 balances pCE)."""
        return {"weight": 1.0}

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = check_non_negative(weight, "weight")

    def energy(
        self, images: Tensor, probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """Unweighted scalar energy (mean over the images of the batch)."""
        raise NotImplementedError

    def forward(
        self, images: Tensor, probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """``weight * energy(images, probs, roi, labels)``."""
        return self.weight * self.energy(images, probs, roi, labels)

    def bind(self, images: Tensor) -> Callable[..., Tensor]:
        """``forward`` with ``images`` fixed: ``bind(images)(probs, roi, labels)``. For repeated calls
        on the same images (per-image optimization, ``rloss propagate``): regularizers that need an
        image-dependent structure (the affinity) build it once here instead of at every call."""
        return lambda probs, roi=None, labels=None: self.forward(images, probs, roi, labels)

    @staticmethod
    def prepare_inputs(images: Tensor, probs: Tensor, roi: Tensor | None) -> tuple[Tensor, Tensor]:
        """Validate inputs; return (probs with S = 0 outside the ROI, roi as bool (B, H, W))."""
        check_images(images, "images")
        check_probs_shape(probs, images, "probs")
        roi = check_roi(roi, probs, "roi")
        if not bool(roi.all()):
            probs = probs * roi.unsqueeze(1).to(probs.dtype)
        check_probs(probs, images, "probs", roi=roi)
        return probs, roi

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"
