"""Whole detectors from a backbone encoding and a few numbers: what ``nasx info``, ``nasx train``
and the searches build. Models never parse strings; this is where strings become modules.

``build_detector("fcos", backbone="resnet50", num_classes=80)``; the builders are plain
functions in :data:`DETECTORS`, keyword-only, so adding a detector is adding one function.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from nasx.models.detectors.anchors import AnchorGenerator, DefaultBoxGenerator
from nasx.models.detectors.fcos import FCOS
from nasx.models.detectors.retinanet import RetinaNet
from nasx.models.detectors.roi_heads import RoIHeads
from nasx.models.detectors.roi_pool import MultiLevelRoIAlign
from nasx.models.detectors.rpn import RPN, RPNHead
from nasx.models.detectors.ssdlite import SSDLite, SSDLiteFeatures
from nasx.models.detectors.two_stage import TwoStageDetector
from nasx.models.heads.fcos_head import FCOSHead
from nasx.models.heads.retina_head import RetinaHead
from nasx.models.heads.roi_box_head import BoxPredictor, TwoFCHead
from nasx.models.heads.separable_head import SeparableRetinaHead
from nasx.models.heads.ssdlite_head import HEAD_STYLES, SSDLiteHead
from nasx.models.necks import FPN, SSDLiteExtra
from nasx.models.necks.fpn import sm_nas_fpn_levels
from nasx.models.necks.fpnlite import FPNLite
from nasx.spaces.mbconv import NAMED as MB_NAMED, MBConvEncoding
from nasx.spaces.residual import ResidualEncoding

__all__ = ["DETECTORS", "FPNLITE_MOBILENET_V2", "build_backbone", "build_cascade_rcnn", "build_detector",
           "build_faster_rcnn", "build_fcos", "build_fpnlite", "build_from_spec", "build_nas_fcos", "build_retinanet",
           "build_ssdlite", "fpnlite_anchors", "ssdlite_on"]

RPN_KINDS = ("rpn", "ga")


def build_backbone(encoding: str, *, norm: str = "bn", out_features=("c3", "c4", "c5"),
                   stem: str | None = None) -> nn.Module:
    """A residual (``bottleneck_64_...``, ``resnet50``) or MBConv (``mb32_...``, ``mobilenet_v2``) backbone.
    ``stem`` (residual only): ``"resnet"`` (7x7 conv + max-pool, the default) or ``"sm_nas"`` (two 3x3/2 convs)."""
    text = str(encoding).strip()
    is_mb = text.startswith("mb") or text in MB_NAMED
    if is_mb:
        if stem is not None:
            raise ValueError(f"stem applies to residual backbones; {text!r} is an MBConv backbone")
        return MBConvEncoding.parse(text).build(norm=norm, out_features=tuple(out_features))
    return ResidualEncoding.parse(text).build(norm=norm, out_features=tuple(out_features), stem=stem or "resnet")


def build_fcos(*, backbone: str, num_classes: int, fpn_channels: int = 256, norm: str = "bn",
               head_norm: str | None = "gn", head_convs: int = 4, box_activation: str = "relu", **kwargs) -> FCOS:
    """FCOS with an FPN (P3-P5 from C3-C5, P6/P7 from P5) and the GN head of ``head_convs`` convs.

    ``norm`` is the backbone's norm (``"gn_ws"`` to train from scratch, SM-NAS §3.3);
    ``box_activation``: see :class:`~nasx.models.heads.fcos_head.FCOSPredictor`; other keyword
    arguments go to :class:`FCOS` (e.g. ``size_ranges``, ``score_thresh``).
    """
    trunk = build_backbone(backbone, norm=norm)
    neck = FPN(in_channels={n: trunk.channels[n] for n in ("c3", "c4", "c5")}, out_channels=fpn_channels,
               extra_levels=2, extra_from="p5")
    head = FCOSHead(in_channels=fpn_channels, num_classes=num_classes, num_levels=5, num_convs=head_convs,
                    norm=head_norm, box_activation=box_activation)
    return FCOS(backbone=trunk, neck=neck, head=head, num_classes=num_classes, **kwargs)


def build_retinanet(*, backbone: str, num_classes: int, fpn_channels: int = 256, norm: str = "bn",
                    head_norm: str | None = None, head_convs: int = 4, extra_from: str = "c5",
                    **kwargs) -> RetinaNet:
    """RetinaNet with an FPN (P3-P5 from C3-C5, P6 from ``extra_from``: C5 as in the paper, or P5),
    9 anchors per location (3 scales x 3 aspect ratios, sizes 32-512) and the 4-conv head
    (no norm as in the paper; ``head_norm="gn"`` for the GN variant).

    With ``resnet50`` and 80 classes: 37.97M parameters with P6 from C5, as in the paper. torchvision's ``retinanet_resnet50_fpn`` (34.0M with 91 classes) takes P6
    from P5 and freezes the backbone's BN into buffers; ``extra_from="p5"`` builds it parameter for
    parameter otherwise. Other keyword arguments go to :class:`RetinaNet` (``reg_loss="giou"``, thresholds).
    """
    trunk = build_backbone(backbone, norm=norm)
    neck = FPN(in_channels={n: trunk.channels[n] for n in ("c3", "c4", "c5")}, out_channels=fpn_channels,
               extra_levels=2, extra_from=extra_from)
    anchors = AnchorGenerator()
    head = RetinaHead(in_channels=fpn_channels, num_anchors=anchors.num_anchors, num_classes=num_classes,
                      num_convs=head_convs, norm=head_norm)
    return RetinaNet(backbone=trunk, neck=neck, head=head, anchor_generator=anchors, num_classes=num_classes,
                     **kwargs)


# mmdet's SSD default boxes per level (4/6/6/6/4/4), the layout of FNA's published SSDLite counts.
MMDET_SSD_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))


def build_ssdlite(*, backbone: str = "mobilenet_v2", num_classes: int, norm: str = "bn",
                  extra_channels: tuple[int, ...] = (512, 256, 256, 128), tap_expansion: bool = True,
                  head_style: str = "tf", fpn_channels: int | None = None, **kwargs) -> SSDLite:
    """SSDLite: the backbone's stride-16 map (the expansion of the first stride-32 block, see
    :class:`SSDLiteFeatures`) and stride-32 map, 4 extra maps, 3 + 5 x 6 default boxes per location.

    With ``mobilenet_v2`` the paper's SSDLite: 4.50M parameters and 0.80 GMACs at 320 x 320 for COCO's
    90 classes (the paper: 4.3M and 0.8B; the released TF model: 4.475M), 4.34M for 80.
    ``head_style="mmdet"``: FNA's head instead (mmdet's 4/6/6/6/4/4 default boxes, predictors without
    bias, see :data:`~nasx.models.heads.ssdlite_head.HEAD_STYLES`): 4.32M / 0.81 GMACs for 80 classes,
    and 4.63M / 0.88 on ``fna_ssdlite``, FNA's published 4.3M / 0.8B and 4.6M / 0.9B.
    ``fpn_channels`` exists only to give a clear error: SSDLite has no FPN.
    Other keyword arguments go to :class:`SSDLite`.
    """
    if fpn_channels is not None:
        raise ValueError(f"ssdlite has no FPN, so fpn_channels does not apply (got {fpn_channels})")
    trunk = build_backbone(backbone, norm=norm, out_features=("c4", "c5"))
    features = SSDLiteFeatures(backbone=trunk, tap_expansion=tap_expansion)
    return ssdlite_on(features, num_classes=num_classes, norm=norm, extra_channels=extra_channels,
                      head_style=head_style, **kwargs)


def ssdlite_on(features: nn.Module, *, num_classes: int, norm: str = "bn",
               extra_channels: tuple[int, ...] = (512, 256, 256, 128), head_style: str = "tf", **kwargs) -> SSDLite:
    """SSDLite's extra layers, default boxes and head on ``features`` (a module returning the stride-16
    and stride-32 maps ``{"c4", "c5"}`` with their ``channels``: :class:`SSDLiteFeatures`, or a super
    network)."""
    if head_style not in HEAD_STYLES:
        raise ValueError(f"head_style must be one of {HEAD_STYLES}, got {head_style!r}")
    neck = SSDLiteExtra(in_channels=features.channels, channels=extra_channels, norm=norm)
    levels = len(neck.out_channels)
    if head_style == "mmdet":
        if levels != len(MMDET_SSD_RATIOS):
            raise ValueError(f"head_style 'mmdet' has default boxes for {len(MMDET_SSD_RATIOS)} maps, got {levels}")
        boxes = DefaultBoxGenerator(num_levels=levels, level_ratios=MMDET_SSD_RATIOS)
    else:
        boxes = DefaultBoxGenerator(num_levels=levels)
    head = SSDLiteHead(in_channels=list(neck.out_channels.values()), num_anchors=boxes.num_anchors,
                       num_classes=num_classes, norm=norm, style=head_style)
    return SSDLite(backbone=features, neck=neck, head=head, box_generator=boxes, num_classes=num_classes, **kwargs)


# TF FPNLite's MobileNetV2 (ssd_mobilenet_v2_fpn_keras with use_depthwise): its last 1x1 conv has 256
# channels instead of 1280 (the feature extractor's "modified mobilenet config"), which is most of
# why the whole detector is smaller than MobileNetV2 itself.
FPNLITE_MOBILENET_V2 = MB_NAMED["mobilenet_v2"].rsplit("_", 1)[0] + "_256"


def fpnlite_anchors() -> AnchorGenerator:
    """FPNLite's anchors, TF's ``multiscale_anchor_generator`` (levels 3-7, ``anchor_scale`` 4, aspect
    ratios 1, 2, 1/2, 2 scales per octave): sizes 32-512 px on P3-P7, scales 1 and sqrt(2), 6 per location."""
    return AnchorGenerator(sizes=(32, 64, 128, 256, 512), strides=(8, 16, 32, 64, 128), scales=(1.0, 2 ** 0.5),
                           aspect_ratios=(0.5, 1.0, 2.0))


def build_fpnlite(*, backbone: str, num_classes: int, neck_width: int | None = None, neck_blocks=None,
                  head_convs: int = 4, norm: str = "bn", neck_norm: str = "gn", share_tower: bool = True,
                  fpn_channels: int | None = None, **kwargs) -> RetinaNet:
    """FPNLite (TF's ``ssd_mobilenet_v2_fpnlite_320x320``: "a mobile version of RetinaNet"), or NAS-EOD's
    detector when ``neck_blocks`` are given: the backbone's C3-C5, :class:`~nasx.models.necks.fpnlite.FPNLite`
    ``neck_width`` wide (default 128, TF's; P3-P7; P6, P7 by stride-2 separable convs from P5), the
    weight-shared separable head :class:`~nasx.models.heads.separable_head.SeparableRetinaHead`
    (``head_convs`` tower convs, one tower for boxes and classes), 6 anchors per location
    (:func:`fpnlite_anchors`), sigmoid focal loss.

    ``neck_blocks``: None for TF's FPNLite (sum merges); else NAS-EOD's searched neck: one MBConv block
    per level in top-down order (P5, P4, P3), each as text ``k<k>e<e>[se]`` or ``(kernel, expansion,
    se)``, with concat merges (see :mod:`nasx.models.necks.fpnlite`). ``norm`` is the backbone's norm,
    ``neck_norm`` the neck's and head's (GN as NAS-EOD's poster; TF uses BN, same parameter count).
    ``fpn_channels`` is another name of ``neck_width`` (the flag ``nasx info`` / ``nasx train`` give every
    detector). Other keyword arguments go to :class:`RetinaNet` (losses, thresholds; nasx's RetinaNet defaults).

    Published sizes (NAS-EOD's table): MobileNetV2-FPNLite 2.0M parameters / 1.5B "FLOPs" at @64 and
    2.2M / 2.0B at @128, FLOPs being 2 x MACs. With ``backbone=FPNLITE_MOBILENET_V2``, ``neck_width`` 64 or
    128 and TF's 91 class slots (COCO's 90 + background) this builds 2.00M / 0.72 GMACs and 2.17M / 0.94
    GMACs at 320 x 320: parameters to the count, MACs 5-6 % below the rounded published figures (see
    ``tests/test_published_costs.py``).
    """
    from nasx.spaces.nas_eod import parse_layer

    if fpn_channels is not None and neck_width is not None and fpn_channels != neck_width:
        raise ValueError(f"fpnlite: fpn_channels ({fpn_channels}) and neck_width ({neck_width}) name the same width; "
                         "give one")
    neck_width = neck_width or fpn_channels or 128   # TF's 320x320 model: 128
    trunk = build_backbone(backbone, norm=norm)
    blocks = None
    if neck_blocks is not None:
        blocks = []
        for b in neck_blocks:
            layer = parse_layer(b) if isinstance(b, str) else b
            blocks.append((layer.kernel, layer.expansion, layer.se) if hasattr(layer, "kernel") else tuple(layer))
    neck = FPNLite(in_channels={n: trunk.channels[n] for n in ("c3", "c4", "c5")}, out_channels=neck_width,
                   extra_levels=2, norm=neck_norm, blocks=blocks)
    anchors = fpnlite_anchors()
    head = SeparableRetinaHead(in_channels=neck_width, num_anchors=anchors.num_anchors, num_classes=num_classes,
                               num_levels=len(neck.out_names), num_convs=head_convs, norm=neck_norm,
                               share_tower=share_tower)
    return RetinaNet(backbone=trunk, neck=neck, head=head, anchor_generator=anchors, num_classes=num_classes, **kwargs)


def build_nas_fcos(*, backbone: str, num_classes: int, arch: str = "baseline", fpn_channels: int = 64,
                   norm: str = "gn", decoder_norm: str = "gn", box_activation: str = "relu", **kwargs) -> FCOS:
    """FCOS with a NAS-FCOS decoder: ``arch`` (the text of a
    :class:`~nasx.spaces.nas_fcos.NasFcosArch`, or ``"baseline"`` / ``"nas_fcos"``) built
    ``fpn_channels`` wide on the backbone's C3-C5. ``norm`` is the backbone's, ``decoder_norm`` the
    decoder's; ``box_activation``: see :class:`~nasx.models.heads.fcos_head.FCOSPredictor`. What
    ``nasx search nas-fcos`` trains and its checkpoints rebuild; other keyword arguments go to :class:`FCOS`.
    """
    from nasx.spaces.nas_fcos import NasFcosSpace

    trunk = build_backbone(backbone, norm=norm)
    space = NasFcosSpace(channels=fpn_channels, box_activation=box_activation)
    neck, head = space.build(arch, in_channels={n: trunk.channels[n] for n in ("c3", "c4", "c5")},
                             num_classes=num_classes, norm=decoder_norm)
    return FCOS(backbone=trunk, neck=neck, head=head, num_classes=num_classes, **kwargs)


def _build_rcnn(*, backbone: str, num_classes: int, stages: int, fpn_levels, fpn_channels: int, norm: str,
                stem: str | None, rpn: str, fc_channels: int, roi_size: int, rpn_settings: dict | None,
                **kwargs) -> TwoStageDetector:
    if rpn not in RPN_KINDS:
        raise ValueError(f"rpn must be one of {RPN_KINDS} ('ga': guided anchoring), got {rpn!r}")
    if fpn_levels is None:  # the original Faster R-CNN: RPN and RoIs on C4, 15 anchors of 32-512 px
        trunk = build_backbone(backbone, norm=norm, out_features=("c4",), stem=stem)
        neck, rpn_levels, roi_levels, channels = None, ["c4"], None, trunk.channels["c4"]
        strides, sizes, scales = (16,), (32.0,), (1.0, 2.0, 4.0, 8.0, 16.0)
    else:
        in_names, extra = sm_nas_fpn_levels(*fpn_levels)
        trunk = build_backbone(backbone, norm=norm, out_features=tuple(in_names), stem=stem)
        neck = FPN(in_channels={n: trunk.channels[n] for n in in_names}, out_channels=fpn_channels,
                   extra_levels=extra, extra_from="p5", extra_mode="pool")
        rpn_levels, channels = None, fpn_channels
        roi_levels = ["p" + n[1:] for n in in_names]  # pooled extra levels carry no RoIs (torchvision, mmdet)
        strides = tuple(neck.strides.values())
        sizes, scales = tuple(8.0 * s for s in strides), (1.0,)  # one size per level: 8 x stride
    if rpn == "ga":
        from nasx.models.detectors.ga_rpn import GARPN

        proposer = GARPN(in_channels=channels, strides=strides, **(rpn_settings or {}))
    else:
        # torchvision's anchors (corner-aligned, half sizes rounded): its proposals exactly.
        anchors = AnchorGenerator(sizes=sizes, strides=strides, scales=scales, offset=0.0, round_half_sizes=True)
        proposer = RPN(head=RPNHead(in_channels=channels, num_anchors=anchors.num_anchors), anchor_generator=anchors,
                       **(rpn_settings or {}))
    heads = [TwoFCHead(in_channels=channels, roi_size=roi_size, fc_channels=fc_channels) for _ in range(stages)]
    predictors = [BoxPredictor(in_channels=fc_channels, num_classes=num_classes, class_agnostic=stages > 1)
                  for _ in range(stages)]
    roi_heads = RoIHeads(box_pool=MultiLevelRoIAlign(output_size=roi_size), box_heads=heads,
                         box_predictors=predictors, num_classes=num_classes, **kwargs)
    return TwoStageDetector(backbone=trunk, neck=neck, rpn=proposer, roi_heads=roi_heads, num_classes=num_classes,
                            rpn_levels=rpn_levels, roi_levels=roi_levels)


def build_faster_rcnn(*, backbone: str, num_classes: int, fpn_levels: tuple[int, int] | None = (1, 5),
                      fpn_channels: int = 256, norm: str = "bn", stem: str | None = None, rpn: str = "rpn",
                      fc_channels: int = 1024, roi_size: int = 7, rpn_settings: dict | None = None,
                      **kwargs) -> TwoStageDetector:
    """Faster R-CNN: backbone, FPN, RPN (``rpn="ga"``: guided anchoring) and one R-CNN stage with the
    two-FC head (``fc_channels`` wide) and class-specific boxes.

    ``fpn_levels=(start, end)`` in SM-NAS's naming (P1-P4 the backbone's strides 4-32, P5/P6 max-pooled
    from the last): (1, 5) is the standard FPN (C2-C5 in, strides 4-64 out), (2, 5) takes C3-C5;
    ``None`` is the original single-level Faster R-CNN on C4 (15 anchors per location). RoIs are pooled
    from the levels that have a backbone input. With ``resnet50`` and 90 classes it is torchvision's
    ``fasterrcnn_resnet50_fpn`` parameter for parameter (41.76M; 41.30M for COCO's 80).
    ``rpn_settings`` go to the RPN (``pre_nms_top_n``, ``post_nms_top_n``, ``nms_thresh``, ...), other
    keyword arguments to :class:`RoIHeads` (``batch_size_per_image``, ``score_thresh``, ...).
    """
    return _build_rcnn(backbone=backbone, num_classes=num_classes, stages=1, fpn_levels=fpn_levels,
                       fpn_channels=fpn_channels, norm=norm, stem=stem, rpn=rpn, fc_channels=fc_channels,
                       roi_size=roi_size, rpn_settings=rpn_settings, **kwargs)


def build_cascade_rcnn(*, backbone: str, num_classes: int, cascade_stages: int = 3,
                       fpn_levels: tuple[int, int] | None = (1, 5), fpn_channels: int = 256, norm: str = "bn",
                       stem: str | None = None, rpn: str = "rpn", fc_channels: int = 1024, roi_size: int = 7,
                       rpn_settings: dict | None = None, **kwargs) -> TwoStageDetector:
    """Cascade R-CNN: as :func:`build_faster_rcnn` with ``cascade_stages`` (2-4) R-CNN stages of their own
    two-FC heads, class-agnostic boxes, IoU thresholds and loss weights of
    :func:`~nasx.models.detectors.roi_heads.cascade_settings` (0.5/0.6/0.7 and 1/0.5/0.25 for three)."""
    return _build_rcnn(backbone=backbone, num_classes=num_classes, stages=cascade_stages, fpn_levels=fpn_levels,
                       fpn_channels=fpn_channels, norm=norm, stem=stem, rpn=rpn, fc_channels=fc_channels,
                       roi_size=roi_size, rpn_settings=rpn_settings, **kwargs)


DETECTORS: dict[str, Callable[..., nn.Module]] = {"fcos": build_fcos, "retinanet": build_retinanet,
                                                  "ssdlite": build_ssdlite, "fpnlite": build_fpnlite,
                                                  "nas_fcos": build_nas_fcos,
                                                  "faster_rcnn": build_faster_rcnn,
                                                  "cascade_rcnn": build_cascade_rcnn}


def build_detector(name: str, **kwargs) -> nn.Module:
    """``DETECTORS[name](**kwargs)``, with an error that lists the known names."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {sorted(DETECTORS)}")
    return DETECTORS[name](**kwargs)


def build_from_spec(spec: dict) -> nn.Module:
    """The detector a build spec describes: ``{"detector": name, **keyword arguments}``, as every
    checkpoint nasx writes records it in ``meta["build"]`` (``nasx train``, every search)."""
    if not isinstance(spec, dict) or "detector" not in spec:
        raise ValueError(f"a detector build spec is a dict with a 'detector' name, got {spec!r}")
    kwargs = dict(spec)
    return build_detector(kwargs.pop("detector"), **kwargs)
