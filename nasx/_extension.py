"""Load the compiled extension, with an error that says how to fix a mismatch."""
import torch

try:
    from nasx import _C
except ImportError as exc:  # pragma: no cover - exercised only by broken installs
    raise ImportError(
        f"nasx's compiled kernels could not be loaded ({exc}). nasx is compiled against the "
        f"torch that is installed when it is built; this environment has torch {torch.__version__}. "
        "Rebuild it here with: pip install --no-build-isolation ."
    ) from exc


def cuda_enabled() -> bool:
    """Whether this build of nasx contains the CUDA kernels."""
    return bool(_C.cuda_enabled())


def torch_version_built_against() -> str:
    """The torch version the kernels were compiled against."""
    return str(_C.torch_version)
