"""The torch-free generator of the viewer's worker (model/coldstart/generator.py) against the torch
generator it stands in for, with the shipped student, the astronaut and its ONNX file exported
into this run's cache: the same network inputs, the same frames from the same noise, the same
chaining, and a worker that delivers frames without ever importing torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from model.coldstart.generator import OnnxGenerator, onnx_generator  # noqa: E402
from model.coldstart.onnx_network import OnnxNetwork, onnx_path  # noqa: E402
from model.data.driving import default_driving  # noqa: E402
from model.data.portrait_cache import default_cache_dir  # noqa: E402
from model.net.checkpoint import demo_checkpoint, read_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_onnx() -> Path:
    """The demo student's ONNX file in this run's cache (conftest sets IMP_CACHE_DIR), as
    `imp export-onnx` / scripts/setup.sh put it into a user's."""
    from model.coldstart.onnx_export import export_onnx

    path = onnx_path(demo_checkpoint(), default_cache_dir())
    if not path.is_file():
        export_onnx(demo_checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def generators(demo_onnx, astronaut_path):
    """(ONNX generator, torch generator), both with the astronaut prepared."""
    from model.diffusion.pipeline import Generator

    cold, why, _ = onnx_generator(demo_checkpoint(), "cpu", None, default_cache_dir(), threads=1)
    assert cold is not None, why
    cold.prepare(astronaut_path, default_cache_dir())
    warm = Generator.from_checkpoint(demo_checkpoint())
    warm.prepare(astronaut_path, default_cache_dir())
    return cold, warm


def _torch_inputs(warm, frames, first):
    from model.diffusion.sampler import Guidance

    cfg = warm.cfg
    cond = warm.clip_conditions(frames, None if first is None else torch.from_numpy(first))
    guidance = Guidance.paper(cfg.frames, cfg.diffusion.portrait_guidance, cfg.diffusion.first_frame_guidance).inputs(cond)
    return cond, guidance


def test_network_inputs_equal_the_torch_generators(generators):
    cold, warm = generators
    cfg = cold.cfg
    frames = default_driving(cold.portrait.track, max_frames=cfg.frames).frames(cfg.frames)
    np.testing.assert_allclose(cold.portrait.reference, warm.portrait.reference.numpy(), atol=1e-5)
    for first in (cold.portrait.reference[:3], None):
        ours = cold.clip_inputs(frames, first)
        cond, guidance = _torch_inputs(warm, frames, first)
        theirs = {"coords": cond.coords, "mesh_alpha": cond.mesh_alpha, "portrait": cond.portrait,
                  "first_frame": cond.first_frame, "first_frame_flag": cond.first_frame_flag, "background": cond.background,
                  "valid": cond.valid, "identity": cond.identity, "guidance": guidance}
        assert set(ours) == set(theirs)
        for name, value in theirs.items():
            assert ours[name].shape == tuple(value.shape) and ours[name].dtype == np.float32, name
            # the rasterisers' twins agree to rounding; a pixel on a triangle edge may differ
            diff = np.abs(ours[name] - value.numpy())
            assert diff.mean() < 1e-4 and np.mean(diff > 1e-3) < 1e-3, (name, diff.max())


def test_same_noise_gives_the_torch_frames(generators):
    """Clip 0 and the chained clip 1, each from noise both generators are given."""
    from model.diffusion.clips import keep_condition_outside
    from model.diffusion.pipeline import alpha_to_uint8, model_to_uint8
    from model.diffusion.process import render_frontal
    from model.diffusion.sampler import guided_prediction, Guidance

    cold, warm = generators
    cfg = cold.cfg
    seen: list[np.ndarray] = []
    network = cold.network

    def recording(**inputs):  # the noise the ONNX generator drew, for the torch sampler too
        seen.append(inputs["x_t"])
        return network(**inputs)

    cold.network = recording
    try:
        driving = default_driving(cold.portrait.track, max_frames=2 * cfg.frames - 1)
        clips = list(cold.generate_clips(driving, seed=5))
    finally:
        cold.network = network
    assert [len(c) for c in clips] == [cfg.frames, cfg.frames - 1] and len(seen) == 2

    again = default_driving(warm.portrait.track, max_frames=2 * cfg.frames - 1)
    first = cold.portrait.reference[:3]
    t = torch.tensor([cfg.diffusion.train_timesteps - 1])
    guidance = Guidance.paper(cfg.frames, cfg.diffusion.portrait_guidance, cfg.diffusion.first_frame_guidance)
    for k, (clip, x_t) in enumerate(zip(clips, seen)):
        frames = again.frames(cfg.frames) if k == 0 else None
        if k == 1:
            frames = last.concat([last, again.frames(cfg.frames - 1)])
        cond, _ = _torch_inputs(warm, frames, first)
        with torch.no_grad():
            pred, _ = guided_prediction(warm.model, torch.from_numpy(x_t), t, cond, guidance)
        ours = np.stack([f.frontal for f in clip]), np.stack([f.alpha for f in clip])
        start = 0 if k == 0 else 1
        # outside the portrait's photo both deliver the condition (Generator.mpi_frames does it for torch)
        frontal, _, alpha = keep_condition_outside(pred.frontal[0].numpy(), pred.residual[0].numpy(), pred.alpha[0].numpy(),
                                                   cond.identity[0].numpy(), cond.background[0].numpy(), warm.portrait.photo)
        theirs = model_to_uint8(torch.from_numpy(frontal[start:])), alpha_to_uint8(torch.from_numpy(alpha[start:]))
        for a, b in zip(ours, theirs):
            diff = np.abs(a.astype(int) - b.astype(int))
            assert diff.max() <= 2 and diff.mean() < 0.01, (k, diff.max(), diff.mean())
        first = render_frontal(pred, cond.background)[0, -1].numpy()
        last = frames[-1:]
    poses = np.stack([f.T_cam_from_head for c in clips for f in c])
    np.testing.assert_allclose(poses, default_driving(warm.portrait.track, max_frames=2 * cfg.frames - 1)
                               .frames(2 * cfg.frames - 1).T_cam_from_head)


def test_it_serves_only_what_it_can(demo_onnx, tmp_path):
    ckpt = demo_checkpoint()
    assert onnx_generator(ckpt, "cpu", None, default_cache_dir()).generator is not None
    torn = tmp_path / "torn"
    torn_file = onnx_path(ckpt, torn)
    torn_file.parent.mkdir(parents=True)
    torn_file.write_bytes(demo_onnx.read_bytes()[:100_000])
    for device, steps, cache, needle, missing in (("cuda", None, default_cache_dir(), "GPU", False),
                                                 ("cpu", 4, default_cache_dir(), "one-step", False),
                                                 ("cpu", None, tmp_path, "imp export-onnx", True),
                                                 ("cpu", None, torn, "imp export-onnx", True),
                                                 ("cpu", None, None, "cache", False)):
        generator, why, lacking = onnx_generator(ckpt, device, steps, cache)
        assert generator is None and needle in why and lacking == missing, (device, steps, why)
    teacher = REPO / "assets" / "demo-teacher.safetensors"
    assert not read_config(teacher).guidance_input
    assert onnx_generator(teacher, "cpu", None, default_cache_dir()).generator is None


def test_the_worker_makes_its_clips_without_torch(demo_onnx, astronaut_path):
    """In a fresh process, as the viewer's worker process runs: the generator, the portrait (from
    the cache), the built-in driving and two clips, and torch never imported."""
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from app.live.worker import GenerationJob, open_generator\n"
        "from app.cli.viewer import sliders_driving\n"
        "from model.data.portrait_cache import default_cache_dir\n"
        "from model.net.checkpoint import demo_checkpoint\n"
        f"job = GenerationJob(demo_checkpoint(), Path({str(astronaut_path)!r}), sliders_driving, device='auto', threads=1,\n"
        "                    cache_dir=default_cache_dir())\n"
        "g = open_generator(job)\n"
        "p = g.prepare(job.portrait, job.cache_dir)\n"
        "clips = g.generate_clips(job.driving(p, None), max_frames=2 * g.cfg.frames - 1)\n"
        "sizes = [len(c) for c in clips]\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'device': g.device, 'sizes': sizes}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    frames = read_config(demo_checkpoint()).frames
    assert result == {"torch": False, "device": "cpu (ONNX Runtime)", "sizes": [frames, frames - 1]}, result


def test_process_worker_runs_the_onnx_generator(demo_onnx, astronaut_path):
    from app.live.process_worker import ProcessGenerationWorker
    from app.live.ring_buffer import RingBuffer
    from app.live.worker import GenerationJob
    from app.cli.viewer import sliders_driving

    buffer = RingBuffer(8)
    job = GenerationJob(demo_checkpoint(), astronaut_path, sliders_driving, threads=1, max_frames=12,
                        cache_dir=default_cache_dir())
    worker = ProcessGenerationWorker(job, buffer).start()
    frames, deadline = [], time.perf_counter() + 120
    while time.perf_counter() < deadline:
        item = buffer.get(timeout=0.1)
        if item is not None:
            frames.append(item)
        elif buffer.closed and len(buffer) == 0:
            break
    assert worker.stop(timeout=10)
    assert worker.status.phase == "finished", (worker.status, worker.traceback)
    assert worker.status.device == OnnxGenerator.device and len(frames) == 12
    assert worker.times is not None and worker.times.passes == 2 and worker.times.frames == 12
    # a head, not an empty MPI: the person's planes carry alpha where the portrait's face is
    assert max(f.alpha.max() for f in frames) > 200 and frames[0].frontal.std() > 10


def test_without_its_onnx_file_the_worker_says_so_and_uses_torch(tmp_path, astronaut_path, capsys):
    from app.live.worker import GenerationJob, open_generator
    from model.diffusion.pipeline import Generator

    job = GenerationJob(demo_checkpoint(), astronaut_path, default_driving, device="cpu", threads=1, cache_dir=tmp_path)
    assert isinstance(open_generator(job), Generator)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generating with torch" in err[0] and "imp export-onnx" in err[0], err
