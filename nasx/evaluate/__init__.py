"""Scoring detectors: accuracy (pycocotools COCO mAP, VOC AP50) and cost."""
from nasx.evaluate.coco_eval import COCO_METRICS, coco_map, evaluate_detector, predict, voc_ap50

__all__ = ["COCO_METRICS", "coco_map", "evaluate_detector", "predict", "voc_ap50"]
