"""Backbone factory: torchvision segmentation models, DeepLab-LargeFOV (VGG16), DeepLabv3+ (smp), and
``tiny``, a small CPU network for the synthetic demo data."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VGG16_Weights, segmentation
from torchvision.models.vgg import cfgs, make_layers

from rloss.models.pretrained import backbone_weights, check_hugging_face, check_torch_hub, download_errors

TORCHVISION_MODELS: dict[str, Callable[..., nn.Module]] = {
    "deeplabv3_resnet50": segmentation.deeplabv3_resnet50,
    "deeplabv3_resnet101": segmentation.deeplabv3_resnet101,
    "deeplabv3_mobilenet_v3_large": segmentation.deeplabv3_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": segmentation.lraspp_mobilenet_v3_large,
    "fcn_resnet50": segmentation.fcn_resnet50,
}
LARGEFOV = "deeplab_largefov"
TINY = "tiny"
DEEPLABV3PLUS_PREFIX = "deeplabv3plus_"
"""``deeplabv3plus_<encoder>`` = smp DeepLabV3Plus on any smp encoder (mobilenet_v2, resnet101...)."""
SMP_WEIGHT_FILES = ("config.json", "model.safetensors")
"""The Hugging Face files smp downloads for an encoder's pretrained weights."""


class SegmentationNet(nn.Module):
    """A segmentation network mapping normalized images (B,3,H,W) to logits (B,K,H,W).

    Pads the input bottom/right to a multiple of ``size_divisor`` (0 = the normalized mean),
    resizes the output bilinearly to the padded size when the network outputs a lower
    resolution, and crops back to (H, W). Parameters whose name starts with
    one of ``backbone_prefixes`` form the backbone group; the rest the head (higher learning rate).
    """

    def __init__(self, model: nn.Module, backbone_prefixes: tuple[str, ...], size_divisor: int = 1) -> None:
        super().__init__()
        self.model = model
        self.backbone_prefixes = backbone_prefixes
        self.size_divisor = size_divisor

    def forward(self, x: Tensor) -> Tensor:
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


class DeepLabLargeFOV(nn.Module):
    """DeepLab-LargeFOV (Chen et al., ICLR 2015) on VGG16: output stride 8.

    pool4/pool5 keep the resolution (3x3, stride 1), conv5 uses dilation 2, fc6 is a 3x3
    convolution with dilation 12 and 1024 channels, fc7 1x1 with 1024, fc8 1x1 to K classes.
    ``features`` can load torchvision's ImageNet VGG16 weights; ``fc`` (fc6, fc7) and
    ``classifier`` (fc8) start random. As in the Caffe recipe only fc8 is the "head" (10x LR).
    """

    def __init__(self, num_classes: int, weights_backbone: str | None = None) -> None:
        super().__init__()
        layers = list(make_layers(cfgs["D"]))
        for i in (4, 9, 16):
            layers[i] = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        for i in (23, 30):
            layers[i] = nn.MaxPool2d(3, stride=1, padding=1)
        for i in (24, 26, 28):
            layers[i].dilation, layers[i].padding = (2, 2), (2, 2)
        self.features = nn.Sequential(*layers, nn.AvgPool2d(3, stride=1, padding=1))
        self.fc = nn.Sequential(
            nn.Conv2d(512, 1024, 3, padding=12, dilation=12),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Conv2d(1024, 1024, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )
        self.classifier = nn.Conv2d(1024, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        if weights_backbone is not None:
            state = VGG16_Weights.verify(weights_backbone).get_state_dict(progress=True)
            features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            self.features.load_state_dict(features, strict=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.fc(self.features(x)))


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution (padding = dilation) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyNet(nn.Module):
    """A small CPU network (about 27k parameters at width 24) for small images such as the synthetic data.

    Full-resolution stem, a dilated context branch at 1/2 resolution (dilations 1, 2, 4, 8;
    receptive field about 70 px) upsampled bilinearly, and a 1x1 decoder on both: (B,3,H,W) -> (B,K,H,W).
    Takes normalized images; ``stem`` and ``context`` are the backbone group, ``head`` the head.
    """

    def __init__(self, num_classes: int, width: int = 24, stem_width: int = 16) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, stem_width)
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


def backbone_names() -> list[str]:
    """Names :func:`build_backbone` accepts (``deeplabv3plus_<smp encoder>`` for any encoder)."""
    return [*TORCHVISION_MODELS, LARGEFOV, f"{DEEPLABV3PLUS_PREFIX}<encoder>", TINY]


def build_backbone(name: str, num_classes: int, weights_backbone: str | None = "imagenet") -> SegmentationNet:
    """Build the network ``name`` with ``num_classes`` outputs.

    ``weights_backbone``: None (random init, offline), ``"imagenet"`` (each family's ImageNet
    weights: torchvision ``DEFAULT``, smp ``imagenet``), or a family-specific name passed through.
    ``tiny`` has no pretrained weights: it always starts random and ignores ``weights_backbone``.
    """
    if name in TORCHVISION_MODELS:
        weights = "DEFAULT" if weights_backbone == "imagenet" else weights_backbone
        if weights is not None:
            check_torch_hub(name, backbone_weights(TORCHVISION_MODELS[name], weights))
        with download_errors(name):
            model = TORCHVISION_MODELS[name](
                weights=None, weights_backbone=weights, num_classes=num_classes, aux_loss=False
            )
        return SegmentationNet(model, ("backbone.",))
    if name == LARGEFOV:
        weights = "DEFAULT" if weights_backbone == "imagenet" else weights_backbone
        if weights is not None:
            check_torch_hub(name, VGG16_Weights.verify(weights))
        with download_errors(name):
            return SegmentationNet(DeepLabLargeFOV(num_classes, weights), ("features.", "fc."))
    if name == TINY:
        return SegmentationNet(TinyNet(num_classes), ("stem.", "context."))
    if name.startswith(DEEPLABV3PLUS_PREFIX):
        import segmentation_models_pytorch as smp

        encoder = name.removeprefix(DEEPLABV3PLUS_PREFIX)
        if encoder not in smp.encoders.get_encoder_names():
            raise ValueError(
                f"backbone {name!r}: unknown smp encoder {encoder!r}; "
                f"e.g. mobilenet_v2, resnet50, resnet101 (see smp.encoders.get_encoder_names())"
            )
        settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights_backbone)
        if settings is not None:
            check_hugging_face(name, settings["repo_id"], settings["revision"], SMP_WEIGHT_FILES)
        with download_errors(name):
            model = smp.DeepLabV3Plus(
                encoder_name=encoder, encoder_weights=weights_backbone, classes=num_classes, encoder_output_stride=16
            )
        return SegmentationNet(model, ("encoder.",), size_divisor=model.encoder.output_stride)
    raise ValueError(f"unknown backbone {name!r}; expected one of: {', '.join(backbone_names())}")


