from nasx.models.backbones.mbconv import InvertedResidual, MBConvBackbone, SqueezeExcite
from nasx.models.backbones.residual import BasicBlock, Bottleneck, ResidualBackbone, resnet_stem, sm_nas_stem

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "InvertedResidual",
    "MBConvBackbone",
    "ResidualBackbone",
    "SqueezeExcite",
    "resnet_stem",
    "sm_nas_stem",
]
