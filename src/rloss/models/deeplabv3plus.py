"""DeepLabv3+ on any encoder of segmentation_models_pytorch (smp): ``deeplabv3plus_<encoder>``."""

from __future__ import annotations

from rloss.models.pretrained import check_hugging_face, download_errors
from rloss.models.registry import IMAGENET_8BIT, SegmentationNet, register_backbone

SMP_WEIGHT_FILES = ("config.json", "model.safetensors")
"""The Hugging Face files smp downloads for an encoder's pretrained weights."""


@register_backbone("deeplabv3plus_<encoder>")
def build_deeplabv3plus(name: str, num_classes: int, in_channels: int, weights_backbone: str | None) -> SegmentationNet:
    """smp DeepLabV3Plus (output stride 16) on the encoder named after the prefix (mobilenet_v2,
    resnet101, ...); smp adapts pretrained first convolutions to any channel count."""
    import segmentation_models_pytorch as smp

    encoder = name.removeprefix("deeplabv3plus_")
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
            encoder_name=encoder, encoder_weights=weights_backbone, classes=num_classes,
            encoder_output_stride=16, in_channels=in_channels,
        )
    return SegmentationNet(
        model,
        ("encoder.",),
        size_divisor=model.encoder.output_stride,
        normalization=IMAGENET_8BIT,
        in_channels=in_channels,
    )
