"""`imp-viewer`: talking portraits in 3D, generated live, in an OpenXR headset or a desktop window.

    imp-viewer [PORTRAIT] [DRIVING] [--checkpoint CKPT] [--display auto|xr|desktop]
               [--stereo mono|sbs|anaglyph] [--clip CLIP] [--save CLIP] [--fullscreen]

Live (no --clip): a background worker samples the model clip after clip into a ring buffer that
the window plays at the driving source's fps (app/live/session.py). PORTRAIT defaults to the shipped
astronaut, the checkpoint to the shipped demo model, DRIVING to `sliders` (the built-in animation
plus expression / head-pose sliders on the portrait's own mesh); DRIVING may also be a video file
or `webcam[:N]` (tracked live; without a camera: one line, then sliders). Without any checkpoint
it says so and shows the portrait lifted into a (non-learned) MPI (model/lift.py). --clip plays a
saved MPI clip instead. --display auto tries OpenXR first and falls back to the desktop window
with a one-line reason. Without a display (no
DISPLAY / WAYLAND_DISPLAY, as on a server) it starts a private virtual X server (Xvfb), plays the
clip there for a bounded time, writes what the window shows to a PNG whose path it prints, stops
Xvfb and exits: the command works everywhere, and on a headless machine it shows you something.

In the headset (--display xr / auto with a runtime) the window mirrors the eye images; when the
run ends (Esc, the window closed, --frames headset frames, the end of an automated live run,
Ctrl-C or SIGTERM: the session is ended through the runtime) everything after it still happens:
the screenshot (and PATH-eyes.png, the two eye images), the status, a save. When the runtime ends
or loses the session the window takes over (after a loss the headset is looked for again every
XR_RETRY_SECONDS). --clip is streamed from the file (app/live/clip_stream.py), never loaded whole.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from model.runtime import add_device_argument, worker_device

if TYPE_CHECKING:
    from model.data.driving_cache import TrackingProgress

HEADLESS_SCREENSHOT = Path(tempfile.gettempdir()) / "imp-viewer.png"
HEADLESS_SAVE_EVERY = 2.0  # seconds between screenshots while running on a virtual display
HEADLESS_LIVE_SECONDS = 20.0  # live generation on a virtual display: stop this long after the first frame
WINDOW_SIZE = (1280, 720)
XR_RETRY_SECONDS = 5.0  # after the runtime lost the session: how often to look for it again
XR_START_TIMEOUT = 60.0  # automated runs: give up on a runtime that never asks for a frame
XR_MODULE = None  # the pyopenxr module to use (None: the real one; tests put a recording double here)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imp-viewer",
        description="View MPI videos of talking heads in a desktop stereo window (mono, side by side, anaglyph).",
        epilog="In the window: drag to orbit (small angles), the wheel moves the camera, H hides the panel, "
               "space plays / pauses, R re-centres the head in the headset (and resets the view), Esc quits.",
    )
    p.add_argument("portrait", nargs="?", type=Path, help="portrait image (default: the shipped astronaut)")
    p.add_argument("driving", nargs="?", help="driving video file, `webcam` / `webcam:N`, or `sliders` "
                   "(default: the built-in animation + expression / head-pose sliders)")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (.safetensors; default: the shipped demo model)")
    p.add_argument("--display", choices=("auto", "xr", "desktop"), default="auto",
                   help="where to show: OpenXR headset (mirrored on the desktop) or desktop window (default auto: "
                        "the headset when an OpenXR runtime is found)")
    p.add_argument("--stereo", choices=("mono", "sbs", "anaglyph"), default=None,
                   help="desktop stereo mode (default mono; sbs with --fullscreen)")
    p.add_argument("--fullscreen", action="store_true", help="full screen on the primary monitor, side by side "
                   "and without the panel unless asked (phone VR viewers)")
    p.add_argument("--clip", type=Path, help="MPI clip to play instead of generating (written by imp generate or --save)")
    p.add_argument("--lift", action="store_true", help="no model: show PORTRAIT lifted into an MPI (model/lift.py), "
                   "what runs when no checkpoint is available")
    p.add_argument("--save", type=Path, metavar="CLIP", help="save the generated frames shown to this MPI clip "
                   "(finalised when the window closes)")
    p.add_argument("--steps", type=int, help="DDIM steps per clip (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--max-frames", type=int, help="generate at most this many frames")
    p.add_argument("--buffer", type=int, default=32, help="ring buffer size in MPI frames (default %(default)s)")
    p.add_argument("--worker", choices=("process", "thread"), default="process",
                   help="where live generation runs: a separate process at the lowest CPU priority (default: on 2 cores it "
                        "generates faster and costs the window less, app/live/process_worker.py) or a thread of the viewer")
    add_device_argument(p, "where the generation worker runs the network (fp16 on a GPU)")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="CPU threads of the generation worker's network, torch or ONNX Runtime (default: all cores but one, which the window keeps; %(default)s here)")
    p.add_argument("--size", default=f"{WINDOW_SIZE[0]}x{WINDOW_SIZE[1]}", help="window size WxH (default %(default)s)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="set a panel control at start, e.g. distance=1.5, focal=5, dolly=on, baseline=0.065, "
                        "stereo=sbs, converge=off, yaw=10, pitch=-5 (degrees), frame=12, play=off, panel=off")
    p.add_argument("--frames", type=int, help="quit after drawing this many frames, window or headset (0: never)")
    p.add_argument("--screenshot", type=Path, help="save the window as PNG here when quitting (in the headset also "
                   "the eye images, as NAME-eyes.png)")
    p.add_argument("--no-vsync", action="store_true", help="draw as fast as possible (benchmarks)")
    p.add_argument("--xr-graphics", choices=("auto", "glx", "egl"), default="auto",
                   help="OpenGL binding for the headset: XR_KHR_opengl_enable on GLX or XR_MNDX_egl_enable "
                        "(default auto: GLX when there is an X display, else EGL)")
    p.add_argument("--verbose", action="store_true", help="leave the log lines of MediaPipe's C++ code on the terminal")
    return p


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"imp-viewer: --size must look like 1280x720, got {text!r}") from None
    if w < 64 or h < 64:
        raise SystemExit(f"imp-viewer: --size {text} is too small (at least 64x64)")
    return w, h


def _load(args) -> tuple[object, str]:
    """(clip, its name for the panel) of --clip, or of the portrait lifted without a model."""
    if args.clip is None:
        from model.lift import lift_clip
        from model.resources import asset_path

        portrait = args.portrait or asset_path("astronaut.png")
        try:
            return lift_clip(portrait), f"{Path(portrait).name} lifted into an MPI (no model: model/lift.py)"
        except (OSError, ValueError, RuntimeError) as exc:
            raise SystemExit(f"imp-viewer: cannot lift the portrait {portrait}: {exc}") from None
    if not args.clip.exists():
        raise SystemExit(f"imp-viewer: clip not found: {args.clip}")
    from app.live.clip_stream import ClipStream

    try:
        # streamed through a reader thread: a minute at 512^2 would be ~12 GB in memory
        return ClipStream(args.clip), str(args.clip)
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"imp-viewer: cannot read MPI clip {args.clip}: {exc}") from None


@contextlib.contextmanager
def virtual_display(size: tuple[int, int]):
    """Run a private Xvfb for the duration of the block, with DISPLAY pointing at it."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SystemExit("imp-viewer: no display found and Xvfb is not installed: run scripts/setup.sh "
                         "(it installs xvfb), or connect a display (e.g. ssh -X)")
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display number itself and writes it once it accepts clients.
    # Its own session: Ctrl-C in the terminal goes to the terminal's process group, and Xvfb must
    # outlive our handling of it (the window is ours to close first); it is told to stop when we die.
    proc = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent)
    os.close(write_fd)
    old = os.environ.get("DISPLAY")
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise SystemExit(f"imp-viewer: Xvfb failed to start (exit code {proc.wait(timeout=10)})")
        os.environ["DISPLAY"] = f":{number}"
        yield os.environ["DISPLAY"]
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux; else nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _save_png(image, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(image).save(tmp)
    tmp.replace(path)  # a viewer of the file never sees half a PNG


VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def _looks_like_driving(text: str) -> bool:
    """A lone positional that names a driving source rather than a portrait."""
    from app.live.webcam import parse_webcam

    return text == "sliders" or parse_webcam(text) is not None or Path(text).suffix.lower() in VIDEO_SUFFIXES


def sliders_driving(portrait, on_progress: TrackingProgress | None = None):
    """The built-in animation + sliders source of a prepared portrait. The driving factories are
    module-level functions (or partials of them): the worker process unpickles them. They all take
    the worker's on_progress (app.live.worker.GenerationJob); only a video has tracking to report."""
    from model.data.driving import default_driving

    return default_driving(portrait.track)


def webcam_driving(index: int, portrait, on_progress: TrackingProgress | None = None):
    from app.live.webcam import WebcamDriving

    return WebcamDriving(index, portrait.track)


def video_driving(path: Path, cache_dir: Path | None, portrait, on_progress: TrackingProgress | None = None):
    """A driving video's source, its track kept in / read from `cache_dir` (the prepared portraits'
    folder); on_progress(stage, done, total) while it is tracked (the worker's status line)."""
    from model.data.driving import VideoDriving

    return VideoDriving(path, portrait.track, progress=False, cache_dir=cache_dir, on_progress=on_progress)


def _driving_factory(args):
    """(driving(portrait) for the worker, its label, sliders shown?). A missing webcam falls back
    to the sliders with one line; a missing video file is an error."""
    import functools

    spec = args.driving or "sliders"
    if spec == "sliders":
        return sliders_driving, "built-in animation + sliders", True
    from app.live.webcam import WebcamUnavailable, open_capture, parse_webcam

    index = parse_webcam(spec)
    if index is not None:
        try:
            cap, _ = open_capture(index)
            cap.release()
        except WebcamUnavailable as exc:
            print(f"imp-viewer: {exc}; driving with the sliders instead", flush=True)
            return sliders_driving, "built-in animation + sliders (no webcam found)", True
        return functools.partial(webcam_driving, index), f"webcam {index}", False
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(f"imp-viewer: {spec}: no such driving video (or use `webcam`, `webcam:N`, `sliders`)")
    from model.data.portrait_cache import default_cache_dir

    return functools.partial(video_driving, path, default_cache_dir()), path.name, False


def _live_session(args, checkpoint: Path):
    """(LiveSession (not started), panel label, sliders?)."""
    from app.live.session import LiveSession
    from app.live.worker import GenerationJob
    from model.data.portrait_cache import default_cache_dir
    from model.resources import asset_path

    portrait = args.portrait or asset_path("astronaut.png")
    if not Path(portrait).is_file():
        raise SystemExit(f"imp-viewer: {portrait}: no such portrait image")
    try:
        device = worker_device(args.device)
    except ValueError as exc:
        raise SystemExit(f"imp-viewer: {exc}") from None
    driving, label, sliders = _driving_factory(args)
    job = GenerationJob(checkpoint=checkpoint, portrait=portrait, driving=driving, seed=args.seed, steps=args.steps,
                        max_frames=args.max_frames, device=device, threads=args.threads, cache_dir=default_cache_dir())
    live = LiveSession(job, capacity=args.buffer, save=args.save, process=args.worker == "process")
    where = "" if device == "auto" else f" on {device}"  # auto: the worker's status line says which it chose
    return live, f"{Path(portrait).name} driven by {label} ({checkpoint.name}{where})", sliders


def _choose_checkpoint(args) -> Path | None:
    """--checkpoint, else the shipped demo model, else None (with one line saying so)."""
    from model.net.checkpoint import DEMO_CHECKPOINT, resolve_checkpoint

    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise SystemExit(f"imp-viewer: {args.checkpoint}: no such checkpoint file")
    try:
        return resolve_checkpoint(args.checkpoint)
    except FileNotFoundError:
        print(f"imp-viewer: no demo model (assets/{DEMO_CHECKPOINT}) in this installation and no --checkpoint: "
              "showing the portrait lifted into an MPI without a model", flush=True)
        return None


def _open_viewer(args, clip, source: str, headless: bool, live=None, sliders: bool = False):
    from app.viewer.viewer import Viewer

    stereo = args.stereo or ("sbs" if args.fullscreen else "mono")
    return Viewer(clip, source, size=_parse_size(args.size), vsync=not (headless or args.no_vsync), stereo=stereo,
                  show_panel=not args.fullscreen, live=live, sliders=sliders, fullscreen=args.fullscreen and not headless)


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM end the run the way Esc does: the loops see `requested`, the
    headset session is ended through the runtime, the worker is stopped, a save is finalised, the
    screenshot written. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, _frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal) if self.signal is not None else 0


