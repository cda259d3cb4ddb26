"""Candidate evaluation: cost (params, MACs, latency)."""
from nasx.evaluate.cost import LatencyReport, MacsReport, count_detector_macs, count_macs, count_params, measure_latency

__all__ = ["LatencyReport", "MacsReport", "count_detector_macs", "count_macs", "count_params", "measure_latency"]
