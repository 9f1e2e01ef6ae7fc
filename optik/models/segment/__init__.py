"""Segmentation models beyond the native zoo: the FPN head on timm backbones, the universal
(Mask2Former / OneFormer) models, and the segmentation losses. Importing registers them."""

from optik.models.segment import fpn, universal  # noqa: F401  (registration on import)
