"""The permutohedral lattice on the host: Numba kernels, images of a batch on parallel threads."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from rloss.lattice.base import GaussianAffinity
from rloss.lattice.geometry import elevation_scales, key_fields, normalization

_T = TypeVar("_T")
_num_threads: int = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Default number of host threads of the Numba lattice (images of a batch in parallel); a
    lattice built with ``num_threads=`` uses its own. ``rloss demo --threads`` sets it."""
    global _num_threads
    if int(n) < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    _num_threads = int(n)


def get_num_threads() -> int:
    """The default set by :func:`set_num_threads` (initially the CPUs this process may use)."""
    return _num_threads


def map_batch(fn: Callable[[int], _T], count: int, threads: int) -> list[_T]:
    """fn(0..count-1) on up to ``threads`` threads (the kernels release the GIL).

    A fresh pool per call: no thread state survives into forked DataLoader workers."""
    workers = min(threads, count)
    if workers <= 1:
        return [fn(i) for i in range(count)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, range(count)))


@functools.cache
def numba_kernels() -> ModuleType:
    """The compiled kernels, imported on first use, after Numba's on-disk cache is made writable."""
    from rloss.lattice.numba_cache import ensure_writable_numba_cache

    ensure_writable_numba_cache()
    from rloss.lattice import kernels

    return kernels


@functools.cache
def numba_quadratic_kernels() -> ModuleType:
    """The fused reduction kernel, imported on first use (see :func:`numba_kernels`)."""
    numba_kernels()
    from rloss.lattice import quadratic_kernels

    return quadratic_kernels


@dataclass(frozen=True)
class _ImageLattice:
    offsets: np.ndarray  # (N, d+1) int32
    weights: np.ndarray  # (N, d+1) float32
    neighbors: np.ndarray  # (d+1, M, 2) int32

    @property
    def num_vertices(self) -> int:
        return self.neighbors.shape[1]


class NumbaLattice(GaussianAffinity):
    """Permutohedral lattices of a batch of point sets on the host (one per image), W ~ the
    normalized Gaussian exp(-|f_i - f_j|^2 / 2) of features in units of the Gaussian's std.

    Values on another device are copied to the host and the results back.
    """

    name = "numba"

    def __init__(
        self,
        features: Tensor,
        bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        num_threads: int | None = None,
    ) -> None:
        """features: (B, N, d) (any device/dtype). ``bounds`` is unused (the range is measured);
        ``num_threads``: host threads, default :func:`get_num_threads`."""
        super().__init__(features, bounds)
        self.num_threads = get_num_threads() if num_threads is None else int(num_threads)
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        host = features.detach().to("cpu", torch.float32).contiguous()
        lo, hi = torch.aminmax(host, dim=1)  # (B, d) per image, one pass; NaN/inf propagate
        lo, hi = lo.double().numpy(), hi.double().numpy()
        layouts = [key_fields(lo[b], hi[b]) for b in range(self.batch_size)]
        scale = elevation_scales(host.shape[2])
        self.normalization = normalization(host.shape[2])
        array = host.numpy()
        kernels = numba_kernels()
        self.lattices: list[_ImageLattice] = map_batch(
            lambda b: _ImageLattice(*kernels.build_lattice(array[b], scale, *layouts[b])),
            self.batch_size,
            self.num_threads,
        )

    @property
    def num_vertices(self) -> list[int]:
        """Lattice vertices of each image."""
        return [lat.num_vertices for lat in self.lattices]

    def quadratic_forms(self, s: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`Affinity.quadratic_forms` with one fused host pass per image for a, q and the sum
        W s + W^T s (measured faster on the host than the tensor operations of the base class)."""
        device = s.device
        s = s.to("cpu").contiguous()
        degree = self.filter(m.to("cpu"))
        ws, sym = self.filter_and_transpose(s)
        a = torch.empty(s.shape[:2], dtype=torch.float64)
        q = torch.empty(s.shape[:2], dtype=torch.float64)
        s_np, ws_np, sym_np, d_np, a_np, q_np = (t.numpy() for t in (s, ws, sym, degree, a, q))
        kernel = numba_quadratic_kernels().quadratic_sums
        def sums(b: int) -> None:
            kernel(s_np[b], ws_np[b], sym_np[b], d_np[b, 0], a_np[b], q_np[b])

        map_batch(sums, self.batch_size, self.num_threads)
        return a.to(device), q.to(device), degree.to(device), sym.to(device)

    def _filter(self, values: Tensor, transposes: tuple[bool, ...]) -> list[Tensor]:
        host = values.to("cpu").contiguous().numpy()
        out = np.empty((len(transposes), *host.shape), host.dtype)  # (outputs, B, C, N)
        flags = np.array(transposes, dtype=np.bool_)
        scale = np.array([self.normalization], host.dtype)
        kernels = numba_kernels()

        def run(b: int) -> None:
            lat = self.lattices[b]
            kernels.filter_values(host[b], lat.offsets, lat.weights, lat.neighbors, flags, scale, out[:, b])

        map_batch(run, self.batch_size, self.num_threads)
        return list(torch.from_numpy(out))
