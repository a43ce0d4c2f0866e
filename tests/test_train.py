"""Training (model/training/step.py, model/training/loop.py, `imp train`) on a tiny prepared dataset of real footage:
which parts each stage trains, the L_side step, late-stage noise, the ablation variants, bit-exact
resume, checkpoints on SIGTERM and crash safety of the latest checkpoint."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from app.cli import imp as cli
from model.net.checkpoint import load_checkpoint
from model.net.config import get_config
from model.diffusion.process import make_schedule
from model.data.pairs import PairSampler
from model.training.loop import RunSettings, train
from model.training.step import TrainOptions, sample_timesteps, set_stage, training_step
from model.net.unet import MPIPrediction, MPIUNet
from model.net.variant import Variant, VariantModel, apply_variant
from tests.train_fixtures import one_torch_thread, MICRO, conditions_cache, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


def _snapshot(net: torch.nn.Module, part: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in getattr(net, part).parameters()]


def _changed(before: list[torch.Tensor], net: torch.nn.Module, part: str) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, getattr(net, part).parameters()))


def test_stages_train_the_parts_of_supp_a():
    net = MPIUNet(MICRO)
    names = [n for n, _ in set_stage(net, "bootstrap")]
    assert all(n.split(".")[0] in {"time_embed", "colour_stem", "portrait_encoder", "colour", "colour_head"} for n in names)
    assert any(n.startswith("colour.") for n in names) and not any(n.startswith("geometry") for n in names)
    names = [n for n, _ in set_stage(net, "alternating")]
    assert {n.split(".")[0] for n in names} == {"geometry_stem", "geometry", "geometry_head", "colour_head"}
    assert any(n.startswith("geometry.inject.") for n in names)  # the zero convolutions
    assert not any(p.requires_grad for p in net.colour.parameters())


def test_variants_bootstrap_alpha_and_no_residual():
    g = torch.Generator().manual_seed(0)
    B, T, D, R = 1, 2, 4, 8
    pred = MPIPrediction(torch.rand(B, T, 3, R, R, generator=g) * 2 - 1, torch.rand(B, T, 3, R, R, generator=g) * 2 - 1,
                         torch.rand(B, T, D, R, R, generator=g))
    mesh = torch.zeros(B, T, D, R, R)
    mesh[..., 2, 2:5, 2:5] = 1.0
    out = apply_variant(pred, mesh, Variant("mesh"))
    assert torch.equal(out.alpha[:, :, 0], torch.ones(B, T, R, R)) and torch.equal(out.alpha[:, :, 1:], mesh[:, :, 1:])
    assert torch.equal(out.residual, pred.residual)
    # off the mesh only the opaque back plane is seen, and with nothing in front it shows the frontal image
    from model.diffusion.process import render_frontal

    x0 = render_frontal(out, torch.zeros(B, 3, R, R))
    assert torch.allclose(x0[..., 0, 0], pred.frontal[..., 0, 0], atol=1e-6)
    single = apply_variant(pred, mesh, Variant("network", residual=False))
    assert torch.equal(single.residual, pred.frontal) and torch.equal(single.alpha, pred.alpha)


def test_late_stage_noise_draws_from_the_second_half():
    g = torch.Generator().manual_seed(0)
    late = sample_timesteps(g, 4000, 1000, late=True)
    full = sample_timesteps(g, 4000, 1000, late=False)
    assert int(late.min()) >= 500 and int(late.max()) == 999
    assert int(full.min()) < 50 and int(full.max()) > 950


def test_steps_update_the_right_parts(data, tmp_path_factory):
    """A bootstrap step moves the colour branch only; an L_side step (pseudo ground truth from the
    model itself, target frames as side views) moves the geometry branch and the colour output layer."""
    sampler = PairSampler(data, MICRO, conditions_cache(tmp_path_factory), seed=0)
    schedule = make_schedule(MICRO.diffusion)
    torch.manual_seed(0)
    net = MPIUNet(MICRO)
    for stage, side in (("bootstrap", False), ("alternating", True)):
        opts = TrainOptions(stage=stage, lr=1e-3, k_steps=2)
        params = [p for _, p in set_stage(net, stage)]
        model = VariantModel(net, opts.variant)
        opt = torch.optim.Adam(params, lr=opts.lr)
        before = {part: _snapshot(net, part) for part in ("colour", "colour_head", "geometry", "geometry_head")}
        batch = sampler.batch(0, 0, 1, side=side)
        out = training_step(model, model, batch, schedule, opts, torch.Generator().manual_seed(1), 0.7, 0.1)
        assert torch.isfinite(out.loss) and {"l2_full", "l2_foreground", "mask", "smoothness", "disparity"} <= set(out.terms)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        moved = {part: _changed(b, net, part) for part, b in before.items()}
        if stage == "bootstrap":
            assert moved == {"colour": True, "colour_head": True, "geometry": False, "geometry_head": False}
            # fixed, fully opaque geometry: only the full rendering is judged (fg / mask terms could not be met)
            assert abs(out.terms["total"] - out.terms["l2_full"]) < 1e-6 and out.terms["mask"] > 0
        else:
            assert moved == {"colour": False, "colour_head": True, "geometry": True, "geometry_head": True}
            assert int(out.t) >= schedule.num_timesteps // 2  # late-stage noise
            w = opts.loss_weights
            expected = sum(getattr(w, k) * out.terms[k] for k in ("l2_full", "l2_foreground", "mask", "smoothness", "disparity"))
            assert abs(out.terms["total"] - expected) < 1e-5
            # the rendering compared with the real frames is the MPI seen from the target cameras
            assert out.rendering.shape == batch.target.shape


def _weights_and_optimizer(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {**ckpt.weights, **{"extra/" + k: v for k, v in ckpt.extra.items() if k.startswith("optim/")}}


def _assert_same(a: Path, b: Path) -> None:
    wa, wb = _weights_and_optimizer(a), _weights_and_optimizer(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("cfg, opts", [
    (get_config("tiny"), TrainOptions(stage="bootstrap", steps=3, lr=1e-3)),
    (MICRO, TrainOptions(stage="alternating", steps=3, lr=1e-3, p_side=0.5, k_steps=2)),
], ids=["tiny-bootstrap", "micro-alternating-with-side"])
def test_resume_is_bit_exact(data, tmp_path, tmp_path_factory, cfg, opts):
    """K + M steps in one run == K steps, stop, --resume, M more steps: weights and Adam moments
    bit-equal. The alternating case draws L_side at least once (pseudo ground truth included)."""
    from model.training.step import chooses_side

    cache = conditions_cache(tmp_path_factory)
    init = None
    if opts.stage == "alternating":
        assert any(chooses_side(opts, s) for s in range(opts.steps)) and not all(chooses_side(opts, s) for s in range(opts.steps))
        boot = train(cfg, TrainOptions(stage="bootstrap", steps=1, lr=1e-3),
                     RunSettings(out=tmp_path / "boot", data=data, progress=False, tensorboard=False, cache_dir=cache))
        init = boot.checkpoint
    common = dict(data=data, init=init, progress=False, tensorboard=False, cache_dir=cache, checkpoint_every=100)
    whole = train(cfg, opts, RunSettings(out=tmp_path / "whole", **common))
    part = train(cfg, opts, RunSettings(out=tmp_path / "split", stop_after=2, **common))
    assert part.step == 2 and load_checkpoint(part.checkpoint).state["step"] == 2
    rest = train(cfg, opts, RunSettings(out=tmp_path / "split", resume=True, **common))
    assert whole.step == rest.step == 3
    _assert_same(whole.checkpoint, rest.checkpoint)
    assert whole.weights_digest == rest.weights_digest
    assert whole.losses == rest.losses[-1:] and len(rest.losses) == 1 or whole.losses[2] == rest.losses[-1]
    ckpt = load_checkpoint(whole.checkpoint)
    assert ckpt.state["stage"] == opts.stage and ckpt.state["options"]["seed"] == 0
    assert (tmp_path / "whole" / opts.stage / "config.json").exists()


def test_a_crash_while_saving_keeps_the_latest_checkpoint(data, tmp_path, tmp_path_factory, monkeypatch):
    cache = conditions_cache(tmp_path_factory)
    opts = TrainOptions(steps=10, lr=1e-3)
    settings = dict(out=tmp_path / "run", data=data, progress=False, tensorboard=False, cache_dir=cache, stop_after=1)
    first = train(MICRO, opts, RunSettings(**settings))
    good = first.checkpoint.read_bytes()

    import safetensors.torch

    def dying_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(OSError, match="simulated"):
        train(MICRO, opts, RunSettings(resume=True, **settings))
    assert first.checkpoint.read_bytes() == good
    assert load_checkpoint(first.checkpoint).state["step"] == 1


def test_cli_refuses_what_it_cannot_do(data, tmp_path, capsys):
    code = cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--stage", "alternating", "--quiet"])
    assert code == 2 and "bootstrap" in capsys.readouterr().err
    code = cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--resume", "--quiet"])
    assert code == 2 and "no checkpoint" in capsys.readouterr().err
    code = cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and "manifest" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_sigterm_saves_and_resume_continues(data, tmp_path):
    """`imp train` (tiny config) killed by SIGTERM mid-run saves a checkpoint and exits 130;
    `--resume` continues from that step."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "app.cli", "train", "--data", str(data), "--config", "tiny", "--out", str(out),
            "--steps", "1000", "--checkpoint-every", "1000", "--image-every", "1", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = out / "tb" / "bootstrap"
    deadline = time.time() + 120
    while time.time() < deadline and not (events.is_dir() and any(events.iterdir())):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "stopped by signal" in stderr
    step = load_checkpoint(out / "bootstrap" / "latest.safetensors").state["step"]
    assert 1 <= step < 1000
    code = cli.main(["train", "--data", str(data), "--config", "tiny", "--out", str(out), "--steps", str(step + 1),
                     "--resume", "--quiet"])
    assert code == 0
    assert load_checkpoint(out / "bootstrap" / "latest.safetensors").state["step"] == step + 1


