"""Detectors to ONNX, and ONNX Runtime as a place to run and time them.

``export_onnx(model, "model.onnx", image_size=(H, W))`` exports any detector nasx builds, its
custom ops as standard ONNX ops (``NonMaxSuppression``, ``RoiAlign``, ``DeformConv``), with the
post-processing in the graph or left out; ``OnnxDetector("model.onnx")(images)`` runs it in ONNX
Runtime and returns what the PyTorch detector returns. Needs ``pip install nasx[export]`` (onnx,
onnxscript, onnxruntime); importing this package does not.
"""
from nasx.export.errors import INSTALL_HINT, ExportError
from nasx.export.exporter import DEFAULT_OPSET, OPSETS, ExportedModel, export_onnx
from nasx.export.graphs import EXPORT_GRAPHS, export_graph, register_export_graph
from nasx.export.runtime import OnnxDetector, detections_per_image, ort_session

__all__ = ["DEFAULT_OPSET", "EXPORT_GRAPHS", "ExportError", "ExportedModel", "INSTALL_HINT", "OPSETS", "OnnxDetector",
           "detections_per_image", "export_graph", "export_onnx", "ort_session", "register_export_graph"]
