"""The two affinity quadratic forms the CRF-type losses are built from, on any :class:`Affinity`.

For each image and class k, with W the affinity, S_k the soft mask and m the ROI indicator:
a_k = S_k^T W m  (= d^T S_k, d = W m the degree)  and  q_k = S_k^T W S_k.
DenseCRF is sum_k (a_k - q_k); normalized cut is sum_k (a_k - q_k) / a_k.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rloss.lattice import Affinity, bilateral_affinity, check_backend
from rloss.lattice.base import compute_dtype
from rloss.regularizers.base import Regularizer, scaled_size
from rloss.utils.checks import check_positive, check_scale_factor


class _QuadraticForms(torch.autograd.Function):
    """(a, q); backward is the exact gradient of what was computed: da/dS_k = W m and
    dq/dS_k = (W + W^T) S_k (the lattices' W is slightly asymmetric).

    The affinity computes a, q (accumulated in float64), W m and (W + W^T) S; the gradient is
    tensor math on the affinity's device."""

    @staticmethod
    def forward(ctx, probs: Tensor, roi: Tensor, affinity: Affinity) -> tuple[Tensor, Tensor]:
        with torch.autocast(probs.device.type, enabled=False):
            b, k = probs.shape[:2]
            s = probs.detach().reshape(b, k, -1).to(compute_dtype(probs.dtype))
            a, q, degree, sym = affinity.quadratic_forms(s, roi.reshape(b, 1, -1).to(s.dtype))
        ctx.save_for_backward(degree, sym)
        ctx.probs_meta = (probs.shape, probs.dtype)
        return a, q

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_a: Tensor, grad_q: Tensor) -> tuple[Tensor, None, None]:
        degree, sym = ctx.saved_tensors
        shape, dtype = ctx.probs_meta
        grad = torch.addcmul(grad_a[..., None].to(sym.dtype) * degree, grad_q[..., None].to(sym.dtype), sym)
        return grad.reshape(shape).to(dtype), None, None


def affinity_quadratic_forms(affinity: Affinity, probs: Tensor, roi: Tensor) -> tuple[Tensor, Tensor]:
    """Per image and class: a = S_k^T W m and q = S_k^T W S_k, both (B, K) float64 on probs' device.

    probs: (B, K, H, W) with S = 0 outside the ROI; roi: (B, H, W) bool; ``affinity`` of the images
    at probs' resolution. Differentiable with respect to probs (exact gradient)."""
    return _QuadraticForms.apply(probs, roi, affinity)