def test_training_learns_on_real_footage(data, tmp_path, tmp_path_factory):
    """60 bootstrap steps on one real clip: the L_mpi loss at fixed (batch, t, noise, dropout) falls
    well below where it started."""
    from model.net.variant import VariantModel

    cache = conditions_cache(tmp_path_factory)
    vid = "dreamtalk-W009_front_neutral_level1_001"
    opts = TrainOptions(steps=60, lr=2e-3, videos=(vid,))
    run = train(MICRO, opts, RunSettings(out=tmp_path / "run", data=data, progress=False, tensorboard=False, cache_dir=cache))
    sampler = PairSampler(data, MICRO, cache, videos=[vid], seed=99)
    schedule = make_schedule(MICRO.diffusion)

    def fixed_loss(net: MPIUNet) -> float:
        total = 0.0
        for step in range(4):
            batch = sampler.batch(step, 0, 1, side=False)
            with torch.no_grad():
                out = training_step(VariantModel(net, opts.variant), None, batch, schedule, opts,
                                    torch.Generator().manual_seed(step), 0.0, 0.0)
            total += out.terms["l2_full"]
        return total / 4

    torch.manual_seed(opts.seed)
    before = fixed_loss(MPIUNet(MICRO))
    trained = MPIUNet(MICRO)
    trained.load_state_dict(load_checkpoint(run.checkpoint).weights)
    after = fixed_loss(trained)
    print(f"fixed-batch L2 before {before:.4f}, after 60 steps {after:.4f}")
    assert after < 0.5 * before, (before, after)


