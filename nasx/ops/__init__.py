"""Fast detection and search ops, dispatched on the tensors' device (CPU or CUDA).

Every op is also available as ``torch.ops.nasx.<name>`` and traces under
``torch.compile(fullgraph=True)``. Pure-torch references live in
``nasx.ops._reference`` (used by the tests).
"""
from nasx.ops import _fake  # noqa: F401  (registers fake kernels for torch.compile)
from nasx.ops.boxes import box_iou, generalized_box_iou
from nasx.ops.nms import batched_nms, nms, soft_nms

__all__ = ["box_iou", "generalized_box_iou", "nms", "batched_nms", "soft_nms"]
