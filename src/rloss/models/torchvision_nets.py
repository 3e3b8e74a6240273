"""torchvision's segmentation networks (DeepLabv3, LR-ASPP, FCN), ImageNet-pretrained backbones."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import segmentation

from rloss.models.pretrained import backbone_weights, check_torch_hub, download_errors
from rloss.models.registry import (
    IMAGENET_8BIT,
    SegmentationNet,
    check_pretrained_channels,
    register_backbone,
    replace_first_conv,
)

TORCHVISION_MODELS: dict[str, Callable[..., nn.Module]] = {
    "deeplabv3_resnet50": segmentation.deeplabv3_resnet50,
    "deeplabv3_resnet101": segmentation.deeplabv3_resnet101,
    "deeplabv3_mobilenet_v3_large": segmentation.deeplabv3_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": segmentation.lraspp_mobilenet_v3_large,
    "fcn_resnet50": segmentation.fcn_resnet50,
}


@register_backbone(*TORCHVISION_MODELS)
def build_torchvision(name: str, num_classes: int, in_channels: int, weights_backbone: str | None) -> SegmentationNet:
    """A torchvision segmentation model; ``"imagenet"`` = its backbone's DEFAULT weights (never the
    COCO_WITH_VOC_LABELS weights, trained with full masks). Other channel counts: random first conv."""
    weights = "DEFAULT" if weights_backbone == "imagenet" else weights_backbone
    check_pretrained_channels(name, weights, in_channels)
    if weights is not None:
        check_torch_hub(name, backbone_weights(TORCHVISION_MODELS[name], weights))
    with download_errors(name):
        build = TORCHVISION_MODELS[name]
        model = build(weights=None, weights_backbone=weights, num_classes=num_classes, aux_loss=False)
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return SegmentationNet(model, ("backbone.",), normalization=IMAGENET_8BIT, in_channels=in_channels)
