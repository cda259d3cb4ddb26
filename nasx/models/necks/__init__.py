from nasx.models.necks.fpn import FPN

__all__ = ["FPN"]
