"""nasx: neural architecture search for object detection.

The compiled kernels live in ``nasx._C`` and are registered as ``torch.ops.nasx.*``;
``nasx.ops`` is their documented Python face.
"""
from nasx._extension import cuda_enabled, torch_version_built_against
from nasx import ops

__version__ = "0.1.0"
__all__ = ["ops", "cuda_enabled", "torch_version_built_against", "__version__"]
