"""Input checks shared by the lattice and the losses: each raises ValueError naming the argument,
what was found and what was expected."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from rloss.data.constants import IGNORE_INDEX, PAD_INDEX


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as float if it is a finite number > 0."""
    value = float(value)
    if not (value > 0.0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_non_negative(value: float, name: str) -> float:
    """Return ``value`` as float if it is a finite number >= 0."""
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_scale_factor(value: float, name: str = "scale_factor") -> float:
    """Return ``value`` as float if it lies in (0, 1] (a downsampling factor)."""
    value = check_positive(value, name)
    if value > 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


def check_integer(value: int, name: str, minimum: int) -> int:
    """Return ``value`` as int if it is an int (or numpy integer; not a bool, not a float) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value: float, name: str, low: float, high: float) -> float:
    """Return ``value`` as float if it lies strictly between ``low`` and ``high``."""
    value = float(value)
    if not low < value < high:
        raise ValueError(f"{name} must be in ({low}, {high}), got {value}")
    return value


def check_finite(tensor: Tensor, name: str) -> None:
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s); expected finite values")


def check_images(images: Tensor, name: str = "images") -> tuple[list[float], list[float]]:
    """images: (B, C, H, W), C >= 1 channels of intensities in the images' own units (sigma_rgb is in
    the same units: 0..255 for 8-bit images, the data's range for float images such as MRI in 0..1),
    float or uint8, finite. Returns the per-channel range (lo, hi), C floats each, valid limits of the
    values: measured for float images (one pass, one host synchronisation), 0..255 for uint8."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(images.shape)}")
    if min(images.shape) == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(images.shape)}")
    channels = images.shape[1]
    if images.dtype == torch.uint8:
        return [0.0] * channels, [255.0] * channels
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float or uint8 intensities, got dtype {images.dtype}")
    dims = (0, 2, 3)
    detached = images.detach()
    lo, hi = torch.stack((detached.amin(dims), detached.amax(dims))).double().cpu().tolist()  # NaN/inf propagate
    if not all(map(math.isfinite, lo + hi)):
        check_finite(images, name)  # name the count of bad values
    return lo, hi


def check_pixel_tensor(tensor: Tensor, images: Tensor, name: str, channels: str = "C") -> None:
    """tensor: floating (B, channels, H, W) with the images' B, H, W."""
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {getattr(tensor, 'dtype', type(tensor))}")
    if tensor.dim() != 4:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(tensor.shape)}")
    expected = (images.shape[0], images.shape[-2], images.shape[-1])
    found = (tensor.shape[0], tensor.shape[2], tensor.shape[3])
    if found != expected:
        raise ValueError(
            f"{name} has (B, H, W) = {found} but images have {expected}; expected the same batch and size"
        )


def check_values(values: Tensor, images: Tensor, name: str = "values") -> None:
    """values: floating (B, C, H, W) with the images' B, H, W and finite entries."""
    check_pixel_tensor(values, images, name)
    check_finite(values, name)


def check_probs_shape(probs: Tensor, images: Tensor, name: str = "probs") -> None:
    """probs: floating (B, K >= 1, H, W) matching images' B, H, W."""
    check_pixel_tensor(probs, images, name, "K")
    if probs.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class (K >= 1), got shape {tuple(probs.shape)}")


def check_probs(probs: Tensor, images: Tensor, name: str = "probs", roi: Tensor | None = None) -> None:
    """probs: (B, K, H, W) matching images; finite; with ``roi`` (B, H, W) bool also non-negative and
    summing to 1 over K at ROI pixels (0 outside). Two passes over probs."""
    check_probs_shape(probs, images, name)
    detached = probs.detach()
    sums = detached.sum(1, dtype=torch.float32)  # one pass; NaN/inf propagate into the sums
    if not torch.isfinite(sums).all():
        raise ValueError(f"{name} contains NaN/inf value(s); expected finite values")
    if roi is None:
        return
    low = float(detached.amin())
    if low < -1e-4:
        raise ValueError(f"{name} must be non-negative (soft masks), found min {low:.3g}")
    tol = 1e-3 if detached.dtype in (torch.float32, torch.float64) else 2e-2
    err = float((sums - roi.to(sums.dtype)).abs().amax()) if sums.numel() else 0.0
    if err > tol:
        raise ValueError(
            f"{name} must sum to 1 over the K={probs.shape[1]} classes at every ROI pixel "
            f"(pass softmax(logits)), found a deviation of {err:.3g}"
        )


def check_roi(roi: Tensor | None, probs: Tensor, name: str = "roi") -> Tensor:
    """Return roi as a bool (B, H, W) tensor on probs' device; None means every pixel."""
    b, _, h, w = probs.shape
    if roi is None:
        return torch.ones((b, h, w), dtype=torch.bool, device=probs.device)
    if not isinstance(roi, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or None, got {type(roi).__name__}")
    if roi.dim() == 4 and roi.shape[1] == 1:
        roi = roi[:, 0]
    if tuple(roi.shape) != (b, h, w):
        raise ValueError(f"{name} must have shape (B, H, W) = {(b, h, w)}, got {tuple(roi.shape)}")
    if roi.dtype != torch.bool:
        check_finite(roi.float(), name)
        roi = roi != 0
    return roi.to(probs.device)


def check_labels(labels: Tensor, num_classes: int, name: str = "labels", roi: Tensor | None = None) -> Tensor:
    """Bool mask (labels' shape) of the labeled pixels of integer ``labels``: class ids 0..K-1, not
    IGNORE_INDEX (255, unlabeled) or PAD_INDEX (254, padding), within ``roi`` (bool, same shape) when
    given. ValueError naming the first other value found there."""
    labeled = (labels != IGNORE_INDEX) & (labels != PAD_INDEX)
    if roi is not None:
        labeled &= roi
    bad = labeled & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ValueError(
            f"{name}: holds class id {int(labels[bad][0])}; expected 0..{num_classes - 1} (K={num_classes}), "
            f"{PAD_INDEX} (padding) or {IGNORE_INDEX} (unlabeled)"
        )
    return labeled
