"""The permutohedral lattice in plain torch operations: any device, one build for the whole batch.

The same algorithm and constants as the Numba lattice (``geometry``): elevation in float64, the
remainder-0 vertex and the ranks of each point's d+1 coordinates, barycentric weights, the d+1
enclosing vertices as packed int64 keys (the image index in the top bits), ``torch.unique`` for the
vertex set (deterministic), neighbours along each lattice direction by ``searchsorted`` in the sorted
keys. Filtering is a splat (``index_add_``, deterministic under ``torch.use_deterministic_algorithms``),
[1 2 1] blurs by gathers in direction order 0..d (W) or d..0 (W^T), and a slice by gathers: a fixed
number of kernel launches whatever the batch size, and no host synchronisation (the build has one:
the vertex count).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from rloss.lattice.base import GaussianAffinity
from rloss.lattice.geometry import elevation_scales, key_fields, normalization

KEY_BITS: int = 63
"""Bits of a packed key (int64, non-negative): lattice coordinates plus the image index."""


def constant(values: Sequence[float] | np.ndarray, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small host-made tensor on ``device`` without a host synchronisation (a blocking copy to a GPU
    would wait for its queue; from pageable memory a non-blocking one is staged at once)."""
    return torch.as_tensor(np.asarray(values), dtype=dtype).to(device, non_blocking=True)


