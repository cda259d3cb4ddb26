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
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPUs, else Ampere-to-Hopper plus PTX."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env:
        return env
    if torch.version.cuda and torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{a}.{b}" for a, b in sorted(caps))
    # No GPU to ask: sm_80 code runs on every Ampere/Ada GPU (8.x), sm_90 on Hopper,
    # and sm_90 PTX is compiled by the driver for anything newer. Two targets instead
    # of torch's whole list keep a CPU-only machine's build to minutes; set
    # TORCH_CUDA_ARCH_LIST for other GPUs (e.g. "7.5" for Turing).
    return "8.0;9.0+PTX"


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
