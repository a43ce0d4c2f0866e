"""What streams instead of piling up: a clip file played through a reader thread (bounded memory,
seeks, loops), saving on a writer thread (the render loop never waits for compression), the
webcam read by a capture thread (newest frames, capture times, latency), and MediaPipe's C++ log
lines kept off the terminal."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _numbered_clip(path: Path, frames: int, size: int = 32, planes: int = 4, fps: float = 25.0) -> None:
    """A lossless clip whose frame i has every alpha value i (cheap to write: it compresses)."""
    from bench.synthetic import random_mpi
    from model.formats.clip import ClipWriter

    base = random_mpi(size, planes, seed=0)
    with ClipWriter(path, fps=fps) as writer:
        for i in range(frames):
            writer.append(replace(base, alpha=np.full_like(base.alpha, i % 256)))


def _index(frame) -> int:
    return int(frame.alpha[0, 0, 0])


def test_clip_stream_plays_skips_seeks_and_loops(tmp_path):
    from app.live.clip_stream import ClipStream

    path = tmp_path / "numbered.mpi"
    _numbered_clip(path, 40)
    with ClipStream(path, capacity=5) as stream:
        assert len(stream) == 40 and stream.fps == 25.0 and stream.size == (32, 32) and stream.num_planes == 4
        assert _index(stream.frame(0, wait=10)) == 0
        for i in (1, 2, 3, 6, 9):  # in order, with skips smaller than the read-ahead
            assert _index(stream.frame(i, wait=10)) == i
        for i in (30, 2, 39, 0, 1):  # seeks forward and back, and the loop from the end to the start
            assert _index(stream.frame(i, wait=10)) == i
        assert stream.frame(20) is None  # a seek without waiting: not read yet, the window keeps its frame
        assert _index(stream.frame(20, wait=10)) == 20
        time.sleep(0.3)
        assert len(stream._buffer) <= 5  # read ahead, bounded
        with pytest.raises(IndexError):
            stream.frame(40)
    assert not [t for t in threading.enumerate() if t.name == "imp-clip-reader"]


STREAM_MEMORY = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[2])
from app.live.clip_stream import ClipStream
from model.formats.clip import load_clip

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

base = rss_mb()
peak = base
with ClipStream(sys.argv[1]) as stream:
    for i in range(len(stream)):
        assert int(stream.frame(i, wait=30).alpha[0, 0, 0]) == i % 256
        peak = max(peak, rss_mb())
streamed = peak - base
clip = load_clip(sys.argv[1])
print("MEM " + json.dumps({"streamed": streamed, "loaded": rss_mb() - base, "frames": len(clip)}))
"""


def test_clip_stream_memory_stays_bounded(tmp_path):
    """A 150-frame clip of 256^2 x 24 planes is ~300 MB in memory when loaded (the old --clip);
    played through the stream, memory grows by the read-ahead only."""
    path = tmp_path / "big.mpi"
    _numbered_clip(path, 150, size=256, planes=24)
    out = subprocess.run([sys.executable, "-c", STREAM_MEMORY, str(path), str(REPO)], capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-2000:]
    mem = json.loads(out.stdout.split("MEM ", 1)[1])
    assert mem["frames"] == 150
    assert mem["loaded"] > 250, mem  # the check can fail: loading it whole does cost that
    assert mem["streamed"] < 80, mem


def test_saving_never_makes_the_render_loop_wait_for_compression(tmp_path):
    from app.live.clip_saver import BackgroundClipWriter
    from bench.synthetic import random_mpi
    from model.formats.clip import load_clip

    frames = [random_mpi(256, 24, seed=s) for s in range(6)]  # random alpha: zlib works hard on these
    writer = BackgroundClipWriter(tmp_path / "saved.mpi", fps=25.0)
    started = time.perf_counter()
    for frame in frames:
        writer.append(frame)
    handed_over = time.perf_counter() - started
    writer.close()
    total = time.perf_counter() - started
    assert handed_over < 0.2 * total, (handed_over, total)  # compression happened on the writer's thread
    clip = load_clip(tmp_path / "saved.mpi")
    assert len(clip) == 6 and len(writer) == 6
    np.testing.assert_array_equal(clip.frame(5).alpha, frames[5].alpha)


def test_a_failing_save_is_reported_and_leaves_no_file(tmp_path):
    from app.live.clip_saver import BackgroundClipWriter
    from bench.synthetic import random_mpi

    writer = BackgroundClipWriter(tmp_path / "broken.mpi", fps=25.0)

    def full_disk(frame):
        raise OSError(28, "No space left on device")

    writer._writer.append = full_disk
    writer.append(random_mpi(32, 4))
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert not list(tmp_path.iterdir())


def _numbered_video(path: Path, frames: int, fps: float = 25.0) -> None:
    """An MJPG video whose frame i is a flat grey of value 2 i (i < 120): the index survives coding."""
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert out.isOpened()
    for i in range(frames):
        out.write(np.full((48, 64, 3), 2 * i, np.uint8))
    out.release()


