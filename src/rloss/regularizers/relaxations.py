"""Unary terms and Potts relaxations of soft self-labeling (Zhang & Boykov, CVPR 2025).

Unaries H(y, sigma) and relaxations P(p, q) take two tensors (..., K) of distributions over K classes
and return (...); a relaxation is also a function of the products p.q, |p|^2, |q|^2 (each (...)).
Logarithms take their argument floored at the dtype's smallest normal number, so values and
gradients stay finite (at most about 87 in float32) where the argument reaches 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

Unary = Callable[[Tensor, Tensor], Tensor]
"""H(y, sigma) of two (..., K) distributions, returning (...)."""

T = TypeVar("T")


def _log(x: Tensor) -> Tensor:
    return x.clamp_min(torch.finfo(x.dtype).tiny).log()


def _dot(p: Tensor, q: Tensor) -> Tensor:
    return (p * q).sum(-1)


def collision_cross_entropy(y: Tensor, sigma: Tensor) -> Tensor:
    """H_CCE(y, sigma) = -ln sum_k y_k sigma_k: CE for one-hot y, ln K for uniform y, symmetric."""
    return -_log(_dot(y, sigma))


def cross_entropy(y: Tensor, sigma: Tensor) -> Tensor:
    """H(y, sigma) = -sum_k y_k ln sigma_k (Shannon cross-entropy, target y)."""
    return -(y * _log(sigma)).sum(-1)


def reverse_cross_entropy(y: Tensor, sigma: Tensor) -> Tensor:
    """H(sigma, y) = -sum_k sigma_k ln y_k (the prediction as the target)."""
    return -(sigma * _log(y)).sum(-1)


def _bilinear(dot: Tensor, pp: Tensor, qq: Tensor) -> Tensor:
    """1 - p.q (the DenseCRF loss's relaxation)."""
    return 1 - dot


def _quadratic(dot: Tensor, pp: Tensor, qq: Tensor) -> Tensor:
    """0.5 |p - q|^2."""
    return 0.5 * (pp + qq) - dot


def _normalized_quadratic(dot: Tensor, pp: Tensor, qq: Tensor) -> Tensor:
    """1 - p.q / (|p| |q|)."""
    return 1 - dot * (pp * qq).clamp_min(torch.finfo(dot.dtype).tiny).rsqrt()


def _collision_cross_entropy(dot: Tensor, pp: Tensor, qq: Tensor) -> Tensor:
    """-ln p.q."""
    return -_log(dot)


def _collision_divergence(dot: Tensor, pp: Tensor, qq: Tensor) -> Tensor:
    """-ln(p.q / (|p| |q|)): >= 0, 0 for p = q."""
    return 0.5 * _log(pp * qq) - _log(dot)


def _log_quadratic(dot: Tensor, pp: Tensor, qq: Tensor) -> Tensor:
    """-ln(1 - 0.5 |p - q|^2): about 87 (the floor) for distinct one-hot p, q."""
    return -_log(1 - _quadratic(dot, pp, qq))


@dataclass(frozen=True)
class Relaxation:
    """A Potts relaxation P(p, q) of two (..., K) distributions, returning (...), computed from
    ``of_products(p.q, |p|^2, |q|^2)``: a neighbourhood computes the squared norms once per pixel and
    only the dot product per pair."""

    of_products: Callable[[Tensor, Tensor, Tensor], Tensor]

    def __call__(self, p: Tensor, q: Tensor) -> Tensor:
        return self.of_products(_dot(p, q), p.square().sum(-1), q.square().sum(-1))


UNARIES: dict[str, Unary] = {
    "collision_cross_entropy": collision_cross_entropy,
    "cross_entropy": cross_entropy,
    "reverse_cross_entropy": reverse_cross_entropy,
}
"""Name -> unary term H(y, sigma) linking a pseudo-label y and the network's prediction sigma."""

RELAXATIONS: dict[str, Relaxation] = {
    "bilinear": Relaxation(_bilinear),
    "quadratic": Relaxation(_quadratic),
    "normalized_quadratic": Relaxation(_normalized_quadratic),
    "collision_cross_entropy": Relaxation(_collision_cross_entropy),
    "collision_divergence": Relaxation(_collision_divergence),
    "log_quadratic": Relaxation(_log_quadratic),
}
"""Name -> Potts relaxation P(y_i, y_j) of a neighbour pair."""


def lookup(table: Mapping[str, T], name: str, setting: str) -> T:
    """``table[name]``; ValueError naming ``setting`` and the allowed names otherwise."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{setting} must be one of {', '.join(map(repr, table))}, got {name!r}")
    return table[name]
