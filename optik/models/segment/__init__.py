"""Segmentation models beyond the native zoo: the FPN and U-Net heads on timm backbones, the universal
(Mask2Former / OneFormer) models, and the segmentation losses. Importing registers them."""

from optik.models.segment import fpn, universal, unet_timm  # noqa: F401  (registration on import)
