"""The viewer's generation worker (app/live/worker.py) and the webcam driving source (app/live/webcam.py),
with a randomly initialised tiny checkpoint, the shipped astronaut portrait and real footage.

The worker is checked against the sampler run directly (same frames, same order: it adds no
loss, repetition or reordering), for stopping between two sampler steps, and for turning a
corrupt driving video into a status message. The webcam path is fed a real video file through
cv2.VideoCapture (this machine has no camera) and compared with the offline tracker."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from app.live.ring_buffer import RingBuffer  # noqa: E402
from app.live.worker import GenerationJob, GenerationWorker  # noqa: E402
from model.net.config import get_config  # noqa: E402
from model.data.driving import ParametricDriving, default_driving  # noqa: E402

TINY = get_config("tiny")
VIDEO = "videos/dreamtalk/M030_front_happy_level3_001.mp4"


def _drain(buffer: RingBuffer, worker: GenerationWorker, timeout: float = 60.0) -> list:
    frames, start = [], time.perf_counter()
    while time.perf_counter() - start < timeout:
        item = buffer.get(timeout=0.1)
        if item is not None:
            frames.append(item)
        elif buffer.closed and len(buffer) == 0:
            break
    return frames


def test_worker_delivers_exactly_the_sampler_frames(tiny_checkpoint, astronaut_path):
    from model.diffusion.pipeline import Generator

    buffer = RingBuffer(4)  # smaller than the output: the worker must block and resume, losing nothing
    job = GenerationJob(tiny_checkpoint, astronaut_path, lambda p, _on_progress: default_driving(p.track, max_frames=10),
                        seed=3, steps=1, threads=1)
    worker = GenerationWorker(job, buffer).start()
    got = _drain(buffer, worker)
    assert worker.stop(timeout=10) and worker.status.phase == "finished", worker.status
    assert worker.fps == 25.0 and worker.status.frames_generated == 10 and worker.status.first_frame_time is not None

    def reference():  # same thread count as the worker (OpenMP's is per thread): bit-identical sums
        torch.set_num_threads(1)
        generator = Generator.from_checkpoint(tiny_checkpoint)
        portrait = generator.prepare(astronaut_path)
        want.extend(f for clip in generator.generate_clips(default_driving(portrait.track, max_frames=10), seed=3, steps=1)
                    for f in clip)

    want: list = []
    thread = threading.Thread(target=reference)
    thread.start()
    thread.join()
    assert len(got) == len(want) == 10
    for a, b in zip(got, want):
        for name in ("frontal", "residual", "alpha"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_allclose(a.T_cam_from_head, b.T_cam_from_head)


def test_stop_ends_the_thread_between_sampler_steps(tiny_checkpoint, astronaut_path):
    buffer = RingBuffer(4)
    job = GenerationJob(tiny_checkpoint, astronaut_path, lambda p, _on_progress: ParametricDriving(p.track), steps=200, threads=1)
    worker = GenerationWorker(job, buffer).start()
    deadline = time.perf_counter() + 60
    while worker.status.step < 1 and worker.alive and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert worker.status.phase == "generating" and worker.status.step >= 1
    started = time.perf_counter()
    assert worker.stop(timeout=10)
    assert time.perf_counter() - started < 5.0  # one tiny step, not the 199 left
    assert worker.status.phase == "stopped" and worker.status.step < 200
    assert not [t for t in threading.enumerate() if t.name == "imp-generation"]


def test_corrupt_driving_video_becomes_a_status_message(tiny_checkpoint, astronaut_path, tmp_path):
    from model.data.driving import VideoDriving

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    buffer = RingBuffer(4)
    job = GenerationJob(tiny_checkpoint, astronaut_path, lambda p, _on_progress: VideoDriving(bad, p.track, progress=False), steps=1, threads=1)
    worker = GenerationWorker(job, buffer).start()
    assert worker.join(timeout=60)
    assert worker.status.phase == "failed" and "broken.mp4" in worker.status.error
    assert "\n" not in worker.status.text and buffer.closed and len(buffer) == 0


def test_no_webcam_is_one_clear_message():
    from app.live.webcam import WebcamUnavailable, open_capture, parse_webcam

    assert parse_webcam("webcam") == 0 and parse_webcam("webcam:2") == 2 and parse_webcam("clip.mp4") is None
    try:
        cap, _ = open_capture(0)
    except WebcamUnavailable as exc:
        assert str(exc) == "no webcam found at index 0"
    else:  # pragma: no cover - a machine with a camera
        cap.release()
        pytest.skip("a camera is connected here")


def test_webcam_path_on_a_real_video_matches_the_offline_tracker(shared_data, astronaut_path):
    """The live source (OpenCV capture + per-batch fit) against track_video + VideoDriving of the
    same file: head rotations relative to the first frame agree to a few degrees, and the mouth
    opens and closes the same way, up to one constant: the live neutral template is the first
    batch's median face (the future is unknown live), the offline one the whole video's."""
    from app.live.webcam import WebcamDriving
    from model.data.driving import VideoDriving
    from model.tracking import track_image

    portrait = track_image(astronaut_path)
    video = shared_data / VIDEO
    live = WebcamDriving(str(video), portrait)
    try:
        assert live.fps == 25.0
        parts = [live.frames(8) for _ in range(5)]
    finally:
        live.close()
    assert all(len(p) == 8 for p in parts)
    offline = VideoDriving(video, portrait, max_frames=40, progress=False).frames(40)

    def angles(T):  # degrees each frame's head is turned from the first one
        R = T[:, :3, :3].astype(np.float64)
        rel = np.einsum("nij,kj->nik", R, R[0])
        return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))

    T_live = np.concatenate([p.T_cam_from_head for p in parts])
    assert np.abs(angles(T_live) - angles(offline.T_cam_from_head)).max() < 3.0
    # mouth opening: lower lip (14) minus upper lip (13), head-frame metres
    gap = lambda v: v[:, 14, 1] - v[:, 13, 1]  # noqa: E731
    g_live = gap(np.concatenate([p.vertices_head for p in parts]))
    g_off = gap(offline.vertices_head)
    assert np.ptp(g_off) > 0.002  # the clip does move its mouth, or the comparison says nothing
    assert np.corrcoef(g_live, g_off)[0, 1] > 0.9
    offset = g_live - g_off
    assert np.abs(offset - offset.mean()).max() < 0.003  # no jumps between batches


@pytest.mark.slow
def test_webcam_path_moves_the_body_as_the_offline_driving_does(shared_data, astronaut_path):
    """LivePortrait d20, who rises in his chair, through the live path (a file standing in for a
    camera, batch by batch): his torso is found rising as the whole video's path finds it
    (model/data/body_motion.py), a few pixels behind at most, as a causal estimate may be."""
    from app.live.webcam import WebcamDriving
    from model.data.driving import VideoDriving
    from model.tracking import track_image

    portrait = track_image(astronaut_path)
    video = shared_data / "videos/LivePortrait/d20.mp4"
    live = WebcamDriving(str(video), portrait)
    try:
        parts = [live.frames(16) for _ in range(5)]
    finally:
        live.close()
    torso = np.concatenate([p.torso_shift for p in parts]) * 128
    offline = VideoDriving(video, portrait, max_frames=80, progress=False).frames(80).torso_shift * 128
    assert torso.shape == (80, 2) and np.array_equal(torso[0], [0, 0])
    assert torso[-1, 1] <= -6 and offline[-1, 1] <= -6, (torso[::8], offline[::8])
    assert np.abs(torso - offline).max() <= 3, (torso[::8], offline[::8])


def _short_video(path, portrait, on_progress=None):
    from model.data.driving import VideoDriving

    return VideoDriving(path, portrait.track, max_frames=6, progress=False, on_progress=on_progress)


def test_the_worker_shows_a_driving_videos_tracking_frame_by_frame(shared_data, tiny_checkpoint, astronaut_path):
    import functools

    from app.live.worker import WorkerStatus

    seen: list[str] = []
    job = GenerationJob(tiny_checkpoint, astronaut_path, functools.partial(_short_video, shared_data / VIDEO), steps=1, threads=1)
    buffer = RingBuffer(16)
    worker = GenerationWorker(job, buffer)
    # the status line while tracking, read as the panel does (every status the worker sets)
    original = worker._set
    worker._set = lambda **changes: (original(**changes), seen.append(worker.status.text))[0]
    worker.start()
    _drain(buffer, worker)
    assert worker.stop(timeout=10) and worker.status.phase == "finished", worker.status
    assert "tracking driving (tracking frame 1/6)" in seen and "tracking driving (matting frame 6/6)" in seen, seen
    assert seen.index("tracking driving (tracking frame 6/6)") < seen.index("tracking driving (matting frame 1/6)")
    assert WorkerStatus(phase="tracking driving", tracking=("tracking", 4, 0)).text == "tracking driving (tracking frame 4)"
    assert WorkerStatus(phase="tracking driving").text == "tracking driving"  # sliders, a webcam, a cached video
