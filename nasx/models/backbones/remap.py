"""Parameter remapping (FNA, Fang et al. ICLR 2020, §2.1): initialise an MBConv network of another
architecture from a trained seed MBConv network, so that adapting it starts from the seed's
knowledge instead of from random weights.

The three rules, as FNA's released code applies them:

- **depth** — layer ``i`` of a stage copies seed layer ``min(i, l - 1)`` of the same stage (a stage
  of ``l`` seed layers): existing layers are copied, every new layer copies the stage's last one.
- **kernel** — a k x k depthwise kernel gets the seed's 3 x 3 kernel in its centre and zeros
  around (so a k3 network remapped to k5 / k7 computes exactly the same function); a smaller
  kernel takes the seed kernel's centre (nasx's choice: FNA++ never released that case).
- **width** — the first ``min(c_new, c_seed)`` output and input channels are copied; conv weights
  beyond the seed's are zero, norm and bias vectors keep their fresh initial values beyond it.

Both networks are :class:`~nasx.models.backbones.mbconv.MBConvBackbone` s with the same number of
stages (the stem and the optional 1x1 head are remapped by the same width / kernel rules).
:func:`remap_block` maps one :class:`InvertedResidual` onto another; the super network uses it to
remap every candidate op of a layer from the same seed layer.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from nasx.models.backbones.mbconv import InvertedResidual, MBConvBackbone, SqueezeExcite
from nasx.models.backbones.mbconv_supernet import MBConvSupernet

__all__ = ["remap_backbone", "remap_block", "remap_module", "remap_supernet", "remap_tensor", "seed_layer"]


def seed_layer(index: int, seed_layers: int) -> int:
    """The seed layer that layer ``index`` of a stage copies (FNA's depth rule)."""
    if seed_layers < 1:
        raise ValueError(f"seed_layer: the seed stage has {seed_layers} layers; expected >= 1")
    return min(index, seed_layers - 1)


@torch.no_grad()
def remap_tensor(src: Tensor, dst: Tensor) -> None:
    """Write ``src`` into ``dst`` in place by the width and kernel rules.

    Conv weights (4-d, [out, in, kh, kw]): ``dst`` zeroed, then the first ``min`` output and input
    channels copied, the spatial window centred (centre of ``dst`` when it is larger, centre crop of
    ``src`` when smaller). Vectors (norm weights, biases, running statistics): the first entries
    copied, the rest left as they are. Scalars (``num_batches_tracked``): copied.
    """
    if src.dim() != dst.dim():
        raise ValueError(f"remap_tensor: cannot map a {src.dim()}-d tensor {tuple(src.shape)} onto a {dst.dim()}-d "
                         f"one {tuple(dst.shape)}")
    if src.dim() == 0:
        dst.copy_(src)
        return
    if src.dim() == 4:
        dst.zero_()
    idx_dst, idx_src = [], []
    for d, (s, t) in enumerate(zip(src.shape, dst.shape)):
        if d < 2 or src.dim() != 4:          # channels: the first ones
            n = min(s, t)
            idx_src.append(slice(0, n))
            idx_dst.append(slice(0, n))
        else:                                # kernel: centred
            n = min(s, t)
            idx_src.append(slice((s - n) // 2, (s - n) // 2 + n))
            idx_dst.append(slice((t - n) // 2, (t - n) // 2 + n))
    dst[tuple(idx_dst)] = src[tuple(idx_src)].to(dst.dtype)


def remap_module(src: nn.Module, dst: nn.Module) -> None:
    """Remap every parameter and buffer of ``dst`` from the same-named one of ``src`` (two modules
    of the same structure up to channel counts and kernel sizes)."""
    src_state = dict(src.named_parameters()) | dict(src.named_buffers())
    for name, tensor in list(dst.named_parameters()) + list(dst.named_buffers()):
        if name not in src_state:
            raise ValueError(f"remap_module: {type(dst).__name__} has {name!r} but the seed "
                             f"{type(src).__name__} has no such tensor; the structures differ")
        remap_tensor(src_state[name], tensor.data if isinstance(tensor, nn.Parameter) else tensor)


def _roles(block: InvertedResidual) -> dict[str, nn.Module]:
    """The parts of a block by what they do: expand (1x1, absent when e = 1), depthwise, se, project."""
    parts = list(block.block)
    roles = {"project": parts[-1]}
    for part in parts[:-1]:
        if isinstance(part, SqueezeExcite):
            roles["se"] = part
        elif part[0].groups > 1:
            roles["depthwise"] = part
        else:
            roles["expand"] = part
    return roles


def remap_block(src: InvertedResidual, dst: InvertedResidual) -> None:
    """Remap one inverted residual block onto another of any kernel size and expansion.

    Both must have, or both lack, the 1x1 expansion (e = 1 has none) and squeeze-excitation: a
    part the seed does not have cannot be remapped, and a dropped one would change what the
    remapped layer computes, so either is a ``ValueError``.
    """
    s, d = _roles(src), _roles(dst)
    if set(s) != set(d):
        raise ValueError(f"remap_block: the seed block has parts {sorted(s)}, the target {sorted(d)}; expansion 1 "
                         f"(no 1x1 expansion) and SE on / off cannot be remapped into one another")
    for role in d:
        remap_module(s[role], d[role])


@torch.no_grad()
def remap_backbone(seed: MBConvBackbone, target: MBConvBackbone) -> MBConvBackbone:
    """Initialise ``target`` from ``seed`` by the depth, kernel and width rules (in place; returns
    ``target``). Stages correspond one to one; the stem and the 1x1 head by the width rule."""
    if len(seed.stages) != len(target.stages):
        raise ValueError(f"remap_backbone: the seed has {len(seed.stages)} stages, the target {len(target.stages)}; "
                         "stages must correspond one to one")
    if (seed.head is None) != (target.head is None):
        raise ValueError("remap_backbone: one network has a 1x1 head and the other has none")
    remap_module(seed.stem, target.stem)
    for i, (s_stage, t_stage) in enumerate(zip(seed.stages, target.stages)):
        for j, block in enumerate(t_stage):
            try:
                remap_block(s_stage[seed_layer(j, len(s_stage))], block)
            except ValueError as e:
                raise ValueError(f"remap_backbone: stage {i + 1} layer {j + 1}: {e}") from None
    if target.head is not None:
        remap_module(seed.head, target.head)
    return target


@torch.no_grad()
def remap_supernet(seed: MBConvBackbone, supernet: MBConvSupernet) -> MBConvSupernet:
    """Initialise a super network from ``seed`` (in place; returns it): the seed's first stage is the
    super network's fixed first block, its other stages the searchable ones, and every candidate op of
    a layer is remapped from the same seed layer (FNA's ``param_remap_search``)."""
    if len(seed.stages) != len(supernet.stages) + 1:
        raise ValueError(f"remap_supernet: the seed has {len(seed.stages)} stages; the super network needs its fixed "
                         f"first block and {len(supernet.stages)} searchable stages")
    remap_module(seed.stem, supernet.stem)
    remap_block(seed.stages[0][0], supernet.first)
    index_in_stage = {}
    for layer, s in zip(supernet.layers, supernet.stage_of):
        j = index_in_stage[s] = index_in_stage.get(s, -1) + 1
        seed_stage = seed.stages[s + 1]
        source = seed_stage[seed_layer(j, len(seed_stage))]
        for name, op in layer.ops.items():
            if isinstance(op, InvertedResidual):
                try:
                    remap_block(source, op)
                except ValueError as e:
                    raise ValueError(f"remap_supernet: stage {s + 2} layer {j + 1} op {name}: {e}") from None
    remap_module(seed.head, supernet.head)
    return supernet
