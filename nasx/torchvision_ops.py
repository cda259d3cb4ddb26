"""Run torchvision's detection models (and any code calling ``torchvision.ops``) on nasx's kernels.

    import nasx.torchvision_ops
    with nasx.torchvision_ops.use_nasx_ops():      # or nasx.torchvision_ops.enable() for the process
        detections = model(images)                 # e.g. torchvision.models.detection.fasterrcnn_resnet50_fpn

While routed, these torchvision names call nasx:

* ``ops.nms``, ``ops.batched_nms``, ``ops.box_iou``, ``ops.generalized_box_iou`` -> the nasx.ops functions
  of the same names;
* ``ops.roi_align`` (so ``RoIAlign``, and each level of ``MultiScaleRoIAlign``, which keeps torchvision's
  level assignment) -> :func:`nasx.ops.roi_align`;
* ``ops.deform_conv2d`` (so ``DeformConv2d``) -> :func:`nasx.ops.deform_conv2d`;
* ``ops.sigmoid_focal_loss`` -> :func:`nasx.ops.sigmoid_focal_loss`;
* ``models.detection._utils.Matcher`` (and ``SSDMatcher``, through it) -> :func:`nasx.ops.match_anchors`
  on the boxes of the IoU matrix it is given.

torchvision's modules reach these by name in several places (``from torchvision.ops import boxes as
box_ops`` then ``box_ops.batched_nms``; ``from ...ops import sigmoid_focal_loss`` in retinanet.py and
fcos.py; ``roi_align`` imported into poolers.py and roi_heads.py; ``rpn.box_similarity =
box_ops.box_iou`` bound when a model is built). Routing therefore imports ``torchvision.ops`` and
``torchvision.models.detection``, replaces every attribute of every loaded ``torchvision`` module that
is one of the functions above, sets ``Matcher.__call__``, and makes the ``box_similarity`` of
``RegionProposalNetwork`` / ``RoIHeads`` instances read nasx's IoU (a class-level descriptor, so
models built before the switch are routed too). Leaving restores every attribute to the object it
held before (or removes it), also when the block raises.

The Matcher gets only the IoU matrix; when it is the matrix the routed ``box_iou`` has just returned
(same tensor, not modified since), nasx's ``match_anchors`` computes the matches from the two box
sets, with torchvision's labels (-1 below ``low_threshold``, -2 between), ``allow_low_quality_matches``
and ties -- the same output. Any other matrix goes to torchvision's own ``Matcher.__call__``.

Inputs nasx's ops do not take go to torchvision's own function, so routing never makes a working
call fail: rotated or integer boxes and boxes that need a gradient (``box_iou``,
``generalized_box_iou``), floating-point category indices (``batched_nms``), a negative ``gamma``
(``sigmoid_focal_loss``).

Scope and limits:

* **Process-wide, not thread-safe.** The switch replaces module attributes: other threads see the
  routed ops while it is on, and entering or leaving it while another thread runs torchvision code
  races with that code. Blocks nest (reentrant): routing ends when the outermost ``use_nasx_ops()``
  exits and ``enable()`` is not in force. The Matcher's record of the last IoU is per thread.
* Code that bound a torchvision function to its own name before routing (``from torchvision.ops
  import nms`` in your module) keeps torchvision's: only torchvision's own modules are patched.
  A torchvision module first imported while routed, and binding one by name, keeps nasx's after.
* ``torch.jit.script`` of a model while routed compiles nasx's ops into it (they stay after the
  switch is off); its Matcher then runs torchvision's algorithm. Under ``torch.compile`` the
  Matcher is torchvision's too (the record of the last IoU is not traced).
* torchvision is imported only when routing starts; nasx itself never requires it.
"""
import sys
import threading
import weakref
from contextlib import contextmanager
from typing import Optional, Tuple

import torch
from torch import Tensor

import nasx.ops

__all__ = ["use_nasx_ops", "enable", "disable", "is_enabled"]

_MISSING = object()
_lock = threading.RLock()
_depth = 0  # open use_nasx_ops() blocks
_enabled = False  # enable() in force
_saved: list = []  # (owner, attribute, previous value or _MISSING), in patch order; non-empty while routed
_tv: dict = {}  # torchvision's own functions by name, while routed (the fallbacks)


# -- the routed functions -------------------------------------------------------------------------
# TorchScript-compatible (a model scripted while routed compiles them); the fallbacks to torchvision
# are eager-only (TorchScript skips ``if not torch.jit.is_scripting()`` blocks).


def _needs_grad(a: Tensor, b: Tensor) -> bool:
    return torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)


