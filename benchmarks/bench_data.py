"""nasx.data against torchvision's COCO dataset + transforms v2, in one process.

    python benchmarks/bench_data.py            # writes benchmarks/results/data-cpu.json
    python benchmarks/bench_data.py --quick    # a smaller synthetic set, fewer repeats

Rows: drawing the default synthetic dataset (no peer: images/s is recorded), and one epoch
of reading + resizing + normalising + padding the val split, nasx's CocoDetection and
build_loader against torchvision.datasets.CocoDetection wrapped for transforms v2 with the
same resize and the same padding collate, in the main process and with 2 workers. The two
pipelines are checked to give identical batches before anything is timed (images equal;
boxes equal up to torchvision truncating the synthetic set's integer boxes to integers
after resizing, where nasx keeps exact float boxes).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import Row, compare, print_table, write_results
from nasx.data import Collate, build_loader, synth_dataset, write_synth_dataset
from nasx.data.transforms import Compose, Normalize, Resize

try:
    from torchvision import datasets as tvd
    from torchvision.transforms import v2
except ImportError:  # pragma: no cover
    sys.exit("bench_data compares against torchvision: pip install torchvision")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_dataset(root: Path, size: int):
    tf = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(MEAN, STD)])
    ds = tvd.CocoDetection(str(root / "val"), str(root / "annotations" / "instances_val.json"), transforms=tf)
    return tvd.wrap_dataset_for_transforms_v2(ds, target_keys=("boxes", "labels", "image_id"))


def epoch(loader) -> int:
    n = 0
    for batch in loader:
        n += batch.images.shape[0]
    return n


def check_same(nasx_loader, tv_loader, label_to_cat):
    for a, b in zip(nasx_loader, tv_loader):
        if a.images.shape != b.images.shape or not torch.allclose(a.images, b.images, atol=1e-5):
            raise SystemExit("nasx and torchvision images disagree -- not timing a wrong answer")
        for ta, tb in zip(a.targets, b.targets):
            cats = torch.tensor([label_to_cat[i] for i in ta["labels"].tolist()], dtype=torch.int64)
            # torchvision keeps integer COCO boxes as int64 and truncates them when resizing;
            # nasx's are float32 and exact, so compare nasx's rounded down.
            if "boxes" not in tb:  # torchvision leaves the keys out for images without objects
                if len(ta["boxes"]):
                    raise SystemExit("nasx and torchvision disagree on an empty image")
                continue
            tv_boxes = tb["boxes"].as_subclass(torch.Tensor)
            if not (torch.equal(ta["boxes"].floor().to(tv_boxes.dtype), tv_boxes) and torch.equal(cats, tb["labels"])):
                raise SystemExit("nasx and torchvision boxes disagree -- not timing a wrong answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    n_train, n_val, reps = (200, 100, 2) if args.quick else (2000, 300, 3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        start = time.perf_counter()
        write_synth_dataset(root, train=n_train, val=n_val, workers=2)
        took = time.perf_counter() - start
        rows.append(Row("synth (2 workers)", f"{n_train}+{n_val} images 128px", took * 1e3, "none", None,
                        extra={"images_per_s": (n_train + n_val) / took}))

        size = 96
        ours = synth_dataset(root, "val", transforms=Compose([Resize(size), Normalize(MEAN, STD)]))
        theirs = torchvision_dataset(root, size)
        collate = Collate(32)
        for workers in (0, 2):
            nl = build_loader(ours, 8, workers=workers)
            tl = torch.utils.data.DataLoader(theirs, batch_size=8, num_workers=workers, collate_fn=collate,
                                             persistent_workers=workers > 0)
            check_same(nl, tl, ours.label_to_category_id)
            rows.append(compare("coco loader", f"{n_val} images, {workers} workers", lambda: epoch(nl),
                                "torchvision v2", lambda: epoch(tl), "cpu", repeats=reps))
            for r in rows[-1:]:
                r.extra["images_per_s"] = n_val / (r.nasx_ms / 1e3)
    print_table("nasx.data (CPU; one epoch = read, resize to 96, normalise, pad to 32, batches of 8)", rows)
    if not args.no_write:
        print("wrote", write_results("data", "cpu", rows))


if __name__ == "__main__":
    main()