def test_lpips_term_only_with_weights(data, tmp_path, tmp_path_factory):
    """--lpips PATH adds the LPIPS term (weights from the file: random ones here, the real AlexNet
    ones cannot be downloaded); without it the run says once that the term is off."""
    from safetensors.torch import save_file

    from model.training.lpips import LPIPS

    torch.manual_seed(0)
    path = tmp_path / "lpips_alex.safetensors"
    save_file({k: v.contiguous() for k, v in LPIPS().state_dict().items()}, str(path))
    cache = conditions_cache(tmp_path_factory)
    messages: list[str] = []
    common = dict(data=data, progress=False, tensorboard=False, cache_dir=cache)
    with_lpips = train(MICRO, TrainOptions(steps=1, lpips=str(path)), RunSettings(out=tmp_path / "a", **common), messages.append)
    assert "lpips" in with_lpips.last_terms and with_lpips.last_terms["lpips"] != 0  # random lin weights: any sign
    assert not any("LPIPS term off" in m for m in messages)
    without = train(MICRO, TrainOptions(steps=1), RunSettings(out=tmp_path / "b", **common), messages.append)
    assert "lpips" not in without.last_terms
    assert sum("LPIPS term off" in m for m in messages) == 1


def test_bootstrap_warm_start_takes_the_matching_weights(data, tmp_path, tmp_path_factory):
    """`--init` on a bootstrap: every tensor of the checkpoint with the same name and shape is the
    starting point, the others keep their fresh initialisation (here: a head whose shape changed)."""
    import types

    import torch

    from model.net.checkpoint import save_checkpoint
    from model.net.unet import MPIUNet

    torch.manual_seed(5)
    donor = MPIUNet(MICRO).state_dict()
    changed = "colour_head.up2.post.weight"
    weights = dict(donor, **{changed: torch.zeros(1, 1, 3, 3)})  # another shape: not taken
    src = tmp_path / "donor.safetensors"
    save_checkpoint(src, types.SimpleNamespace(state_dict=lambda: weights), MICRO, {"step": 7})
    run = train(MICRO, TrainOptions(steps=1, lr=0.0), RunSettings(out=tmp_path / "warm", data=data, init=src, progress=False,
                                                          tensorboard=False, cache_dir=conditions_cache(tmp_path_factory)))
    got = load_checkpoint(run.checkpoint).weights
    assert all(torch.equal(got[k], v) for k, v in donor.items() if k != changed)
    torch.manual_seed(0)  # what train() starts from
    assert torch.equal(got[changed], MPIUNet(MICRO).state_dict()[changed])