def _nasx_takes_boxes(a: Tensor, b: Tensor) -> bool:
    floats = (a.is_floating_point() or a.is_quantized) and (b.is_floating_point() or b.is_quantized)
    return floats and not _needs_grad(a, b)


def routed_box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """``torchvision.ops.box_iou`` while routed: nasx's, remembered for the Matcher."""
    if not torch.jit.is_scripting():
        if fmt not in nasx.ops.BOX_FORMATS or not _nasx_takes_boxes(boxes1, boxes2):
            return _tv["box_iou"](boxes1, boxes2, fmt)
    iou = nasx.ops.box_iou(boxes1, boxes2, fmt)
    if not torch.jit.is_scripting():
        if fmt == "xyxy" and iou.dim() == 2 and _saved and not torch.compiler.is_compiling():
            _last_iou.remember(boxes1, boxes2, iou)
    return iou


def routed_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``torchvision.ops.generalized_box_iou`` while routed."""
    if not torch.jit.is_scripting():
        if not _nasx_takes_boxes(boxes1, boxes2):
            return _tv["generalized_box_iou"](boxes1, boxes2)
    return nasx.ops.generalized_box_iou(boxes1, boxes2)


def routed_batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms`` while routed."""
    if not torch.jit.is_scripting():
        if idxs is not None and idxs.is_floating_point() and boxes.numel() > 0:
            return _tv["batched_nms"](boxes, scores, idxs, iou_threshold)
    return nasx.ops.batched_nms(boxes, scores, idxs, iou_threshold)


def routed_sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"
) -> Tensor:
    """``torchvision.ops.sigmoid_focal_loss`` while routed."""
    if not torch.jit.is_scripting():
        if gamma < 0:
            return _tv["sigmoid_focal_loss"](inputs, targets, alpha, gamma, reduction)
    return nasx.ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)


class _LastIoU(threading.local):
    """The last IoU matrix the routed box_iou returned on this thread, and its two box sets."""

    matrix = None  # weakref to the matrix: the record never keeps it alive

    def remember(self, boxes1: Tensor, boxes2: Tensor, iou: Tensor) -> None:
        self.matrix = weakref.ref(iou)
        self.boxes = (boxes1, boxes2)
        self.versions = (iou._version, boxes1._version, boxes2._version)

    def boxes_of(self, matrix: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        """(boxes1, boxes2) if ``matrix`` is that matrix and nothing was modified in place since."""
        if self.matrix is None or self.matrix() is not matrix:
            return None
        b1, b2 = self.boxes
        if (matrix._version, b1._version, b2._version) != self.versions:
            return None
        return b1, b2

    def clear(self) -> None:
        self.matrix = self.boxes = self.versions = None


_last_iou = _LastIoU()


def routed_matcher_call(self, match_quality_matrix: Tensor) -> Tensor:
    """``Matcher.__call__`` while routed: nasx's ``match_anchors`` when the boxes behind the matrix
    are known, torchvision's own call otherwise (and always in TorchScript)."""
    if not torch.jit.is_scripting():
        boxes = None if torch.compiler.is_compiling() else _last_iou.boxes_of(match_quality_matrix)
        if boxes is not None and match_quality_matrix.numel() > 0 and _is_plain_matcher(self):
            gt_boxes, anchors = boxes
            matched, _ = nasx.ops.match_anchors(
                anchors, gt_boxes, self.high_threshold, self.low_threshold, self.allow_low_quality_matches
            )
            return matched
        return _tv["Matcher.__call__"](self, match_quality_matrix)
    # TorchScript: torchvision's Matcher, written with the same operations.
    if match_quality_matrix.numel() == 0:
        if match_quality_matrix.shape[0] == 0:
            raise ValueError("No ground-truth boxes available for one of the images during training")
        raise ValueError("No proposal boxes available for one of the images during training")
    best, matches = match_quality_matrix.max(dim=0)
    all_matches = matches.clone()
    matches[best < self.low_threshold] = self.BELOW_LOW_THRESHOLD
    matches[(best >= self.low_threshold) & (best < self.high_threshold)] = self.BETWEEN_THRESHOLDS
    if self.allow_low_quality_matches:
        self.set_low_quality_matches_(matches, all_matches, match_quality_matrix)
    return matches


# TorchScript compiles a class's methods found under their own __name__ in the class.
routed_matcher_call.__name__ = "__call__"


def _is_plain_matcher(matcher) -> bool:
    """A Matcher whose labels and low-quality rule are torchvision's own (what match_anchors computes)."""
    return (
        matcher.BELOW_LOW_THRESHOLD == -1
        and matcher.BETWEEN_THRESHOLDS == -2
        and type(matcher).set_low_quality_matches_ is _tv["Matcher.set_low_quality_matches_"]
    )


class _RoutedBoxSimilarity:
    """``box_similarity`` of RegionProposalNetwork and RoIHeads while routed.

    Their ``__init__`` binds ``box_ops.box_iou`` into the instance; as a data descriptor on the class,
    this reads that binding as the routed box_iou, and stores torchvision's function when the routed
    one is assigned (a model built while routed is the same object as one built outside).
    """

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        try:
            fn = obj.__dict__["box_similarity"]
        except KeyError:
            raise AttributeError("box_similarity") from None
        return routed_box_iou if fn is _tv["box_iou"] else fn

    def __set__(self, obj, value):
        obj.__dict__["box_similarity"] = _tv["box_iou"] if value is routed_box_iou else value


# -- patching ------------------------------------------------------------------------------------
def _torchvision_targets():
    """({name: (torchvision's function, its replacement)}, Matcher, the classes with a box_similarity)."""
    try:
        import torchvision.models.detection  # noqa: F401  (imports every detection module)
        import torchvision.models.detection._utils as det_utils
        import torchvision.models.detection.roi_heads as roi_heads
        import torchvision.models.detection.rpn as rpn
        import torchvision.ops.boxes as boxes
    except ImportError as e:
        raise ImportError(f"nasx.torchvision_ops routes torchvision's ops and needs torchvision: {e}") from e
    ops = sys.modules  # torchvision.ops.roi_align etc. are shadowed by the functions of the same name
    functions = {
        "nms": (boxes.nms, nasx.ops.nms),
        "batched_nms": (boxes.batched_nms, routed_batched_nms),
        "box_iou": (boxes.box_iou, routed_box_iou),
        "generalized_box_iou": (boxes.generalized_box_iou, routed_generalized_box_iou),
        "roi_align": (ops["torchvision.ops.roi_align"].roi_align, nasx.ops.roi_align),
        "deform_conv2d": (ops["torchvision.ops.deform_conv"].deform_conv2d, nasx.ops.deform_conv2d),
        "sigmoid_focal_loss": (ops["torchvision.ops.focal_loss"].sigmoid_focal_loss, routed_sigmoid_focal_loss),
    }
    return functions, det_utils.Matcher, (rpn.RegionProposalNetwork, roi_heads.RoIHeads)


def _set(owner, name: str, value, saved: list) -> None:
    saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, value)


