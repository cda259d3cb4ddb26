"""Print CMake `set()` lines describing the torch this build compiles against.

Run by CMakeLists.txt with the build's Python. We link torch by hand, as
torch.utils.cpp_extension does, instead of `find_package(Torch)`: Torch's CMake
config insists on a complete CUDA toolkit (nvrtc, cuSPARSE, ...) as soon as torch
has CUDA, which turns "CUDA half-present" into a failed build.
"""
import glob
import os
import sys

import torch
from torch.utils import cpp_extension


def cmake_list(items):
    return ";".join(str(i).replace("\\", "/") for i in items)


def default_arch_list():
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPUs, else a portable list."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env:
        return env
    if torch.version.cuda and torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{a}.{b}" for a, b in sorted(caps))
    # What torch itself was built for, newest with PTX so future GPUs can JIT it.
    archs = [a for a in torch.cuda.get_arch_list() if a.startswith("sm_")] if torch.version.cuda else []
    if not archs:
        return "7.5;8.0;8.6;9.0+PTX"
    caps = sorted({int(a[3:].rstrip("a").rstrip("f")) for a in archs})
    caps = [c for c in caps if c >= 70]
    out = [f"{c // 10}.{c % 10}" for c in caps]
    out[-1] += "+PTX"
    return ";".join(out)


site = os.path.dirname(os.path.dirname(torch.__file__))
nvidia_includes = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
nvidia_libs = sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")))

lines = {
    "NASX_TORCH_VERSION": torch.__version__,
    "NASX_TORCH_INCLUDE_DIRS": cmake_list(cpp_extension.include_paths()),
    "NASX_TORCH_LIBRARY_DIR": cmake_list(cpp_extension.library_paths()),
    "NASX_TORCH_CXX11_ABI": int(torch.compiled_with_cxx11_abi()),
    "NASX_TORCH_CUDA_VERSION": torch.version.cuda or "",
    "NASX_TORCH_NVIDIA_INCLUDE_DIRS": cmake_list(nvidia_includes),
    "NASX_TORCH_NVIDIA_LIBRARY_DIRS": cmake_list(nvidia_libs),
    "NASX_CUDA_ARCH_LIST": default_arch_list(),
}
for key, value in lines.items():
    sys.stdout.write(f'set({key} "{value}")\n')
