"""``unet``: the 2-D UNet of the ACDC scribble benchmark (WSL4MIS / PyMIC; 1.81M parameters at
1 input channel and 4 classes), raw inputs (no ImageNet normalization), random init."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rloss.models.registry import RAW, SegmentationNet, register_backbone

WIDTHS: tuple[int, ...] = (16, 32, 64, 128, 256)
"""Channels of the five encoder levels (the decoder mirrors them)."""

ENCODER_DROPOUT: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
"""Dropout between the two convolutions of each encoder level; the decoder has none."""


def double_conv(cin: int, cout: int, dropout: float) -> nn.Sequential:
    """3x3 conv + BN + LeakyReLU, dropout, 3x3 conv + BN + LeakyReLU."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(((cin, cout), (cout, cout))):
        layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.LeakyReLU()]
        if i == 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """(B, C, H, W) -> (B, K, H, W), H and W multiples of 16. Encoder: a double conv per level,
    2x2 max-pool between levels. Decoder, per level: 1x1 conv to the skip's width, bilinear x2
    (align_corners=True), concatenation with the skip, double conv; a 3x3 output conv."""

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        widths = (in_channels, *WIDTHS)
        self.encoder = nn.ModuleList(
            double_conv(widths[i], widths[i + 1], ENCODER_DROPOUT[i]) for i in range(len(WIDTHS))
        )
        deep_to_shallow = WIDTHS[::-1]
        pairs = zip(deep_to_shallow, deep_to_shallow[1:], strict=False)
        self.reduce = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in pairs)
        self.decoder = nn.ModuleList(double_conv(2 * b, b, 0.0) for b in deep_to_shallow[1:])
        self.head = nn.Conv2d(WIDTHS[0], num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        x = skips.pop()
        for reduce, block in zip(self.reduce, self.decoder, strict=True):
            x = F.interpolate(reduce(x), scale_factor=2, mode="bilinear", align_corners=True)
            x = block(torch.cat([skips.pop(), x], 1))
        return self.head(x)


@register_backbone("unet")
def build_unet(name: str, num_classes: int, in_channels: int, weights_backbone: str | None) -> SegmentationNet:
    """The benchmark UNet (random init; ``weights_backbone`` is ignored); one learning rate for all
    parameters in the ACDC configs (``head_lr_mult: 1``)."""
    net = UNet(num_classes, in_channels)
    return SegmentationNet(net, ("encoder.",), size_divisor=16, normalization=RAW, in_channels=in_channels)
