"""``nasx data synth`` writes the embedded default dataset; ``nasx data preview`` draws a
contact sheet of any COCO-format split with its boxes."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from nasx.progress import Progress

__all__ = ["register"]


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="datasets: write the synthetic default set, preview a split")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser(
        "synth",
        help="write the synthetic shapes-and-patterns detection dataset in COCO format",
        description="Write DIR/{train,val}/*.jpg and DIR/annotations/instances_{train,val}.json; "
        "the same seed gives byte-identical files.",
    )
    synth.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (empty or new)")
    synth.add_argument("--train", type=int, default=2000, metavar="N", help="training images (default 2000)")
    synth.add_argument("--val", type=int, default=300, metavar="M", help="validation images (default 300)")
    synth.add_argument("--size", type=int, default=128, metavar="S", help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    synth.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    synth.add_argument("--classes", choices=("shapes", "shape_pattern"), default="shapes",
                       help="4 classes by silhouette (default) or 8 shape-and-pattern classes (much harder)")
    synth.add_argument("--workers", type=int, default=None, metavar="W",
                       help="drawing processes (default: CPU count, at most 8; 0 = inline)")
    synth.add_argument("--force", action="store_true", help="replace train/, val/, annotations/ in a non-empty DIR")
    synth.set_defaults(func=run_synth)

    preview = sub.add_parser("preview", help="draw samples of a COCO-format split with their boxes into a PNG")
    preview.add_argument("--data", required=True, type=Path, metavar="DIR",
                         help="dataset root with annotations/instances_SPLIT.json and SPLIT/")
    preview.add_argument("--split", default="val", help="split name (default val)")
    preview.add_argument("--out", type=Path, default=None, metavar="PNG", help="output file (default DIR/preview_SPLIT.png)")
    preview.add_argument("--count", type=int, default=16, help="number of images (default 16)")
    preview.add_argument("--cols", type=int, default=4, help="images per row (default 4)")
    preview.add_argument("--scale", type=int, default=3, help="enlargement (default 3)")
    preview.set_defaults(func=run_preview)


def run_synth(args: argparse.Namespace) -> int:
    from nasx.data.synth import SynthConfig, write_synth_dataset

    config = SynthConfig(size=args.size, image_format=args.format, classes=args.classes)
    # One bar per split on stderr (Progress redraws a line on a terminal and logs lines elsewhere).
    # A split's bar opens when the one before it finishes, so its rate counts only its own images.
    totals = {split: n for split, n in (("train", args.train), ("val", args.val)) if n > 0}
    bars: dict = {}

    def open_next() -> None:
        for split, n in totals.items():
            if split not in bars:
                bars[split] = Progress(n, f"  {split}", unit="img")
                return

    def progress(split, done, total):
        bar = bars.get(split)
        if bar is None:  # not the split expected next: open its bar now
            bar = bars[split] = Progress(total, f"  {split}", unit="img")
        bar.update(done - bar.done)
        if done >= total:
            bar.close()
            open_next()

    start = time.perf_counter()
    open_next()
    try:
        summary = write_synth_dataset(args.out, train=args.train, val=args.val, seed=args.seed, config=config,
                                      workers=args.workers, force=args.force, progress=progress)
    except BaseException:
        for bar in bars.values():
            if bar.done == 0:
                bar.enabled = False  # nothing drawn yet (e.g. DIR not empty): no empty bar above the error
        raise
    finally:
        for bar in bars.values():
            bar.close()  # a no-op for a finished bar
    print(f"wrote the nasx synthetic dataset (seed {args.seed}, {args.size}x{args.size}) to {summary['root']} "
          f"in {time.perf_counter() - start:.1f} s:")
    for split, s in summary["splits"].items():
        print(f"  {split:<5} {s['images']:>6} images {s['objects']:>7} objects  "
              f"{s['image_dir']}/  {s['annotations']}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from nasx.data import synth_dataset
    from nasx.data.preview import contact_sheet

    dataset = synth_dataset(args.data, args.split)
    out = args.out or args.data / f"preview_{args.split}.png"
    sheet = contact_sheet(dataset, range(min(args.count, len(dataset))), cols=args.cols, scale=args.scale)
    sheet.save(out)
    print(f"drew {min(args.count, len(dataset))} images of {args.data}/{args.split} with their boxes to {out}")
    return 0
