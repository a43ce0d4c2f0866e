"""Model checkpoints: safetensors files holding the weights, with the model config (JSON) and the
training state (step, stage, ... as JSON) in the header metadata. Nothing is ever unpickled.

Importing this module does not import torch (only loading weights does): the viewer reads a
checkpoint's config before it starts the generation worker, and torch's import (1.5-1.8 s here)
belongs in the worker, not in front of it.

Extra tensors (e.g. an optimiser's moments, flattened by the caller) may ride along under the
`extra/` prefix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.atomic_write import publish
from model.net.config import ModelConfig, config_differences, get_config

if TYPE_CHECKING:
    import torch
    from torch import Tensor

FORMAT = "im-portrait-checkpoint"
VERSION = "1"
EXTRA_PREFIX = "extra/"
DEMO_CHECKPOINT = "demo.safetensors"  # in assets/: the shipped demo model (assets/MODEL_CARD.md)


class CheckpointError(RuntimeError):
    """A file that is not an im-portrait checkpoint, or one made for another config."""


@dataclass
class Checkpoint:
    config: ModelConfig
    weights: dict[str, Tensor]
    state: dict[str, Any] = field(default_factory=dict)  # training state: step, stage, ...
    extra: dict[str, Tensor] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: ModelConfig, state: dict[str, Any] | None = None,
                    extra: dict[str, Tensor] | None = None) -> Path:
    """Write model.state_dict() + config + state (JSON-serialisable) to `path` (.safetensors):
    to a temporary file, fsynced, then renamed over `path` with the folder fsynced before and after
    (model/atomic_write.py), so `path` holds the old or the new checkpoint whatever happens."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({EXTRA_PREFIX + k: v.detach().contiguous().cpu() for k, v in (extra or {}).items()})
    metadata = {"format": FORMAT, "version": VERSION, "config": config.to_json(), "state": json.dumps(state or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    # never a half-written checkpoint under the real name, not even after a power cut
    return publish(tmp, path)


def read_config(path: str | Path) -> ModelConfig:
    """The config stored in a checkpoint (reads the header only)."""
    return _read_header(Path(path))[0]


MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header, read by hand: an 8-byte little-endian
    length, then that many bytes of JSON (the format's spec). The library would import NumPy or
    torch for it, in front of imp-viewer's worker start."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise ValueError(f"header length {length} out of range")
        raw = f.read(length)
    if len(raw) != length:
        raise ValueError("file ends inside the header")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not an object")
    return meta


def _read_header(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        meta = _safetensors_metadata(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: not a safetensors file ({exc}); im-portrait checkpoints are .safetensors "
                              "written by `imp train` / model.net.checkpoint.save_checkpoint") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file but not an im-portrait checkpoint "
                              f"(metadata format={meta.get('format')!r}, expected {FORMAT!r})")
    try:
        config = ModelConfig.from_json(meta["config"])
        state = json.loads(meta.get("state", "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: im-portrait checkpoint with an unreadable config ({exc})") from exc
    return config, state


def load_checkpoint(path: str | Path, expected: ModelConfig | str | None = None) -> Checkpoint:
    """Read a checkpoint; with `expected` (a config or a registered name) its config must match,
    else CheckpointError lists the fields that differ."""
    from safetensors.torch import load_file

    path = Path(path)
    config, state = _read_header(path)
    if expected is not None:
        want = get_config(expected) if isinstance(expected, str) else expected
        diffs = config_differences(config, want)
        if diffs:
            raise CheckpointError(f"{path}: checkpoint config {config.name!r} does not match the requested config "
                                  f"{want.name!r} (checkpoint != requested): " + "; ".join(diffs))
    tensors = load_file(str(path))
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    return Checkpoint(config, weights, state, extra)


def load_model(path: str | Path, expected: ModelConfig | str | None = None, device: str | torch.device = "cpu"):
    """(MPIUNet with the checkpoint's weights, in eval mode, Checkpoint)."""
    from model.net.unet import MPIUNet

    ckpt = load_checkpoint(path, expected)
    model = MPIUNet(ckpt.config)
    missing, unexpected = model.load_state_dict(ckpt.weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit config {ckpt.config.name!r}: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    if model.colour_head.detail is not None:
        model.colour_head.detail.mouth_gate_shift = float(ckpt.state.get("export_mouth_gate_shift", 0.0))
        model.colour_head.detail.person_gate_shift = float(ckpt.state.get("export_person_gate_shift", 0.0))
        model.colour_head.detail.copy_exactly = bool(ckpt.state.get("export_copy_exactly", False))
    return model.to(device).eval(), ckpt


def demo_checkpoint() -> Path:
    """assets/demo.safetensors, or FileNotFoundError saying that no trained weights ship and what to do."""
    from model.resources import resource_dir

    path = resource_dir("assets") / DEMO_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained weights are available: this installation ships no demo model ({path}). Train one "
            "(`imp prepare VIDEOS -o DATASET`, then `imp train`, see docs/training.md) and pass it with "
            "--checkpoint RUN/alternating/latest.safetensors")
    return path


def resolve_checkpoint(path: str | Path | None) -> Path:
    """`path` if given (it must exist), else the shipped demo model; FileNotFoundError saying what to do."""
    if path is None:
        return demo_checkpoint()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    return path


SAMPLING_FIELDS = ("sample_steps", "eta", "portrait_guidance", "first_frame_guidance")  # inference choices, not weights


def export_weights(src: str | Path, dst: str | Path, note: dict[str, Any] | None = None,
                   sampling: dict[str, Any] | None = None, gate_shift: float = 0.0,
                   mouth_gate_shift: float | None = None, identity_unmix: bool | None = None,
                   person_gate_shift: float | None = None, copy_exactly: bool | None = None) -> Path:
    """Copy a training checkpoint without its extra tensors (optimiser moments): the file to ship.

    The config and the training state (step, stage, variant, options) are kept, plus `note`
    under state["export"] (e.g. the data and budget it was trained with). `sampling` sets the
    default sampling settings shipped with the weights (SAMPLING_FIELDS of the diffusion config:
    steps, eta, guidance scales, as measured on held-out data); nothing that shapes the weights.
    `gate_shift` (identity_warp configs) is added to the DetailHead's gate logits: how readily the
    shipped model paints over the portrait's pixels instead of copying them, a calibration chosen
    by looking at generated frames (recorded in state["export_gate_shift"]). `mouth_gate_shift`
    (recorded in state["export_mouth_gate_shift"], which `load_model` applies; None keeps the
    source's) is added to those logits inside the mouth only, where the condition is black and
    the network has to paint: -gate_shift there undoes the shift where it has nothing to copy.
    `person_gate_shift` (recorded in state["export_person_gate_shift"], applied by `load_model`;
    None keeps the source's) is added to them where the condition shows the portrait's person,
    weighted by its alpha, outside the mouth: it keeps the network from painting over a face and
    hair the portrait shows (blotches on the forehead under other people's driving).
    `copy_exactly` (recorded in state["export_copy_exactly"], applied by `load_model`; None
    keeps the source's): whether a shut gate copies the composite so that the MPI shows it exactly
    whatever its alpha (DetailHead.copy_exactly, through_alpha).
    `identity_unmix` (None keeps the source's) sets ModelConfig.identity_unmix: whether the
    identity condition carries the portrait's unmixed foreground colour; recorded in
    state["export_identity_unmix"]. The weights trained without it take the cleaner condition
    as it is (2026-12-06: +0.17 dB on 14 training videos, assets/MODEL_CARD.md)."""
    import torch

    from model.net.unet import MPIUNet

    ckpt = load_checkpoint(src)
    config = ckpt.config
    if identity_unmix is not None:
        if not config.identity_warp:
            raise ValueError(f"export_weights: identity_unmix needs a config with the identity condition; {config.name!r} has none")
        config = replace(config, identity_unmix=bool(identity_unmix))
    if sampling:
        wrong = sorted(set(sampling) - set(SAMPLING_FIELDS))
        if wrong:
            raise ValueError(f"export_weights: {wrong} are not sampling settings ({', '.join(SAMPLING_FIELDS)})")
        config = replace(config, diffusion=replace(config.diffusion, **sampling))
    model = MPIUNet(config)
    model.load_state_dict(ckpt.weights)
    state = dict(ckpt.state)
    if gate_shift:
        if model.colour_head.detail is None:
            raise ValueError(f"export_weights: gate_shift needs a config with the identity condition; {config.name!r} has none")
        with torch.no_grad():
            model.colour_head.detail.conv2.bias[6:] += gate_shift  # the frontal and residual gates' logits
        state["export_gate_shift"] = state.get("export_gate_shift", 0.0) + float(gate_shift)
    if mouth_gate_shift is not None:
        if model.colour_head.detail is None:
            raise ValueError(f"export_weights: mouth_gate_shift needs a config with the identity condition; {config.name!r} has none")
        state["export_mouth_gate_shift"] = float(mouth_gate_shift)
    if person_gate_shift is not None:
        if model.colour_head.detail is None:
            raise ValueError(f"export_weights: person_gate_shift needs a config with the identity condition; {config.name!r} has none")
        state["export_person_gate_shift"] = float(person_gate_shift)
    if copy_exactly is not None:
        if model.colour_head.detail is None:
            raise ValueError(f"export_weights: copy_exactly needs a config with the identity condition; {config.name!r} has none")
        state["export_copy_exactly"] = bool(copy_exactly)
    if identity_unmix is not None:
        state["export_identity_unmix"] = bool(identity_unmix)
    if note:
        state["export"] = note
    if sampling:
        state["export_sampling"] = dict(sampling)
    return save_checkpoint(dst, model, config, state)