class TorchLattice(GaussianAffinity):
    """Permutohedral lattice of a batch of point sets with torch tensors on their device.

    Memory (12 x 257^2 pixels, d = 5; benchmarks/lattice.py): 62 MiB kept (per-point vertex ids int64
    and weights, vertex tables); the build peaks at about 400 MiB of float64/int64 temporaries, a
    21-channel filter_and_transpose at about 130-190 MiB.
    """

    name = "torch"

    def __init__(self, features: Tensor, bounds: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        """features: (B, N, d) in units of the Gaussian's std, on any device. ``bounds``: (lo, hi),
        d floats each, known limits of the features over the batch (skips measuring them, one host
        synchronisation less); the range only sizes the packed keys."""
        super().__init__(features, bounds)
        batch, n, d = features.shape
        d1 = d + 1
        device = features.device
        if bounds is None:
            lo, hi = torch.aminmax(features.detach().reshape(-1, d).double(), dim=0)
            bounds = (lo.cpu().numpy(), hi.cpu().numpy())
        coord_lo, width = key_fields(*bounds)
        shifts = [int(s) for s in torch.tensor([0, *width.tolist()]).cumsum(0)]
        batch_bits = max(1, (batch - 1).bit_length())
        if shifts[-1] + batch_bits > KEY_BITS:
            raise ValueError(
                f"the lattice keys of d={d} features (2 + C for images of C channels) need "
                f"{shifts[-1] + batch_bits} bits, more than the {KEY_BITS} of the torch back-end: the "
                "Gaussian's std (sigma_xy / sigma_rgb) is too small for the image size or value range, or "
                "the images have too many channels (the numba back-end packs longer keys)"
            )

        # Elevation onto the plane sum(x) = 0 of R^(d+1), in float64 (ranks must match the Numba kernel's).
        cf = features.detach().to(torch.float64) * constant(elevation_scales(d), torch.float64, device)
        suffix = cf.flip(-1).cumsum(-1).flip(-1)  # sum_{i >= j} cf_i, summed from the last as the kernel does
        steps = torch.arange(1, d1, dtype=torch.float64, device=device)
        tail = torch.cat((suffix[..., 1:], torch.zeros_like(suffix[..., :1])), -1)
        elevated = torch.cat((suffix[..., :1], tail - steps * cf), -1)  # (B, N, d+1)
        del cf, suffix, tail

        # Nearest remainder-0 point, ranks of the residuals (ties broken by coordinate index).
        rem0 = torch.round(elevated * (1.0 / d1)).long() * d1
        residual = elevated - rem0
        total = rem0.sum(-1, keepdim=True) // d1
        later = torch.ones(d1, d1, dtype=torch.bool, device=device).triu(1)  # [i, j]: j > i
        earlier = later.T
        res_i, res_j = residual[..., :, None], residual[..., None, :]
        rank = total + (((res_j > res_i) & later) | ((res_j >= res_i) & earlier)).sum(-1)
        del residual, res_i, res_j
        wrap = (rank < 0).long() - (rank > d).long()
        rank += wrap * d1
        rem0 += wrap * d1

        # Barycentric weights from the residuals sorted by rank.
        ranked = torch.zeros_like(elevated).scatter_(-1, rank, (elevated - rem0) * (1.0 / d1))
        descending = ranked.flip(-1)  # [r] = ranked[d - r]
        weights = torch.cat((1.0 + ranked[..., d:] - ranked[..., :1], descending[..., 1:] - descending[..., :-1]), -1)
        self.weights = weights.to(torch.float32).reshape(batch * n, d1)
        del elevated, ranked, descending, weights

        # Packed keys of the d+1 simplex corners: corner r has coordinates rem0 + r, minus d+1 where
        # rank >= d+1-r (first d coordinates; the last is implied).
        multiplier = constant([1 << s for s in shifts[:d]], torch.int64, device)
        image_index = torch.arange(batch, device=device, dtype=torch.int64)[:, None] << shifts[d]
        base = ((rem0[..., :d] - constant(coord_lo, torch.int64, device)) * multiplier).sum(-1) + image_index
        ones = int(multiplier.sum())
        rank = rank[..., :d]
        keys = torch.stack(
            [base + r * ones - d1 * ((rank >= d1 - r) * multiplier).sum(-1) for r in range(d1)], -1
        )
        del rem0, rank, base
        vertex_keys, inverse = torch.unique(keys.reshape(-1), sorted=True, return_inverse=True)
        self.offsets = (inverse + 1).reshape(batch * n, d1)  # +1: row 0 of the vertex buffers stays zero
        del keys, inverse

        # Blur neighbours: along direction j the coordinates -1 (+1), except coordinate j: +d (-d).
        step = constant([d1 << s for s in shifts[:d]] + [0], torch.int64, device) - ones
        candidates = torch.stack((vertex_keys + step[:, None], vertex_keys - step[:, None]), 1)  # (d+1, 2, M)
        position = torch.searchsorted(vertex_keys, candidates).clamp_(max=vertex_keys.numel() - 1)
        found = torch.where(vertex_keys[position] == candidates, position + 1, 0)
        self.neighbors = torch.cat((torch.zeros_like(found[..., :1]), found), -1)  # (d+1, 2, M + 1)
        self.num_vertices = vertex_keys.numel()
        self.normalization = normalization(d)

    def _filter(self, values: Tensor, transposes: tuple[bool, ...]) -> list[Tensor]:
        batch, channels, n = values.shape
        points = values.permute(0, 2, 1).reshape(batch * n, channels)
        weights = self.weights.to(values.dtype)
        splatted = points.new_zeros((self.num_vertices + 1, channels))
        for r in range(self.offsets.shape[1]):
            splatted.index_add_(0, self.offsets[:, r], points * weights[:, r, None])
        del points
        weights = weights * self.normalization
        outputs = []
        for transpose in transposes:
            buf = splatted
            directions = range(self.neighbors.shape[0])
            for j in reversed(directions) if transpose else directions:
                buf = torch.add(buf, buf[self.neighbors[j, 0]].add_(buf[self.neighbors[j, 1]]), alpha=0.5)
            out = buf[self.offsets[:, 0]].mul_(weights[:, 0, None])
            for r in range(1, self.offsets.shape[1]):
                out.addcmul_(buf[self.offsets[:, r]], weights[:, r, None])
            outputs.append(out.reshape(batch, n, channels).permute(0, 2, 1))
        return outputs
