"""The adaptation super network: one DARTS weight step (a single sampled path) and one architecture
step (every op mixed, gradients for α only) against one training step of a single network, in one
process.

    python benchmarks/bench_supernet.py            # CPU, and CUDA when a GPU is there
    python benchmarks/bench_supernet.py --quick    # fewer paths and repeats

"nasx" is the super network's step inside SSDLite (forward, SSD losses, backward, AdamW step), the
"peer" the same step of a single MobileNetV2-SSDLite of the same width and input: the seed, and the
most expensive network of the space (k7_e6 everywhere, every layer kept). A weight step samples
one op per layer; the median over several sampled paths (uniform sampling, as the warm-up draws
them) is reported, so the ratio is against the *average* sampled network, which is larger than
MobileNetV2 (k5 / k7 kernels, four layers per stage).

Goal (issue 16: "the super network's weight step on CPU within 3x of a single network's step"):
weight step / seed step <= 3, i.e. the row's speed-up >= 1/3. Architecture steps run every op and
are recorded without a goal (FNA takes one per five weight steps).
"""
from __future__ import annotations

import sys

import torch

from harness import Row, median_time, run_benchmark

from nasx.evaluate.macs_table import supernet_macs_table
from nasx.spaces.adaptation import AdaptationSpace
from nasx.spaces.detectors import build_from_spec

SETTINGS = {  # name: (width, image side, batch)
    "w0.5 128px b16 (demo)": (0.5, 128, 16),
    "w1.0 320px b4": (1.0, 320, 4),
}


def _targets(batch: int, side: int, gen: torch.Generator, device: str) -> list[dict]:
    out = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=gen) * side * 0.6
        wh = torch.rand(3, 2, generator=gen) * side * 0.35 + side * 0.05
        out.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                    "labels": torch.randint(0, 4, (3,), generator=gen).to(device)})
    return out


def _step_fn(model, images, targets, params):
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        loss = sum(model(images, None, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def rows_for(device: str, quick: bool) -> list[Row]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    repeats = 3 if quick else 5
    for name, (width, side, batch) in SETTINGS.items():
        space = AdaptationSpace(width=width)
        images = torch.randn(batch, 3, side, side, device=device)
        targets = _targets(batch, side, gen, device)
        torch.manual_seed(0)
        singles = {"seed": str(space.seed_encoding),
                   "largest": space.derive([ops[-2] if ops[-1] == "skip" else ops[-1] for ops in space.op_lists()])}
        single_ms = {}
        for key, arch in singles.items():
            model = build_from_spec(space.detector_spec(arch, 4)).to(device).train()
            single_ms[key] = median_time(_step_fn(model, images, targets, model.parameters()), device,
                                         repeats=repeats) * 1e3
        detector = space.build_super_detector(num_classes=4).to(device).train()
        supernet = detector.backbone
        table, fixed = supernet_macs_table(detector, (side, side))
        supernet.set_macs_table(table, fixed)
        weight_step = _step_fn(detector, images, targets, supernet.weight_parameters() +
                               list(detector.neck.parameters()) + list(detector.head.parameters()))
        paths = torch.Generator().manual_seed(1)
        times = []
        for _ in range(2 if quick else 4):
            supernet.sample_path(paths, uniform=True)
            times.append(median_time(weight_step, device, warmup=1, repeats=repeats) * 1e3)
        weight_ms = sorted(times)[len(times) // 2]
        supernet.set_path(None)
        alphas = supernet.arch_parameters()

        def arch_step():
            loss = sum(detector(images, None, targets).values()) + 0.2 * torch.log(supernet.expected_macs())
            grads = torch.autograd.grad(loss, alphas)
            for a, g in zip(alphas, grads):
                a.data.add_(g, alpha=-1e-3)

        arch_ms = median_time(arch_step, device, warmup=1, repeats=max(2, repeats - 2)) * 1e3
        rows.append(Row("supernet weight step", name, weight_ms, "seed SSDLite step", single_ms["seed"], 1 / 3,
                        {"largest_network_ms": single_ms["largest"], "paths_ms": times,
                         "ratio_to_seed": weight_ms / single_ms["seed"]}))
        rows.append(Row("supernet arch step", name, arch_ms, "seed SSDLite step", single_ms["seed"], None,
                        {"ratio_to_seed": arch_ms / single_ms["seed"]}))
    return rows


if __name__ == "__main__":
    sys.exit(run_benchmark("supernet", "DARTS super network steps vs one network's", rows_for, __doc__))
