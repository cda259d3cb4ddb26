"""Scoring detectors: accuracy (pycocotools COCO mAP, VOC AP50), cost (params, MACs, latency), the
NAS-FCOS proxy (decoders trained on cached backbone features) and short training from scratch
(whole detectors: SM-NAS, NAS-EOD)."""
from nasx.evaluate.coco_eval import COCO_METRICS, coco_map, evaluate_detector, predict, voc_ap50
from nasx.evaluate.cost import (LatencyReport, MacsReport, count_detector_macs, count_macs, count_params,
                                measure_latency, measure_together)
from nasx.evaluate.feature_cache import FeatureCache
from nasx.evaluate.macs_table import supernet_macs_table
from nasx.evaluate.proxy import DecoderProxy, ProxyConfig
from nasx.evaluate.short_train import ShortTrainConfig, ShortTrainEvaluator

__all__ = ["COCO_METRICS", "coco_map", "evaluate_detector", "predict", "voc_ap50",
           "LatencyReport", "MacsReport", "count_detector_macs", "count_macs", "count_params", "measure_latency",
           "measure_together",
           "FeatureCache", "supernet_macs_table", "DecoderProxy", "ProxyConfig", "ShortTrainConfig", "ShortTrainEvaluator"]