class RunLimits:
    """When a run stops by itself: a frame budget (window frames, or headset frames in the
    headset), the end of the live stream or the live time limit (automated runs only), a signal."""

    def __init__(self, frames: int | None, automated: bool, headless: bool, live, stop: StopRequest):
        self.frames, self.automated, self.headless, self.live, self.stop = frames, automated, headless, live, stop
        self.count = 0  # frames drawn so far, window and headset

    def reached(self) -> bool:
        return (self.stop.requested or bool(self.frames and self.count >= self.frames)
                or (self.automated and _live_over(self.live, self.headless)))


def _try_xr(args, viewer, limits: RunLimits, capture: bool, quiet: bool = False):
    """Run the headset loop if a runtime answers: its app.xr.view.XRRun, or None (no runtime /
    headset: said in one line unless `quiet`, when retrying)."""
    from app.xr.session import XRUnavailable, probe_runtime

    try:
        probe_runtime(XR_MODULE)
    except XRUnavailable as exc:
        if not quiet:
            print(f"imp-viewer: {exc}; using the desktop window", flush=True)
        return None
    from app.xr.view import run_xr

    base = limits.count
    announced = []

    def on_frame(xrv) -> None:
        limits.count = base + xrv.session.frames_submitted
        if not announced and xrv.session.frames_submitted:
            announced.append(True)
            w, h = xrv.session.sizes[0]
            back = "the headset is back: " if quiet else ""
            print(f"imp-viewer: {back}OpenXR session running ({xrv.session.graphics}, {w}x{h} per eye); the window mirrors "
                  "the headset (R re-centres the head, Esc ends)", flush=True)

    try:
        return run_xr(viewer, XR_MODULE, graphics=args.xr_graphics, should_stop=limits.reached, capture=capture, on_frame=on_frame,
                      start_timeout=XR_START_TIMEOUT if limits.automated else None)
    except XRUnavailable as exc:
        if not quiet:
            print(f"imp-viewer: {exc}; using the desktop window", flush=True)
        return None


