"""Detection accuracy: COCO mAP through pycocotools' COCOeval (never re-implemented) and
Pascal VOC AP50, from a model's predictions on a dataset."""
from __future__ import annotations

import contextlib
import io
from typing import Optional

import numpy as np
import torch
from torch import nn

from nasx.progress import Progress

__all__ = ["predict", "coco_map", "voc_ap50", "evaluate_detector", "COCO_METRICS"]

# The order of COCOeval.stats' first six entries.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@torch.no_grad()
def predict(model: nn.Module, loader, *, device="cpu", progress: bool = False) -> list[dict]:
    """Run ``model`` (eval mode) over ``loader`` and return per image
    ``{"image_id", "boxes" [D, 4] in original-image pixels, "scores", "labels"}`` on the CPU.

    Boxes are mapped back from the resized input (``image_sizes``) to ``target["orig_size"]``.
    """
    was_training = model.training
    model.eval()
    out = []
    bar = Progress(len(loader), "predict", unit="batch", enabled=progress)
    try:
        for batch in loader:
            dets = model(batch.images.to(device), batch.image_sizes)
            for det, (h, w), t in zip(dets, batch.image_sizes, batch.targets):
                oh, ow = t.get("orig_size", (h, w))
                scale = torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=torch.float32)
                out.append({"image_id": t["image_id"], "boxes": det["boxes"].float().cpu() * scale,
                            "scores": det["scores"].float().cpu(), "labels": det["labels"].cpu()})
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    return out


def coco_map(coco_gt, results: list[dict], *, image_ids: Optional[list] = None, verbose: bool = False) -> dict:
    """COCO box AP with pycocotools.

    Args:
        coco_gt: the ground truth ``pycocotools.coco.COCO`` (``CocoDetection.coco``).
        results: COCO result entries ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        image_ids: evaluate on these images only (default: every image of ``coco_gt``).
        verbose: print COCOeval's summary table.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` in [0, 1]; all 0 when there are no detections
        (COCOeval's -1 for "no GT of this size" is kept).
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {k: 0.0 for k in COCO_METRICS}
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_METRICS, ev.stats[:6])}


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    # All-point interpolation (VOC 2010+): area under the precision envelope.
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    idx = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def voc_ap50(predictions: list[dict], targets: list[dict], num_classes: int, iou_threshold: float = 0.5) -> dict:
    """Pascal VOC AP at IoU 0.5 (all-point interpolation), per class and their mean.

    Args:
        predictions: per image ``{"boxes" [D, 4], "scores" [D], "labels" [D]}``.
        targets: per image (same order) ``{"boxes" [K, 4], "labels" [K]}``, optionally ``"difficult"``
            (bool [K]): difficult GTs are neither required nor counted as false positives.
        num_classes: C; classes without GT are left out of the mean.

    Returns:
        ``{"mAP50": float, "per_class": [AP or None per class]}``.
    """
    from nasx.ops import box_iou

    if len(predictions) != len(targets):
        raise ValueError(f"voc_ap50: got {len(predictions)} predictions but {len(targets)} targets")
    per_class = []
    for c in range(num_classes):
        scores, tps, n_gt = [], [], 0
        for pred, tgt in zip(predictions, targets):
            gmask = tgt["labels"] == c
            gboxes = tgt["boxes"][gmask].float()
            difficult = tgt.get("difficult", torch.zeros(len(tgt["labels"]), dtype=torch.bool))[gmask]
            n_gt += int((~difficult).sum())
            pmask = pred["labels"] == c
            pboxes, pscores = pred["boxes"][pmask].float(), pred["scores"][pmask].float()
            order = pscores.argsort(descending=True)
            pboxes, pscores = pboxes[order], pscores[order]
            taken = torch.zeros(len(gboxes), dtype=torch.bool)
            iou = box_iou(pboxes, gboxes) if len(gboxes) and len(pboxes) else None
            for i in range(len(pboxes)):
                tp = 0.0
                if iou is not None:
                    best, j = iou[i].max(0)
                    if best >= iou_threshold:
                        if difficult[j]:
                            continue  # ignored, neither TP nor FP
                        if not taken[j]:
                            taken[j], tp = True, 1.0
                scores.append(float(pscores[i]))
                tps.append(tp)
        if n_gt == 0:
            per_class.append(None)
            continue
        order = np.argsort(-np.asarray(scores), kind="stable")
        tp = np.asarray(tps)[order] if tps else np.zeros(0)
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        recall = ctp / n_gt
        precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        per_class.append(_voc_ap(recall, precision))
    valid = [a for a in per_class if a is not None]
    return {"mAP50": float(np.mean(valid)) if valid else 0.0, "per_class": per_class}


def evaluate_detector(model: nn.Module, dataset, loader, *, device="cpu", progress: bool = False) -> dict:
    """COCO mAP of ``model`` on a :class:`~nasx.data.CocoDetection` ``dataset`` read by ``loader``."""
    preds = predict(model, loader, device=device, progress=progress)
    results = []
    for p in preds:
        results += dataset.to_coco_results(p["image_id"], p["boxes"], p["scores"], p["labels"])
    return coco_map(dataset.coco, results, image_ids=[p["image_id"] for p in preds])
