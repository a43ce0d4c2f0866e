"""Activation checkpointing for training: the network's layers keep only their inputs for the
backward pass and recompute their insides when the gradient reaches them (torch.utils.checkpoint,
non-reentrant). It trades about one extra forward pass per step for memory: for `paper`, the
activations a step keeps fall from what no single GPU holds to what one does (docs/training.md,
"Memory of a paper step").

It is a switch of the training run, not of the model: the weights, the checkpoints and what a step
computes are the same with it and without (on a CPU the gradients are bit-equal,
tests/test_activation_checkpointing.py). `auto` turns it on for configs of 256 px and more, i.e.
`paper`.

The wrapped layers are the network's repeated units: inflation blocks, the three attention layers,
the portrait encoder's residual blocks and pixel-shuffle upsamplers, the stems and the two heads.
Each is wrapped on its instance (its `forward` replaced), so model/net stays free of training
concerns and a state dict is unchanged.
"""
from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.net.attention import CrossAttention, SpatialSelfAttention, TemporalSelfAttention
from model.net.blocks import InflationBlock, PixelShuffleUp, ResBlock2D
from model.net.config import ModelConfig
from model.net.unet import ColourHead, GeometryHead, Stem

# the heads as a whole (per chunk of frames): their full-resolution insides are the largest tensors
CHECKPOINTED = (InflationBlock, SpatialSelfAttention, TemporalSelfAttention, CrossAttention, ResBlock2D, PixelShuffleUp, Stem,
                ColourHead, GeometryHead)
MODES = ("auto", "on", "off")
AUTO_MIN_RES = 256  # `auto` checkpoints configs at least this large: paper (512), not tiny / small / demo


def wanted(mode: str, cfg: ModelConfig) -> bool:
    """Whether `mode` ("auto", "on", "off") checkpoints activations for `cfg`."""
    if mode not in MODES:
        raise ValueError(f"activation checkpointing must be one of {MODES}, got {mode!r}")
    return mode == "on" or (mode == "auto" and cfg.res >= AUTO_MIN_RES)


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():  # sampling (pseudo ground truth, logs): nothing is kept anyway
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def enable(net: nn.Module) -> int:
    """Checkpoint every CHECKPOINTED layer inside `net` (and not a layer inside another one, which
    would recompute twice); returns how many were wrapped. Calling it again changes nothing."""
    count = 0

    def visit(module: nn.Module) -> None:
        nonlocal count
        for child in module.children():
            if isinstance(child, CHECKPOINTED):
                if not getattr(child, "_activation_checkpointed", False):
                    child.forward = functools.partial(_checkpointed, child.forward)
                    child._activation_checkpointed = True
                count += 1
            else:
                visit(child)

    visit(net)
    return count


def disable(net: nn.Module) -> None:
    """Undo `enable`."""
    for module in net.modules():
        if getattr(module, "_activation_checkpointed", False):
            del module.forward  # the class's forward shows through again
            del module._activation_checkpointed
