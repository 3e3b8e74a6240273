"""DeepLab-LargeFOV (VGG16), the network of the Caffe rloss results."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from rloss.models.pretrained import check_torch_hub, download_errors
from rloss.models.registry import (
    IMAGENET_8BIT,
    SegmentationNet,
    check_pretrained_channels,
    register_backbone,
    replace_first_conv,
)


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


@register_backbone("deeplab_largefov")
def build_largefov(name: str, num_classes: int, in_channels: int, weights_backbone: str | None) -> SegmentationNet:
    """DeepLab-LargeFOV; ``"imagenet"`` = torchvision's VGG16 weights for the features."""
    weights = "DEFAULT" if weights_backbone == "imagenet" else weights_backbone
    check_pretrained_channels(name, weights, in_channels)
    if weights is not None:
        check_torch_hub(name, VGG16_Weights.verify(weights))
    with download_errors(name):
        model = DeepLabLargeFOV(num_classes, weights)
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return SegmentationNet(model, ("features.", "fc."), normalization=IMAGENET_8BIT, in_channels=in_channels)
