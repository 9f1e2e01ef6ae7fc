"""Native architectures, one file each; importing this package registers them all."""

from optik.models.zoo import cnn, mlp, mobilenet, resnet, tiny_vit, unet, vgg

__all__ = ["cnn", "mlp", "mobilenet", "resnet", "tiny_vit", "unet", "vgg"]
