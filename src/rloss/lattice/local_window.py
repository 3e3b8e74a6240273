"""Local-window Gaussian affinity (the gated CRF loss's): exact, pure tensor operations, any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rloss.lattice.base import Affinity
from rloss.utils.checks import check_images, check_integer, check_positive


class LocalWindowAffinity(Affinity):
    """W_ij = exp(-|p_i - p_j|^2 / 2 sigma_xy^2 - |I_i - I_j|^2 / 2 sigma_rgb^2) for j in the
    (2 radius + 1)^2 window around i, j != i, and 0 elsewhere (symmetric); p in pixels of the images
    given, I the C >= 1 intensities of the images (sigma_rgb in their units); pixels outside the
    image do not exist.

    Filtering loops over the window offsets (one kernel map (B, H, W) and one multiply-add over the
    values at a time), so memory stays at a few (B, C, H, W) buffers whatever the radius.
    """

    symmetric = True

    def __init__(self, images: Tensor, sigma_rgb: float, sigma_xy: float, radius: int) -> None:
        """images: (B, C, H, W) intensities, any C >= 1, on the device the filtering runs on."""
        check_images(images, "images")
        self.sigma_rgb = check_positive(sigma_rgb, "sigma_rgb")
        self.sigma_xy = check_positive(sigma_xy, "sigma_xy")
        self.radius = check_integer(radius, "radius", 1)
        super().__init__(images.shape[0], images.shape[2] * images.shape[3])
        self.images = images.detach().float()

    def _filter(self, values: Tensor, transposes: tuple[bool, ...]) -> list[Tensor]:
        b, c, _ = values.shape
        h, w = self.images.shape[-2:]
        r = self.radius
        images = self.images.to(device=values.device, dtype=values.dtype)
        padded_values = F.pad(values.reshape(b, c, h, w), (r, r, r, r))
        padded_images = F.pad(images, (r, r, r, r))
        out = torch.zeros_like(values).reshape(b, c, h, w)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy == 0 and dx == 0:
                    continue
                rows, cols = slice(r + dy, r + dy + h), slice(r + dx, r + dx + w)
                colour = (images - padded_images[:, :, rows, cols]).square_().sum(1)  # (B, H, W)
                spatial = -0.5 * (dx * dx + dy * dy) / self.sigma_xy**2
                kernel = colour.mul_(-0.5 / self.sigma_rgb**2).add_(spatial).exp_()
                out.addcmul_(padded_values[:, :, rows, cols], kernel[:, None])
        return [out.reshape(b, c, h * w) for _ in transposes]