_RETRY = object()


def _desktop_loop(viewer, limits: RunLimits, screenshot: Path | None, headless: bool, until: float | None = None):
    """Draw the window until it is closed or `limits` are reached: the image to save (when
    `screenshot`), or _RETRY when `until` (time.monotonic()) came first (try the headset again)."""
    last_save = time.monotonic()
    image = None
    captured_last = False
    while not viewer.should_close and not limits.reached():
        if until is not None and time.monotonic() >= until:
            return _RETRY
        last = bool(limits.frames) and limits.count == limits.frames - 1
        periodic = headless and (viewer.frames_drawn == 1 or time.monotonic() - last_save > HEADLESS_SAVE_EVERY)
        image = viewer.step(capture=bool(screenshot) and (last or periodic))
        limits.count += 1
        captured_last = last and image is not None
        if periodic and image is not None:
            _save_png(image, screenshot)
            last_save = time.monotonic()
    if screenshot and not captured_last:
        image = viewer.step(capture=True)  # closed by the user or stopped: capture what it shows now
    return image


def _show(args, viewer, limits: RunLimits, screenshot: Path | None, headless: bool):
    """The headset when --display allows and a runtime answers, else (or once the runtime ends or
    loses the session) the desktop window; after a loss the headset is tried again every
    XR_RETRY_SECONDS. Returns (the window image to save or None, the last XRRun or None)."""
    xr_run = None
    xr_allowed = args.display != "desktop"
    retry_at: float | None = None
    tried = False
    while True:
        if xr_allowed and (not tried or (retry_at is not None and time.monotonic() >= retry_at)):
            result = _try_xr(args, viewer, limits, capture=bool(screenshot), quiet=tried)
            if result is None:
                if not tried:
                    xr_allowed = False
                retry_at = time.monotonic() + XR_RETRY_SECONDS if retry_at is not None else None
            else:
                xr_run = result
                print(f"imp-viewer: {result.summary}", flush=True)
                if result.reason in ("quit", "stopped"):
                    return result.mirror_image, xr_run
                if result.reason == "loss":
                    print(f"imp-viewer: OpenXR: the session was lost (runtime or headset gone); back to the desktop window, "
                          f"trying the headset again every {XR_RETRY_SECONDS:g} s", flush=True)
                    retry_at = time.monotonic() + XR_RETRY_SECONDS
                else:
                    print("imp-viewer: OpenXR: the runtime ended the session; back to the desktop window", flush=True)
                    retry_at, xr_allowed = None, False
            tried = True
        image = _desktop_loop(viewer, limits, screenshot, headless, until=retry_at if xr_allowed else None)
        if image is not _RETRY:
            return image, xr_run


