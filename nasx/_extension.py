"""Load the compiled extension, with an error that says how to fix a mismatch."""
import importlib.util
import sys
from pathlib import Path

import torch


def _load_compiled():
    try:
        from nasx import _C

        return _C
    except ImportError as exc:
        error = exc
    # A source checkout (e.g. `python -c "import nasx"` from the repository root) has
    # no compiled module: use the one `pip install` put into site-packages.
    here = Path(__file__).resolve().parent
    for entry in sys.path:
        candidate = Path(entry or ".").resolve() / "nasx"
        if candidate == here or not candidate.is_dir():
            continue
        for path in sorted(candidate.glob("_C.*")):
            if path.suffix not in (".so", ".pyd"):
                continue
            spec = importlib.util.spec_from_file_location("nasx._C", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["nasx._C"] = module
            return module
    raise ImportError(
        f"nasx's compiled kernels could not be loaded from {here} ({error}). Build them with "
        "`make install` or `pip install --no-build-isolation .`; an installed copy compiled "
        f"against another torch than this one ({torch.__version__}) must be rebuilt the same way."
    ) from error


_C = _load_compiled()


def cuda_enabled() -> bool:
    """Whether this build of nasx contains the CUDA kernels."""
    return bool(_C.cuda_enabled())


def torch_version_built_against() -> str:
    """The torch version the kernels were compiled against."""
    return str(_C.torch_version)
