"""`imp bench viewer`: the live viewer as its users meet it, measured.

Launches what `imp-viewer` launches (portrait + checkpoint + the built-in parametric driving, the
generation worker on a thread filling the ring buffer) in a desktop window side by side at
--eye px squared per eye, without the panel, on a private Xvfb when there is no display. Figures:
- first_frame_s: seconds from launch (before the model is loaded) to the first generated frame shown;
- stereo_fps: window frames drawn per second over --seconds after that, while the worker generates
  on the same cores (no vsync, no frame cap: the rate the loop sustains);
- generated_fps: MPI frames the worker put into the buffer per second of sampling (from the start
  of sampling to the end of the window: clips arrive whole, so a short window alone says little);
- idle_stereo_fps: the same window's rate after the worker has been stopped (what generation costs
  the render loop).
Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the shipped demo model)")
    parser.add_argument("--portrait", type=Path, help="portrait image (default: the shipped astronaut)")
    parser.add_argument("--eye", type=int, default=512, help="pixels per eye, square (default 512)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time after the first frame (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per clip (default: the checkpoint's)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads of the worker (default: all cores but one, as imp-viewer; %(default)s here)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up when no frame came after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _drive(viewer, seconds: float) -> float:
    """Window frames per second over `seconds`."""
    drawn0 = viewer.frames_drawn
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        viewer.step()
    return (viewer.frames_drawn - drawn0) / (time.perf_counter() - start)


def measure(checkpoint: Path, portrait: Path, eye: int, seconds: float, steps: int | None, threads: int | None,
            timeout: float) -> dict:
    from app.live.session import LiveSession
    from app.viewer.viewer import Viewer
    from app.live.worker import GenerationJob
    from model.data.driving import default_driving

    launched = time.perf_counter()
    job = GenerationJob(checkpoint=checkpoint, portrait=portrait, driving=lambda p: default_driving(p.track),
                        steps=steps, threads=threads)
    live = LiveSession(job)
    with Viewer(None, "bench", size=(2 * eye, eye), vsync=False, stereo="sbs", show_panel=False, live=live,
                max_fps=None) as viewer:
        viewer.set("play", "on")
        live.start()
        while live.first_shown_at is None:
            viewer.step()
            state = live.state
            if state.error:
                raise RuntimeError(f"generation failed: {state.error}")
            if time.perf_counter() - launched > timeout:
                raise RuntimeError(f"no generated frame within {timeout:g} s ({state.worker})")
        first_frame_s = live.first_shown_at - launched
        if viewer.eye_size() != (eye, eye):
            raise RuntimeError(f"the window gives {viewer.eye_size()} px per eye, not {eye}x{eye} (screen too small?)")
        stereo_fps = _drive(viewer, seconds)
        status = live.worker.status  # frames arrive a clip at a time: rate over all sampling so far
        generated_fps = status.frames_generated / (time.perf_counter() - status.generating_since)
        live.close()
        idle_fps = _drive(viewer, min(seconds, 3.0))
    return {"stereo_fps": round(stereo_fps, 2), "generated_fps": round(generated_fps, 3),
            "first_frame_s": round(first_frame_s, 2), "idle_stereo_fps": round(idle_fps, 2),
            "eye_px": eye, "seconds": seconds}


def run(args: argparse.Namespace) -> int:
    from model.net.variant import resolve_checkpoint
    from app.cli.viewer import virtual_display
    from model.resources import asset_path

    try:
        checkpoint = resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as exc:
        print(f"imp bench viewer: {exc}")
        return 2
    portrait = args.portrait or asset_path("astronaut.png")
    size = (2 * args.eye + 64, args.eye + 64)
    try:
        if os.environ.get("DISPLAY"):
            result = measure(checkpoint, portrait, args.eye, args.seconds, args.steps, args.threads, args.timeout)
        else:
            with virtual_display(size):
                result = measure(checkpoint, portrait, args.eye, args.seconds, args.steps, args.threads, args.timeout)
    except RuntimeError as exc:
        print(f"imp bench viewer: {exc}")
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"stereo {args.eye}^2 per eye: {result['stereo_fps']:.1f} fps while generating "
              f"({result['idle_stereo_fps']:.1f} fps idle); generated {result['generated_fps']:.2f} MPI frames/s; "
              f"first frame after {result['first_frame_s']:.1f} s")
    return 0
