"""The registered networks: one import line per family module (each registers its builders).

``build_backbone(name, num_classes, weights_backbone, in_channels)`` builds any of them;
:func:`backbone_names` lists them (``rloss fit --help`` and errors show the list).
"""

from rloss.models import deeplabv3plus, largefov, tiny, torchvision_nets, unet  # noqa: F401  (registration)
from rloss.models.registry import SegmentationNet, backbone_names, build_backbone

__all__ = ["SegmentationNet", "backbone_names", "build_backbone"]
