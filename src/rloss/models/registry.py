"""The backbone registry: one builder per network name, each declaring the input normalization
its weights expect; :class:`SegmentationNet` wraps every network the same way.

Adding a network family is one module holding a builder decorated with :func:`register_backbone`
plus its import line in :mod:`rloss.models.backbones`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rloss.utils.checks import check_integer

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""ImageNet statistics of 0..1 RGB images (torchvision, timm, smp encoders)."""


@dataclass(frozen=True)
class Normalization:
    """What a network's first layer expects of its input, in units of the raw images (0..255 for
    8-bit images): ``(image - mean) / std`` per channel. ``mean``/``std`` of 3 values are RGB
    statistics; for another channel count C every channel takes their average (grayscale:
    0.449 / 0.226 of the range, as timm adapts ImageNet weights). None: the network takes raw images."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def tensors(self, in_channels: int) -> tuple[Tensor, Tensor] | None:
        """(mean, std) of shape (1, C, 1, 1), or None when images go in unchanged."""
        if self.mean is None or self.std is None:
            return None
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        if in_channels != len(self.mean):
            mean, std = mean.mean().expand(in_channels), std.mean().expand(in_channels)
        return mean.reshape(1, -1, 1, 1).clone(), std.reshape(1, -1, 1, 1).clone()


IMAGENET_8BIT = Normalization(tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD))
"""ImageNet normalization of 0..255 images (every pretrained RGB backbone here)."""

RAW = Normalization()
"""No normalization: the network takes the images as they come (e.g. MRI already scaled to 0..1)."""


class SegmentationNet(nn.Module):
    """A segmentation network mapping raw images (B, C, H, W) to logits (B, K, H, W).

    Normalizes the input as its weights expect (``normalization``), pads it bottom/right to a
    multiple of ``size_divisor`` (0 after normalization), resizes the output bilinearly to the
    padded size when the network outputs a lower resolution, and crops back to (H, W). Parameters
    whose name starts with one of ``backbone_prefixes`` form the backbone group; the rest the head
    (higher learning rate).
    """

    def __init__(
        self,
        model: nn.Module,
        backbone_prefixes: tuple[str, ...],
        size_divisor: int = 1,
        normalization: Normalization = RAW,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.model = model
        self.backbone_prefixes = backbone_prefixes
        self.size_divisor = size_divisor
        self.in_channels = in_channels
        stats = normalization.tensors(in_channels)
        self.normalized = stats is not None
        if stats is not None:  # not in checkpoints: the registry entry says what they are
            self.register_buffer("mean", stats[0], persistent=False)
            self.register_buffer("std", stats[1], persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """Raw images (B, C, H, W) as the network's weights expect them."""
        if images.shape[1] != self.in_channels:
            raise ValueError(
                f"the network takes {self.in_channels}-channel images, got {images.shape[1]} channels; "
                "set --model.in_channels (linked from the data's in_channels by rloss fit)"
            )
        return (images - self.mean) / self.std if self.normalized else images

    def forward(self, images: Tensor) -> Tensor:
        x = self.normalize(images)
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.size_divisor, -width % self.size_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        out = self.model(x)
        if isinstance(out, Mapping):
            out = out["out"]
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :height, :width]

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters)."""
        backbone, head = [], []
        for name, param in self.model.named_parameters():
            (backbone if name.startswith(self.backbone_prefixes) else head).append(param)
        return backbone, head


Builder = Callable[[str, int, int, "str | None"], SegmentationNet]
"""(name, num_classes, in_channels, weights_backbone) -> the network."""

FAMILY_MARK = "<"
"""A registered name ``prefix_<variant>`` stands for every name starting with ``prefix_``."""

BACKBONES: dict[str, Builder] = {}
"""Registered name (or ``prefix_<variant>`` family) -> builder."""


def register_backbone(*names: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``names`` (a family as ``prefix_<variant>``)."""

    def register(builder: Builder) -> Builder:
        for name in names:
            if name in BACKBONES:
                raise ValueError(f"backbone name {name!r} is registered twice")
            BACKBONES[name] = builder
        return builder

    return register


def backbone_names() -> list[str]:
    """Every registered name (families as ``prefix_<variant>``), sorted."""
    return sorted(BACKBONES)


def find_builder(name: str) -> Builder:
    """The builder of ``name`` (exact names first, then families); ValueError listing the names."""
    if name in BACKBONES:
        return BACKBONES[name]
    for registered, builder in BACKBONES.items():
        prefix, mark, _ = registered.partition(FAMILY_MARK)
        if mark and name.startswith(prefix) and len(name) > len(prefix):
            return builder
    raise ValueError(f"unknown backbone {name!r}; expected one of: {', '.join(backbone_names())}")


def build_backbone(
    name: str, num_classes: int, weights_backbone: str | None = "imagenet", in_channels: int = 3
) -> SegmentationNet:
    """Build the network ``name`` with ``num_classes`` outputs for ``in_channels``-channel images.

    ``weights_backbone``: None (random init, offline), ``"imagenet"`` (each family's ImageNet
    weights) or a family-specific name passed through; families without pretrained weights ignore it.
    """
    check_integer(num_classes, "num_classes", 1)
    check_integer(in_channels, "in_channels", 1)
    return find_builder(name)(name, num_classes, in_channels, weights_backbone)


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d of ``model`` for a randomly initialized one taking ``in_channels``."""
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(module, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups, child.bias is not None,
                ))
                return
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} input channels")


def check_pretrained_channels(name: str, weights: str | None, in_channels: int, choices: Sequence[int] = (3,)) -> None:
    """ValueError when pretrained ``weights`` are asked for a channel count they were not trained on."""
    if weights is not None and in_channels not in choices:
        raise ValueError(
            f"backbone {name!r}: pretrained weights take {'/'.join(map(str, choices))}-channel images, the data "
            f"has {in_channels}; set --model.weights_backbone null (random init) or use a deeplabv3plus_* backbone"
        )
