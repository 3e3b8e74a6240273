"""Mean-field inference of a fully connected CRF with Gaussian edge potentials (Krähenbühl &
Koltun, NIPS 2011) on a network's softmax, with the permutohedral lattice.

Energy of a labeling x: E(x) = sum_i U_i(x_i) + sum_{i<j} k(i, j) [x_i != x_j] (Potts), with
U = -log(softmax) and k = w_app exp(-|p_i-p_j|^2/2 sxy_app^2 - |I_i-I_j|^2/2 srgb_app^2)
+ w_smooth exp(-|p_i-p_j|^2/2 sxy_smooth^2) (p in pixels, I the C >= 1 intensities of the image, srgb_app
in their units). Defaults are DeepLab's (RGB 0..255).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rloss.lattice import Affinity, bilateral_affinity, check_backend
from rloss.utils.checks import check_probs

EPS: float = 1e-8
"""Floor of the probabilities before the log of the unary term."""


@dataclass(frozen=True)
class _Kernels:
    """The two affinities of one batch: appearance (intensities and XY, d = 2 + C) and smoothness (XY, d = 2)."""

    appearance: Affinity
    smoothness: Affinity


class DenseCRF:
    """Mean-field DenseCRF: ``DenseCRF()(images, probs) -> refined probs``.

    Args:
        iterations: mean-field iterations.
        sxy_app, srgb_app, w_app: appearance kernel std in pixels and in the images' intensity units
            (levels of 0..255 images by default), and weight.
        sxy_smooth, w_smooth: smoothness kernel std in pixels, and weight.
        damping: step size in (0, 1]: Q <- (1 - damping) Q + damping softmax(-U + message(Q)).
            1 is the standard parallel update.
        backend: the affinities (:func:`rloss.lattice.backend_names`); "auto": the Numba lattice
            for CPU tensors, the torch lattice on other devices.
    """

    def __init__(
        self,
        iterations: int = 5,
        sxy_app: float = 80.0,
        srgb_app: float = 13.0,
        w_app: float = 10.0,
        sxy_smooth: float = 3.0,
        w_smooth: float = 3.0,
        damping: float = 1.0,
        backend: str = "auto",
    ) -> None:
        if int(iterations) < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        if not 0.0 < damping <= 1.0:
            raise ValueError(f"damping must be in (0, 1], got {damping}")
        self.iterations = int(iterations)
        self.sxy_app, self.srgb_app, self.w_app = float(sxy_app), float(srgb_app), float(w_app)
        self.sxy_smooth, self.w_smooth = float(sxy_smooth), float(w_smooth)
        self.damping = float(damping)
        self.backend = check_backend(backend)

    def kernels(self, images: Tensor) -> _Kernels:
        """Build both affinities of images (B, C, H, W) intensities (srgb_app in their units), once per batch."""
        appearance = bilateral_affinity(images, self.srgb_app, self.sxy_app, self.backend)
        smoothness = bilateral_affinity(images, 1.0, self.sxy_smooth, self.backend, spatial_only=True)
        return _Kernels(appearance, smoothness)

    def message(self, kernels: _Kernels, q: Tensor) -> Tensor:
        """sum_{j != i} k(i, j) Q_j (B, K, H, W): the filters minus their value at zero distance
        (1 for the normalized lattice and the exact kernel) times Q_i."""
        appearance = kernels.appearance.filter(q) - q
        smoothness = kernels.smoothness.filter(q) - q
        return self.w_app * appearance + self.w_smooth * smoothness

    def step(self, kernels: _Kernels, unary: Tensor, q: Tensor) -> Tensor:
        """One (damped) parallel mean-field update; Potts: Q(l) ∝ exp(-U(l) + message(l))."""
        update = (self.message(kernels, q) - unary).softmax(dim=1)
        return update if self.damping == 1.0 else (1.0 - self.damping) * q + self.damping * update

    def iterate(self, images: Tensor, probs: Tensor) -> list[Tensor]:
        """[Q_0 = probs, Q_1, ..., Q_iterations], each (B, K, H, W) float32."""
        check_probs(probs, images, "probs")
        probs = probs.float()
        kernels = self.kernels(images)
        unary = -probs.clamp_min(EPS).log()
        sequence = [probs]
        for _ in range(self.iterations):
            sequence.append(self.step(kernels, unary, sequence[-1]))
        return sequence

    def __call__(self, images: Tensor, probs: Tensor) -> Tensor:
        """Refined probabilities (B, K, H, W) of the softmax ``probs`` on images (B, C, H, W)."""
        return self.iterate(images, probs)[-1].to(probs.dtype)

    def energy(self, images: Tensor, probs: Tensor, q: Tensor, entropy: bool = False) -> Tensor:
        """Per-image energy (B,) float64 of ``q`` under the CRF whose unary is -log(probs).

        q: soft labeling (B, K, H, W) (relaxed energy E_Q[E(x)]) or labels (B, H, W) int64
        (discrete E(x)). ``entropy=True`` subtracts the entropy of q: the mean-field free energy
        KL(Q || P) - log Z, which sequential mean-field updates never increase.
        """
        check_probs(probs, images, "probs")
        if not q.is_floating_point():
            q = torch.nn.functional.one_hot(q.long(), probs.shape[1]).permute(0, 3, 1, 2)
        q = q.to(torch.float64)
        unary = -probs.double().clamp_min(EPS).log()
        kernels = self.kernels(images)
        # sum_{i<j} k_ij sum_l Q_i(l) (1 - Q_j(l)) = 1/2 sum_i,l Q_i(l) (m(1)_i - m(Q)_i(l))
        ones = torch.ones_like(q[:, :1])
        disagreement = self.message(kernels, ones) - self.message(kernels, q)
        energy = (q * unary).sum((1, 2, 3)) + 0.5 * (q * disagreement).sum((1, 2, 3))
        if entropy:
            energy = energy + (q * q.clamp_min(1e-300).log()).sum((1, 2, 3))
        return energy
