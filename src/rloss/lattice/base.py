"""The one interface of the CRF-type terms: multiply values by an affinity W (or W^T)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 values, float32 for every other float dtype (half, bfloat16 included)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Affinity(ABC):
    """W for a batch of B point sets of N points each (pixels of B images), built once per batch.

    :meth:`filter` computes W values (or W^T values) for values (B, C, N) or (B, C, H, W) with
    H*W = N, any number of channels C; the result has values' shape, device and dtype (computed in
    float64 for float64 values, else float32). Implementations differ only in where and how they
    compute; regularizers and the mean-field CRF take an Affinity and never ask which one.
    """

    symmetric: bool = False
    """True when W = W^T exactly (then :meth:`filter_and_transpose` filters once)."""

    feature_dtype: torch.dtype = torch.float32
    """dtype the features are best given in (the exact reference wants float64)."""

    def __init__(self, batch_size: int, num_points: int) -> None:
        self.batch_size = batch_size
        self.num_points = num_points

    def filter(self, values: Tensor, transpose: bool = False) -> Tensor:
        """W values, or W^T values with ``transpose``."""
        return self._run(values, (transpose and not self.symmetric,))[0]

    def filter_and_transpose(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """(W values, W^T values); cheaper than two :meth:`filter` calls (a shared splat)."""
        if self.symmetric:
            out = self.filter(values)
            return out, out
        forward, transposed = self._run(values, (False, True))
        return forward, transposed

    def _run(self, values: Tensor, transposes: tuple[bool, ...]) -> list[Tensor]:
        shape = values.shape
        if values.dim() < 3 or shape[0] != self.batch_size or math.prod(shape[2:]) != self.num_points:
            raise ValueError(
                f"values must have shape (B={self.batch_size}, C, N={self.num_points}) or (B, C, H, W) "
                f"with H*W = N, got {tuple(shape)}"
            )
        flat = values.detach().reshape(shape[0], shape[1], self.num_points).to(compute_dtype(values.dtype))
        with torch.autocast(values.device.type, enabled=False):  # the filters' sums stay in float32/64
            outputs = self._filter(flat, transposes)
        return [out.reshape(shape).to(device=values.device, dtype=values.dtype) for out in outputs]

    def quadratic_forms(self, s: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For soft masks s (B, K, N) and the ROI indicator m (B, 1, N), both float32/64:
        a = s_k . W m and q = s_k . W s_k, (B, K) float64, with what their gradients need:
        W m (B, 1, N) and (W + W^T) s (B, K, N), in s' dtype."""
        k = s.shape[1]
        w, wt = self.filter_and_transpose(torch.cat((s, m), 1))
        degree, ws = w[:, k:].clone(), w[:, :k]
        a = (s * degree).sum(2, dtype=torch.float64)
        q = (s * ws).sum(2, dtype=torch.float64)
        return a, q, degree, (ws * 2 if wt is w else wt[:, :k].add_(ws))

    @abstractmethod
    def _filter(self, values: Tensor, transposes: tuple[bool, ...]) -> list[Tensor]:
        """[W values or W^T values for each flag of ``transposes``]; values (B, C, N) float32/64 on
        the caller's device. Outputs (B, C, N) of the same dtype, on any device."""


Bounds = tuple[Sequence[float], Sequence[float]]
"""(lo, hi): known limits of d features, d floats each."""

BACKENDS: dict[str, type[GaussianAffinity]] = {}
"""Name -> dense Gaussian affinity back-end; a subclass of :class:`GaussianAffinity` that declares
``name`` registers itself when its module is imported (the shipped ones by :mod:`rloss.lattice`)."""


class GaussianAffinity(Affinity):
    """A dense Gaussian affinity W_ij ~ exp(-|f_i - f_j|^2 / 2) of per-point features in units of the
    Gaussian's std: the contract of every back-end (``backend="numba"|"torch"|"exact"|<yours>``).

    Constructor: ``cls(features, bounds)`` with features (B, N, d), any d >= 1, device and dtype
    (``feature_dtype`` preferred), and ``bounds`` known (lo, hi) limits of the features or None
    (a back-end may use them to skip measuring the range). Implement :meth:`Affinity._filter`.
    """

    name: ClassVar[str]
    """Back-end name in :data:`BACKENDS` (``backend=`` of the regularizers and the CRF)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None:
            if name == "auto" or (name in BACKENDS and BACKENDS[name].__qualname__ != cls.__qualname__):
                raise TypeError(f"affinity back-end name {name!r} of {cls.__qualname__} is reserved or taken")
            BACKENDS[name] = cls

    def __init__(self, features: Tensor, bounds: Bounds | None = None) -> None:
        if features.dim() != 3 or features.shape[1] == 0 or features.shape[2] == 0:
            raise ValueError(f"features must have shape (B, N, d) with N, d >= 1, got {tuple(features.shape)}")
        super().__init__(features.shape[0], features.shape[1])
