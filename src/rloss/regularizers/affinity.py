"""The two affinity quadratic forms the CRF-type losses are built from.

For each image and class k, with W the RGBXY Gaussian affinity, S_k the soft mask and m the ROI
indicator:  a_k = S_k^T W m  (= d^T S_k, d = W m the degree)  and  q_k = S_k^T W S_k.
DenseCRF is sum_k (a_k - q_k); normalized cut is sum_k (a_k - q_k) / a_k.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rloss.lattice import PermutohedralLattice, bilateral_features, exact_gaussian_filter
from rloss.lattice.permutohedral import map_batch
from rloss.regularizers.base import Regularizer
from rloss.regularizers.quadratic_kernels import quadratic_gradient, quadratic_sums
from rloss.validation import check_positive


class _LatticeQuadraticForms(torch.autograd.Function):
    """(a, q) with the lattice; backward is the exact gradient of what was computed:
    da/dS_k = W m, dq/dS_k = (W + W^T) S_k (the lattice's W is slightly asymmetric).

    Host work: W m, then W S and W^T S from one shared splat, and one fused reduction pass forward, one
    fused pass backward, per image on parallel threads; no other full-size temporaries."""

    @staticmethod
    def forward(ctx, probs: Tensor, roi: Tensor, lattice: PermutohedralLattice) -> tuple[Tensor, Tensor]:
        compute = torch.float64 if probs.dtype == torch.float64 else torch.float32
        b, k = probs.shape[:2]
        s = probs.detach().to("cpu", compute).reshape(b, k, -1).contiguous()
        degree = lattice.filter(roi.detach().to("cpu", compute).reshape(b, 1, -1))  # W m
        ws, sym = lattice.filter_and_transpose(s)  # W S and W^T S; sym becomes (W + W^T) S below
        a = torch.empty((b, k), dtype=torch.float64)
        q = torch.empty((b, k), dtype=torch.float64)
        s_np, ws_np, sym_np, d_np = s.numpy(), ws.numpy(), sym.numpy(), degree.numpy()
        a_np, q_np = a.numpy(), q.numpy()
        map_batch(lambda i: quadratic_sums(s_np[i], ws_np[i], sym_np[i], d_np[i, 0], a_np[i], q_np[i]), b)
        ctx.save_for_backward(degree, sym)
        ctx.probs_meta = (probs.shape, probs.device, probs.dtype)
        return a.to(probs.device), q.to(probs.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_a: Tensor, grad_q: Tensor) -> tuple[Tensor, None, None]:
        degree, sym = ctx.saved_tensors
        shape, device, dtype = ctx.probs_meta
        ga = grad_a.detach().to("cpu", sym.dtype).contiguous().numpy()
        gq = grad_q.detach().to("cpu", sym.dtype).contiguous().numpy()
        grad = torch.empty_like(sym)
        d_np, sym_np, out = degree.numpy(), sym.numpy(), grad.numpy()
        map_batch(lambda i: quadratic_gradient(ga[i], gq[i], d_np[i, 0], sym_np[i], out[i]), sym.shape[0])
        return grad.reshape(shape).to(device=device, dtype=dtype), None, None


# Lattices of image tensors still alive, keyed by the tensor the caller passed: per-image optimization
# (rloss propagate) passes the same unmodified images at every step and reuses one lattice.
# (Tensors compare elementwise, so the cache is keyed by id, with a weak reference that drops the entry.)
_LATTICES: dict[int, tuple[weakref.ref, tuple, PermutohedralLattice]] = {}


def lattice_for(source: Tensor, images: Tensor, sigma_rgb: float, sigma_xy: float) -> PermutohedralLattice:
    """The lattice of ``images`` (derived from ``source``, e.g. downsampled), reused while the same
    ``source`` tensor comes back unmodified (same version counter, shape and bandwidths)."""
    key = (source._version, tuple(source.shape), tuple(images.shape), float(sigma_rgb), float(sigma_xy))
    cached = _LATTICES.get(id(source))
    if cached is not None and cached[0]() is source and cached[1] == key:
        return cached[2]
    lattice = PermutohedralLattice.from_images(images, sigma_rgb, sigma_xy)
    ident = id(source)
    _LATTICES[ident] = (weakref.ref(source, lambda _: _LATTICES.pop(ident, None)), key, lattice)
    return lattice


def affinity_quadratic_forms(
    images: Tensor,
    probs: Tensor,
    roi: Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    exact: bool = False,
    lattice: PermutohedralLattice | None = None,
) -> tuple[Tensor, Tensor]:
    """Per image and class: a = S_k^T W m and q = S_k^T W S_k, both (B, K) float64.

    images: (B, 3, H, W) RGB 0..255; probs: (B, K, H, W) with S = 0 outside the ROI; roi: (B, H, W)
    bool. ``exact`` uses the brute-force W (O(N^2), small images, plain autograd) instead of the
    lattice; ``lattice`` is a prebuilt lattice of ``images``. Differentiable with respect to probs.
    """
    if exact:
        compute = torch.float64 if probs.dtype == torch.float64 else torch.float32
        b, k, h, w = probs.shape
        features = bilateral_features(images.to(probs.device), sigma_rgb, sigma_xy, compute)
        s = probs.to(compute).reshape(b, k, h * w)
        m = roi.to(compute).reshape(b, 1, h * w)
        filtered = exact_gaussian_filter(features, torch.cat((s, m), dim=1))
        a = (s.double() * filtered[:, -1:].double()).sum(2)
        q = (s.double() * filtered[:, :-1].double()).sum(2)
        return a, q
    if lattice is None:
        lattice = PermutohedralLattice.from_images(images, sigma_rgb, sigma_xy)
    return _LatticeQuadraticForms.apply(probs, roi, lattice)


class AffinityRegularizer(Regularizer):
    """Base of the losses built on the dense RGBXY affinity W (DenseCRF, normalized cut).

    ``scale_factor < 1`` first downsamples images (nearest), probs (bilinear) and ROI (nearest),
    and scales sigma_xy by the same factor, as the original rloss code does.
    """

    def __init__(
        self,
        weight: float = 1.0,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 100.0,
        scale_factor: float = 1.0,
        exact: bool = False,
    ) -> None:
        super().__init__(weight)
        self.sigma_rgb = check_positive(sigma_rgb, "sigma_rgb")
        self.sigma_xy = check_positive(sigma_xy, "sigma_xy")
        self.scale_factor = check_positive(scale_factor, "scale_factor")
        if self.scale_factor > 1.0:
            raise ValueError(f"scale_factor must be in (0, 1], got {scale_factor}")
        self.exact = bool(exact)

    def quadratic_forms(self, images: Tensor, probs: Tensor, roi: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Validate, rescale, and return (a, q) of shape (B, K) float64 and the rescaled ROI (B, h, w)."""
        probs, roi = self.prepare_inputs(images, probs, roi)
        source = images
        if self.scale_factor < 1.0:
            h, w = probs.shape[-2:]
            size = (max(1, round(h * self.scale_factor)), max(1, round(w * self.scale_factor)))
            images = F.interpolate(images.float(), size=size, mode="nearest")
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            roi = F.interpolate(roi[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
            probs = probs * roi[:, None].to(probs.dtype)
        sigma_xy = self.sigma_xy * self.scale_factor
        lattice = None if self.exact else lattice_for(source, images, self.sigma_rgb, sigma_xy)
        a, q = affinity_quadratic_forms(images, probs, roi, self.sigma_rgb, sigma_xy, self.exact, lattice)
        return a, q, roi

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight:g}, sigma_rgb={self.sigma_rgb:g}, sigma_xy={self.sigma_xy:g}, "
            f"scale_factor={self.scale_factor:g}, exact={self.exact}"
        )
