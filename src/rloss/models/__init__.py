"""The LightningModule and the backbone registry."""

from rloss.models.backbones import SegmentationNet, backbone_names, build_backbone
from rloss.models.segmentation import ScribbleSegmentation

__all__ = ["ScribbleSegmentation", "SegmentationNet", "backbone_names", "build_backbone"]
