"""Export a guidance-distilled student checkpoint to the ONNX file `onnx_network.OnnxNetwork` runs:
one denoising step + its frontal decode, exactly what `model.diffusion.sampler.sample_clip` does
per step for a student (`guided_prediction`'s cfg.guidance_input branch: `denoise`, clamping)
and at the end (`render_frontal` of the clamped MPI).

Imports torch: it only makes the file (`imp export-onnx`, scripts/setup.sh), never at run time.
The legacy TorchScript exporter is used (`dynamo=False`, opset 17): it handles this network in
~3 s; shapes are fixed (batch 1, cfg.frames frames), which is all the worker asks for.

The file is written in three steps, all to temporary files beside `out`, and published with
model.atomic_write.publish, so a crash never leaves a half file under the real name:
torch export -> metadata (checkpoint sha256, input / output names, format) -> ONNX Runtime's own
offline optimisation (onnx_network.PREOPTIMIZE_LEVEL), which halves "create the session + run it
once" (demo model, 1 thread: 0.70-0.74 s raw at ORT_ENABLE_ALL, 0.32-0.39 s pre-optimised). Before publishing, the file is run once and compared with torch.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from model.atomic_write import publish
from model.coldstart import onnx_network as on
from model.diffusion.process import render_frontal
from model.net.config import GUIDANCE_CHANNELS, ModelConfig
from model.net.unet import MPIPrediction

OPSET = 17
CHECK_TOLERANCE = 1e-4  # max abs difference to torch on the trace inputs before a file is published


class StudentStep(nn.Module):
    """A student's one network pass as the sampler uses it, with the conditions spelled out as
    tensors: (frontal, residual, alpha) of the MPI made transparent outside `valid` and clamped
    to their ranges, and video, that MPI rendered over the background (shapes: onnx_network)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.cfg: ModelConfig = model.cfg

    def forward(self, x_t: Tensor, t: Tensor, coords: Tensor, mesh_alpha: Tensor, portrait: Tensor, first_frame: Tensor,
                first_frame_flag: Tensor, identity: Tensor | None, background: Tensor, valid: Tensor,
                guidance: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        extra = {} if guidance is None else {"guidance": guidance}
        pred = self.model(x_t, t, coords, mesh_alpha, portrait, first_frame, first_frame_flag, identity, background,
                          **extra).inside(valid)
        pred = MPIPrediction(pred.frontal.clamp(-1, 1), pred.residual.clamp(-1, 1), pred.alpha.clamp(0, 1))
        return pred.frontal, pred.residual, pred.alpha, render_frontal(pred, background)


def input_names(cfg: ModelConfig) -> list[str]:
    """The exported graph's inputs for a config, in order (identity / guidance only where used)."""
    names = ["x_t", "t", "coords", "mesh_alpha", "portrait", "first_frame", "first_frame_flag"]
    names += ["identity"] if cfg.identity_warp else []
    names += ["background", "valid"]
    names += ["guidance"] if cfg.guidance_input else []
    return names


def example_inputs(cfg: ModelConfig, seed: int = 0) -> dict[str, Tensor]:
    """Inputs of one clip with plausible ranges (batch 1), to trace and check the export with."""
    g = torch.Generator().manual_seed(seed)
    T, R, D, Cc = cfg.frames, cfg.res, cfg.planes, cfg.coord_channels
    u = lambda *shape: torch.rand(shape, generator=g)  # noqa: E731
    inputs = {
        "x_t": torch.randn((1, T, 3, R, R), generator=g), "t": torch.tensor([cfg.diffusion.train_timesteps - 1]),
        "coords": u(1, T, Cc, R, R) * 2 - 1, "mesh_alpha": (u(1, T, D, R, R) > 0.9).float(),
        "portrait": u(1, 3 + Cc, R, R) * 2 - 1, "first_frame": u(1, 3, R, R) * 2 - 1, "first_frame_flag": torch.ones(1),
        "identity": u(1, T, cfg.identity_channels, R, R), "background": u(1, 3, R, R) * 2 - 1,
        "valid": (u(1, 1, R, R) > 0.1).float(), "guidance": u(1, T, GUIDANCE_CHANNELS) * 1.5,
    }
    return {n: inputs[n] for n in input_names(cfg)}


def _temp_beside(out: Path, suffix: str) -> Path:
    """A fresh temporary file name in out's folder (same file system: the final rename is atomic;
    unique: two exports at once, e.g. setup and a test, do not write the same file)."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    return Path(name)


def _torch_export(step: StudentStep, inputs: dict[str, Tensor], path: Path) -> None:
    names = list(inputs)
    # the legacy exporter maps positional args to forward's parameters: pass None for the unused ones
    args = tuple(inputs.get(n) for n in ("x_t", "t", "coords", "mesh_alpha", "portrait", "first_frame", "first_frame_flag",
                                         "identity", "background", "valid", "guidance"))
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks traced as constants: expected, the graph is for these fixed shapes only
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(step, args, str(path), input_names=names, output_names=list(on.OUTPUT_NAMES),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    old = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in {**old, **meta}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def preoptimize(src: Path, dst: Path, level: str = on.PREOPTIMIZE_LEVEL) -> None:
    """Let ONNX Runtime optimise `src` at `level` once and save the result to `dst`
    (SessionOptions.optimized_model_filepath); sessions then load it without those passes.
    Levels above EXTENDED add layout changes for this machine's CPU: not used, the cache folder
    may be shared by machines (EXTENDED loads as fast)."""
    import onnxruntime as ort

    opts = on.session_options(1, level)
    opts.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def _check(path: Path, inputs: dict[str, Tensor], expected: tuple[Tensor, ...]) -> float:
    """Max abs difference between the ONNX file's outputs and torch's on `inputs`."""
    net = on.OnnxNetwork(path)
    got = net(**{k: v.numpy() for k, v in inputs.items()})
    return max(float(np.abs(got[n] - e.numpy()).max()) for n, e in zip(on.OUTPUT_NAMES, expected))


def export_onnx(checkpoint: str | Path, out: str | Path) -> Path:
    """Export `checkpoint` (a guidance-distilled student, cfg.guidance_input) to `out` (ONNX,
    pre-optimised for ONNX Runtime, metadata: checkpoint sha256, input / output names). Returns
    `out`. ValueError for a checkpoint that is not a student: a teacher needs two or three
    passes per step, combined by the sampler, which this graph does not hold."""
    from model.net.variant import load_trained

    checkpoint, out = Path(checkpoint), Path(out)
    model, _ = load_trained(checkpoint)
    cfg = model.cfg
    if not cfg.guidance_input:
        raise ValueError(f"{checkpoint}: config {cfg.name!r} is not a guidance-distilled student (guidance_input is off); "
                         "only students run in one pass per step and can be exported (`imp train --stage distill` makes one)")
    step = StudentStep(model).eval()
    inputs = example_inputs(cfg)
    with torch.no_grad():
        expected = step(*(inputs.get(n) for n in ("x_t", "t", "coords", "mesh_alpha", "portrait", "first_frame",
                                                 "first_frame_flag", "identity", "background", "valid", "guidance")))
    out.parent.mkdir(parents=True, exist_ok=True)
    raw, final = _temp_beside(out, ".raw.onnx"), _temp_beside(out, ".onnx")
    try:
        _torch_export(step, inputs, raw)
        _set_metadata(raw, {
            on.META_FORMAT: on.FORMAT,
            on.META_CHECKPOINT_SHA256: on.checkpoint_digest(checkpoint),
            on.META_INPUTS: ",".join(inputs),
            on.META_OUTPUTS: ",".join(on.OUTPUT_NAMES),
            on.META_OPTIMIZED: on.PREOPTIMIZE_LEVEL,
            "im_portrait.config": cfg.name,
        })
        preoptimize(raw, final)
        diff = _check(final, inputs, expected)
        if not diff < CHECK_TOLERANCE:
            raise RuntimeError(f"export of {checkpoint}: ONNX Runtime differs from torch by {diff:.3g} "
                               f"(> {CHECK_TOLERANCE:g}) on the trace inputs; not written")
        os.chmod(final, 0o644)  # mkstemp makes it owner-only; a cache file is as readable as any other
        return publish(final, out)
    finally:
        raw.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
