"""Backbone features computed once and kept on disk: what the NAS-FCOS proxy trains decoders on.

Layout of a cache directory::

    meta.json          names, shape and dtype of each level, the padded input size, a fingerprint
    c3.npy c4.npy ...  one array [N, C, H, W] per level (``numpy.lib.format``, memory-mappable)
    targets.pt         per image: boxes (xyxy, pixels of the resized image), labels, image size

The arrays are opened memory-mapped, so a cache larger than RAM still works (the page cache
keeps the hot part); ``in_memory=True`` reads them whole when they fit. A cache is written into
a temporary directory and renamed into place, so an interrupted build never leaves a cache that
looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasx.atomic import fsync_dir, write_json
from nasx.progress import Progress

__all__ = ["FeatureCache"]

_DTYPES = {"float32": (torch.float32, np.float32), "float16": (torch.float16, np.float16)}


class FeatureCache:
    """Read side of a cache directory written by :meth:`build`.

    ``cache.batch(indices)`` returns ``(features {name: Tensor[B, C, H, W] float32},
    batch_shape (H, W), image_sizes [(h, w)], targets [{"boxes", "labels"}])``: the arguments of
    :meth:`nasx.models.detectors.FCOS.forward_features`.
    """

    def __init__(self, root, *, in_memory: bool = False):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"FeatureCache: {self.root} is not a feature cache (no meta.json); "
                                    "build one with FeatureCache.build")
        self.meta = json.loads(meta_path.read_text())
        self.names: list[str] = list(self.meta["names"])
        self.input_size: tuple[int, int] = tuple(self.meta["input_size"])
        mode = None if in_memory else "r"
        self.arrays = {n: np.load(self.root / f"{n}.npy", mmap_mode=mode) for n in self.names}
        for n, a in self.arrays.items():
            if list(a.shape) != self.meta["shapes"][n]:
                raise ValueError(f"FeatureCache: {self.root / (n + '.npy')} has shape {list(a.shape)}, "
                                 f"meta.json says {self.meta['shapes'][n]}; rebuild the cache")
        t = torch.load(self.root / "targets.pt", weights_only=True)
        self.boxes: list[Tensor] = t["boxes"]
        self.labels: list[Tensor] = t["labels"]
        self.image_sizes: list[tuple[int, int]] = [tuple(s) for s in t["image_sizes"].tolist()]

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def channels(self) -> dict[str, int]:
        return {n: int(self.meta["shapes"][n][1]) for n in self.names}

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def batch(self, indices: Sequence[int], device="cpu"):
        idx = np.sort(np.asarray(indices, dtype=np.int64))  # sorted reads are sequential on disk
        feats = {n: torch.from_numpy(np.ascontiguousarray(a[idx])).to(device=device, dtype=torch.float32)
                 for n, a in self.arrays.items()}
        targets = [{"boxes": self.boxes[i].to(device), "labels": self.labels[i].to(device)} for i in idx.tolist()]
        return feats, self.input_size, [self.image_sizes[i] for i in idx.tolist()], targets

    # -- writing -----------------------------------------------------------------------------
    @classmethod
    def build(cls, backbone: nn.Module, dataset, root, *, input_size: tuple[int, int], batch_size: int = 32,
              device="cpu", dtype: str = "float32", fingerprint: Optional[dict] = None,
              workers: int = 0, progress: bool = True) -> "FeatureCache":
        """Run ``backbone`` (eval mode, no gradients) over every sample of ``dataset`` (images
        padded at the bottom and right to ``input_size``) and write the cache to ``root``.

        ``fingerprint``: anything JSON that identifies what was cached (backbone checkpoint,
        dataset, transform); :meth:`matches` compares it when a run resumes.
        """
        from nasx.data import build_loader

        if dtype not in _DTYPES:
            raise ValueError(f"FeatureCache.build: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if len(dataset) == 0:
            raise ValueError("FeatureCache.build: the dataset is empty")
        root = Path(root)
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        device = torch.device(device)
        was_training = backbone.training
        backbone.eval().to(device)
        H, W = int(input_size[0]), int(input_size[1])
        loader = build_loader(dataset, batch_size, workers=workers)
        arrays, boxes, labels, sizes, n_done = {}, [], [], [], 0
        bar = Progress(len(dataset), "cache features", unit="img", enabled=progress)
        try:
            with torch.no_grad():
                for batch in loader:
                    images = batch.images
                    if images.shape[-2] > H or images.shape[-1] > W:
                        raise ValueError(f"FeatureCache.build: a batch of shape {tuple(images.shape[-2:])} does not "
                                         f"fit input_size {(H, W)}")
                    images = F.pad(images, (0, W - images.shape[-1], 0, H - images.shape[-2]))
                    feats = backbone(images.to(device))
                    for n, f in feats.items():
                        if n not in arrays:
                            arrays[n] = np.lib.format.open_memmap(tmp / f"{n}.npy", mode="w+", dtype=_DTYPES[dtype][1],
                                                                  shape=(len(dataset), *f.shape[1:]))
                        arrays[n][n_done:n_done + len(f)] = f.to(_DTYPES[dtype][0]).cpu().numpy()
                    for t in batch.targets:
                        boxes.append(t["boxes"].float().cpu())
                        labels.append(t["labels"].long().cpu())
                    sizes += batch.image_sizes
                    n_done += len(images)
                    bar.update(len(images))
        finally:
            bar.close()
            backbone.train(was_training)
        for a in arrays.values():
            a.flush()
        names = list(arrays)
        torch.save({"boxes": boxes, "labels": labels, "image_sizes": torch.tensor(sizes, dtype=torch.long)},
                   tmp / "targets.pt")
        meta = {"names": names, "shapes": {n: list(arrays[n].shape) for n in names}, "dtype": dtype,
                "input_size": [H, W], "num_images": n_done, "fingerprint": fingerprint or {}}
        del arrays
        write_json(tmp / "meta.json", meta)  # last: marks the cache complete
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
        fsync_dir(root.parent)
        return cls(root)

    @staticmethod
    def matches(root, fingerprint: dict) -> bool:
        """Whether ``root`` holds a complete cache built with this ``fingerprint``."""
        meta_path = Path(root) / "meta.json"
        if not meta_path.is_file():
            return False
        try:
            return json.loads(meta_path.read_text()).get("fingerprint") == fingerprint
        except ValueError:
            return False
