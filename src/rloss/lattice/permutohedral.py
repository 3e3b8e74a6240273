"""Batched permutohedral lattice on torch tensors: build once per image, filter many channels."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from rloss.lattice.features import bilateral_features
from rloss.lattice.numba_cache import ensure_writable_numba_cache
from rloss.validation import check_values

ensure_writable_numba_cache()
from rloss.lattice import kernels  # noqa: E402  (after the cache dir is settled)

_T = TypeVar("_T")
_num_threads: int = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

# Calibration of the lattice against the exact Gaussian sum (measured, see benchmarks/lattice.py):
# - WIDTH_CORRECTION: with Adams et al.'s scaling the lattice kernel is about 9% wider than the
#   Gaussian it stands for. Its response to a constant signal on a 2-D point set (a flat-colour image,
#   0.565x exact) and on a 5-D one (uniform density, 0.727x by the lattice's cell volume) disagree; for
#   a kernel of width s they scale as s^2 and s^5, which fixes s = (0.727 / 0.565)^(1/3) = 1.0877. We
#   shrink the features' scale by that factor, after which the response is nearly content-independent.
# - NORMALIZATION: the remaining peak factor. The corrected lattice gives 0.48-0.49x the exact sum on
#   flat and noise-textured images and 0.47-0.54x on real VOC images; we scale by 1 / 0.5.
WIDTH_CORRECTION: float = 1.0877
NORMALIZATION: float = 2.0

MAX_EXTENT: int = 1 << 20
"""Largest lattice coordinate accepted (lattice units). The kernel sizes its packed keys from the
actual range, so this is a guard against bandwidths far too small for the image, not a packing limit."""


def set_num_threads(n: int) -> None:
    """Number of threads the lattice uses to process the images of a batch in parallel."""
    global _num_threads
    if int(n) < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    _num_threads = int(n)


def get_num_threads() -> int:
    return _num_threads


def map_batch(fn: Callable[[int], _T], count: int) -> list[_T]:
    """fn(0..count-1) on up to get_num_threads() threads (the kernels release the GIL).

    A fresh pool per call: no thread state survives into forked DataLoader workers."""
    workers = min(_num_threads, count)
    if workers <= 1:
        return [fn(i) for i in range(count)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, range(count)))


@dataclass(frozen=True)
class _ImageLattice:
    offsets: np.ndarray  # (N, d+1) int32
    weights: np.ndarray  # (N, d+1) float32
    neighbors: np.ndarray  # (d+1, M, 2) int32

    @property
    def num_vertices(self) -> int:
        return self.neighbors.shape[1]


class PermutohedralLattice:
    """Lattices of a batch of point sets (one per image), filtering with W or W^T.

    W_ij ~ exp(-|f_i - f_j|^2 / 2) for features f in units of the Gaussian's std. Build once,
    then :meth:`filter` any number of channels; images of the batch run on parallel threads.
    """

    def __init__(self, features: Tensor) -> None:
        """features: (B, N, d) positions divided by the Gaussian's std (any device/dtype)."""
        if features.dim() != 3 or features.shape[1] == 0 or features.shape[2] == 0:
            raise ValueError(f"features must have shape (B, N, d) with N, d >= 1, got {tuple(features.shape)}")
        host = features.detach().to("cpu", torch.float32).contiguous()
        d = host.shape[2]
        lo, hi = torch.aminmax(host, dim=1)  # (B, d) per image, one pass; NaN/inf propagate
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise ValueError("features contain NaN/inf values; expected finite values")
        # |coordinate| <= (d+1) * s * sum_i |f_i|, s = sqrt(2/3) (d+1) the lattice scale.
        extent = float(torch.maximum(lo.abs().amax(0), hi.abs().amax(0)).sum())
        extent *= WIDTH_CORRECTION * (d + 1) ** 2 * math.sqrt(2 / 3)
        if extent >= MAX_EXTENT:
            raise ValueError(
                f"features span {extent:.3g} lattice units, more than the {MAX_EXTENT} the lattice "
                "supports: the Gaussian's std (sigma_xy / sigma_rgb) is too small for the image size or value range"
            )
        array = host.numpy()
        f_lo, f_hi = lo.double().numpy(), hi.double().numpy()
        self.num_points = array.shape[1]
        self.lattices: Sequence[_ImageLattice] = map_batch(
            lambda b: _ImageLattice(*kernels.build_lattice(array[b], WIDTH_CORRECTION, f_lo[b], f_hi[b])),
            array.shape[0],
        )

    @classmethod
    def from_images(cls, images: Tensor, sigma_rgb: float, sigma_xy: float) -> "PermutohedralLattice":
        """Lattice of the RGBXY bilateral features of images (B, 3, H, W), RGB in 0..255."""
        return cls(bilateral_features(images, sigma_rgb, sigma_xy, torch.float32))

    @property
    def num_vertices(self) -> list[int]:
        return [lat.num_vertices for lat in self.lattices]

    def filter(self, values: Tensor, transpose: bool = False) -> Tensor:
        """out = W values (or W^T values): values (B, C, N) or (B, C, H, W) with H*W = N.

        Computed on the host in float64 for float64 values, else float32; returned on values'
        device and dtype.
        """
        return self._filter(values, (transpose,))[0]

    def filter_and_transpose(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """(W values, W^T values), sharing the splat: cheaper than two :meth:`filter` calls."""
        forward, transposed = self._filter(values, (False, True))
        return forward, transposed

    def _filter(self, values: Tensor, transposes: tuple[bool, ...]) -> list[Tensor]:
        shape = values.shape
        if values.dim() < 3 or shape[0] != len(self.lattices) or math.prod(shape[2:]) != self.num_points:
            raise ValueError(
                f"values must have shape (B={len(self.lattices)}, C, N={self.num_points}) or (B, C, H, W) "
                f"with H*W = N, got {tuple(shape)}"
            )
        compute = np.float64 if values.dtype == torch.float64 else np.float32
        host_dtype = torch.float64 if compute is np.float64 else torch.float32
        host = values.detach().reshape(shape[0], shape[1], -1).to("cpu", host_dtype).contiguous().numpy()
        out = np.empty((len(transposes), *host.shape), compute)  # (outputs, B, C, N)
        flags = np.array(transposes, dtype=np.bool_)
        scale = np.array([NORMALIZATION], compute)

        def run(b: int) -> None:
            lat = self.lattices[b]
            kernels.filter_values(host[b], lat.offsets, lat.weights, lat.neighbors, flags, scale, out[:, b])

        map_batch(run, len(self.lattices))
        return [
            torch.from_numpy(result).reshape(shape).to(device=values.device, dtype=values.dtype) for result in out
        ]


def bilateral_filter(
    images: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float, transpose: bool = False
) -> Tensor:
    """Approximate ``out_i = sum_j W_ij v_j``, W the RGBXY Gaussian affinity, with the lattice.

    images: (B, 3, H, W) RGB in 0..255; values: (B, C, H, W) float. Returns (B, C, H, W) on
    values' device and dtype. ``transpose=True`` applies W^T (the lattice's W is slightly
    asymmetric), which exact gradients need.
    """
    check_values(values, images)
    lattice = PermutohedralLattice.from_images(images, sigma_rgb, sigma_xy)
    return lattice.filter(values, transpose=transpose)