class AffinityRegularizer(Regularizer):
    """Base of the losses built on an affinity W and its quadratic forms (DenseCRF, normalized cut,
    gated CRF). Subclasses build the affinity (:meth:`affinity_of`) and combine a, q (:meth:`combine`).

    ``scale_factor < 1`` first downsamples images (``image_downsampling``), probs (bilinear) and ROI
    (nearest), and scales sigma_xy by the same factor, as the original rloss code does: sigma_xy is
    in pixels of the input.
    """

    image_downsampling: str = "nearest"
    """F.interpolate mode for the images at scale_factor < 1."""

    def __init__(
        self, weight: float = 1.0, sigma_rgb: float = 15.0, sigma_xy: float = 100.0, scale_factor: float = 1.0
    ) -> None:
        super().__init__(weight)
        self.sigma_rgb = check_positive(sigma_rgb, "sigma_rgb")
        self.sigma_xy = check_positive(sigma_xy, "sigma_xy")
        self.scale_factor = check_scale_factor(scale_factor)

    def working_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) the energy is computed at for inputs of (H, W)."""
        return scaled_size(size, self.scale_factor)

    def build_affinity(self, images: Tensor) -> Affinity:
        """The affinity of images (B, C, H, W) intensities (sigma_rgb in their units) at the working
        resolution."""
        size = self.working_size(tuple(images.shape[-2:]))
        if size != tuple(images.shape[-2:]):
            images = F.interpolate(images.float(), size=size, mode=self.image_downsampling)
        return self.affinity_of(images)

    def affinity_of(self, images: Tensor) -> Affinity:
        """The affinity of images already at the working resolution (sigma_xy in their pixels:
        ``self.sigma_xy * self.scale_factor``)."""
        raise NotImplementedError

    def energy(
        self, images: Tensor, probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        probs, roi = self.prepare_inputs(images, probs, roi)
        return self.energy_with(self.build_affinity(images), probs, roi)

    def bind(self, images: Tensor) -> Callable[..., Tensor]:
        """``forward`` with the images' affinity built once (per-image optimization)."""
        affinity = self.build_affinity(images)

        def bound(probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
            probs, roi = self.prepare_inputs(images, probs, roi)
            return self.weight * self.energy_with(affinity, probs, roi)

        return bound

    def energy_with(self, affinity: Affinity, probs: Tensor, roi: Tensor) -> Tensor:
        """The energy of validated probs (B, K, H, W) and roi (B, H, W) with a prebuilt affinity."""
        size = self.working_size(tuple(probs.shape[-2:]))
        if size != tuple(probs.shape[-2:]):
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            roi = F.interpolate(roi[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
            probs = probs * roi[:, None].to(probs.dtype)
        a, q = affinity_quadratic_forms(affinity, probs, roi)
        return self.combine(a, q, roi).to(probs.dtype)

    def combine(self, a: Tensor, q: Tensor, roi: Tensor) -> Tensor:
        """Scalar energy from a, q (B, K) float64 and the working-resolution roi (B, h, w)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight:g}, sigma_rgb={self.sigma_rgb:g}, sigma_xy={self.sigma_xy:g}, "
            f"scale_factor={self.scale_factor:g}"
        )


PROPAGATION_SIGMA_RGB: float = 8.0
"""Intensity bandwidth of the affinity in ``rloss propagate``, in levels of the image's own range
mapped to 0..255 (``rloss propagate`` rescales every image so: a float 0..1 MRI slice and an 8-bit
photo get the same relative bandwidth): sharper than training's 15, since there the affinity alone
decides every unlabeled pixel."""

PROPAGATION_SIGMA_XY_FRACTION: float = 0.1
"""Spatial bandwidth of the DenseCRF refinement in ``rloss propagate`` (``--steps``) as a fraction of
the working width; also the upper end of the label propagation's bandwidth
(PROPAGATION_SIGMA_XY_BOUNDS)."""

PROPAGATION_SIGMA_XY_SPACING: float = 0.3
"""Spatial bandwidth of the label propagation in ``rloss propagate`` as a multiple of the scribbles'
spacing: the median distance (working px) from a scribbled pixel to the nearest pixel scribbled with
another class. Where scribbles of different classes lie close (nested loops in a cardiac slice),
the boundaries between the classes are close too and the propagation must stay local; where they lie
far apart (one stroke per object in a photo) it may reach far along similar colours. Tuned with
PROPAGATION_SIGMA_XY_BOUNDS on the tuning splits of ACDC, CamVid (two simulators) and VOC together
(benchmarks/propagate.py --tune; ACDC on 100 tuning slices): 0.25 / 0.3 / 0.4 / 0.6 gave means
61.3 / 61.7 / 61.1 / 59.5 over the six dataset x scribble groups; at 0.3 ACDC Dice 80.0, CamVid
45.7 / 22.8, VOC 79.8 / 60.8 / 80.9, against 53.4, 47.2 / 22.1, 79.0 / 58.0 / 79.3 for the
previous fixed 0.1 x width (intensities normalized alike)."""

PROPAGATION_SIGMA_XY_BOUNDS: tuple[float, float] = (0.01, 0.15)
"""Bounds of the label propagation's spatial bandwidth, as fractions of the working width."""


class DenseAffinityRegularizer(AffinityRegularizer):
    """An :class:`AffinityRegularizer` on the dense bilateral (intensity and XY) affinity of every
    pixel pair. ``backend`` chooses how W is computed (:func:`rloss.lattice.backend_names`): "auto" is
    the Numba lattice for CPU tensors and the torch lattice on any other device; "exact" is the
    brute-force W (small images).
    """

    def __init__(
        self,
        weight: float = 1.0,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 100.0,
        scale_factor: float = 1.0,
        backend: str = "auto",
    ) -> None:
        super().__init__(weight, sigma_rgb, sigma_xy, scale_factor)
        self.backend = check_backend(backend)

    @classmethod
    def propagation_settings(cls, width: int) -> dict[str, Any]:
        return {
            **super().propagation_settings(width),
            "sigma_rgb": PROPAGATION_SIGMA_RGB,
            "sigma_xy": PROPAGATION_SIGMA_XY_FRACTION * width,
        }

    def affinity_of(self, images: Tensor) -> Affinity:
        return bilateral_affinity(images, self.sigma_rgb, self.sigma_xy * self.scale_factor, self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


def potts_energy(a: Tensor, q: Tensor, roi: Tensor) -> Tensor:
    """Relaxed Potts energy sum_k (a_k - q_k) = sum_k S_k^T W (1 - S_k) per ROI pixel, mean over the
    batch: a, q (B, K) float64, roi (B, h, w). Images without ROI pixels contribute 0."""
    n_roi = roi.flatten(1).sum(1).clamp(min=1).to(a)
    return ((a - q).sum(1) / n_roi).mean()
