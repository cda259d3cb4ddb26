"""The NAS-FCOS proxy: one training step of a decoder on cached backbone features against the
same step on images, in one process.

    python benchmarks/bench_proxy.py            # CPU, and CUDA when a GPU is there
    python benchmarks/bench_proxy.py --quick    # fewer architectures and repeats

"nasx" is the proxy step (neck + head forward, FCOS losses, backward, AdamW step) on a batch
of cached C3-C5; the peers are the same decoder trained on images — with the backbone
trainable (what retraining costs: the NAS-FCOS paper's alternative) and with the backbone
frozen but still run forward (the least any image-based evaluation must pay). Data loading
is left out of both, so the ratio is the compute the cache saves. Architectures: the
hand-designed baseline and decoders sampled from the space with a fixed seed.

Goal (issue: "evaluates a decoder at least 5x faster than training it on images"): >= 5x
against the trainable-backbone step, for a ResNet-50 backbone at 512 x 512 and a 64-channel
decoder — the setting the paper's proxy is for. The demo's tiny backbone (a 16-channel
ResNet at 128 px) costs about as much as its decoder, so there the ratio is 1.3-1.6x; its run
report records the measured value.
"""
from __future__ import annotations

import sys

import torch

from harness import Row, median_time, run_benchmark

from nasx.models.detectors import FCOS
from nasx.spaces.detectors import build_backbone
from nasx.spaces.nas_fcos import BASELINE, NasFcosArch, NasFcosSpace

SETTINGS = {  # name: (backbone encoding, image side, batch, decoder channels, goal)
    "R-50 512px": ("resnet50", 512, 2, 64, 5.0),
    "R-18/4 128px (demo)": ("basicblock_16_1-21-21-21", 128, 16, 32, None),
}


def _targets(batch: int, side: int, gen: torch.Generator) -> list[dict]:
    out = []
    for _ in range(batch):
        xy = torch.rand(4, 2, generator=gen) * side * 0.6
        wh = torch.rand(4, 2, generator=gen) * side * 0.35 + side * 0.05
        out.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 4, (4,), generator=gen)})
    return out


def rows_for(device: str, quick: bool) -> list[Row]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, (encoding, side, batch, channels, goal) in SETTINGS.items():
        space = NasFcosSpace(channels=channels)
        archs = [NasFcosArch.parse(BASELINE)] + [space.sample(seed) for seed in range(1 if quick else 3)]
        trunk = build_backbone(encoding, norm="gn").to(device)
        images = torch.randn(batch, 3, side, side, device=device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in _targets(batch, side, gen)]
        sizes = [(side, side)] * batch
        with torch.no_grad():
            cached = {k: v.detach() for k, v in trunk(images).items()}
        for i, arch in enumerate(archs):
            neck, head = space.build(arch, in_channels=trunk.channels, num_classes=4)
            model = FCOS(backbone=trunk, neck=neck, head=head, num_classes=4).to(device).train()
            decoder = list(model.neck.parameters()) + list(model.head.parameters())
            opt_decoder = torch.optim.AdamW(decoder, lr=1e-4)
            opt_all = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def proxy_step():
                loss = sum(model.forward_features(cached, (side, side), sizes, targets).values())
                opt_decoder.zero_grad(set_to_none=True)
                loss.backward()
                opt_decoder.step()

            def frozen_step():
                with torch.no_grad():
                    feats = trunk(images)
                loss = sum(model.forward_features(feats, (side, side), sizes, targets).values())
                opt_decoder.zero_grad(set_to_none=True)
                loss.backward()
                opt_decoder.step()

            def image_step():
                loss = sum(model(images, sizes, targets).values())
                opt_all.zero_grad(set_to_none=True)
                loss.backward()
                opt_all.step()

            repeats = 3 if quick else 5
            proxy_s = median_time(proxy_step, device, repeats=repeats)
            frozen_s = median_time(frozen_step, device, repeats=repeats)
            image_s = median_time(image_step, device, repeats=repeats)
            label = "baseline" if i == 0 else f"sampled {i}"
            rows.append(Row("proxy step", f"{name}, {label}", proxy_s * 1e3, "images, train bb",
                            image_s * 1e3, goal, {"arch": arch.to_string(), "batch": batch}))
            rows.append(Row("proxy step", f"{name}, {label}", proxy_s * 1e3, "images, frozen bb",
                            frozen_s * 1e3, None, {"arch": arch.to_string(), "batch": batch}))
            print(f"  {name:<22} {label:<10} proxy {proxy_s * 1e3:8.1f} ms  frozen {frozen_s * 1e3:8.1f} ms  "
                  f"trainable {image_s * 1e3:8.1f} ms  ({image_s / proxy_s:.1f}x)", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(run_benchmark("proxy", "NAS-FCOS proxy step vs training on images", rows_for, __doc__))
