"""``tiny``: a small CPU network for small images (the synthetic demo data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rloss.models.registry import IMAGENET_8BIT, SegmentationNet, register_backbone


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution (padding = dilation) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyNet(nn.Module):
    """A small CPU network (about 27k parameters at width 24) for small images such as the synthetic data.

    Full-resolution stem, a dilated context branch at 1/2 resolution (dilations 1, 2, 4, 8;
    receptive field about 70 px) upsampled bilinearly, and a 1x1 decoder on both: (B,C,H,W) -> (B,K,H,W).
    Takes normalized images; ``stem`` and ``context`` are the backbone group, ``head`` the head.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 24, stem_width: int = 16) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, stem_width)
        self.context = nn.Sequential(
            conv_bn_relu(stem_width, width, stride=2),
            conv_bn_relu(width, width),
            conv_bn_relu(width, width, dilation=2),
            conv_bn_relu(width, width, dilation=4),
            conv_bn_relu(width, width, dilation=8),
        )
        self.head = nn.Sequential(
            nn.Conv2d(stem_width + width, 32, 1), nn.ReLU(inplace=True), nn.Conv2d(32, num_classes, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        low = self.stem(x)
        context = F.interpolate(self.context(low), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([low, context], 1))


@register_backbone("tiny")
def build_tiny(name: str, num_classes: int, in_channels: int, weights_backbone: str | None) -> SegmentationNet:
    """TinyNet (random init; ``weights_backbone`` is ignored), inputs normalized as ImageNet's."""
    net = TinyNet(num_classes, in_channels)
    return SegmentationNet(net, ("stem.", "context."), normalization=IMAGENET_8BIT, in_channels=in_channels)
