"""``export_onnx``: a detector to an ONNX model, through torch's dynamo exporter.

Why the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch's default): it traces
with ``torch.export``, where nasx's ops keep their identity (their fake kernels give shapes,
including NMS's data-dependent length) and are translated by
:func:`nasx.export.translations.translation_table` into standard ONNX ops. The TorchScript
exporter (``dynamo=False``) is deprecated, has no ``custom_translation_table`` and would need a
symbolic function per op registered globally. Translations start at opset 18 (torch's own);
DeformConv needs 19; the default is torch's, 20.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from nasx.atomic import write_bytes
from nasx.export.errors import ExportError, require
from nasx.export.graphs import ForwardGraph, export_graph

__all__ = ["DEFAULT_OPSET", "ExportedModel", "OPSETS", "export_onnx"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20
OPSETS = range(18, 24)        # torch's exporter translates from 18; 23 is its newest
_INPUT = "images"
# A dynamic export traces at least this size: torch.export fixes any dimension that is 1 on the example
# (a 1 x 1 coarsest level, the batch of one), so every level of every detector must be >= 2 cells:
# stride-128 levels (FCOS, RetinaNet P7) and SSDLite's sixth map (input / 512) are 8 and 2 cells here.
DYNAMIC_EXAMPLE = 1024
# The ranges the trace assumes (it needs finite ones, see _dynamic_shapes); the ONNX graph checks none.
DYNAMIC_MAX = {"batch": 256, "height": 8192, "width": 8192}
_PROTO_LIMIT = 2 ** 31 - 2 ** 24  # protobuf's 2 GiB, less room for the graph: larger weights go to a .data file


@dataclass
class ExportedModel:
    """An exported detector.

    Attributes:
        proto: the ``onnx.ModelProto`` with its weights (None past 2 GiB of weights: they are in the file
            beside ``path``; ``onnx.load(path)`` reads both).
        input_names / output_names: the graph's (one input, ``images`` Tensor[B, 3, H, W] float32).
        opset: the default-domain opset.
        postprocess: whether the detections (NMS included) are in the graph, or the raw outputs.
        dynamic: the input dimensions left symbolic, e.g. ``{2: "height", 3: "width"}``.
        path: where it was saved, if it was.
    """

    proto: object
    input_names: list[str]
    output_names: list[str]
    opset: int
    postprocess: bool
    dynamic: dict[int, str] = field(default_factory=dict)
    path: Optional[Path] = None

    def serialized(self) -> bytes:
        return self.proto.SerializeToString()


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _has_deform_conv(model: nn.Module) -> bool:
    from nasx.ops import DeformConv2d

    return any(isinstance(m, DeformConv2d) for m in model.modules())


def _check_arguments(model: nn.Module, image_size, batch: int, opset: int) -> tuple[int, int]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx: expected an nn.Module detector, got {type(model).__name__}")
    if opset not in OPSETS:
        raise ExportError(f"opset {opset}: expected {OPSETS.start}..{OPSETS.stop - 1} (torch's ONNX exporter "
                          f"translates from opset {OPSETS.start}; newer ones it does not know)")
    if opset < 19 and _has_deform_conv(model):
        raise ExportError(f"opset {opset}: {type(model).__name__} has deformable convolutions, and ONNX's "
                          f"DeformConv exists from opset 19; export with opset >= 19")
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"export_onnx: expected image_size as (height, width), got {image_size!r}") from None
    if h < 1 or w < 1 or batch < 1:
        raise ValueError(f"export_onnx: expected a positive image size and batch, got {image_size} and {batch}")
    if _model_device(model).type == "meta":
        raise ExportError(f"{type(model).__name__} has its weights on the meta device (shapes only); build or load it "
                          f"on a real device to export it")
    return h, w


def _dynamic_shapes(dynamic: bool, batch: bool) -> tuple[Optional[dict], dict[int, str]]:
    """torch.export dims of ``images``: height and width, and the batch unless the graph loops over the
    images in Python (a detector's own forward: :class:`~nasx.export.graphs.ForwardGraph`)."""
    if not dynamic:
        return None, {}
    from torch.export import Dim

    axes = {0: "batch", 2: "height", 3: "width"} if batch else {2: "height", 3: "width"}
    # Finite ranges: with int64's, the bounds torch.export derives for data-dependent sizes (products of
    # batch, height, width and counts) overflow int64 and its range asserts cannot be written to ONNX.
    # DYNAMIC (not a named Dim) lets torch.export narrow the lower end to what the detector needs.
    dims = {axis: Dim.DYNAMIC(max=DYNAMIC_MAX[name]) for axis, name in axes.items()}
    return {_INPUT: dims}, axes


def _explain(model: nn.Module, error: BaseException) -> str:
    """One line saying why torch.export or the ONNX translation failed, read from the exception chain
    (torch wraps the cause in a page of advice about its exporter)."""
    from nasx.export.translations import UNTRANSLATED

    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    name = type(model).__name__
    for op, why in UNTRANSLATED.items():
        if re.search(rf"nasx(\.|::){op}\b", text):
            return f"{name} calls nasx.ops.{op}, which has no ONNX translation: {why}"
    guard = re.search(r"data-dependent expression (.+?) \(unhinted", text)
    if guard:
        where = re.search(r"Caused by: \((.+?)\)", text)
        return (f"{name}'s inference branches on a value known only at run time ({guard.group(1)}"
                f"{' at ' + where.group(1) if where else ''}), which a graph cannot hold; register an export graph "
                f"for it (nasx.export.register_export_graph) or export with postprocess=False (raw head outputs)")
    violation = re.search(r"Not all values of (.+?) satisfy the generated guard (.+?)(\n|$)", text)
    if violation:
        return (f"{name} does not work at every input size: {violation.group(1)} must satisfy "
                f"{violation.group(2)}; export at a fixed size (dynamic=False)")
    last = chain[-1]
    detail = str(last).strip().splitlines()[0] if str(last).strip() else ""
    return f"{name} could not be exported ({type(last).__name__}: {detail})"


def export_onnx(model: nn.Module, path=None, *, image_size: Sequence[int] = (320, 320), batch: int = 1,
                opset: int = DEFAULT_OPSET, dynamic: bool = False, postprocess: bool = True,
                optimize: bool = True, metadata: Optional[dict] = None) -> ExportedModel:
    """Export a detector to ONNX; ``onnx.checker`` (full check) passes on the result.

    Args:
        model: any detector nasx builds (FCOS / NAS-FCOS, RetinaNet, SSDLite / adapted networks,
            Faster / Cascade R-CNN with RPN or GA-RPN, SM-NAS models) or another ``nn.Module``
            detector (see :mod:`nasx.export.graphs`). Exported in eval mode; its mode is restored.
        path: where to save the ``.onnx`` file (None: only return it).
        image_size: (H, W) of the example input; with ``dynamic`` any size works at run time.
        batch: images per call; with ``dynamic`` any number works at run time.
        opset: default-domain ONNX opset, 18-23 (19+ for deformable convolutions).
        dynamic: leave batch, height and width symbolic (only height and width for a detector exported
            through its own forward, whose Python loop over the images fixes the batch).
        postprocess: include the detections (top-k, decoding, NMS as ONNX ``NonMaxSuppression``):
            outputs ``boxes [D, 4], scores [D], labels [D] int64, batch_index [D] int64``, the detections
            of each image by decreasing score. Without it, the head's raw outputs level by level.
        optimize: run onnxscript's graph optimizer (constant folding, shape arithmetic, the decomposed
            norms fused back): a quarter of the nodes and, measured in ONNX Runtime on CPU, SSDLite 2x
            and FCOS 1.3x faster than the unoptimized graph, whose session ONNX Runtime optimizes too.
            ``False`` only saves export time (tests).
        metadata: extra ``metadata_props`` of the model (string values), e.g. the build spec.

    Returns:
        :class:`ExportedModel`. Raises :class:`ExportError` naming what cannot be exported and why.
    """
    onnx, _ = require("onnx", "onnxscript")
    from nasx.export.translations import translation_table

    h, w = _check_arguments(model, image_size, batch, opset)
    was_training = model.training
    graph = export_graph(model, postprocess)
    batch_loop = isinstance(graph, ForwardGraph)
    shapes, axes = _dynamic_shapes(dynamic, not batch_loop)
    if dynamic:  # trace where no size is 0 or 1, which torch.export would specialise (see DYNAMIC_EXAMPLE)
        h, w = max(h, DYNAMIC_EXAMPLE), max(w, DYNAMIC_EXAMPLE)
        batch = batch if batch_loop else max(batch, 2)
    images = torch.rand(batch, 3, h, w, device=_model_device(model))
    # torch.export prints the partial graph of a failed trace to stderr: kept for the debug log instead.
    printed = io.StringIO()
    try:
        graph.eval()  # the model's inference, also in a copy the graph may hold; restored below
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stderr(printed):
            warnings.simplefilter("ignore")  # the exporter's own advice about its internals, not the user's model
            program = torch.onnx.export(graph, (images,), dynamo=True, opset_version=opset, input_names=[_INPUT],
                                        dynamic_shapes=shapes, custom_translation_table=translation_table(),
                                        verbose=False, optimize=optimize)
    except ExportError:
        raise
    except Exception as e:  # torch.export / translation failures: say which part and why
        log.debug("export of %s failed; the exporter printed:\n%s", type(model).__name__, printed.getvalue())
        raise ExportError(_explain(model, e)) from e
    finally:
        model.train(was_training)
    if axes and hasattr(program, "_rename_dynamic_axes"):  # "batch", "height", "width" instead of s12, s34
        program._rename_dynamic_axes({_INPUT: axes})
    count = len(program.model.graph.outputs)
    names = graph.output_names if graph.output_names and len(graph.output_names) == count else \
        [f"output_{i}" for i in range(count)]
    for value, name in zip(program.model.graph.outputs, names):
        value.name = name
    props = {"producer": "nasx", "detector": type(model).__name__, "postprocess": str(bool(graph.postprocess)),
             **{str(k): str(v) for k, v in (metadata or {}).items()}}
    program.model.metadata_props.update(props)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > _PROTO_LIMIT
    if large and path is None:
        raise ExportError(f"{type(model).__name__} has more weights than one ONNX protobuf holds (2 GiB); give a path, "
                          f"so that they are written beside it")
    result = ExportedModel(proto=None if large else program.model_proto, input_names=[_INPUT],
                           output_names=list(names), opset=opset, postprocess=bool(graph.postprocess), dynamic=axes)
    if path is not None:
        result.path = Path(path)
        if large:  # weights in <path>.data beside the graph
            result.path.parent.mkdir(parents=True, exist_ok=True)
            program.save(os.fspath(result.path), external_data=True)
        else:  # temp file + rename: an interrupted export never leaves half a model under the name
            write_bytes(result.path, result.serialized())
    try:
        onnx.checker.check_model(os.fspath(result.path) if large else result.proto, full_check=True)
    except Exception as e:
        raise ExportError(f"{type(model).__name__}: the exported graph fails onnx.checker ({e})") from e
    log.info("exported %s (%s post-processing, opset %d) with outputs %s", type(model).__name__,
             "with" if graph.postprocess else "without", opset, names)
    return result
