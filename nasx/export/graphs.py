"""Which module is traced to export a detector: its export graph.

Detectors of a registered class (or a subclass: every NAS-FCOS decoder is an ``FCOS``, every
SM-NAS model a ``TwoStageDetector``, an adapted network an ``SSDLite``) get the graph written
for their family (:data:`EXPORT_GRAPHS`). Any other ``nn.Module`` detector is exported
generically: with post-processing, its own eval-mode ``forward(images)`` (which must return nasx's
per-image ``{"boxes", "scores", "labels"}`` dicts and trace under ``torch.export``); without, its
head's raw outputs when it has ``backbone``, ``neck`` and ``head``. A new detector family whose
inference branches on data-dependent counts registers its own graph with
:func:`register_export_graph`.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from nasx.export.errors import ExportError
from nasx.export.one_stage import DETECTION_OUTPUTS, ONE_STAGE_GRAPHS, RawHeadGraph
from nasx.export.two_stage import TwoStageGraph
from nasx.models.detectors.two_stage import TwoStageDetector

__all__ = ["EXPORT_GRAPHS", "ForwardGraph", "export_graph", "register_export_graph"]

# detector class -> factory(model, postprocess) -> graph module with ``output_names``.
EXPORT_GRAPHS: dict[type, Callable[[nn.Module, bool], nn.Module]] = {**ONE_STAGE_GRAPHS,
                                                                       TwoStageDetector: TwoStageGraph}


def register_export_graph(detector_class: type, factory: Callable[[nn.Module, bool], nn.Module]) -> None:
    """Export detectors of ``detector_class`` (and its subclasses) through ``factory(model, postprocess)``:
    a module whose ``forward(images)`` returns a tensor or a tuple of tensors, with attributes
    ``postprocess`` (bool) and ``output_names`` (a list, or None for ``output_<i>``)."""
    if not isinstance(detector_class, type) or not callable(factory):
        raise TypeError(f"register_export_graph: expected a class and a callable, got {detector_class!r} and "
                        f"{factory!r}")
    EXPORT_GRAPHS[detector_class] = factory


def detections_output(per_image: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image (boxes, scores, labels) -> the four flat outputs, with each detection's image index."""
    index = [torch.full_like(labels, i) for i, (_, _, labels) in enumerate(per_image)]
    return (torch.cat([b for b, _, _ in per_image]), torch.cat([s for _, s, _ in per_image]),
            torch.cat([lab for _, _, lab in per_image]), torch.cat(index))


class ForwardGraph(nn.Module):
    """A detector's own eval-mode ``forward(images)``, its per-image dicts flattened into the four
    detection outputs (a forward returning tensors is passed through, its outputs named ``output_<i>``
    by the exporter). Its Python loop over the images fixes the batch."""

    postprocess = True
    output_names = list(DETECTION_OUTPUTS)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor):
        out = self.model(images)
        if isinstance(out, (list, tuple)) and out and all(isinstance(o, dict) for o in out):
            missing = [k for k in ("boxes", "scores", "labels") if k not in out[0]]
            if missing:
                raise ExportError(f"{type(self.model).__name__}: expected its eval-mode forward to return "
                                  f"{{'boxes', 'scores', 'labels'}} per image, got keys {sorted(out[0])}")
            return detections_output([(o["boxes"], o["scores"], o["labels"]) for o in out])
        return out


def export_graph(model: nn.Module, postprocess: bool) -> nn.Module:
    """The module to trace for ``model``: its family's graph, or a generic one (see the module docs)."""
    for cls in type(model).__mro__:
        if cls in EXPORT_GRAPHS:
            return EXPORT_GRAPHS[cls](model, postprocess)
    if postprocess:  # traced on a copy: a forward may cache tensors (anchors per size) that would stay fake
        return ForwardGraph(copy.deepcopy(model))
    if all(isinstance(getattr(model, n, None), nn.Module) for n in ("backbone", "neck", "head")):
        return RawHeadGraph(model)
    raise ExportError(f"{type(model).__name__} cannot be exported without post-processing: nasx has no export graph "
                      f"for it and it lacks the backbone, neck and head modules whose raw outputs would be exported; "
                      f"register one with nasx.export.register_export_graph, or export with post-processing")
