"""Neighbourhood systems of a pairwise (Potts) term sum_{ij in N} w_ij P(y_i, y_j), per image and
normalized, for soft pseudo-labels y (B, K, h, w).

- :class:`GridNeighbourhood`: the 4- or 8-connected grid with contrast weights (Marin & Boykov,
  GridCRFLoss, ICCV 2021); any relaxation; normalized by the number of pairs.
- :class:`AffinityNeighbourhood`: every pair weighted by an :class:`rloss.lattice.Affinity` (the dense
  lattice or the local window); only the relaxations that are W.S products (bilinear, quadratic);
  normalized by the total affinity of the ROI pairs.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rloss.lattice import Affinity
from rloss.lattice.base import compute_dtype
from rloss.regularizers.affinity import affinity_quadratic_forms
from rloss.regularizers.relaxations import Relaxation

GRID_OFFSETS: dict[int, tuple[tuple[int, int], ...]] = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}
"""Connectivity -> (dy, dx) of each undirected pair direction (pixel (y, x) with (y + dy, x + dx))."""


class Neighbourhood(Protocol):
    def energy(self, y: Tensor) -> Tensor:
        """Normalized pairwise energy (B,) of pseudo-labels y (B, K, h, w)."""
        ...


def _pair_slices(dy: int, dx: int, h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(rows, cols) of the first and of the second pixel of every pair at offset (dy >= 0, dx)."""
    first = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
    second = (slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
    return first, second


class _GridDots(torch.autograd.Function):
    """y (B, K, h, w) -> (y_i . y_j for each pair direction: (B, h - dy, w - |dx|)), the directions given
    by their slices. Backward adds g y_j at i and g y_i at j in place (autograd through the slices
    would allocate and copy a (B, K, h, w) tensor per slice)."""

    @staticmethod
    def forward(ctx, y: Tensor, slices: list[tuple[tuple[slice, slice], tuple[slice, slice]]]) -> tuple[Tensor, ...]:
        ctx.save_for_backward(y)
        ctx.slices = slices
        return tuple((y[:, :, r1, c1] * y[:, :, r2, c2]).sum(1) for (r1, c1), (r2, c2) in slices)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        out = torch.zeros_like(y)
        for g, ((r1, c1), (r2, c2)) in zip(grads, ctx.slices, strict=True):
            out[:, :, r1, c1].addcmul_(g[:, None], y[:, :, r2, c2])
            out[:, :, r2, c2].addcmul_(g[:, None], y[:, :, r1, c1])
        return out, None


class GridNeighbourhood:
    """Pairs of 4- or 8-connected pixels both in the ROI, w_ij = exp(-|I_i - I_j|^2 / 2 s^2) / |p_i - p_j|
    (diagonals divided by sqrt 2), s^2 the mean of |I_i - I_j|^2 over the image's ROI pairs (1 when
    that is 0 or there is no pair). Energy per image: sum_ij w_ij P(y_i, y_j) / (number of ROI pairs).

    images: (B, C, h, w), any C and units (|.| sums the C channels; weights in float64 for float64
    images, else float32); roi: (B, h, w) bool.
    """

    def __init__(self, images: Tensor, roi: Tensor, relaxation: Relaxation, connectivity: int = 8) -> None:
        if connectivity not in GRID_OFFSETS:
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
        h, w = images.shape[-2:]
        images = images.detach().to(compute_dtype(images.dtype))
        self.relaxation = relaxation
        self.slices = [_pair_slices(dy, dx, h, w) for dy, dx in GRID_OFFSETS[connectivity]]
        lengths = [math.hypot(dy, dx) for dy, dx in GRID_OFFSETS[connectivity]]
        squared, gates = [], []
        for (r1, c1), (r2, c2) in self.slices:
            squared.append((images[:, :, r1, c1] - images[:, :, r2, c2]).square().sum(1))
            gates.append((roi[:, r1, c1] & roi[:, r2, c2]).to(images.dtype))
        self.num_pairs = torch.stack([g.sum((1, 2)) for g in gates]).sum(0)  # (B,)
        s2 = torch.stack([(d * g).sum((1, 2)) for d, g in zip(squared, gates, strict=True)]).sum(0)
        s2 = s2 / self.num_pairs.clamp(min=1)
        s2 = torch.where(s2 > 0, s2, torch.ones_like(s2))[:, None, None]
        self.weights = [g * torch.exp(-d / (2 * s2)) / n for d, g, n in zip(squared, gates, lengths, strict=True)]
        """Per direction: w_ij (B, h - dy, w - |dx|), 0 unless both pixels are in the ROI."""

    def energy(self, y: Tensor) -> Tensor:
        norms = y.square().sum(1)  # (B, h, w)
        dots = _GridDots.apply(y, self.slices)
        total = y.new_zeros(y.shape[0])
        for dot, ((r1, c1), (r2, c2)), weight in zip(dots, self.slices, self.weights, strict=True):
            pairs = self.relaxation.of_products(dot, norms[:, r1, c1], norms[:, r2, c2])
            total = total + (weight * pairs).sum((1, 2))
        return total / self.num_pairs.clamp(min=1)


class AffinityNeighbourhood:
    """Every ROI pair weighted by an affinity W: sum_ij W_ij P(y_i, y_j) / sum_ij m_i W_ij m_j with m the
    ROI indicator, for P bilinear (1 - y_i.y_j: the DenseCRF energy) or quadratic (0.5 |y_i - y_j|^2,
    = sum_i d_i |y_i|^2 - sum_ij W_ij y_i.y_j with d the mean of W m and W^T m). The other relaxations
    are not W.S products (they would need every pair explicitly).

    affinity: of the images at y's resolution; roi: (B, h, w) bool; dtype: y's (float32 or float64).
    """

    relaxations: tuple[str, ...] = ("bilinear", "quadratic")

    @classmethod
    def check_relaxation(cls, relaxation: str, context: str = "a dense or window neighbourhood") -> None:
        """ValueError, naming ``context`` (the neighbourhood setting), unless ``relaxation`` is one of
        :attr:`relaxations`."""
        if relaxation not in cls.relaxations:
            raise ValueError(
                f"relaxation must be one of {', '.join(map(repr, cls.relaxations))} with {context} "
                f"(W.S products), got {relaxation!r}"
            )

    def __init__(self, affinity: Affinity, roi: Tensor, relaxation: str, dtype: torch.dtype = torch.float32) -> None:
        self.check_relaxation(relaxation)
        self.affinity, self.roi, self.quadratic = affinity, roi, relaxation == "quadratic"
        m = roi[:, None].to(dtype)
        w, wt = affinity.filter_and_transpose(m)
        self.degree = (0.5 * (w + wt))[:, 0]  # (B, h, w)
        self.mass = (m[:, 0] * self.degree).sum((1, 2), dtype=torch.float64).clamp(min=1e-12)

    def energy(self, y: Tensor) -> Tensor:
        s = y * self.roi[:, None].to(y.dtype)  # 0 outside the ROI
        a, q = affinity_quadratic_forms(self.affinity, s, self.roi)
        if self.quadratic:
            total = (self.degree * s.square().sum(1)).sum((1, 2), dtype=torch.float64) - q.sum(1)
        else:
            total = (a - q).sum(1)
        return (total / self.mass).to(y.dtype)
