"""The 3D-aware video denoiser g_theta (sec. 3.2, supp. A): a Space-Time U-Net (Lumiere) that
maps a noisy 2D video and its conditions to an MPI video S = (frontal, residual, alpha).

    input per frame: noisy RGB x_t | coordinate map C^mpi | D mesh alpha planes | first frame RGB + flag
    conv stem res -> res/s0 (the paper's 512 -> 128) -> res/(s0 s1) (-> 64)
    colour branch: U-Net levels (64, 32, 16) with (2, 3, 3) inflation blocks down and up, spatial +
        temporal self-attention at 16, cross-attention to the portrait at 32, time halved per level
    geometry branch: own stem, one inflation block per level and direction; after every stage it
        adds the colour branch's features of the same stage through a zero-initialised 1x1 conv
        (ControlNet's "zero convolution"), so at initialisation it sees no colour features and the
        portrait reaches it only once those convs have learnt something
    heads: pixel shuffle 64 -> 128 + conv; colour 128 -> 512 -> frontal + residual (tanh);
        geometry 128 -> 256 -> 512 -> D alphas (sigmoid)

Submodules by training stage (supp. A): stage 1 trains `colour_stem`, `portrait_encoder`, `colour`,
`colour_head`; stage 2 freezes those except `colour_head` (the colour output layer) and trains
`geometry_stem`, `geometry` (its `inject` list holds the zero convs) and `geometry_head`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.geometry.portrait_warp import IDENTITY_CHANNELS, mouth_mask
from model.net.attention import CrossAttention, SpatialSelfAttention, TemporalSelfAttention
from model.net.blocks import Downsample, InflationBlock, PixelShuffleUp, ResBlock2D, TimestepEmbedding, Upsample, group_norm, zero_init
from model.net.config import GUIDANCE_CHANNELS, ModelConfig


class MPIPrediction(NamedTuple):
    """The MPI video S: frontal, residual (B, T, 3, H, W) in [-1, 1]; alpha (B, T, D, H, W) in [0, 1]."""

    frontal: Tensor
    residual: Tensor
    alpha: Tensor

    def inside(self, valid: Tensor | None) -> "MPIPrediction":
        """The MPI's alpha scaled by valid (B, 1, H, W) in [0, 1]: transparent where it is 0 (outside
        the source image of the crop there is nothing to generate and the extended background
        shows), faded where it is between (None: unchanged)."""
        if valid is None:
            return self
        return MPIPrediction(self.frontal, self.residual, self.alpha * valid.to(self.alpha)[:, None])


class Stage(nn.Module):
    """Inflation blocks at one resolution, each optionally followed by spatial + temporal
    self-attention and by cross-attention to the portrait tokens."""

    def __init__(self, in_ch: int, ch: int, n_blocks: int, cfg: ModelConfig, self_attn: bool, context_ch: int | None):
        super().__init__()
        g, hc, chunk = cfg.norm_groups, cfg.attention_head_channels, cfg.attention_chunk
        self.blocks = nn.ModuleList(InflationBlock(in_ch if i == 0 else ch, ch, cfg.time_channels, g) for i in range(n_blocks))
        self.self_attn = nn.ModuleList(
            nn.ModuleList([SpatialSelfAttention(ch, hc, chunk, g), TemporalSelfAttention(ch, hc, chunk, g)])
            for _ in range(n_blocks if self_attn else 0))
        self.cross_attn = nn.ModuleList(CrossAttention(ch, context_ch, hc, chunk, g) for _ in range(n_blocks if context_ch else 0))

    def forward(self, x: Tensor, emb: Tensor, frames: int, context: Tensor | None) -> Tensor:
        emb = emb.repeat_interleave(frames, 0)
        for i, block in enumerate(self.blocks):
            x = block(x, emb, frames)
            if self.self_attn:
                for layer in self.self_attn[i]:
                    x = layer(x, frames)
            if self.cross_attn:
                x = self.cross_attn[i](x, context)
        return x


class SpaceTimeUNet(nn.Module):
    """U-Net over levels of `channels`; returns the top-level features and every stage's output
    (down stages then up stages). `inject_channels` adds zero convs taking another U-Net's stage
    outputs of those widths (the geometry branch reading the colour branch)."""

    def __init__(self, cfg: ModelConfig, channels: tuple[int, ...], blocks: tuple[int, ...], attention: bool,
                 inject_channels: tuple[int, ...] | None = None):
        super().__init__()
        L = len(channels)
        self.levels = L
        sa = lambda l: attention and l in cfg.self_attention_levels
        ca = lambda l: channels[l] if attention and l in cfg.cross_attention_levels else None
        self.down = nn.ModuleList(Stage(channels[l], channels[l], blocks[l], cfg, sa(l), ca(l)) for l in range(L))
        self.downsamplers = nn.ModuleList(Downsample(channels[l], channels[l + 1], cfg.temporal_downsample[l]) for l in range(L - 1))
        self.upsamplers = nn.ModuleList(Upsample(channels[l + 1], channels[l], cfg.temporal_downsample[l]) for l in range(L - 1))
        self.up = nn.ModuleList(Stage(channels[l] * (2 if l < L - 1 else 1), channels[l], blocks[l], cfg, sa(l), ca(l)) for l in range(L))
        stage_ch = list(channels) + list(reversed(channels))
        self.inject = nn.ModuleList(zero_init(nn.Conv2d(c_in, c, 1)) for c_in, c in zip(inject_channels, stage_ch)) if inject_channels else None

    def _stage_out(self, x: Tensor, index: int, injected: list[Tensor] | None, outputs: list[Tensor]) -> Tensor:
        if self.inject is not None:
            x = x + self.inject[index](injected[index])
        outputs.append(x)
        return x

    def forward(self, x: Tensor, emb: Tensor, frames: int, contexts: dict[int, Tensor] | None = None,
                injected: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        contexts = contexts or {}
        outputs: list[Tensor] = []
        skips = []
        for l in range(self.levels):
            if l > 0:
                x, frames = self.downsamplers[l - 1](x, frames)
            x = self._stage_out(self.down[l](x, emb, frames, contexts.get(l)), l, injected, outputs)
            skips.append(x)
        for l in reversed(range(self.levels)):
            if l < self.levels - 1:
                x, frames = self.upsamplers[l](x, frames)
                x = torch.cat([x, skips[l]], 1)
            x = self._stage_out(self.up[l](x, emb, frames, contexts.get(l)), 2 * self.levels - 1 - l, injected, outputs)
        return x, outputs


class Stem(nn.Module):
    """Two patchifying convs: res -> res/s0 (kept as a long skip for the heads) -> res/(s0 s1)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, strides: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, strides[0], stride=strides[0])
        self.conv2 = nn.Conv2d(mid_ch, out_ch, strides[1], stride=strides[1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mid = self.conv1(x)
        return self.conv2(F.silu(mid)), mid


class PortraitEncoder(nn.Module):
    """Portrait RGB + coordinate map (B, 3+Cc, H, W) -> tokens (B, L, C_l) for every cross-attended level."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, g, e = cfg.colour_channels, cfg.norm_groups, cfg.time_channels
        self.stem = Stem(cfg.portrait_channels, cfg.stem_channels, ch[0], cfg.stem_strides)
        self.levels = max(cfg.cross_attention_levels, default=-1) + 1
        self.downs = nn.ModuleList(nn.Conv2d(ch[l - 1], ch[l], 3, stride=2, padding=1) for l in range(1, self.levels))
        self.blocks = nn.ModuleList(
            nn.ModuleList(ResBlock2D(ch[l], ch[l], e, g) for _ in range(cfg.portrait_blocks)) for l in range(self.levels))
        self.wanted = set(cfg.cross_attention_levels)

    def forward(self, portrait: Tensor, emb: Tensor) -> dict[int, Tensor]:
        x, _ = self.stem(portrait)
        tokens = {}
        for l in range(self.levels):
            if l > 0:
                x = self.downs[l - 1](x)
            for block in self.blocks[l]:
                x = block(x, emb)
            if l in self.wanted:
                tokens[l] = x.flatten(2).transpose(1, 2)
        return tokens


def _frame_chunks(chunk: int, *tensors: Tensor | None):
    """Slices of `chunk` frames of each tensor (None stays None)."""
    for i in range(0, tensors[0].shape[0], chunk):
        yield tuple(None if t is None else t[i:i + chunk] for t in tensors)


class DetailHead(nn.Module):
    """The full-resolution path of the identity condition (beyond the paper): from the colour head's
    full-resolution features, the identity condition composited over the background, the condition
    itself, x_t and the background, it predicts per pixel a colour and a gate for each of the
    frontal and residual images, which are that composite where the gate is 0 and the predicted
    colour where it is 1. The portrait's and the background's pixels thus reach the output exactly,
    without passing through the U-Net, and the network only paints what they lack (the mouth's
    inside, what the portrait does not show, the torso's motion). The gates start out mostly shut."""

    GATE_BIAS = -2.0  # sigmoid(-2) = 0.12: at initialisation the output is mostly the composite

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # added to the gate logits inside the mouth (portrait_warp.mouth_mask): an export's gate
        # shift calibrates copying the portrait's pixels, but inside the mouth the condition has
        # none (it is black there) and the network must paint (checkpoint.export_weights)
        self.mouth_gate_shift = 0.0
        # added to the gate logits where the condition shows the portrait's person (weighted by its
        # alpha) outside the mouth: a cross-identity driver's pose opens gates on a face and hair
        # the portrait shows in full, and the network paints blotches there; self-reenactment
        # scores the same with it (checkpoint.export_weights)
        self.person_gate_shift = 0.0
        # copy the composite so that the MPI shows it exactly whatever its alpha (`through_alpha`,
        # MPIUNet.forward; checkpoint.export_weights)
        self.copy_exactly = False
        c, g = cfg.colour_head_channels, cfg.norm_groups
        self.conv1 = nn.Conv2d(c + cfg.detail_in_channels, cfg.detail_channels, 3, padding=1)
        self.norm = group_norm(cfg.detail_channels, min(g, cfg.detail_channels))
        self.conv2 = nn.Conv2d(cfg.detail_channels, 8, 3, padding=1)  # frontal, residual RGB; their two gates
        with torch.no_grad():
            self.conv2.bias[6:].fill_(self.GATE_BIAS)

    @property
    def shifts_by_region(self) -> bool:
        """Whether an export's mouth or person gate shift is set (the forward pass needs on_mesh)."""
        return bool(self.mouth_gate_shift or self.person_gate_shift)

    def forward(self, features: Tensor, full: Tensor, on_mesh: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(N, 6, H, W) frontal and residual in [-1, 1], and the gates (N, 2, H, W) in [0, 1];
        full's first 3 channels are the composite; on_mesh (N, 1, H, W), 1 where the driving mesh
        is drawn, is needed with a mouth_gate_shift or a person_gate_shift (off the mesh black
        clothes look like the condition's mouth)."""
        out = self.conv2(F.silu(self.norm(self.conv1(torch.cat([features, full], 1)))))
        logits = out[:, 6:]
        if self.shifts_by_region:
            if on_mesh is None:
                raise ValueError("DetailHead: a mouth_gate_shift or person_gate_shift needs on_mesh, where the driving mesh is drawn")
            ident = full[:, 3:3 + IDENTITY_CHANNELS]
            mouth = mouth_mask(ident) * on_mesh
            if self.mouth_gate_shift:
                logits = logits + self.mouth_gate_shift * mouth
            if self.person_gate_shift:
                logits = logits + self.person_gate_shift * ident[:, 3:4] * (1.0 - mouth)
        colour, gate = torch.tanh(out[:, :6]), torch.sigmoid(logits)
        composite = full[:, :3]
        frontal = composite + gate[:, :1] * (colour[:, :3] - composite)
        residual = composite + gate[:, 1:] * (colour[:, 3:] - composite)
        return torch.cat([frontal, residual], 1), gate

    def through_alpha(self, full: Tensor, gate: Tensor, alpha: Tensor) -> Tensor:
        """(N, 6, H, W) to add to forward's frontal and residual (copy_exactly): where a gate is
        shut, the MPI of alpha (N, D, H, W) then shows the composite C exactly in its own camera,
        whatever its alpha. A shut gate copies C itself, and the MPI composites it over the
        background B once more by its own mask m: at the hair's soft outline the background showed
        twice. Copied as B + (C - B) / m instead, m * copy + (1 - m) * B = C; m is taken no lower
        than the condition's alpha (the colour then is the condition's own, unmixed). full, gate:
        forward's arguments and result."""
        composite, background = full[:, :3], full[:, -3:]
        shown = full[:, 3:3 + IDENTITY_CHANNELS][:, 3:4]  # the identity condition's alpha (forward's layout)
        mask = 1.0 - torch.prod(1.0 - alpha, 1, keepdim=True)  # = sum_i alpha_i T_i
        copy = (background + (composite - background) / torch.maximum(mask, shown).clamp_min(1e-3)).clamp(-1.0, 1.0)
        change = copy - composite
        return torch.cat([(1.0 - gate[:, :1]) * change, (1.0 - gate[:, 1:]) * change], 1)


class ColourHead(nn.Module):
    """64 -> 128 (pixel shuffle + conv, plus the stem's 128 features) -> full res -> frontal, residual;
    with the identity condition, through the full-resolution DetailHead."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s0, s1 = cfg.stem_strides
        g = cfg.norm_groups
        self.up1 = PixelShuffleUp(cfg.colour_channels[0], cfg.stem_channels, cfg.stem_channels, s1, g)
        out = cfg.colour_head_channels if cfg.identity_warp else 6
        self.up2 = PixelShuffleUp(cfg.stem_channels, cfg.colour_head_channels, out, s0, g)
        self.detail = DetailHead(cfg) if cfg.identity_warp else None

    def forward(self, x: Tensor, stem_mid: Tensor, full: Tensor | None = None,
                on_mesh: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(N, 6, H, W) frontal and residual, and the DetailHead's gates (N, 2, H, W) (None without
        it). x (N, C0, h, w) U-Net features, stem_mid (N, stem_channels, ...) the stem's first level;
        full (N, detail_in_channels, H, W): the identity condition composited over the background,
        the condition, x_t, the background (identity_warp only); on_mesh see DetailHead."""
        h = self.up2(F.silu(self.up1(x) + stem_mid))
        if self.detail is not None:
            return self.detail(F.silu(h), full, on_mesh)
        return torch.tanh(h), None


class GeometryHead(nn.Module):
    """64 -> 128 (pixel shuffle + conv, plus the stem's 128 features), then 2x pixel shuffles up to full res -> D alphas."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s1, g, c0 = cfg.stem_strides[1], cfg.norm_groups, cfg.geometry_channels[0]
        self.up1 = PixelShuffleUp(c0, c0, c0, s1, g)
        hidden = cfg.geometry_head_channels
        outs = list(hidden[:-1]) + [cfg.planes]
        self.ups = nn.ModuleList(PixelShuffleUp(c_in, h, o, 2, g) for c_in, h, o in zip([c0] + list(hidden[:-1]), hidden, outs))

    def forward(self, x: Tensor, stem_mid: Tensor) -> Tensor:
        x = self.up1(x) + stem_mid
        for up in self.ups:
            x = up(F.silu(x))
        return torch.sigmoid(x)


class MPIUNet(nn.Module):
    """g_theta: (x_t, t, conditions) -> MPIPrediction. See the module docstring for the layout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        s = cfg.stem_strides
        self.time_embed = TimestepEmbedding(cfg.time_channels)
        self.colour_stem = Stem(cfg.in_channels, cfg.stem_channels, cfg.colour_channels[0], s)
        self.portrait_encoder = PortraitEncoder(cfg)
        self.colour = SpaceTimeUNet(cfg, cfg.colour_channels, cfg.colour_blocks, attention=True)
        self.colour_head = ColourHead(cfg)
        self.geometry_stem = Stem(cfg.in_channels, cfg.geometry_channels[0], cfg.geometry_channels[0], s)
        stage_widths = tuple(cfg.colour_channels) + tuple(reversed(cfg.colour_channels))
        self.geometry = SpaceTimeUNet(cfg, cfg.geometry_channels, cfg.geometry_blocks, attention=False, inject_channels=stage_widths)
        self.geometry_head = GeometryHead(cfg)

    def network_input(self, x_t: Tensor, coords: Tensor, mesh_alpha: Tensor, first_frame: Tensor, first_frame_flag: Tensor,
                      identity: Tensor | None = None, background: Tensor | None = None, guidance: Tensor | None = None) -> Tensor:
        """(B*T, in_channels, H, W): per-frame channels; the first frame and its flag sit at frame 0
        only (Lumiere-style conditioning frames + mask), zero elsewhere or when dropped; with
        identity_warp the identity condition (zeros when dropped) and the background; with
        guidance_input the guidance scales (B, T, 2) as constant planes, last."""
        B, T, _, H, W = x_t.shape
        flag = first_frame_flag.to(x_t).view(B, 1, 1, 1)
        ff = torch.zeros(B, T, 4, H, W, dtype=x_t.dtype, device=x_t.device)
        ff[:, 0, :3] = first_frame * flag
        ff[:, 0, 3:] = flag.expand(B, 1, H, W)
        parts = [x_t, coords.to(x_t), mesh_alpha.to(x_t), ff]
        if self.cfg.identity_warp:
            parts += self._given(identity, background, x_t)
        if self.cfg.guidance_input:
            if guidance is None or guidance.shape != (B, T, GUIDANCE_CHANNELS):
                raise ValueError(f"config {self.cfg.name!r} is a guidance-distilled student: it needs the guidance scales "
                                 f"(B, T, {GUIDANCE_CHANNELS}) = {(B, T, GUIDANCE_CHANNELS)}, got "
                                 f"{None if guidance is None else tuple(guidance.shape)}")
            parts.append(guidance.to(x_t)[..., None, None].expand(B, T, GUIDANCE_CHANNELS, H, W))
        return torch.cat(parts, 2).flatten(0, 1)

    def _given(self, identity: Tensor | None, background: Tensor | None, x_t: Tensor) -> list[Tensor]:
        """[identity (B, T, 5, H, W), background (B, T, 3, H, W)]: zeros where not given."""
        B, T, _, H, W = x_t.shape
        ident = x_t.new_zeros(B, T, self.cfg.identity_channels, H, W) if identity is None else identity.to(x_t)
        bg = x_t.new_zeros(B, T, 3, H, W) if background is None else background.to(x_t)[:, None].expand(B, T, 3, H, W)
        return [ident, bg]

    def forward(self, x_t: Tensor, t: Tensor, coords: Tensor, mesh_alpha: Tensor, portrait: Tensor,
                first_frame: Tensor, first_frame_flag: Tensor, identity: Tensor | None = None,
                background: Tensor | None = None, with_gate: bool = False,
                guidance: Tensor | None = None) -> MPIPrediction | tuple[MPIPrediction, Tensor]:
        """x_t (B, T, 3, H, W); t (B,); coords (B, T, Cc, H, W); mesh_alpha (B, T, D, H, W);
        portrait (B, 3+Cc, H, W); first_frame (B, 3, H, W); first_frame_flag (B,) (1 = given);
        configs with identity_warp only: identity (B, T, 5, H, W), the identity condition
        (model/geometry/portrait_warp.py; None = dropped), and background (B, 3, H, W).
        with_gate: also return the DetailHead's mean gate (a scalar with gradients; 0 without a
        DetailHead), which training charges for (LossWeights.gate).
        guidance (B, T, 2): a guidance-distilled student's scales (guidance_input configs only;
        model.diffusion.sampler.Guidance.inputs)."""
        cfg = self.cfg
        B, T, _, H, W = x_t.shape
        if (H, W) != (cfg.res, cfg.res) or mesh_alpha.shape[2] != cfg.planes or T % cfg.temporal_stride:
            raise ValueError(f"config {cfg.name!r} takes {cfg.res}x{cfg.res} frames, {cfg.planes} planes and a multiple of "
                             f"{cfg.temporal_stride} frames; got x_t {tuple(x_t.shape)}, mesh_alpha {tuple(mesh_alpha.shape)}")
        emb = self.time_embed(t)
        inp = self.network_input(x_t, coords, mesh_alpha, first_frame, first_frame_flag, identity, background, guidance)
        full = on_mesh = None
        if cfg.identity_warp:
            ident, bg = self._given(identity, background, x_t)
            composite = ident[:, :, :3] + (1.0 - ident[:, :, 3:4]) * bg  # the warp over the background
            full = torch.cat([composite, ident, x_t, bg], 2).flatten(0, 1)
            if self.colour_head.detail.shifts_by_region:
                # a covered pixel holds at least half its alpha on one plane (conditions.alpha_planes)
                on_mesh = (mesh_alpha.to(x_t).amax(2, keepdim=True) > 0.5).to(x_t).flatten(0, 1)
        h, colour_mid = self.colour_stem(inp)
        h, colour_stages = self.colour(h, emb, T, self.portrait_encoder(portrait.to(x_t), emb))
        heads = [self.colour_head(*c) for c in _frame_chunks(cfg.head_frames, h, colour_mid, full, on_mesh)]
        rgb = torch.cat([colour for colour, _ in heads])
        gates = [gate.mean() for _, gate in heads if gate is not None]
        detail = self.colour_head.detail
        gate = torch.cat([gate for _, gate in heads]) if detail is not None and detail.copy_exactly else None
        del heads
        g, geometry_mid = self.geometry_stem(inp)
        del inp
        g, _ = self.geometry(g, emb, T, injected=colour_stages)
        del colour_stages
        alpha = torch.cat([self.geometry_head(*c) for c in _frame_chunks(cfg.head_frames, g, geometry_mid)])
        if gate is not None:
            rgb = rgb + detail.through_alpha(full, gate, alpha)
        rgb = rgb.reshape(B, T, 6, H, W)
        pred = MPIPrediction(rgb[:, :, :3], rgb[:, :, 3:], alpha.reshape(B, T, cfg.planes, H, W))
        if with_gate:
            return pred, torch.stack(gates).mean() if gates else x_t.new_zeros(())
        return pred


def count_parameters(model: MPIUNet) -> dict[str, int]:
    """Parameter counts per part and in total."""
    parts = ["time_embed", "colour_stem", "portrait_encoder", "colour", "colour_head", "geometry_stem", "geometry", "geometry_head"]
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in parts}
    counts["zero_convs"] = sum(p.numel() for p in model.geometry.inject.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def format_parameter_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
