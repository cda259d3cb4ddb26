"""ONNX Runtime sessions for exported detectors: creating one (CPU execution provider, as many
intra-op threads as torch uses, so the two runtimes are compared on the same cores), running it
on a batch of images, and reading its outputs back as the per-image dicts a detector returns.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nasx.export.errors import INSTALL_HINT, require

__all__ = ["PROVIDER", "OnnxDetector", "detection_difference", "detections_per_image", "ort_session"]

PROVIDER = "CPUExecutionProvider"


def ort_session(model, *, threads: Optional[int] = None):
    """An ``onnxruntime.InferenceSession`` on the CPU execution provider.

    Args:
        model: an :class:`~nasx.export.exporter.ExportedModel`, an ``onnx.ModelProto``, its bytes, or
            the path of an ``.onnx`` file.
        threads: intra-op threads (default ``torch.get_num_threads()``); inter-op work runs sequentially.
    """
    ort = require("onnxruntime")
    from nasx.export.exporter import ExportedModel

    if isinstance(model, ExportedModel):
        model = model.path if model.path is not None else model.serialized()
    elif hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)):
        if not Path(model).is_file():
            raise FileNotFoundError(f"ONNX model {model} does not exist")
        model = os.fspath(model)
    elif not isinstance(model, bytes):
        raise TypeError(f"ort_session: expected an ExportedModel, onnx.ModelProto, bytes or a path, got "
                        f"{type(model).__name__}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads) if threads is not None else torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: ORT warns about shape-inference details of valid graphs
    try:
        return ort.InferenceSession(model, sess_options=options, providers=[PROVIDER])
    except Exception as e:
        if "DeformConv" in str(e):  # a valid graph, an older runtime: an install problem, said as one
            raise ImportError(f"onnxruntime {ort.__version__} has no CPU DeformConv, which deformable convolutions "
                               f"export to; onnxruntime >= 1.25 has it ({INSTALL_HINT})") from e
        raise


def detections_per_image(outputs: dict, batch: int) -> list[dict[str, torch.Tensor]]:
    """The four detection outputs (``boxes``, ``scores``, ``labels``, ``batch_index``, as arrays or tensors)
    -> one ``{"boxes", "scores", "labels"}`` dict of tensors per image, as a detector's eval-mode forward."""
    missing = [k for k in ("boxes", "scores", "labels", "batch_index") if k not in outputs]
    if missing:
        raise ValueError(f"detections_per_image: expected the outputs of a graph exported with post-processing, "
                         f"missing {missing} (got {sorted(outputs)})")
    t = {k: torch.as_tensor(np.asarray(outputs[k])) for k in ("boxes", "scores", "labels", "batch_index")}
    return [{k: t[k][t["batch_index"] == i] for k in ("boxes", "scores", "labels")} for i in range(batch)]


def detection_difference(ours: dict, theirs: dict) -> float:
    """How far two detection sets of one image (``{"boxes", "scores", "labels"}``) are apart: the largest
    difference in score or in box coordinate, the latter relative to the coordinate (at least 1 px),
    over detections paired with one of the same label by a minimum-cost matching (so two of equal score
    listed in swapped order still pair up); ``inf`` when the counts differ or a label has no partner."""
    from scipy.optimize import linear_sum_assignment

    if ours["boxes"].shape[0] != theirs["boxes"].shape[0]:
        return float("inf")
    if ours["boxes"].shape[0] == 0:
        return 0.0
    a = {k: torch.as_tensor(ours[k]).double() for k in ("boxes", "scores")}
    b = {k: torch.as_tensor(theirs[k]).double() for k in ("boxes", "scores")}
    scale = torch.maximum(a["boxes"][:, None].abs(), b["boxes"][None].abs()).clamp(min=1.0)      # (N, N, 4)
    cost = torch.maximum(((a["boxes"][:, None] - b["boxes"][None]).abs() / scale).amax(dim=2),
                         (a["scores"][:, None] - b["scores"][None]).abs())
    same = torch.as_tensor(ours["labels"])[:, None] == torch.as_tensor(theirs["labels"])[None]
    cost = torch.where(same, cost, torch.full_like(cost, float("inf")))
    rows, cols = linear_sum_assignment(torch.nan_to_num(cost, posinf=1e30).numpy())
    return float(cost[rows, cols].max())


class OnnxDetector:
    """An exported detector run by ONNX Runtime, called like the PyTorch one in eval mode.

    ``OnnxDetector(exported_or_path)(images Tensor[B, 3, H, W])`` returns, for a graph with
    post-processing, one ``{"boxes", "scores", "labels"}`` dict per image; otherwise
    ``{output name: Tensor}`` of the raw outputs. ``run(images)`` gives the raw arrays by name.
    """

    def __init__(self, model, *, threads: Optional[int] = None):
        self.session = ort_session(model, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, images) -> dict[str, np.ndarray]:
        array = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images,
                                                                                                          np.float32)
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: array})))

    def __call__(self, images):
        out = self.run(images)
        if "batch_index" in out:
            return detections_per_image(out, int(images.shape[0]))
        return {k: torch.from_numpy(v) for k, v in out.items()}
