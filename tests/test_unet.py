"""The Space-Time U-Net: output shapes and ranges, config plumbing, and the zero convolutions
between the colour and the geometry branch."""
from __future__ import annotations

import pytest
import torch

from model.net.config import CONFIGS, ModelConfig, config_differences, get_config
from model.net.unet import DetailHead, MPIUNet, count_parameters


def random_inputs(cfg: ModelConfig, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    B, T, D, R, Cc = batch, cfg.frames, cfg.planes, cfg.res, cfg.coord_channels
    return dict(
        x_t=torch.randn(B, T, 3, R, R, generator=g),
        t=torch.randint(0, cfg.diffusion.train_timesteps, (B,), generator=g),
        coords=torch.rand(B, T, Cc, R, R, generator=g) * 2 - 1,
        mesh_alpha=torch.rand(B, T, D, R, R, generator=g),
        portrait=torch.rand(B, 3 + Cc, R, R, generator=g) * 2 - 1,
        first_frame=torch.rand(B, 3, R, R, generator=g) * 2 - 1,
        first_frame_flag=torch.ones(B),
    )


@pytest.fixture(scope="module")
def tiny_model() -> MPIUNet:
    torch.manual_seed(0)
    return MPIUNet(get_config("tiny"))


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_output_shapes_and_ranges(name: str) -> None:
    cfg = get_config(name)
    torch.manual_seed(1)
    model = MPIUNet(cfg).eval()
    with torch.no_grad():
        out = model(**random_inputs(cfg, batch=1 if name == "small" else 2))
    B = 1 if name == "small" else 2
    assert out.frontal.shape == (B, cfg.frames, 3, cfg.res, cfg.res)
    assert out.residual.shape == (B, cfg.frames, 3, cfg.res, cfg.res)
    assert out.alpha.shape == (B, cfg.frames, cfg.planes, cfg.res, cfg.res)
    for colour in (out.frontal, out.residual):
        assert colour.min() >= -1 and colour.max() <= 1 and colour.std() > 0
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1 and out.alpha.std() > 0
    assert all(torch.isfinite(o).all() for o in out)


def test_wrong_input_size_is_a_clear_error(tiny_model: MPIUNet) -> None:
    inputs = random_inputs(tiny_model.cfg)
    inputs["mesh_alpha"] = inputs["mesh_alpha"][:, :, :3]
    with pytest.raises(ValueError, match="planes"):
        tiny_model(**inputs)


def test_configs_registered_and_round_trip_json() -> None:
    assert {"tiny", "small", "paper"} <= set(CONFIGS)
    paper = get_config("paper")
    assert (paper.res, paper.frames, paper.planes) == (512, 32, 24)
    assert paper.colour_blocks == (2, 3, 3) and paper.geometry_blocks == (1, 1, 1)
    assert paper.res // paper.stem_strides[0] == 128 and paper.res // (paper.stem_strides[0] * paper.stem_strides[1]) == 64
    for cfg in CONFIGS.values():
        assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(KeyError, match="unknown model config"):
        get_config("huge")
    diffs = config_differences(get_config("tiny"), get_config("small"))
    assert any(d.startswith("planes: 8 != 12") for d in diffs)


def test_inconsistent_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="temporal stride"):
        ModelConfig(name="bad", res=64, frames=6, planes=4, stem_strides=(2, 2), colour_channels=(8, 8, 8),
                    geometry_channels=(8, 8, 8), geometry_head_channels=(8,))


def test_parameter_counts_add_up(tiny_model: MPIUNet) -> None:
    counts = count_parameters(tiny_model)
    parts = [k for k in counts if k not in ("total", "zero_convs")]
    assert sum(counts[k] for k in parts) == counts["total"] > 0
    assert 0 < counts["zero_convs"] < counts["geometry"]


def _perturb_colour_stem(model: MPIUNet):
    def hook(_module, _inp, out):
        low, mid = out
        return low + 5 * torch.randn_like(low), mid
    return model.colour_stem.register_forward_hook(hook)