def _eyes_path(screenshot: Path) -> Path:
    return screenshot.with_name(f"{screenshot.stem}-eyes{screenshot.suffix or '.png'}")


def run_viewer(args, clip, source: str, headless: bool, live=None, sliders: bool = False,
               stop: StopRequest | None = None) -> int:
    stop = stop or StopRequest()
    frames = args.frames
    screenshot = args.screenshot
    if headless and live is not None:
        screenshot = screenshot or HEADLESS_SCREENSHOT
        print(f"imp-viewer: Xvfb on DISPLAY={os.environ.get('DISPLAY')}: generating live until {frames or 'the end'} "
              f"(at most {HEADLESS_LIVE_SECONDS:g} s after the first frame); the window is saved to {screenshot}", flush=True)
    elif headless:
        # one pass through the clip (at least 2 s), unless asked otherwise
        frames = frames if frames is not None else max(120, math.ceil(len(clip) / clip.fps * 60.0))
        screenshot = screenshot or HEADLESS_SCREENSHOT
        print(f"imp-viewer: Xvfb on DISPLAY={os.environ.get('DISPLAY')}: drawing {frames or 'unlimited'} frames, "
              f"the window is saved to {screenshot}", flush=True)
    if live is not None and not live.started:
        # before the window: the worker's imports and model load overlap the viewer's own (~1 s of
        # the first frame); main() closes it if no window opens
        live.start()
    with _open_viewer(args, clip, source, headless, live, sliders) as viewer:
        for setting in args.settings:
            name, sep, value = setting.partition("=")
            if not sep:
                raise SystemExit(f"imp-viewer: --set wants NAME=VALUE, got {setting!r}")
            try:
                viewer.set(name.strip(), value)
            except ValueError as exc:
                raise SystemExit(f"imp-viewer: --set {setting}: {exc}") from None
        # the end of a live stream ends the program only when automated (headless or --frames);
        # a user keeps the window and its last frame
        limits = RunLimits(frames, headless or args.frames is not None, headless, live, stop)
        image, xr_run = _show(args, viewer, limits, screenshot, headless)
        if screenshot:
            if image is None:
                image = viewer.step(capture=True)
            _save_png(image, screenshot)
            print(f"imp-viewer: saved the window ({image.shape[1]}x{image.shape[0]}) to {screenshot}", flush=True)
            if xr_run is not None and xr_run.eye_images:
                import numpy as np

                eyes = np.concatenate(xr_run.eye_images, axis=1)
                _save_png(eyes, _eyes_path(screenshot))
                print(f"imp-viewer: saved the headset's eyes ({eyes.shape[1]}x{eyes.shape[0]}, left | right) to "
                      f"{_eyes_path(screenshot)}", flush=True)
        stream_error = getattr(clip, "error", None)
        if stream_error:
            print(f"imp-viewer: reading the clip failed: {stream_error}", file=sys.stderr, flush=True)
        if live is not None:
            for line in live.state.lines:
                print(f"imp-viewer: {line}", flush=True)
    if live is not None:
        state = live.state
        if state.saved:
            print(f"imp-viewer: {state.saved}", flush=True)
        if state.error:
            print(f"imp-viewer: generation failed: {state.error}", file=sys.stderr, flush=True)
    if stop.requested:
        name = signal.Signals(stop.signal).name
        print(f"imp-viewer: {'interrupted' if stop.signal == signal.SIGINT else 'terminated'} ({name})", file=sys.stderr, flush=True)
        return stop.exit_code
    return 0


