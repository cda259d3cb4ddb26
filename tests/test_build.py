import torch

import nasx


def test_built_against_this_torch():
    assert nasx.torch_version_built_against().split("+")[0] == torch.__version__.split("+")[0]


def test_ops_registered():
    for name in ("box_iou", "generalized_box_iou", "nms", "batched_nms", "soft_nms"):
        assert hasattr(torch.ops.nasx, name)
        assert callable(getattr(nasx.ops, name)) and getattr(nasx.ops, name).__doc__


def test_cuda_kernels_present_when_promised():
    # CI builds with NASX_CUDA=1; a silent CPU-only build there would hide the CUDA code.
    import os

    if os.environ.get("NASX_CUDA") == "1":
        assert nasx.cuda_enabled()
