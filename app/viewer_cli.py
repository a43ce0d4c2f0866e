"""`imp-viewer`: the desktop viewer of MPI videos.

    imp-viewer [PORTRAIT] [DRIVING] [--checkpoint CKPT] [--display auto|xr|desktop]
               [--stereo mono|sbs|anaglyph] [--clip CLIP]

With no clip it shows the built-in astronaut scene (model/scenes.py). Without a display (no
DISPLAY / WAYLAND_DISPLAY, as on a server) it starts a private virtual X server (Xvfb), plays the
clip there for a bounded time, writes what the window shows to a PNG whose path it prints, stops
Xvfb and exits: the command works everywhere, and on a headless machine it shows you something.
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
import time
from pathlib import Path

HEADLESS_SCREENSHOT = Path(tempfile.gettempdir()) / "imp-viewer.png"
HEADLESS_SAVE_EVERY = 2.0  # seconds between screenshots while running on a virtual display
WINDOW_SIZE = (1280, 720)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imp-viewer",
        description="View MPI videos of talking heads in a desktop stereo window (mono, side by side, anaglyph).",
        epilog="In the window: drag to orbit (small angles), the wheel moves the camera, H hides the panel, "
               "space plays / pauses, Esc quits.",
    )
    p.add_argument("portrait", nargs="?", help="portrait image for live generation (not available yet)")
    p.add_argument("driving", nargs="?", help="driving talking-head video for live generation (not available yet)")
    p.add_argument("--checkpoint", help="model checkpoint (.safetensors) for live generation (not available yet)")
    p.add_argument("--display", choices=("auto", "xr", "desktop"), default="auto",
                   help="where to show: OpenXR headset or desktop window (default auto: desktop for now)")
    p.add_argument("--stereo", choices=("mono", "sbs", "anaglyph"), default="mono", help="desktop stereo mode (default mono)")
    p.add_argument("--clip", type=Path, help="MPI clip to play (written by the generation tools)")
    p.add_argument("--size", default=f"{WINDOW_SIZE[0]}x{WINDOW_SIZE[1]}", help="window size WxH (default %(default)s)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="set a panel control at start, e.g. distance=1.5, focal=5, dolly=on, baseline=0.065, "
                        "stereo=sbs, converge=off, yaw=10, pitch=-5 (degrees), frame=12, play=off, panel=off")
    p.add_argument("--frames", type=int, help="quit after drawing this many window frames (0: never)")
    p.add_argument("--screenshot", type=Path, help="save the window as PNG here when quitting")
    p.add_argument("--no-vsync", action="store_true", help="draw as fast as possible (benchmarks)")
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
    """(clip, its name for the panel)."""
    if args.clip is None:
        from model.scenes import astronaut_clip

        return astronaut_clip(), "built-in astronaut scene (placeholder MPI)"
    if not args.clip.exists():
        raise SystemExit(f"imp-viewer: clip not found: {args.clip}")
    from model.clip import load_clip

    try:
        return load_clip(args.clip), str(args.clip)
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
    # -displayfd: Xvfb picks a free display number itself and writes it once it accepts clients
    proc = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def _save_png(image, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(image).save(tmp)
    tmp.replace(path)  # a viewer of the file never sees half a PNG


def run_viewer(args, clip, source: str, headless: bool) -> int:
    from app.viewer import Viewer

    size = _parse_size(args.size)
    frames = args.frames
    screenshot = args.screenshot
    if headless:
        # one pass through the clip (at least 2 s), unless asked otherwise
        frames = frames if frames is not None else max(120, math.ceil(len(clip) / clip.fps * 60.0))
        screenshot = screenshot or HEADLESS_SCREENSHOT
        print(f"imp-viewer: Xvfb on DISPLAY={os.environ.get('DISPLAY')}: drawing {frames or 'unlimited'} frames, "
              f"the window is saved to {screenshot}", flush=True)
    with Viewer(clip, source, size=size, vsync=not (headless or args.no_vsync), stereo=args.stereo) as viewer:
        for setting in args.settings:
            name, sep, value = setting.partition("=")
            if not sep:
                raise SystemExit(f"imp-viewer: --set wants NAME=VALUE, got {setting!r}")
            try:
                viewer.set(name.strip(), value)
            except ValueError as exc:
                raise SystemExit(f"imp-viewer: --set {setting}: {exc}") from None
        last_save = time.monotonic()
        image = None
        while not viewer.should_close and (not frames or viewer.frames_drawn < frames):
            last = bool(frames) and viewer.frames_drawn == frames - 1
            periodic = headless and (viewer.frames_drawn == 1 or time.monotonic() - last_save > HEADLESS_SAVE_EVERY)
            image = viewer.step(capture=bool(screenshot) and (last or periodic))
            if periodic and image is not None:
                _save_png(image, screenshot)
                last_save = time.monotonic()
        if screenshot:
            if not (frames and viewer.frames_drawn >= frames and image is not None):
                image = viewer.step(capture=True)  # closed by the user: capture what it shows now
            _save_png(image, screenshot)
            print(f"imp-viewer: saved the window ({image.shape[1]}x{image.shape[0]}) to {screenshot}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.portrait or args.driving or args.checkpoint:
        print("imp-viewer: live generation from a portrait / driving video / checkpoint is not available yet; "
              "showing " + (str(args.clip) if args.clip else "the built-in astronaut scene"), flush=True)
    if args.display == "xr":
        print("imp-viewer: the OpenXR display is not available in imp-viewer yet; using the desktop window", flush=True)
    clip, source = _load(args)

    from app.window import DisplayError

    try:
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            try:
                return run_viewer(args, clip, source, headless=False)
            except DisplayError as exc:
                print(f"imp-viewer: cannot open a window on the display ({exc}); "
                      "starting a virtual X server (Xvfb) instead", flush=True)
        else:
            print("imp-viewer: no display found (DISPLAY and WAYLAND_DISPLAY are unset); "
                  "starting a virtual X server (Xvfb)", flush=True)
        os.environ.pop("WAYLAND_DISPLAY", None)
        # `kill` must unwind like Ctrl-C does, so that the Xvfb started here is stopped too
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        with virtual_display(_parse_size(args.size)):
            return run_viewer(args, clip, source, headless=True)
    except DisplayError as exc:
        print(f"imp-viewer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imp-viewer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