def _live_over(live, headless: bool) -> bool:
    """A live session with nothing more to show (the worker ended, the buffer is drained), or, on a
    virtual display, HEADLESS_LIVE_SECONDS after its first frame."""
    if live is None:
        return False
    state = live.state
    if state.finished or (state.error and state.fill == 0):
        return True
    return headless and live.first_shown_at is not None and time.perf_counter() - live.first_shown_at > HEADLESS_LIVE_SECONDS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        from model.tracking.native_logs import set_verbose

        set_verbose(True)
    if args.driving is None and args.portrait is not None and _looks_like_driving(str(args.portrait)):
        args.portrait, args.driving = None, str(args.portrait)  # `imp-viewer webcam`: the astronaut, driven
    for name in ("steps", "max_frames", "buffer", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"imp-viewer: --{name.replace('_', '-')} must be at least 1, got {value}")
    stop = StopRequest().install()
    clip = live = None
    try:
        live, sliders = None, False
        if args.clip is None and not args.lift:
            checkpoint = _choose_checkpoint(args)
            if checkpoint is not None:
                live, source, sliders = _live_session(args, checkpoint)
                # now, before a virtual display and the window: the worker's imports and model load
                # overlap the viewer's (nothing before this imports torch: tests/test_live_viewer.py)
                live.start()
        if live is None:
            if args.driving or args.save:
                print("imp-viewer: DRIVING / --save need a model; ignoring them", flush=True)
            clip, source = _load(args)

        from app.viewer.window import DisplayError

        try:
            if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
                try:
                    return run_viewer(args, clip, source, headless=False, live=live, sliders=sliders, stop=stop)
                except DisplayError as exc:
                    print(f"imp-viewer: cannot open a window on the display ({exc}); "
                          "starting a virtual X server (Xvfb) instead", flush=True)
            else:
                print("imp-viewer: no display found (DISPLAY and WAYLAND_DISPLAY are unset); "
                      "starting a virtual X server (Xvfb)", flush=True)
            os.environ.pop("WAYLAND_DISPLAY", None)
            with virtual_display(_parse_size(args.size)):
                return run_viewer(args, clip, source, headless=True, live=live, sliders=sliders, stop=stop)
        except DisplayError as exc:
            print(f"imp-viewer: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # a second Ctrl-C
            print("imp-viewer: interrupted", file=sys.stderr)
            return 130
    finally:
        stop.restore()
        if live is not None:  # a display error must not leave a worker behind (a no-op after the viewer's own close)
            live.close()
        close = getattr(clip, "close", None)
        if close is not None:
            close()


if __name__ == "__main__":
    sys.exit(main())
