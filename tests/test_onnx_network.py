"""The denoiser in ONNX Runtime (model/coldstart): the demo student exported with torch, run on a
real portrait's conditions, gives what the torch sampler gives; a missing or broken file is said
clearly; running it imports no torch; `imp export-onnx` writes the file."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model.coldstart.onnx_network import OUTPUT_NAMES, OnnxModelError, OnnxNetwork, checkpoint_digest, onnx_path
from model.data.portrait_cache import default_cache_dir
from model.net.checkpoint import demo_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported() -> Path:
    """The demo checkpoint exported where the worker looks for it ($IMP_CACHE_DIR: this run's folder)."""
    from model.coldstart.onnx_export import export_onnx

    return export_onnx(demo_checkpoint(), onnx_path(demo_checkpoint(), default_cache_dir()))


@pytest.fixture(scope="module")
def real_step(astronaut_path):
    """(inputs as NumPy arrays, the torch sampler's outputs) for the first DDIM step of the demo
    student's first clip of the astronaut, driven by the built-in animation, first frame given."""
    import torch

    from model.data.driving import default_driving
    from model.diffusion.pipeline import Generator, image_to_model
    from model.diffusion.process import render_frontal
    from model.diffusion.sampler import DDIMScheduler, Guidance, guided_prediction

    torch.set_num_threads(1)
    generator = Generator.from_checkpoint(demo_checkpoint())
    cfg = generator.cfg
    portrait = generator.prepare(astronaut_path, cache_dir=default_cache_dir())
    cond = generator.clip_conditions(default_driving(portrait.track).frames(cfg.frames), first_frame=image_to_model(portrait.image))
    guidance = Guidance.paper(cfg.frames, cfg.diffusion.portrait_guidance, cfg.diffusion.first_frame_guidance)  # as generate_clips
    scheduler = DDIMScheduler(generator.schedule)
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[:1].clone()
    x_t = torch.randn((1, cfg.frames, 3, cfg.res, cfg.res), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred, _ = guided_prediction(generator.model, x_t, t, cond, guidance)
        video = render_frontal(pred, cond.background)
    inputs = {"x_t": x_t, "t": t, "coords": cond.coords, "mesh_alpha": cond.mesh_alpha, "portrait": cond.portrait,
              "first_frame": cond.first_frame, "first_frame_flag": cond.first_frame_flag, "identity": cond.identity,
              "background": cond.background, "valid": cond.valid, "guidance": guidance.inputs(cond)}
    expected = dict(zip(OUTPUT_NAMES, (pred.frontal, pred.residual, pred.alpha, video)))
    return {k: v.numpy() for k, v in inputs.items()}, {k: v.numpy() for k, v in expected.items()}


@pytest.mark.slow
def test_onnx_matches_the_torch_sampler_on_real_conditions(exported, real_step):
    inputs, expected = real_step
    net = OnnxNetwork(exported)
    assert net.input_names == list(inputs)
    assert net.checkpoint_sha256 == checkpoint_digest(demo_checkpoint())
    assert exported.stat().st_mode & 0o777 == 0o644
    got = net(**inputs)
    assert list(got) == list(OUTPUT_NAMES)
    for name in OUTPUT_NAMES:
        assert got[name].shape == expected[name].shape, name
        diff = float(np.abs(got[name] - expected[name]).max())
        assert diff < TOLERANCE, f"{name}: max abs difference {diff:.3g}"
    assert got["alpha"].min() >= 0 and got["alpha"].max() <= 1 and np.abs(got["video"]).max() <= 1 + 1e-6
    # the real conditions exercise the parts that matter: a given first frame, pixels outside the source image
    assert inputs["first_frame_flag"][0] == 1 and (inputs["valid"] == 0).any()


def test_onnx_path_is_keyed_by_the_checkpoint_bytes(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert onnx_path(a, tmp_path) == tmp_path / "onnx" / f"{checkpoint_digest(a)[:16]}.onnx"
    assert onnx_path(a, tmp_path) != onnx_path(b, tmp_path)
    assert checkpoint_digest(a) == "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"  # sha256(b"one")


def test_missing_or_broken_file_says_what_to_do(tmp_path):
    with pytest.raises(OnnxModelError, match=r"nothing\.onnx.*imp export-onnx"):
        OnnxNetwork(tmp_path / "nothing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a model")
    with pytest.raises(OnnxModelError, match=r"broken\.onnx.*cannot load.*imp export-onnx"):
        OnnxNetwork(broken)


@pytest.mark.slow
def test_running_the_network_imports_no_torch(exported):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from model.coldstart.onnx_network import OnnxNetwork, onnx_path, checkpoint_digest
        from model.data.portrait_cache import default_cache_dir
        from model.net.checkpoint import demo_checkpoint, read_config
        net = OnnxNetwork({str(exported)!r})
        out = net(**{{n: np.zeros(s, np.int64 if n == "t" else np.float32) for n, s in net.input_shapes.items()}})
        assert out["video"].shape == (1, read_config(demo_checkpoint()).frames, 3, 128, 128), out["video"].shape
        assert onnx_path(demo_checkpoint(), default_cache_dir()).name == {exported.name!r}
        heavy = sorted(m for m in ("torch", "onnx", "model.net.unet", "model.diffusion") if m in sys.modules)
        print("heavy:", heavy)
        sys.exit(1 if heavy else 0)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_cli_export_onnx_writes_and_keeps_a_current_file(tmp_path, exported):
    from app.cli import imp as cli

    out = tmp_path / "sub" / "demo.onnx"
    assert cli.main(["export-onnx", "--out", str(out)]) == 0
    assert OnnxNetwork(out).checkpoint_sha256 == checkpoint_digest(demo_checkpoint())
    assert not [p for p in out.parent.iterdir() if p != out]  # no temporary files left
    before = out.stat().st_mtime_ns
    assert cli.main(["export-onnx", "--out", str(out), "--if-stale"]) == 0
    assert out.stat().st_mtime_ns == before
    # a teacher (not distilled) cannot be one pass per step
    assert cli.main(["export-onnx", "--checkpoint", str(REPO / "assets" / "demo-teacher.safetensors"),
                     "--out", str(tmp_path / "teacher.onnx")]) == 2
    assert not (tmp_path / "teacher.onnx").exists()
