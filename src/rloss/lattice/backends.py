"""Choosing and building an affinity back-end by name: ``backend="auto" | "numba" | "torch" | "exact"``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rloss.lattice.base import BACKENDS, Affinity, GaussianAffinity
from rloss.lattice.features import bilateral_features_and_bounds
from rloss.utils.checks import check_values


def backend_names() -> tuple[str, ...]:
    """"auto" and every registered back-end (:data:`rloss.lattice.base.BACKENDS`)."""
    return ("auto", *sorted(BACKENDS))


def check_backend(backend: str, name: str = "backend") -> str:
    """``backend`` lower-cased if it is "auto" or a registered back-end; ValueError naming ``name`` otherwise."""
    if not isinstance(backend, str) or backend.lower() not in backend_names():
        raise ValueError(f"{name} must be one of {', '.join(map(repr, backend_names()))}, got {backend!r}")
    return backend.lower()


def resolve_backend(backend: str, device: torch.device) -> type[GaussianAffinity]:
    """The class of ``backend``; ``"auto"`` is the Numba lattice for CPU tensors, the torch lattice
    for any other device (no host round trip)."""
    backend = check_backend(backend)
    if backend == "auto":
        backend = "numba" if torch.device(device).type == "cpu" else "torch"
    return BACKENDS[backend]


def gaussian_affinity(
    features: Tensor, backend: str = "auto", bounds: tuple[Sequence[float], Sequence[float]] | None = None
) -> Affinity:
    """W_ij ~ exp(-|f_i - f_j|^2 / 2) for features (B, N, d) in units of the Gaussian's std, on the
    features' device. ``bounds``: known (lo, hi) limits of the features (d floats each), optional."""
    return resolve_backend(backend, features.device)(features, bounds)


def bilateral_affinity(
    images: Tensor, sigma_rgb: float, sigma_xy: float, backend: str = "auto", spatial_only: bool = False
) -> Affinity:
    """The bilateral affinity W_ij = exp(-|p_i-p_j|^2 / 2 sigma_xy^2 - |I_i-I_j|^2 / 2 sigma_rgb^2) of
    images (B, C, H, W) intensities, any C >= 1 (sigma_rgb in their units; p in pixels), on the images'
    device; with ``spatial_only`` the XY one, exp(-|p_i-p_j|^2 / 2 sigma_xy^2) (the images give only
    the grid; sigma_rgb is unused). The features' limits passed to the back-end come from the images'
    range (measured once for float images, 0..255 for uint8)."""
    cls = resolve_backend(backend, images.device)
    features, (lo, hi) = bilateral_features_and_bounds(images, sigma_rgb, sigma_xy, cls.feature_dtype)
    if spatial_only:
        return cls(features[..., :2].contiguous(), (lo[:2], hi[:2]))
    return cls(features, (lo, hi))


def bilateral_filter(
    images: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float, transpose: bool = False, backend: str = "auto"
) -> Tensor:
    """``out_i = sum_j W_ij v_j`` with the bilateral Gaussian affinity W (see :func:`bilateral_affinity`).

    images: (B, C, H, W) intensities (sigma_rgb in their units); values: (B, K, H, W) float, any K.
    Returns (B, K, H, W) on values' device and dtype. ``transpose=True`` applies W^T (the lattices'
    W is slightly asymmetric), which exact gradients need. ``backend="exact"`` is the brute-force
    reference (small images).
    """
    check_backend(backend)
    check_values(values, images)
    return bilateral_affinity(images.to(values.device), sigma_rgb, sigma_xy, backend).filter(values, transpose)