def _video_index(bgr: np.ndarray) -> int:
    return int(round(float(bgr.mean()) / 2))


def test_camera_capture_delivers_the_newest_frames(tmp_path):
    """A video standing in for a camera (read at its 25 fps on the capture thread): after the
    consumer was busy for a second, it gets the newest frames, captured just now, and the older ones
    are dropped, not queued; a recording (realtime off) gives every frame in order."""
    import cv2

    from app.live.webcam import CameraCapture, open_capture

    video = tmp_path / "numbered.avi"
    _numbered_video(video, 100)
    cap, first = open_capture(str(video))
    capture = CameraCapture(cap, 25.0, first, realtime=True, is_file=True)
    try:
        time.sleep(1.0)
        taken = capture.take(5)
        now = time.perf_counter()
        indices = [_video_index(bgr) for _, bgr in taken]
        assert indices == list(range(indices[0], indices[0] + 5))
        assert indices[-1] >= 18  # about a second's worth of frames were captured meanwhile
        assert now - taken[-1][0] < 0.2 and capture.dropped >= indices[0]  # fresh; the stale ones dropped
        again = capture.take(5)  # waits for five newer frames rather than repeating old ones
        assert _video_index(again[0][1]) > indices[-1] and again[0][0] > taken[-1][0]
    finally:
        capture.close()
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read()
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    recording = CameraCapture(cap, 25.0, first, realtime=False, is_file=True)
    try:
        time.sleep(0.3)
        assert [_video_index(b) for _, b in recording.take(5)] == [0, 1, 2, 3, 4]
        assert [_video_index(b) for _, b in recording.take(3)] == [5, 6, 7]
    finally:
        recording.close()


def test_live_session_measures_capture_to_shown_latency(tiny_checkpoint, astronaut_path):
    from types import SimpleNamespace

    from app.live.session import LiveSession
    from app.live.worker import GenerationJob
    from bench.synthetic import random_mpi

    live = LiveSession(GenerationJob(tiny_checkpoint, astronaut_path, lambda p, _on_progress: None), capacity=4)
    now = time.perf_counter()
    live.worker.fps = 25.0
    live.worker.driving = SimpleNamespace(capture_times=[now - 0.5, now - 0.3])  # what the camera source records
    frame = random_mpi(16, 2)
    live.buffer.put(frame)
    live.buffer.put(frame)
    assert live.poll(now) is frame and live.poll(now + 0.05) is frame
    assert len(live.latencies) == 2
    assert 0.5 <= live.latencies[0] < 0.7 and 0.3 <= live.latencies[1] < 0.5


NATIVE_LOGS = r"""
import sys, threading, time
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
from model.data.matting import SelfieMatter
from model.tracking.facemesh import FaceMeshRunner

image = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
def ours():  # Python writing to stderr from another thread while the graphs start and run
    for _ in range(20):
        print("our own line", file=sys.stderr, flush=True)
        time.sleep(0.05)
t = threading.Thread(target=ours)
t.start()
with FaceMeshRunner(static=False) as runner:
    assert runner(image) is not None
with SelfieMatter() as matter:
    matter(image)
t.join()
print("done", file=sys.stderr, flush=True)
"""


def test_mediapipe_log_lines_stay_off_the_terminal(astronaut_path):
    import os

    def run(verbose: bool) -> str:
        env = {k: v for k, v in os.environ.items() if k != "IMP_VERBOSE"}
        if verbose:
            env["IMP_VERBOSE"] = "1"
        out = subprocess.run([sys.executable, "-c", NATIVE_LOGS, str(REPO), str(astronaut_path)], capture_output=True,
                             text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stderr

    def native(text: str) -> list[str]:
        return [line for line in text.splitlines() if line[:1] in "IWEF" and line[1:5].isdigit() or "absl::InitializeLog" in line]

    quiet = run(verbose=False)
    assert not native(quiet), native(quiet)[:3]
    assert quiet.count("our own line") == 20 and quiet.rstrip().endswith("done")  # ours all there, none lost
    loud = run(verbose=True)
    assert native(loud)  # the check can fail: verbose shows them


def test_native_log_lines_are_dropped_even_inside_another_writers_line():
    """A C++ thread's log line can land between a Python thread's text and its newline: it goes,
    the Python line stays whole, and every other line is kept as it was."""
    from model.tracking.native_logs import filter_native_lines

    glog = b"W0000 00:00:1796522340.357236    5726 inference_feedback_manager.cc:114] Feedback manager ...\n"
    absl = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    tflite = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    data = b"our own line\n" + glog + b"our own line" + absl + b"\n" + tflite + b"Warning: W0 is not a log line\nlast"
    assert filter_native_lines(data) == b"our own line\nour own line\nWarning: W0 is not a log line\nlast"
    assert filter_native_lines(b"tail without newline " + glog.rstrip()) == b"tail without newline "
