"""Guidance distillation (model/training/distill.py, `imp train --stage distill`): the student starts
as the teacher, samples in one network pass, learns the teacher's guided prediction on real
footage, resumes bit-exactly, and generates."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from app.cli import imp as cli
from model.data.pairs import PairSampler
from model.diffusion.process import Conditions, make_schedule
from model.diffusion.sampler import Guidance, guided_prediction
from model.net.checkpoint import load_checkpoint
from model.net.unet import MPIUNet
from model.net.variant import Variant, VariantModel
from model.training.distill import distill_step, student_config, student_weights
from model.training.loop import RunSettings, train
from model.training.step import TrainOptions
from tests.train_fixtures import MICRO, conditions_cache, one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


def _conditions(cfg, B: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Conditions]:
    g = torch.Generator().manual_seed(seed)
    T, R, D = cfg.frames, cfg.res, cfg.planes
    r = lambda *shape: torch.rand(*shape, generator=g) * 2 - 1
    cond = Conditions(coords=r(B, T, cfg.coord_channels, R, R), mesh_alpha=torch.rand(B, T, D, R, R, generator=g),
                      portrait=r(B, cfg.portrait_channels, R, R), first_frame=r(B, 3, R, R), first_frame_flag=torch.ones(B),
                      background=r(B, 3, R, R))
    return r(B, T, 3, R, R), torch.full((B,), 900), cond


def _models(seed: int = 0) -> tuple[VariantModel, VariantModel]:
    torch.manual_seed(seed)
    teacher = MPIUNet(MICRO).eval()
    student = MPIUNet(student_config(MICRO)).eval()
    student.load_state_dict(student_weights(teacher.state_dict(), student))
    return VariantModel(teacher), VariantModel(student)


def test_the_student_starts_as_the_teachers_conditioned_branch():
    teacher, student = _models()
    x_t, t, cond = _conditions(MICRO, B=2)
    args = (x_t, t, cond.coords, cond.mesh_alpha, cond.portrait, cond.first_frame, cond.first_frame_flag, None, cond.background)
    with torch.no_grad():
        want = teacher(*args)
        for scales in ((1.0, 1.0), (1.7, 0.3)):
            got = student(*args, guidance=torch.tensor(scales).expand(2, MICRO.frames, 2))
            for a, b in zip(got, want):
                assert torch.allclose(a, b, atol=1e-6)
        with pytest.raises(ValueError, match="guidance scales"):
            student(*args)
    with pytest.raises(ValueError, match="already a guidance-distilled student"):
        student_config(student.cfg)
    wide = MPIUNet(dataclasses.replace(MICRO, stem_channels=24))
    with pytest.raises(ValueError, match="does not fit"):
        student_weights(wide.state_dict(), MPIUNet(student_config(MICRO)))


def test_a_student_samples_in_one_network_pass():
    teacher, student = _models()
    x_t, t, cond = _conditions(MICRO)
    guidance = Guidance.paper(MICRO.frames, 1.5, 1.0)
    for model, passes in ((teacher, 3), (student, 1)):
        calls = []
        hook = model.register_forward_hook(lambda *_: calls.append(1))
        with torch.no_grad():
            pred, x0 = guided_prediction(model, x_t, t, cond, guidance)
        hook.remove()
        assert len(calls) == passes and x0.shape == x_t.shape and float(pred.alpha.min()) >= 0.0
    # the scales as the student takes them: s_p everywhere, s_f per frame, 0 without a first frame
    two = dataclasses.replace(_conditions(MICRO, B=2)[2], first_frame_flag=torch.tensor([1.0, 0.0]))
    inputs = guidance.inputs(two)
    assert inputs.shape == (2, MICRO.frames, 2)
    assert torch.equal(inputs[..., 0], torch.full((2, MICRO.frames), 1.5))
    assert torch.equal(inputs[0, :, 1], guidance.first_frame) and not bool(inputs[1, :, 1].any())


def _teacher_checkpoint(data, tmp_path, cache):
    """A MICRO model after a bootstrap and an alternating step (a stage-2 model, as distillation wants)."""
    boot = train(MICRO, TrainOptions(stage="bootstrap", steps=1, lr=1e-3),
                 RunSettings(out=tmp_path / "teacher", data=data, progress=False, tensorboard=False, cache_dir=cache))
    two = train(MICRO, TrainOptions(stage="alternating", steps=1, lr=1e-3, p_side=0.0),
                RunSettings(out=tmp_path / "teacher", data=data, init=boot.checkpoint, progress=False, tensorboard=False,
                            cache_dir=cache))
    return two.checkpoint


def test_distillation_resumes_bit_exactly_learns_and_is_compared_by_eval(data, tmp_path, tmp_path_factory, capsys):
    cache = conditions_cache(tmp_path_factory)
    teacher_path = _teacher_checkpoint(data, tmp_path, cache)
    cfg = student_config(MICRO)
    common = dict(data=data, progress=False, tensorboard=False, cache_dir=cache, checkpoint_every=100)

    # resume: 3 steps in one run == 2 steps, stop, --resume, 1 more
    opts = TrainOptions(stage="distill", teacher=str(teacher_path), steps=3, lr=1e-3)
    whole = train(cfg, opts, RunSettings(out=tmp_path / "whole", **common))
    train(cfg, opts, RunSettings(out=tmp_path / "split", stop_after=2, **common))
    rest = train(cfg, opts, RunSettings(out=tmp_path / "split", resume=True, **common))
    assert whole.weights_digest == rest.weights_digest and whole.step == rest.step == 3
    ckpt = load_checkpoint(whole.checkpoint)
    assert ckpt.config.guidance_input and ckpt.state["options"]["teacher"] == str(teacher_path)

    # learning: the student's gradient leads to the teacher's guided prediction. On one draw (the
    # one of 8 where the student starts farthest from it) small gradient steps bring it closer at
    # every step (this barely trained teacher is a sharp function: larger steps overshoot)
    teacher_net, teacher_ckpt = _load(teacher_path)
    teacher = VariantModel(teacher_net, Variant.from_dict(teacher_ckpt.state["variant"]))
    student_net, _ = _load(_student_at_start(teacher_path, cfg, tmp_path))
    student = VariantModel(student_net).train()
    sampler = PairSampler(data, cfg, cache, seed=0)
    batch = sampler.batch(1000, 0, 1, side=False)
    schedule = make_schedule(cfg.diffusion)
    loss = lambda seed: distill_step(student, teacher, batch, schedule, cfg, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        seed = max(range(8), key=lambda s: float(loss(s).loss))
        before = float(loss(seed).loss)
    opt = torch.optim.SGD(student.parameters(), lr=1e-5)
    losses = [before]
    for _ in range(6):
        opt.zero_grad()
        loss(seed).loss.backward()
        opt.step()
        with torch.no_grad():
            losses.append(float(loss(seed).loss))
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < before - 2e-4, losses

    # `imp eval --checkpoint TEACHER STUDENT`: a row each and the student's differences to the teacher
    import json

    from model.data.dataset import PreparedDataset

    out = tmp_path / "eval.json"
    vid = PreparedDataset(data).entries[0]["id"]
    assert cli.main(["eval", "--checkpoint", str(teacher_path), str(whole.checkpoint), "--data", str(data), "--videos", vid,
                     "--max-frames", "4", "--no-landmarks", "--no-identity", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["checkpoints"]
    teacher_psnr, student_psnr = (results[str(p)]["frontal"]["psnr"] for p in (teacher_path, whole.checkpoint))
    line = next(l for l in printed.splitlines() if l.startswith("whole/distill@3 - teacher/alternating@1"))
    assert f"frontal PSNR {student_psnr - teacher_psnr:+.2f}" in line and "side face PSNR" in line


def _load(path):
    from model.net.checkpoint import load_model

    return load_model(path)


def _student_at_start(teacher_path, cfg, tmp_path):
    """The untrained student (the teacher's weights, guidance inputs at zero) as a checkpoint file."""
    from model.net.checkpoint import save_checkpoint

    student = MPIUNet(cfg)
    student.load_state_dict(student_weights(load_checkpoint(teacher_path).weights, student))
    path = tmp_path / "start.safetensors"
    save_checkpoint(path, student, cfg, {"step": 0, "variant": Variant().to_dict()})
    return path


def test_a_student_generates_with_one_pass_per_clip(astronaut_path):
    from model.data.driving import default_driving
    from model.diffusion.pipeline import Generator

    _, student = _models()
    gen = Generator(student)
    gen.prepare(astronaut_path)
    clips = list(gen.generate_clips(default_driving(gen.portrait.track, max_frames=3 * MICRO.frames - 2), steps=2))
    assert [len(c) for c in clips] == [MICRO.frames, MICRO.frames - 1, MICRO.frames - 1]
    assert gen.times.passes == 2 * len(clips)  # the teacher: 2 steps x 2 or 3 branches


def test_cli_distill_needs_a_fitting_teacher(data, tmp_path, tiny_checkpoint, capsys):
    assert cli.main(["train", "--stage", "distill", "--data", str(data), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "--teacher" in capsys.readouterr().err
    assert cli.main(["train", "--stage", "distill", "--teacher", str(tiny_checkpoint), "--config", "demo", "--data", str(data),
                     "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "a student has its teacher's config (tiny)" in capsys.readouterr().err
    assert cli.main(["train", "--teacher", str(tiny_checkpoint), "--data", str(data), "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "--teacher is for --stage distill" in capsys.readouterr().err
    # the tiny fixture has no training state: read as a full model; a bootstrap-stage teacher is refused
    boot = tmp_path / "boot.safetensors"
    from model.net.checkpoint import save_checkpoint
    from model.net.config import get_config

    save_checkpoint(boot, MPIUNet(get_config("tiny")), get_config("tiny"), {"step": 1, "variant": Variant("mesh").to_dict()})
    assert cli.main(["train", "--stage", "distill", "--teacher", str(boot), "--data", str(data), "--out", str(tmp_path / "d"),
                     "--quiet", "--steps", "1"]) == 2
    assert "bootstrap-stage model" in capsys.readouterr().err
