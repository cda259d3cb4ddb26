from nasx.models.layers.norm import NORMS, WSConv2d, conv2d, fan_out_init_, group_count, norm2d

__all__ = ["NORMS", "WSConv2d", "conv2d", "fan_out_init_", "group_count", "norm2d"]
