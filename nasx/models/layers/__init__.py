from nasx.models.layers.nas_fcos_ops import AGGS, OPS, Aggregation, BasicBlock, DeformOp, SepConv, build_op, resize_to
from nasx.models.layers.norm import NORMS, WSConv2d, conv2d, fan_out_init_, group_count, norm2d

__all__ = ["AGGS", "NORMS", "OPS", "Aggregation", "BasicBlock", "DeformOp", "SepConv", "WSConv2d", "build_op",
           "conv2d", "fan_out_init_", "group_count", "norm2d", "resize_to"]
