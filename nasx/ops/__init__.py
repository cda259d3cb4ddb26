"""Fast detection and search ops, dispatched on the tensors' device (CPU or CUDA).

Every op is also available as ``torch.ops.nasx.<name>``, has a fake kernel
(registered next to its wrapper) so it traces under ``torch.compile(fullgraph=True)``,
and has a plainly written pure-torch reference in ``nasx.ops._reference``. Every
wrapper compiles with ``torch.jit.script``: the checks TorchScript cannot express sit
under ``if not torch.jit.is_scripting()``, which TorchScript skips. The ops that replace
torchvision's take its arguments, in its order, with its defaults
(``nasx.torchvision_ops`` routes torchvision's to them).
"""
from nasx.ops.atss_assign import atss_assign
from nasx.ops.boxes import BOX_FORMATS, box_iou, generalized_box_iou
from nasx.ops.deform_conv2d import DeformConv2d, deform_conv2d
from nasx.ops.fcos_targets import fcos_targets, fcos_targets_batched
from nasx.ops.match_anchors import match_anchors
from nasx.ops.nms import batched_nms, nms, soft_nms
from nasx.ops.pareto import crowding_distance, hypervolume, non_dominated_sort, partial_order_prune
from nasx.ops.roi_align import roi_align
from nasx.ops.sigmoid_focal_loss import sigmoid_focal_loss

__all__ = [
    # boxes and suppression
    "BOX_FORMATS",
    "box_iou",
    "generalized_box_iou",
    "nms",
    "batched_nms",
    "soft_nms",
    # detection training
    "fcos_targets",
    "fcos_targets_batched",
    "match_anchors",
    "atss_assign",
    "sigmoid_focal_loss",
    "roi_align",
    "deform_conv2d",
    "DeformConv2d",
    # multi-objective search
    "non_dominated_sort",
    "crowding_distance",
    "hypervolume",
    "partial_order_prune",
]
