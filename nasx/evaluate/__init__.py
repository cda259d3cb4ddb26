"""Scoring detectors: accuracy (pycocotools COCO mAP, VOC AP50) and cost (params, MACs, latency)."""
from nasx.evaluate.coco_eval import COCO_METRICS, coco_map, evaluate_detector, predict, voc_ap50
from nasx.evaluate.cost import LatencyReport, MacsReport, count_detector_macs, count_macs, count_params, measure_latency

__all__ = ["COCO_METRICS", "coco_map", "evaluate_detector", "predict", "voc_ap50",
           "LatencyReport", "MacsReport", "count_detector_macs", "count_macs", "count_params", "measure_latency"]
