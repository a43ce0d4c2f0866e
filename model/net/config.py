"""Model configurations: every size of the network and the diffusion process, as plain data.

`paper` follows supplement A (512^2, 32 frames, 24 planes, conv stem 512 -> 128 -> 64, colour
branch with 2/3/3 inflation blocks at 64/32/16, geometry branch with one per resolution). The
smaller ones keep the same structure and train on a CPU. Configs are saved as JSON inside
checkpoints (`model/net/checkpoint.py`), so every field must be JSON-serialisable.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

GUIDANCE_CHANNELS = 2  # a student's guidance inputs per frame: portrait scale, first-frame scale


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) or "scaled_linear" (Stable Diffusion)
    train_timesteps: int = 1000
    beta_start: float = 0.00085  # scaled_linear only
    beta_end: float = 0.012  # scaled_linear only
    sample_steps: int = 25  # DDIM steps at inference
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic, 1 = DDPM-like)
    portrait_guidance: float = 1.5  # sec. 4 / supp. A
    first_frame_guidance: float = 1.0  # at frame 0, falling linearly to 0 at the clip's middle
    drop_first_frame: float = 0.7  # condition dropout during training (supp. A)
    drop_portrait: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    name: str
    res: int  # square image size of the MPI camera (input video and outputs)
    frames: int  # frames per clip
    planes: int  # MPI planes D
    coord_channels: int = 3  # coordinate map channels (3, or 4 with a coverage channel)
    stem_strides: tuple[int, int] = (4, 2)  # conv stem: res -> res/4 (the "128") -> res/8 (the "64")
    stem_channels: int = 128  # features at the first stem resolution (also the heads' width there)
    colour_channels: tuple[int, ...] = (256, 512, 1024)  # per U-Net level (64, 32, 16 in the paper)
    colour_blocks: tuple[int, ...] = (2, 3, 3)  # inflation blocks per level, in each of down and up
    geometry_channels: tuple[int, ...] = (128, 256, 512)
    geometry_blocks: tuple[int, ...] = (1, 1, 1)
    temporal_downsample: tuple[bool, ...] = (True, True)  # per level transition (Lumiere: time halves too)
    self_attention_levels: tuple[int, ...] = (2,)  # spatial + temporal self-attention (the 16 level)
    cross_attention_levels: tuple[int, ...] = (1,)  # cross-attention to the portrait (the 32 level)
    attention_head_channels: int = 64  # heads = channels // this
    attention_chunk: int = 64  # max (frames x heads) rows per attention call, bounds the memory
    portrait_blocks: int = 2  # residual blocks of the portrait encoder at each resolution
    colour_head_channels: int = 32  # hidden channels at full resolution before the RGB conv
    geometry_head_channels: tuple[int, ...] = (64, 32)  # hidden channels after each 2x pixel shuffle
    head_frames: int = 8  # frames per call of the full-resolution heads (bounds their memory)
    norm_groups: int = 32
    time_channels: int = 512  # timestep embedding width
    # Beyond the paper: the portrait's colours carried into the MPI camera through the tracked
    # meshes (model/geometry/portrait_warp.py) and the background as inputs, and a full-resolution
    # path from them (and x_t) into the colour output, so that a model trained on few videos can
    # keep an identity and copy what it is given instead of painting it through the U-Net.
    identity_warp: bool = False
    detail_channels: int = 16  # hidden channels of that full-resolution path
    # The condition carries the portrait's unmixed foreground colour (image = m F + (1 - m) B
    # solved for F against its background) instead of the raw image: with the raw image, soft
    # matte edges (hair) carried a halo of the portrait's own background, composited twice.
    identity_unmix: bool = False
    # A guidance-distilled student (`imp train --stage distill`): the two guidance scales (the
    # portrait's, and each frame's first-frame scale) are two more constant input channels per
    # frame, and one network pass stands for the two or three branches of guided sampling.
    guidance_input: bool = False
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        levels = len(self.colour_channels)
        problems = []
        for name in ("colour_blocks", "geometry_channels", "geometry_blocks"):
            if len(getattr(self, name)) != levels:
                problems.append(f"{name} has {len(getattr(self, name))} entries, colour_channels has {levels}")
        if len(self.temporal_downsample) != levels - 1:
            problems.append(f"temporal_downsample needs {levels - 1} entries (one per level transition)")
        stride = self.stem_strides[0] * self.stem_strides[1] * 2 ** (levels - 1)
        if self.res % stride:
            problems.append(f"res {self.res} is not divisible by the total spatial stride {stride}")
        if self.frames % self.temporal_stride:
            problems.append(f"frames {self.frames} is not divisible by the temporal stride {self.temporal_stride}")
        s0 = self.stem_strides[0]
        if s0 & (s0 - 1) or len(self.geometry_head_channels) != max(1, s0.bit_length() - 1):
            problems.append("stem_strides[0] must be a power of two with one geometry_head_channels entry per 2x step")
        if problems:
            raise ValueError(f"config {self.name!r}: " + "; ".join(problems))

    @property
    def temporal_stride(self) -> int:
        """Factor by which time shrinks at the deepest level; clips need a multiple of it."""
        return 2 ** sum(bool(d) for d in self.temporal_downsample)

    @property
    def identity_channels(self) -> int:
        """Channels of the identity condition per frame (0 when the switch is off)."""
        from model.geometry.portrait_warp import IDENTITY_CHANNELS  # here: reading a config needs no torch

        return IDENTITY_CHANNELS if self.identity_warp else 0

    @property
    def in_channels(self) -> int:
        """Per-frame input channels: noisy RGB, coordinates, mesh alphas, first frame RGB + flag,
        with identity_warp the identity condition and the background, with guidance_input the two
        guidance scales."""
        return (3 + self.coord_channels + self.planes + 4 + self.identity_channels + (3 if self.identity_warp else 0)
                + (GUIDANCE_CHANNELS if self.guidance_input else 0))

    @property
    def detail_in_channels(self) -> int:
        """Inputs of the full-resolution path besides the U-Net's features: the identity condition,
        x_t, the background and the condition composited over it (0 without identity_warp)."""
        return self.identity_channels + 9 if self.identity_warp else 0

    @property
    def portrait_channels(self) -> int:
        """Portrait RGB and its coordinate map."""
        return 3 + self.coord_channels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown} (written by a newer version?)")
        diffusion = DiffusionConfig(**data.pop("diffusion", {}))
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return ModelConfig(diffusion=diffusion, **data)

    @staticmethod
    def from_json(text: str) -> "ModelConfig":
        return ModelConfig.from_dict(json.loads(text))


def config_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """Human-readable 'field: a != b' lines for every field (dotted for diffusion.*) that differs."""
    out = []
    da, db = a.to_dict(), b.to_dict()
    for key in sorted(set(da) | set(db)):
        va, vb = da.get(key), db.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{key}.{k}: {va.get(k)!r} != {vb.get(k)!r}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        elif va != vb:
            out.append(f"{key}: {va!r} != {vb!r}")
    return out


PAPER = ModelConfig(name="paper", res=512, frames=32, planes=24)

# 128^2, 16 frames, 12 planes: the largest that trains at a useful pace on a CPU.
SMALL = ModelConfig(
    name="small", res=128, frames=16, planes=12,
    stem_strides=(2, 2), stem_channels=32,
    colour_channels=(64, 96, 128), geometry_channels=(32, 48, 64),
    attention_head_channels=32, colour_head_channels=16, geometry_head_channels=(16,),
    norm_groups=8, time_channels=128,
)

# 64^2, 8 frames, 8 planes, very narrow: tests and overfitting sanity checks.
TINY = ModelConfig(
    name="tiny", res=64, frames=8, planes=8,
    stem_strides=(2, 2), stem_channels=16,
    colour_channels=(32, 48, 64), colour_blocks=(1, 1, 1), geometry_channels=(16, 16, 32),
    attention_head_channels=16, portrait_blocks=1, colour_head_channels=8, geometry_head_channels=(8,),
    norm_groups=8, time_channels=64,
)

# The shipped demo model: 128^2, 8 frames, 12 planes, with the identity condition. The U-Net runs
# at 1/8 of the image (16, 8, 4) and stays narrow: detail comes from the portrait's pixels through
# the full-resolution path, and live generation on a CPU needs a light network.
DEMO = ModelConfig(
    name="demo", res=128, frames=8, planes=12,
    stem_strides=(4, 2), stem_channels=32, coord_channels=4,
    colour_channels=(48, 64, 96), colour_blocks=(1, 1, 1), geometry_channels=(16, 24, 32),
    attention_head_channels=16, portrait_blocks=1, colour_head_channels=8, geometry_head_channels=(16, 8),
    norm_groups=8, time_channels=64, identity_warp=True, detail_channels=16, identity_unmix=True,
)

CONFIGS: dict[str, ModelConfig] = {c.name: c for c in (TINY, SMALL, DEMO, PAPER)}


def get_config(name: str) -> ModelConfig:
    """The registered config called `name`."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}") from None
