"""Fast detection and search ops, dispatched on the tensors' device (CPU or CUDA).

Every op is also available as ``torch.ops.nasx.<name>``, has a fake kernel
(registered next to its wrapper) so it traces under ``torch.compile(fullgraph=True)``,
and has a plainly written pure-torch reference in ``nasx.ops._reference``.
"""
from nasx.ops.boxes import box_iou, generalized_box_iou
from nasx.ops.nms import batched_nms, nms, soft_nms

__all__ = ["box_iou", "generalized_box_iou", "nms", "batched_nms", "soft_nms"]
from nasx.ops.roi_align import roi_align
from nasx.ops.deform_conv import DeformConv2d, deform_conv2d

__all__ += ["roi_align", "deform_conv2d", "DeformConv2d"]