def test_identity_config_pays_for_open_gates(data, tmp_path, tmp_path_factory):
    """With the identity condition every training step charges the DetailHead's mean gate (weight
    LossWeights.gate), so painting over the portrait's pixels must pay for itself in the image
    losses; the charge reaches the gates' bias."""
    import dataclasses

    import torch

    from model.data.pairs import PairSampler
    from model.diffusion.process import make_schedule
    from model.net.config import get_config
    from model.net.unet import DetailHead, MPIUNet
    from model.net.variant import VariantModel
    from model.training.step import TrainOptions, training_step

    cfg = dataclasses.replace(get_config("demo"), res=32, colour_channels=(16, 16, 16), geometry_channels=(8, 8, 8),
                              stem_channels=16, time_channels=16)
    torch.manual_seed(0)
    net = VariantModel(MPIUNet(cfg), TrainOptions(stage="bootstrap").variant)
    batch = PairSampler(data, cfg, tmp_path / "cache", seed=1).batch(0, 0, 1, False)
    out = training_step(net, net, batch, make_schedule(cfg.diffusion), TrainOptions(stage="bootstrap"),
                        torch.Generator().manual_seed(0), 0.7, 0.0)
    assert 0.05 < out.terms["gate"] < 0.3  # the gates start mostly shut (sigmoid(-2) = 0.12)
    out.loss.backward()
    bias = next(m for m in net.modules() if isinstance(m, DetailHead)).conv2.bias
    assert (bias.grad[6:] > 0).all()  # the charge pushes the gates shut (descent lowers the bias)
