"""Load the compiled extension, with an error that says how to fix a mismatch."""
import os

import torch

try:
    from nasx import _C
except ImportError as exc:  # pragma: no cover - exercised only by broken installs
    here = os.path.dirname(os.path.abspath(__file__))
    raise ImportError(
        f"nasx's compiled kernels could not be loaded from {here} ({exc}). If that is the source "
        "tree, install nasx (pip install --no-build-isolation .) and import it from elsewhere "
        "(run `pytest`, not `python -m pytest`, from the repository). If it is an installed copy, "
        f"it was compiled against another torch than this one ({torch.__version__}): rebuild it here."
    ) from exc


def cuda_enabled() -> bool:
    """Whether this build of nasx contains the CUDA kernels."""
    return bool(_C.cuda_enabled())


def torch_version_built_against() -> str:
    """The torch version the kernels were compiled against."""
    return str(_C.torch_version)