def _restore(saved: list) -> None:
    for owner, name, previous in reversed(saved):
        if previous is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, previous)
    saved.clear()
    _last_iou.clear()


def _route() -> None:
    functions, matcher, similarity_owners = _torchvision_targets()
    for name, (original, _) in functions.items():
        _tv[name] = original
    _tv["Matcher.__call__"] = matcher.__dict__["__call__"]
    _tv["Matcher.set_low_quality_matches_"] = matcher.set_low_quality_matches_
    replacement = {id(original): routed for original, routed in functions.values()}
    originals = {id(original): original for original, _ in functions.values()}
    saved: list = []
    try:
        for module_name, module in sorted(sys.modules.items()):
            if module is None or not (module_name == "torchvision" or module_name.startswith("torchvision.")):
                continue
            for attr, value in list(vars(module).items()):
                if originals.get(id(value), _MISSING) is value:
                    _set(module, attr, replacement[id(value)], saved)
        _set(matcher, "__call__", routed_matcher_call, saved)
        for owner in similarity_owners:
            _set(owner, "box_similarity", _RoutedBoxSimilarity(), saved)
    except BaseException:
        _restore(saved)
        raise
    _saved.extend(saved)


def _update() -> None:
    """Route or restore so that routing is on exactly when a block is open or enable() is in force."""
    want = _enabled or _depth > 0
    if want and not _saved:
        _route()
    elif not want and _saved:
        _restore(_saved)
        _tv.clear()


@contextmanager
def use_nasx_ops():
    """Route torchvision's ops to nasx's inside the block (see the module docs); nests."""
    global _depth
    with _lock:
        _depth += 1
        try:
            _update()
        except BaseException:
            _depth -= 1
            raise
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            _update()


def enable() -> None:
    """Route torchvision's ops to nasx's from now on, for the whole process, until :func:`disable`."""
    global _enabled
    with _lock:
        _enabled = True
        try:
            _update()
        except BaseException:
            _enabled = False
            raise


def disable() -> None:
    """Undo :func:`enable`; open ``use_nasx_ops()`` blocks stay routed until they exit."""
    global _enabled
    with _lock:
        _enabled = False
        _update()


def is_enabled() -> bool:
    """Whether torchvision's ops are routed to nasx's now."""
    return bool(_saved)
