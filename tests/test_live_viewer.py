"""imp-viewer live, in a real window on a private Xvfb: generation worker -> ring buffer -> paced
playback, with a randomly initialised tiny checkpoint and the shipped astronaut portrait.

What the checks prove: with random weights the generated MPIs are noise, so "the viewer shows
what was generated" is checked by rendering the shown generated frame with the torch reference
renderer from the viewer's own camera and comparing; "it shows a head" is checked on the default
launch without a model (the portrait lifted into an MPI), by MediaPipe finding a face in the
screenshot. The XR frame loop runs against the recording double of pyopenxr from tests/test_xr.py
(the one boundary this machine cannot reach: an OpenXR runtime with a headset); the fallback to
the desktop when no runtime exists runs against the real loader.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("imgui_bundle")

from app.live.session import LiveSession  # noqa: E402
from app.live.worker import GenerationJob  # noqa: E402
from model.data.driving import ParametricDriving, default_driving  # noqa: E402

SIZE = (900, 520)  # the view gets 570 x 520 px beside the panel


def _viewer(live, **kw):
    from app.viewer.viewer import Viewer

    return Viewer(None, "test", size=SIZE, vsync=False, live=live, max_fps=None, **kw)


def _step_until(viewer, condition, timeout: float = 60.0) -> None:
    start = time.perf_counter()
    while not condition():
        assert time.perf_counter() - start < timeout, f"timed out; status: {viewer.status_lines}"
        viewer.step()


def _reference(frame, K, T_view_from_head, size) -> np.ndarray:
    out = frame.render_reference(K, T_view_from_head, size)
    return np.clip(np.round(out.rgb[0].permute(1, 2, 0).numpy() * 255.0), 0, 255)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) + 1e-12) + 20 * np.log10(255.0))


def _no_worker_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name == "imp-generation"]


def test_live_plays_what_the_worker_generates_and_saves_it(xvfb_display, tiny_checkpoint, astronaut_path, tmp_path):
    from model.formats.clip import load_clip

    save = tmp_path / "live.mpi"
    job = GenerationJob(tiny_checkpoint, astronaut_path, lambda p, _on_progress: default_driving(p.track, max_frames=15),
                        seed=1, steps=1, threads=1)
    live = LiveSession(job, capacity=4, save=save)
    with _viewer(live, sliders=True) as viewer:
        viewer.set("mouth_open", "0.8")  # before the source exists: applied when it opens
        viewer.set("animate", "off")
        viewer.step()
        assert any(line.startswith("generating...") for line in viewer.status_lines), viewer.status_lines
        live.start()
        _step_until(viewer, lambda: viewer.frame is not None)
        assert isinstance(live.worker.driving, ParametricDriving)
        assert live.worker.driving.params.mouth_open == pytest.approx(0.8) and live.worker.driving.animate is False

        # what the window shows is the generated frame seen from the viewer's camera
        viewer.set("play", "off")
        viewer.step()
        image = viewer.crop_view(viewer.step(capture=True))
        (K, T), = viewer.eye_cameras(viewer.eye_size())
        expected = _reference(viewer.frame, K, T, viewer.eye_size())
        assert image.shape == expected.shape and _psnr(image, expected) > 30.0
        viewer.set("play", "on")

        _step_until(viewer, lambda: live.state.finished)
        assert live.frames_shown == 15 and live.state.frames_generated == 15
        assert "generation finished" in viewer.status_lines
        last = viewer.frame
    assert _no_worker_threads()
    clip = load_clip(save)  # finalised on close: complete and under its name
    assert len(clip) == 15 and clip.fps == 25.0
    np.testing.assert_array_equal(clip.frame(14).alpha, last.alpha)
    assert not list(tmp_path.glob(".*partial"))


def test_closing_mid_generation_stops_the_worker_and_leaves_no_file(xvfb_display, tiny_checkpoint, astronaut_path, tmp_path):
    save = tmp_path / "never.mpi"
    job = GenerationJob(tiny_checkpoint, astronaut_path, lambda p, _on_progress: ParametricDriving(p.track), steps=500, threads=1)
    live = LiveSession(job, save=save)
    viewer = _viewer(live)
    live.start()
    _step_until(viewer, lambda: live.worker.status.step >= 1)
    assert any(line.startswith("generating...") and "step" in line for line in viewer.status_lines)
    started = time.perf_counter()
    viewer.close()
    assert time.perf_counter() - started < 5.0
    assert _no_worker_threads() and live.worker.status.phase == "stopped"
    assert not save.exists() and not list(tmp_path.iterdir())  # no frame was shown: nothing saved, no partial


def test_worker_error_reaches_the_panel_and_the_window_stays_usable(xvfb_display, tiny_checkpoint, astronaut_path, tmp_path):
    from model.data.driving import VideoDriving

    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    job = GenerationJob(tiny_checkpoint, astronaut_path, lambda p, _on_progress: VideoDriving(bad, p.track, progress=False), steps=1, threads=1)
    live = LiveSession(job)
    with _viewer(live) as viewer:
        live.start()
        _step_until(viewer, lambda: live.state.error is not None)
        errors = [line for line in viewer.status_lines if line.startswith("error:")]
        assert len(errors) == 1 and "corrupt.mp4" in errors[0]
        viewer.set("distance", "1.5")  # still responds
        image = viewer.step(capture=True)
        assert image.shape[:2] == (SIZE[1], SIZE[0]) and viewer.view.distance == pytest.approx(1.5)
    assert _no_worker_threads()


def test_default_launch_without_model_shows_a_head_and_falls_back_from_xr(xvfb_display, tmp_path, monkeypatch, capsys):
    import model.net.checkpoint
    from app.cli.viewer import main
    from model.tracking.facemesh import FaceMeshRunner

    monkeypatch.setattr(model.net.checkpoint, "DEMO_CHECKPOINT", "no-such-demo-model.safetensors")
    shot = tmp_path / "shot.png"
    assert main(["--display", "xr", "--frames", "3", "--no-vsync", "--size", "900x520", "--screenshot", str(shot)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("no demo model" in line for line in lines)
    xr_line = [line for line in lines if "OpenXR" in line]
    assert len(xr_line) == 1 and "no runtime found" in xr_line[0] and xr_line[0].endswith("using the desktop window")
    from PIL import Image

    view = np.asarray(Image.open(shot).convert("RGB"))[:, :900 - 330]
    with FaceMeshRunner(static=True) as runner:
        points = runner(view)
    assert points is not None, "no face in the default launch's window"
    centre = points[:, :2].mean(0)
    assert abs(centre[0] - view.shape[1] / 2) < 0.2 * view.shape[1] and abs(centre[1] - view.shape[0] / 2) < 0.3 * view.shape[0]


def test_cli_webcam_without_camera_falls_back_to_sliders_and_saves(xvfb_display, tiny_checkpoint, tmp_path, capsys):
    from app.cli.viewer import main
    from model.formats.clip import load_clip

    save = tmp_path / "cli.mpi"
    code = main(["webcam", "--checkpoint", str(tiny_checkpoint), "--steps", "1", "--max-frames", "8", "--threads", "1",
                 "--display", "desktop", "--no-vsync", "--size", "900x520", "--save", str(save), "--frames", "2000"])
    assert code == 0
    out = capsys.readouterr().out
    assert "no webcam found at index 0; driving with the sliders instead" in out
    assert f"saved 8 frames to {save}" in out
    assert len(load_clip(save)) == 8 and _no_worker_threads()


def test_a_window_that_cannot_open_leaves_no_worker_behind(xvfb_display, tiny_checkpoint, monkeypatch, capsys):
    """The worker process starts before the window (its start-up overlaps the viewer's). When no
    window opens (the display offers too old an OpenGL: simulated, this machine's has 4.5), the
    command ends with the one-line error and the worker process is stopped."""
    import app.cli.viewer as cli
    from app.viewer.window import DisplayError

    sessions = []
    real_session = cli._live_session

    def recorded(*args):
        made = real_session(*args)
        sessions.append(made[0])
        return made

    monkeypatch.setattr(cli, "_live_session", recorded)

    def no_window(*args, **kwargs):
        time.sleep(1.0)  # the worker process is well under way
        raise DisplayError("the MPI renderer needs OpenGL 4.3 (compute shaders); this display offers 3.3")

    monkeypatch.setattr(cli, "_open_viewer", no_window)
    code = cli.main(["--checkpoint", str(tiny_checkpoint), "--steps", "1", "--threads", "1", "--display", "desktop",
                     "--size", "900x520", "--frames", "10"])
    assert code == 1
    assert "this display offers 3.3" in capsys.readouterr().err
    live = sessions[-1]
    assert live.started and not live.worker.alive
    assert not live.worker._process.is_alive()  # the spawned process itself is gone


def test_imp_viewer_starts_its_worker_before_importing_torch(tmp_path):
    """The first frame waits for the worker's torch import (1.5-2 s here); if imp-viewer imported
    torch itself before starting the worker, the two imports would run one after the other. In a
    fresh interpreter, `main()` with its defaults reaches the worker's start with neither torch nor
    NumPy (0.1 s) loaded (the start is stopped there: no window, no worker)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import app.live.session as session\n"
            "def start(self):\n"
            "    print('loaded at the start:', 'torch' in sys.modules, 'numpy' in sys.modules, flush=True)\n"
            "    raise SystemExit(3)\n"
            "session.LiveSession.start = start\n"
            "from app.cli.viewer import main\n"
            "main([])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "loaded at the start: False False", done.stdout


XR_LOOP = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from app.xr import poses as xr_math
from app.viewer.viewer import Viewer
from app.xr.view import XRViewer
from tests.scenes import astronaut_clip
from tests.test_live_viewer import SIZE, _psnr, _reference
from tests.test_xr import gl_session

result = {"psnr": [], "eye_difference": [], "distance_check": []}
with Viewer(astronaut_clip(), "xr", size=SIZE, vsync=False, max_fps=None) as viewer:
    fake, session = gl_session(size=(96, 80), graphics="glx", make_window=lambda: viewer.window.handle)
    xrv = XRViewer(viewer, session)
    try:
        for distance in (None, 0.6):
            if distance is not None:
                viewer.set("distance", str(distance))
            start = session.frames_submitted
            while session.frames_submitted < start + 2:
                assert xrv.frame()
            frame = viewer.frame
            T_ref = np.asarray(viewer.reference_pose, np.float64)
            placed = xr_math.place_head_in_front(np.eye(4), T_ref, viewer.view.distance)
            result["distance_check"].append([float(np.linalg.norm(placed[:3, 3])), viewer.view.distance])
            eyes = []
            for eye, x in enumerate((-0.032, 0.032)):
                tex = fake._gl_textures[eye][(fake._next_image[eye] - 1) % 3]
                w, h = fake.size
                image = np.frombuffer(tex.read(), np.uint8).reshape(h, w, 4)[::-1, :, :3]
                K = xr_math.intrinsics_from_fov(-0.8, 0.7, 0.75, -0.75, w, h)
                T = xr_math.cv_eye_from_space((0, 0, 0, 1), (x, 0.0, 0.0)) @ placed @ np.linalg.inv(T_ref) \
                    @ np.asarray(frame.T_cam_from_head, np.float64)
                result["psnr"].append(_psnr(image, _reference(frame, K, T, (w, h))))
                eyes.append(image.astype(int))
            result["eye_difference"].append(float(np.abs(eyes[0] - eyes[1]).mean()))
        result["eyes_drawn"] = xrv.eyes_drawn
    finally:
        session.request_exit()
        while xrv.frame():
            pass
        xrv.close()
    result["balanced"] = fake.log.count("begin_frame") == fake.log.count("end_frame") > 0
    result["graphics"] = session.graphics
print("XR-RESULT " + json.dumps(result))
"""


def test_xr_loop_draws_the_placed_head_in_each_eye(xvfb_display):
    """The viewer's XR loop (app/xr/view.py) on the recording double, GLX path with the mirror
    window's GL context (own process: PyOpenGL picks GLX or EGL once per process): each eye's
    swapchain image is the MPI rendered by the torch reference from that eye with the head placed
    `distance` in front of the initial head pose, and the mirror's distance slider moves it."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("xr")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", XR_LOOP, str(repo)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DISPLAY": xvfb_display}, cwd=repo)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("XR-RESULT ", 1)[1])
    assert result["graphics"] == "glx" and result["balanced"] and result["eyes_drawn"] >= 8
    assert min(result["psnr"]) > 30.0, result
    assert min(result["eye_difference"]) > 1.0  # two different eyes
    assert [d for d, _ in result["distance_check"]] == pytest.approx([v for _, v in result["distance_check"]])
    assert result["distance_check"][1][1] == pytest.approx(0.6)


def test_fullscreen_is_side_by_side_on_the_whole_screen(xvfb_display, tmp_path):
    from PIL import Image

    from app.cli.viewer import main

    shot = tmp_path / "full.png"
    assert main(["--lift", "--fullscreen", "--display", "desktop", "--frames", "2", "--no-vsync", "--screenshot", str(shot)]) == 0
    image = np.asarray(Image.open(shot).convert("RGB")).astype(np.float32)
    assert image.shape == (1000, 1600, 3)  # the xvfb_display screen: full screen, no panel
    left, right = image[:, :800], image[:, 800:]
    assert left.std() > 20 and np.abs(left - right).mean() < 0.25 * np.abs(left - left.mean()).mean()


@pytest.mark.slow
def test_default_demo_model_shows_a_generated_head(xvfb_display, astronaut_path):
    """The embedded default end to end: the shipped demo model drives the astronaut with the built-in
    animation through the worker, ring buffer and GL renderer (with the sampling settings shipped in
    the weights), what the window shows is a face (MediaPipe's face detector on the screenshot), and
    it is the astronaut herself (dlib's face-recognition distance to the portrait under 0.6, when
    the `eval` extra is installed)."""
    import mediapipe as mp

    from model.net.checkpoint import demo_checkpoint

    job = GenerationJob(demo_checkpoint(), astronaut_path, lambda p, _on_progress: default_driving(p.track, max_frames=8),
                        seed=0, threads=1)
    live = LiveSession(job, capacity=8)
    with _viewer(live, sliders=True) as viewer:
        live.start()
        _step_until(viewer, lambda: viewer.frame is not None, timeout=120.0)
        viewer.set("play", "off")
        viewer.step()
        image = np.ascontiguousarray(viewer.crop_view(viewer.step(capture=True)).astype(np.uint8))
    assert _no_worker_threads()
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as detector:
        found = detector.process(image).detections or []
    assert found, "no face in the live view of the demo model"
    box = found[0].location_data.relative_bounding_box
    assert 0.15 < box.width < 0.9  # a head filling a good part of the view, not a speck
    from PIL import Image

    from model.evaluation.identity import FaceIdentity, IdentityUnavailable, distance

    try:
        faces = FaceIdentity().load()
    except IdentityUnavailable as exc:
        pytest.skip(f"identity check: {exc}")
    portrait = faces.embed(np.asarray(Image.open(astronaut_path).convert("RGB")))
    shown = faces.embed(image)
    assert portrait is not None and shown is not None, "dlib finds no face in the portrait or the view"
    assert distance(portrait.embedding, shown.embedding) < 0.6, "the view does not show the astronaut"
