"""The generation worker in a separate process (app/live/process_worker.py), with a randomly
initialised tiny checkpoint and the shipped astronaut: it delivers the thread worker's frames to
the bit through shared memory, stops between two sampler steps, and reports failures."""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from app.live.process_worker import ProcessGenerationWorker  # noqa: E402
from app.live.ring_buffer import RingBuffer  # noqa: E402
from app.live.worker import GenerationJob, GenerationWorker  # noqa: E402
from model.data.driving import ParametricDriving, default_driving  # noqa: E402
from tests.test_worker import _drain  # noqa: E402


def driving_of(portrait, on_progress, max_frames=None):
    """Module level: the worker process unpickles it."""
    return default_driving(portrait.track, max_frames=max_frames)


def endless(portrait, on_progress):
    return ParametricDriving(portrait.track)


def test_process_worker_delivers_the_thread_workers_frames(tiny_checkpoint, astronaut_path):
    job = GenerationJob(tiny_checkpoint, astronaut_path, functools.partial(driving_of, max_frames=10), seed=3, steps=1, threads=1)
    results = {}
    for name, cls in (("process", ProcessGenerationWorker), ("thread", GenerationWorker)):
        buffer = RingBuffer(3)  # smaller than the output and than the shared slots: both sides block and resume
        worker = cls(job, buffer).start()
        results[name] = _drain(buffer, worker, timeout=120)
        assert worker.stop(timeout=10) and worker.status.phase == "finished", worker.status
        assert worker.fps == 25.0 and worker.status.frames_generated == 10
        assert worker.status.device == "cpu"  # the job's "auto", resolved by the worker on this GPU-less machine
        # the phase log (imp bench viewer's first-frame parts): every phase once, in order, in time order
        names, times = zip(*worker.status.phases)
        assert names == ("loading model", "preparing portrait", "tracking driving", "generating", "finished"), names
        assert list(times) == sorted(times) and worker.started_at <= times[0]
    assert len(results["process"]) == len(results["thread"]) == 10
    for a, b in zip(results["process"], results["thread"]):
        for name in ("frontal", "residual", "alpha", "background"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.T_cam_from_head, b.T_cam_from_head)
        assert (a.near, a.far) == (b.near, b.far)


def test_process_worker_stops_between_sampler_steps(tiny_checkpoint, astronaut_path):
    buffer = RingBuffer(4)
    worker = ProcessGenerationWorker(GenerationJob(tiny_checkpoint, astronaut_path, endless, steps=200, threads=1), buffer).start()
    deadline = time.perf_counter() + 120
    while worker.status.step < 1 and worker.alive and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert worker.status.phase == "generating" and worker.status.step >= 1
    started = time.perf_counter()
    assert worker.stop(timeout=10)
    assert time.perf_counter() - started < 5.0 and worker.status.phase == "stopped"
    assert not worker.alive and buffer.closed


def test_process_worker_failure_is_a_status_message(tiny_checkpoint, tmp_path):
    buffer = RingBuffer(4)
    job = GenerationJob(tiny_checkpoint, tmp_path / "missing.png", endless, steps=1, threads=1)
    worker = ProcessGenerationWorker(job, buffer).start()
    assert worker.join(timeout=120)
    assert worker.status.phase == "failed" and "missing.png" in worker.status.error and "\n" not in worker.status.text
    assert "Traceback" in worker.traceback and buffer.closed
    worker.stop()


def test_sliders_reach_the_source_in_the_worker_process(tiny_checkpoint, astronaut_path):
    """imp-viewer's sliders set the parametric source's params through the RemoteDriving handle:
    the clips generated after the change turn the head."""
    from app.cli.viewer import sliders_driving
    from app.live.session import LiveSession
    from model.data.driving import DrivingParams
    from model.tracking.pose import yaw_pitch_roll

    live = LiveSession(GenerationJob(tiny_checkpoint, astronaut_path, sliders_driving, steps=1, threads=1), capacity=64,
                       process=True)
    assert live.set_params(DrivingParams()) is True  # kept until the source is open
    live.start()
    try:
        deadline = time.perf_counter() + 120
        while live.worker.driving is None and time.perf_counter() < deadline:
            time.sleep(0.01)
        assert live.worker.driving.parametric and live.worker.fps == 25.0
        while len(live.buffer) < 8 and time.perf_counter() < deadline:
            time.sleep(0.01)
        assert live.set_params(DrivingParams(yaw=25.0), animate=False) is True
        frames = []
        while time.perf_counter() < deadline and not (frames and abs(yaw_pitch_roll(frames[-1].T_cam_from_head)[0]) > 15):
            frame = live.buffer.get(timeout=0.1)
            if frame is not None:
                frames.append(frame)
        yaws = [float(yaw_pitch_roll(f.T_cam_from_head)[0]) for f in frames]
        assert abs(yaws[0]) < 5 and abs(yaws[-1]) > 15, yaws
    finally:
        assert live.close()


def test_a_corrupt_checkpoint_is_a_status_message_too(astronaut_path, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    buffer = RingBuffer(4)
    worker = ProcessGenerationWorker(GenerationJob(bad, astronaut_path, endless, steps=1, threads=1), buffer).start()
    assert worker.join(timeout=120)
    assert worker.status.phase == "failed" and "broken.safetensors" in worker.status.error
    worker.stop()


def test_a_live_camera_in_the_worker_process_reports_its_capture_times(shared_data, tiny_checkpoint, astronaut_path):
    """A video read as a camera (real time, stale frames dropped) in the child: every frame that
    arrives carries its capture time, so the session measures capture -> shown latency."""
    from app.live.session import LiveSession
    from bench.soak import video_as_webcam

    video = str(shared_data / "videos/LivePortrait/d18.mp4")
    job = GenerationJob(tiny_checkpoint, astronaut_path, functools.partial(video_as_webcam, video), steps=1, threads=1,
                        max_frames=16)
    live = LiveSession(job, capacity=64, process=True).start()
    try:
        deadline = time.perf_counter() + 120
        while live.frames_shown < 16 and time.perf_counter() < deadline:
            live.poll()
            time.sleep(0.005)
        remote = live.worker.driving
        assert live.frames_shown == 16 and not remote.parametric
        assert len(remote.capture_times) == 16 and remote.capture_times == sorted(remote.capture_times)
        assert len(live.latencies) == 16 and all(0 < t < 120 for t in live.latencies)
        assert remote.capture.dropped >= 0
        assert live.set_params(None) is False  # a camera has no sliders
    finally:
        assert live.close()


def test_the_worker_process_reports_a_driving_videos_tracking(shared_data, tiny_checkpoint, astronaut_path):
    from tests.test_worker import VIDEO, _short_video

    job = GenerationJob(tiny_checkpoint, astronaut_path, functools.partial(_short_video, shared_data / VIDEO), steps=1, threads=1)
    buffer = RingBuffer(16)
    worker = ProcessGenerationWorker(job, buffer).start()
    assert len(_drain(buffer, worker, timeout=120)) == 6
    assert worker.stop(timeout=10) and worker.status.phase == "finished", worker.status
    assert worker.status.tracking == ("matting", 6, 6)  # the last of the child's per-frame messages