def test_geometry_branch_sees_no_colour_features_at_init() -> None:
    torch.manual_seed(0)
    model = MPIUNet(get_config("tiny")).eval()
    inputs = random_inputs(model.cfg)
    with torch.no_grad():
        ref = model(**inputs)
        handle = _perturb_colour_stem(model)
        perturbed = model(**inputs)
        handle.remove()
        other_portrait = model(**{**inputs, "portrait": -inputs["portrait"]})
    assert (perturbed.frontal - ref.frontal).abs().max() > 1e-3  # the perturbation is real
    assert torch.equal(perturbed.alpha, ref.alpha)
    assert torch.equal(other_portrait.alpha, ref.alpha)


def test_zero_convs_learn_and_then_pass_colour_features() -> None:
    torch.manual_seed(0)
    model = MPIUNet(get_config("tiny"))
    inputs = random_inputs(model.cfg)
    assert all(float(p.detach().abs().sum()) == 0 for p in model.geometry.inject.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = (model(**inputs).alpha - 0.3).square().mean()
    loss.backward()
    opt.step()
    assert all(float(conv.weight.detach().abs().sum()) > 0 for conv in model.geometry.inject)
    model.eval()
    with torch.no_grad():
        ref = model(**inputs)
        handle = _perturb_colour_stem(model)
        perturbed = model(**inputs)
        handle.remove()
    assert (perturbed.alpha - ref.alpha).abs().max() > 0


def test_identity_switch_is_off_in_the_paper_config_and_its_path_reaches_the_output_at_full_resolution() -> None:
    """With identity_warp the identity condition and the background reach the colour output through
    the full-resolution DetailHead: where its gates are shut the output is the condition composited
    over the background, so a pixel-sharp pattern in the condition is in the output as it is (the
    U-Net below runs at 1/8 of the image and could not carry it); open, the painted colour."""
    assert not get_config("paper").identity_warp and get_config("paper").detail_in_channels == 0
    cfg = get_config("demo")
    assert cfg.identity_warp and (cfg.res, cfg.planes) >= (128, 12)
    torch.manual_seed(0)
    model = MPIUNet(cfg).eval()
    conv2 = model.colour_head.detail.conv2
    with torch.no_grad():
        conv2.weight.zero_()
        conv2.bias.zero_()
        conv2.bias[6:] = -40.0  # gates shut
    inputs = random_inputs(cfg)
    B, T, R = 1, cfg.frames, cfg.res
    checker = ((torch.arange(R)[:, None] + torch.arange(R)[None]) % 2).float() * 1.2 - 0.6  # 1-pixel pattern
    identity = torch.zeros(B, T, cfg.identity_channels, R, R)
    identity[:, :, :3] = checker  # premultiplied RGB
    identity[:, :, 3] = 1.0  # alpha: the condition covers the whole image here
    background = torch.full((B, 3, R, R), 0.3)
    with torch.no_grad():
        out, shut_gate = model(**inputs, identity=identity, background=background, with_gate=True)
        dropped = model(**inputs, identity=None, background=background)
    torch.testing.assert_close(out.frontal, checker.expand_as(out.frontal), atol=1e-5, rtol=0)
    assert float(shut_gate) < 1e-6  # the mean gate returned with the prediction (what training charges)
    torch.testing.assert_close(out.residual, out.frontal)
    # dropped (no portrait): the composite is the background alone
    torch.testing.assert_close(dropped.frontal, torch.full_like(dropped.frontal, 0.3), atol=1e-5, rtol=0)
    # gates open: the painted colour (tanh of conv2's colour output: 0 here) instead
    with torch.no_grad():
        conv2.bias[6:] = 40.0
        opened, open_gate = model(**inputs, identity=identity, background=background, with_gate=True)
    torch.testing.assert_close(opened.frontal, torch.zeros_like(opened.frontal), atol=1e-5, rtol=0)
    assert float(open_gate) > 1 - 1e-6
    assert (model.colour_head.detail.conv2.bias[6:] == 40).all() and DetailHead.GATE_BIAS < 0


def _constant_detail_head(gate_logit: float) -> MPIUNet:
    """The demo config's network (seed 0) whose DetailHead paints tanh(0) = 0 everywhere through
    gates of this logit (very negative: shut, the condition is copied)."""
    torch.manual_seed(0)
    model = MPIUNet(get_config("demo")).eval()
    with torch.no_grad():
        model.colour_head.detail.conv2.weight.zero_()
        model.colour_head.detail.conv2.bias.zero_()
        model.colour_head.detail.conv2.bias[6:] = gate_logit
    return model


def test_mouth_gate_shift_moves_the_gates_inside_the_mouth_only() -> None:
    """An export's gate shift calibrates copying the portrait; inside the mouth (black, opaque, no
    confidence in the identity condition) there is nothing to copy: mouth_gate_shift opens the
    gates there and nowhere else."""
    model = _constant_detail_head(-6.0)  # shut: the condition is copied
    cfg = model.cfg
    inputs = random_inputs(cfg)
    R = cfg.res
    identity = torch.zeros(1, cfg.frames, cfg.identity_channels, R, R)
    identity[:, :, :3] = 0.5
    identity[:, :, 3] = 1.0
    identity[:, :, 4] = 1.0
    mouth = torch.zeros(R, R, dtype=torch.bool)
    mouth[R // 2:R // 2 + 6, R // 3:R // 2] = True
    identity[:, :, :3, mouth] = -1.0
    identity[:, :, 4, mouth] = 0.0
    # black, opaque, untrusted off the mesh too (a black coat): copied, not the mouth
    coat = torch.zeros(R, R, dtype=torch.bool)
    coat[-10:, :] = True
    identity[:, :, :3, coat] = -1.0
    identity[:, :, 4, coat] = 0.0
    inputs["mesh_alpha"] = torch.zeros_like(inputs["mesh_alpha"])
    inputs["mesh_alpha"][:, :, 3, :-10] = 1.0  # the mesh covers all but the coat
    background = torch.full((1, 3, R, R), 0.3)
    with torch.no_grad():
        before = model(**inputs, identity=identity, background=background)
        model.colour_head.detail.mouth_gate_shift = 12.0
        after = model(**inputs, identity=identity, background=background)
    assert (before.frontal[..., mouth] < -0.99).all()  # copied: the black mouth
    assert (after.frontal[..., mouth].abs() < 0.01).all()  # painted (tanh(0) = 0)
    torch.testing.assert_close(after.frontal[..., ~mouth], before.frontal[..., ~mouth], atol=0, rtol=0)
    assert (after.frontal[..., coat] < -0.99).all()
    with pytest.raises(ValueError, match="on_mesh"):
        model.colour_head.detail(torch.zeros(1, cfg.colour_head_channels, R, R), torch.zeros(1, cfg.detail_in_channels, R, R))


def test_copy_exactly_makes_the_mpi_show_the_composite_whatever_its_alpha() -> None:
    """A shut gate copies the identity condition composited over the background, C; the MPI then
    composites that over the background again by its own mask m (a soft hair outline showed the
    background twice). With copy_exactly its frontal view is C where m is at least the condition's
    alpha, and the condition's own colour at that mask where m is below it; open gates paint as
    before."""
    from model.geometry import mpi

    model = _constant_detail_head(-40.0)  # shut: the condition is copied
    cfg = model.cfg
    inputs = random_inputs(cfg)
    R = cfg.res
    identity = torch.zeros(1, cfg.frames, cfg.identity_channels, R, R)  # background: alpha 0
    alpha = torch.zeros(R, R)
    alpha[:, R // 4:R // 2] = 1.0  # the face
    alpha[:, R // 2:3 * R // 4] = 0.5  # a soft hair edge
    identity[:, :, 3] = alpha
    identity[:, :, :3] = 0.6 * alpha  # premultiplied: the person's colour is 0.6
    bg = -0.2
    background = torch.full((1, 3, R, R), bg)
    composite = 0.6 * alpha + bg * (1 - alpha)
    with torch.no_grad():
        before = model(**inputs, identity=identity, background=background)
        model.colour_head.detail.copy_exactly = True
        after = model(**inputs, identity=identity, background=background)
    torch.testing.assert_close(before.frontal, composite.expand_as(before.frontal))
    torch.testing.assert_close(after.alpha, before.alpha)
    m = (after.alpha * mpi.transmittance(after.alpha)).sum(2, keepdim=True)  # the network's own mask, random here
    view = mpi.render_in_mpi_camera(after.frontal[0], after.residual[0], after.alpha[0], background.expand(cfg.frames, -1, -1, -1))
    over = (m[0] >= alpha).expand_as(view)
    assert over.float().mean() > 0.3 and (~over).float().mean() > 0.1  # both cases are tested
    torch.testing.assert_close(view[over], composite.expand_as(view)[over], atol=1e-5, rtol=0)
    under = ~over & (alpha > 0)
    torch.testing.assert_close(view[under], (0.6 * m[0] + bg * (1 - m[0])).expand_as(view)[under], atol=1e-5, rtol=0)
    with torch.no_grad():  # gates open: the painted colour (tanh(0) = 0), nothing added
        model.colour_head.detail.conv2.bias[6:] = 40.0
        opened = model(**inputs, identity=identity, background=background)
    torch.testing.assert_close(opened.frontal, torch.zeros_like(opened.frontal), atol=1e-5, rtol=0)


def test_person_gate_shift_shuts_the_gates_on_the_person_only() -> None:
    """person_gate_shift moves the gate logits where the identity condition shows the portrait's
    person, by its alpha: on the face and the hair; not on the background (alpha 0) and not inside
    the mouth, which mouth_gate_shift rules."""
    model = _constant_detail_head(0.0)  # gates half open
    cfg = model.cfg
    inputs = random_inputs(cfg)
    R = cfg.res
    identity = torch.zeros(1, cfg.frames, cfg.identity_channels, R, R)  # background: alpha 0
    face = torch.zeros(R, R, dtype=torch.bool)
    face[R // 4:3 * R // 4, R // 4:3 * R // 4] = True
    hair = torch.zeros(R, R, dtype=torch.bool)
    hair[R // 8:R // 4, R // 4:3 * R // 4] = True
    identity[:, :, :3, face | hair] = 0.5
    identity[:, :, 3, face | hair] = 1.0
    identity[:, :, 4, face] = 1.0  # confident on the mesh; the hair off it has none
    mouth = torch.zeros(R, R, dtype=torch.bool)
    mouth[R // 2:R // 2 + 6, R // 3:R // 2] = True
    identity[:, :, :3, mouth] = -1.0
    identity[:, :, 4, mouth] = 0.0
    inputs["mesh_alpha"] = torch.zeros_like(inputs["mesh_alpha"])
    inputs["mesh_alpha"][:, :, 3][..., face] = 1.0
    background = torch.full((1, 3, R, R), 0.3)
    with torch.no_grad():
        before = model(**inputs, identity=identity, background=background)
        model.colour_head.detail.person_gate_shift = -40.0
        after = model(**inputs, identity=identity, background=background)
    person = (face | hair) & ~mouth
    torch.testing.assert_close(after.frontal[..., person], torch.full_like(after.frontal[..., person], 0.5))  # copied
    assert (before.frontal[..., person] - 0.25).abs().max() < 1e-5  # half way to the painted 0
    torch.testing.assert_close(after.frontal[..., ~person], before.frontal[..., ~person], atol=0, rtol=0)
