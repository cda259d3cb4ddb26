"""Search spaces and architecture encodings: strings <-> labelled choices -> nn.Modules."""
from nasx.spaces.mbconv import MBConvEncoding
from nasx.spaces.nas_fcos import NasFcosArch, NasFcosSpace
from nasx.spaces.residual import ResidualEncoding

__all__ = ["MBConvEncoding", "NasFcosArch", "NasFcosSpace", "ResidualEncoding"]
