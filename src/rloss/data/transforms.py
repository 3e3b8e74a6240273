"""Joint image/label transforms (torchvision v2) and the collate that pads a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from rloss.data.constants import PAD_INDEX

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
MEAN_RGB: tuple[float, float, float] = tuple(255.0 * m for m in IMAGENET_MEAN)
"""The ImageNet mean colour in 0..255: padding of 3-channel images, which normalizes to 0."""


def image_padding(channels: int) -> tuple[float, ...]:
    """Padding value of each of an image's ``channels``: the ImageNet mean colour MEAN_RGB for 3-channel
    (RGB) images, 0 for any other channel count (grayscale, MRI, multi-band)."""
    return MEAN_RGB if channels == 3 else (0.0,) * channels

LABEL_KEYS: tuple[str, ...] = ("scribble", "mask")


class RandomScale(v2.Transform):
    """Resize every image and mask by one factor drawn uniformly from ``scale_range``.

    Masks are resized with nearest neighbour (torchvision's rule for ``tv_tensors.Mask``).
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image))
        height, width = F.get_size(image)
        scale = torch.empty(()).uniform_(*self.scale_range).item()
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def train_transform(crop_size: int, scale_range: tuple[float, float] = (0.5, 2.0), channels: int = 3) -> v2.Compose:
    """Random scale, crop ``crop_size`` (images of ``channels`` channels padded with
    :func:`image_padding`, labels with 254), h-flip."""
    fill = {tv_tensors.Image: image_padding(channels), tv_tensors.Mask: PAD_INDEX}
    return v2.Compose(
        [
            RandomScale(scale_range),
            v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill),
            v2.RandomHorizontalFlip(),
        ]
    )


def apply_transform(transform: v2.Transform | None, item: dict[str, Any]) -> dict[str, Any]:
    """Run a joint transform on an item {"image" (C,H,W), "scribble"/"mask" (H,W), ...}."""
    if transform is None:
        return item
    wrapped = dict(item, image=tv_tensors.Image(item["image"]))
    for key in LABEL_KEYS:
        if key in item:
            wrapped[key] = tv_tensors.Mask(item[key])
    out = transform(wrapped)
    for key in ("image", *LABEL_KEYS):
        if key in out:
            out[key] = out[key].as_subclass(Tensor).contiguous()
    return out


def pad_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items, padding each to the largest H and W of the batch (bottom/right).

    Images (C,H,W), one C for the batch, are padded with :func:`image_padding` (the mean colour for
    C = 3, else 0), label maps (H,W) with 254 (padding), so full-size validation images of different
    sizes batch together. Other keys become lists, except tensors, which are stacked.
    """
    height = max(item["image"].shape[-2] for item in items)
    width = max(item["image"].shape[-1] for item in items)
    counts = sorted({item["image"].shape[0] for item in items})
    if len(counts) > 1:
        raise ValueError(f"images of a batch have {counts} channels; expected one channel count for all")
    channels = counts[0]
    fill = torch.tensor(image_padding(channels)).view(channels, 1, 1)
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key == "image":
            out = fill.expand(len(values), channels, height, width).clone()
            for i, v in enumerate(values):
                out[i, :, : v.shape[-2], : v.shape[-1]] = v
            batch[key] = out
        elif key in LABEL_KEYS:
            out = torch.full((len(values), height, width), PAD_INDEX, dtype=torch.int64)
            for i, v in enumerate(values):
                out[i, : v.shape[-2], : v.shape[-1]] = v
            batch[key] = out
        elif isinstance(values[0], Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
