"""Soft self-labeling with Potts relaxations (Zhang & Boykov, CVPR 2025, arXiv 2507.01721)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rloss.lattice import LocalWindowAffinity, bilateral_affinity, check_backend
from rloss.lattice.base import compute_dtype
from rloss.regularizers.base import Regularizer, scaled_size
from rloss.regularizers.neighbourhoods import AffinityNeighbourhood, GridNeighbourhood, Neighbourhood
from rloss.regularizers.relaxations import RELAXATIONS, UNARIES, lookup
from rloss.utils.checks import (
    check_images,
    check_integer,
    check_labels,
    check_non_negative,
    check_positive,
    check_probs,
    check_probs_shape,
    check_roi,
    check_scale_factor,
)

NEIGHBOURHOODS: tuple[str, ...] = ("grid4", "grid8", "dense", "window")
"""``neighbourhood`` settings: the 4-/8-connected contrast-weighted grid, the dense lattice affinity,
the local-window affinity."""


@dataclass
class _Batch:
    """One batch at the working resolution: sigma (B, K, h, w) float32/64 (differentiable), free
    (B, h, w) bool (unlabeled ROI pixels), labeled (B, 1, h, w) bool, onehot (B, K, h, w)."""

    sigma: Tensor
    free: Tensor
    labeled: Tensor
    onehot: Tensor
    neighbourhood: Neighbourhood


class SelfLabelingLoss(Regularizer):
    """eta x (mean over images of) mean over the unlabeled ROI pixels of H(y_i, sigma_i), with soft
    pseudo-labels y found first, per batch, with the network fixed:

        y = argmin  1/|U| sum_{i in U} H(y_i, sigma_i)  +  lambda / |N| sum_{ij in N} w_ij P(y_i, y_j)

    over y on the simplex with y_i the one-hot scribble on labeled pixels; U the unlabeled ROI pixels,
    N the ROI pairs of the neighbourhood (|N| their number for the grid, their total affinity for
    dense/window), H the ``unary``, P the ``relaxation``. Both sums are normalized per image, so
    lambda (``potts_weight``) does not depend on the image size. The solver: y = softmax(z), z
    initialized to log sigma (detached), ``steps`` gradient-descent steps z -= step_size x gradient of
    |U| x objective (a per-pixel scale, so a step moves a pixel's logits by about step_size x its own
    terms' gradient whatever the image size; Adam, tried instead, moves near-tied logits by the full
    step and flipped near-uniform regions to absent classes). The returned loss has y fixed
    (detached): its gradient reaches sigma = probs only. ``weight`` is eta.

    Defaults (the paper's best pair): collision cross-entropy unary, collision-divergence pairwise,
    eta 0.3, lambda 6; the 8-connected grid and 20 steps of 0.2 (measured on real scribbles). At
    ``scale_factor`` < 1 images are area-averaged, probs bilinear, ROI and scribbles nearest.
    ``sigma_rgb`` (in the images' units), ``sigma_xy`` (input pixels), ``radius`` and ``backend``
    define the "dense" and "window" affinities (bilinear or quadratic relaxation only). Images: any
    channel count, intensities in their own units (the grid's contrast scale s^2 is measured).
    """

    name = "selflabel"

    def __init__(
        self,
        weight: float = 0.3,
        potts_weight: float = 6.0,
        relaxation: str = "collision_divergence",
        unary: str = "collision_cross_entropy",
        neighbourhood: str = "grid8",
        steps: int = 20,
        step_size: float = 0.2,
        scale_factor: float = 1.0,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 100.0,
        radius: int = 5,
        backend: str = "auto",
    ) -> None:
        super().__init__(weight)
        self.potts_weight = check_non_negative(potts_weight, "potts_weight")
        self.relaxation_name, self.relaxation = relaxation, lookup(RELAXATIONS, relaxation, "relaxation")
        self.unary_name, self.unary = unary, lookup(UNARIES, unary, "unary")
        if neighbourhood not in NEIGHBOURHOODS:
            allowed = ", ".join(map(repr, NEIGHBOURHOODS))
            raise ValueError(f"neighbourhood must be one of {allowed}, got {neighbourhood!r}")
        if neighbourhood in ("dense", "window"):
            AffinityNeighbourhood.check_relaxation(relaxation, f"neighbourhood={neighbourhood!r}")
        self.neighbourhood = neighbourhood
        self.steps = check_integer(steps, "steps", 0)
        self.step_size = check_positive(step_size, "step_size")
        self.scale_factor = check_scale_factor(scale_factor)
        self.sigma_rgb = check_positive(sigma_rgb, "sigma_rgb")
        self.sigma_xy = check_positive(sigma_xy, "sigma_xy")
        self.radius = check_integer(radius, "radius", 1)
        self.backend = check_backend(backend)

    def energy(
        self, images: Tensor, probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """Mean over images of the mean H(y_i, sigma_i) over unlabeled ROI pixels, y detached (images
        without such pixels contribute 0)."""
        with torch.autocast(probs.device.type, enabled=False):
            batch = self._batch(images, probs, roi, labels)
            y = self._solve(batch)
            per_pixel = self._unary(y, batch.sigma) * batch.free
            per_image = per_pixel.sum((1, 2)) / batch.free.sum((1, 2)).clamp(min=1)
        return per_image.mean()

    def pseudo_labels(
        self, images: Tensor, probs: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """The soft pseudo-labels y (B, K, h, w) of the pseudo-label step, at the working resolution."""
        with torch.autocast(probs.device.type, enabled=False):
            return self._solve(self._batch(images, probs, roi, labels))

    def objective(
        self, images: Tensor, probs: Tensor, y: Tensor, roi: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """The pseudo-label objective (B,) of y (B, K, h, w) at the working resolution (unary + lambda
        pairwise, each normalized per image)."""
        with torch.autocast(probs.device.type, enabled=False):
            batch = self._batch(images, probs, roi, labels)
            return self._objective(batch, y.to(batch.sigma.dtype), batch.sigma.detach())

    def _unary(self, y: Tensor, sigma: Tensor) -> Tensor:
        """H(y_i, sigma_i) (B, h, w) of y, sigma (B, K, h, w)."""
        return self.unary(y.movedim(1, -1), sigma.movedim(1, -1))

    def _objective(self, batch: _Batch, y: Tensor, sigma: Tensor) -> Tensor:
        unary = (self._unary(y, sigma) * batch.free).sum((1, 2)) / batch.free.sum((1, 2)).clamp(min=1)
        return unary + self.potts_weight * batch.neighbourhood.energy(y)

    def _solve(self, batch: _Batch) -> Tensor:
        """y (B, K, h, w) detached: gradient descent on the logits z, z = log(one-hot) (0 or -inf) at
        scribbles, so y is exactly the scribble there and its gradient 0."""
        sigma = batch.sigma.detach()
        per_pixel = batch.free.sum((1, 2)).clamp(min=1).to(sigma.dtype)  # |U|: objective -> sum over pixels
        z = torch.where(batch.labeled, batch.onehot.log(), sigma.clamp_min(torch.finfo(sigma.dtype).tiny).log())
        with torch.enable_grad():
            for _ in range(self.steps):
                z.requires_grad_()
                (grad,) = torch.autograd.grad((self._objective(batch, z.softmax(1), sigma) * per_pixel).sum(), z)
                z = z.detach().sub_(grad, alpha=self.step_size)
        return z.softmax(1)

    def _batch(self, images: Tensor, probs: Tensor, roi: Tensor | None, labels: Tensor | None) -> _Batch:
        """Validate the inputs and bring them to the working resolution."""
        check_images(images, "images")
        check_probs_shape(probs, images, "probs")
        roi = check_roi(roi, probs, "roi")
        probs = probs * roi[:, None].to(probs.dtype)
        check_probs(probs, images, "probs", roi=roi)
        probs = probs.to(compute_dtype(probs.dtype))
        num_classes = probs.shape[1]
        if labels is None:
            labels = torch.full_like(roi, 255, dtype=torch.long)
        elif tuple(labels.shape) != tuple(roi.shape):
            raise ValueError(f"labels must have shape (B, H, W) = {tuple(roi.shape)}, got {tuple(labels.shape)}")
        labels = labels.to(roi.device).long()
        labeled = check_labels(labels, num_classes, roi=roi)
        images = images.to(probs.device, probs.dtype)
        size = scaled_size(tuple(roi.shape[1:]), self.scale_factor)
        if size != tuple(roi.shape[1:]):
            images = F.interpolate(images, size=size, mode="area")
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            masks = F.interpolate(torch.stack((roi, labeled), 1).float(), size=size, mode="nearest") > 0.5
            roi, labeled = masks[:, 0], masks[:, 1]
            labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
            probs = probs * roi[:, None]
        onehot = F.one_hot(torch.where(labeled, labels, 0), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
        return _Batch(
            sigma=probs,
            free=roi & ~labeled,
            labeled=labeled[:, None],
            onehot=onehot,
            neighbourhood=self._neighbourhood(images, roi),
        )

    def _neighbourhood(self, images: Tensor, roi: Tensor) -> Neighbourhood:
        """The neighbourhood of images (B, C, h, w) at the working resolution."""
        if self.neighbourhood in ("grid4", "grid8"):
            return GridNeighbourhood(images, roi, self.relaxation, int(self.neighbourhood[4:]))
        sigma_xy = self.sigma_xy * self.scale_factor
        if self.neighbourhood == "dense":
            affinity = bilateral_affinity(images, self.sigma_rgb, sigma_xy, self.backend)
        else:
            affinity = LocalWindowAffinity(images, self.sigma_rgb, sigma_xy, self.radius)
        return AffinityNeighbourhood(affinity, roi, self.relaxation_name, images.dtype)

    def extra_repr(self) -> str:
        text = (
            f"weight={self.weight:g}, potts_weight={self.potts_weight:g}, relaxation={self.relaxation_name!r}, "
            f"unary={self.unary_name!r}, neighbourhood={self.neighbourhood!r}, steps={self.steps}, "
            f"step_size={self.step_size:g}, scale_factor={self.scale_factor:g}"
        )
        if self.neighbourhood in ("dense", "window"):
            text += f", sigma_rgb={self.sigma_rgb:g}, sigma_xy={self.sigma_xy:g}"
        return text
