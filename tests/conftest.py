import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import nasx

# Fresh random inputs every run; CI gets more examples than a quick local run.
settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=150)
settings.load_profile("ci" if os.environ.get("CI") else "default")

HAS_CUDA = torch.cuda.is_available() and nasx.cuda_enabled()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])

needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build of nasx")


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
