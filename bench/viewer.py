"""`imp bench viewer`: the live viewer as its users meet it, measured.

Launches what `imp-viewer` launches (portrait + checkpoint + the built-in parametric driving, the
generation worker in its own process filling the ring buffer; `--worker thread`: on a thread of the
viewer, app/live/worker.py) in a desktop window side by side at
--eye px squared per eye, without the panel, on a private Xvfb when there is no display. Figures:
- first_frame_s: seconds from launch (the start of this process: Python's own start and the imports
  of `imp` count, as they do for `imp-viewer`; the virtual display's start does not) to the first
  generated frame shown;
- first_frame_parts: where those seconds go, in order: launch -> worker started, the worker's
  start-up and imports (torch only when it cannot use ONNX Runtime: model/coldstart), model load, portrait preparation (cached: model/data/portrait_cache.py),
  driving source, the first clip's sampling, and the frame's way to the screen;
- stereo_fps: window frames drawn per second over --seconds after that, while the worker generates
  on the same cores (no vsync, no frame cap: the rate the loop sustains);
- generated_fps: MPI frames the worker put into the buffer per second of sampling (from the start
  of sampling to the end of the window: clips arrive whole, so a short window alone says little);
- idle_stereo_fps: the same window's rate after the worker has been stopped (what generation costs
  the render loop);
- frame_ms: where a generated frame's time goes: conditions (driving frames, mesh conditions,
  identity warp), network (passes per frame and their ms, DDIM updates included), decode to an
  MPI frame, and the window's upload to the GPU.
With --display xr the headset comes first (an OpenXR runtime must answer: XR_RUNTIME_JSON, e.g.
../shared/xr-runtime with XRT_COMPOSITOR_NULL=1 for its 20 Hz simulated headset); after the first
generated frame it measures, while the worker generates, --seconds with the desktop mirror and
--seconds without it:
- layer_ratio: frames submitted with a projection layer per frame the runtime asked for (its
  display period's slots between the first and the last frame of the phase);
- headset_fps: frames submitted with a layer per second;
- ms_per_frame: xrWaitFrame returned -> xrEndFrame returned, per headset frame (both eyes);
  ms_per_frame_with_mirror adds the mirror's time spread over the headset frames.
Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from model.runtime import add_device_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the shipped demo model)")
    parser.add_argument("--portrait", type=Path, help="portrait image (default: the shipped astronaut)")
    parser.add_argument("--eye", type=int, default=512, help="pixels per eye, square (default 512)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time after the first frame (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per clip (default: the checkpoint's)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="CPU threads of the worker's network (default: all cores but one, as imp-viewer; %(default)s here)")
    add_device_argument(parser, "where the generation worker runs the network")
    parser.add_argument("--worker", choices=("process", "thread"), default="process",
                        help="generate in a separate process with the frames in shared memory (default, as imp-viewer; "
                             "app/live/process_worker.py) or on a thread of the viewer's process")
    parser.add_argument("--display", choices=("desktop", "xr"), default="desktop",
                        help="desktop window (default) or the OpenXR headset with its desktop mirror")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up when no frame came after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _drive(viewer, seconds: float) -> float:
    """Window frames per second over `seconds`."""
    drawn0 = viewer.frames_drawn
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        viewer.step()
    return (viewer.frames_drawn - drawn0) / (time.perf_counter() - start)


def seconds_since_process_start() -> float:
    """How long this process has been running (Linux: /proc; elsewhere 0, i.e. from the call on)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, field 22: clock ticks after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def measure(checkpoint: Path, portrait: Path, eye: int, seconds: float, steps: int | None, threads: int | None,
            timeout: float, device: str = "cpu", worker: str = "process", startup: float = 0.0) -> dict:
    """`startup`: seconds this process ran before (counted in first_frame_s)."""
    from app.cli.viewer import sliders_driving
    from app.live.session import LiveSession
    from app.live.worker import GenerationJob
    from model.data.portrait_cache import default_cache_dir

    launched = time.perf_counter() - startup
    job = GenerationJob(checkpoint=checkpoint, portrait=portrait, driving=sliders_driving, steps=steps, device=device,
                        threads=threads, cache_dir=default_cache_dir())
    # as imp-viewer: the worker starts first, the viewer's imports and window open beside it
    live = LiveSession(job, process=worker == "process").start()
    try:
        from app.viewer.viewer import Viewer

        viewer = Viewer(None, "bench", size=(2 * eye, eye), vsync=False, stereo="sbs", show_panel=False, live=live,
                        max_fps=None)
    except BaseException:
        live.close()
        raise
    with viewer:
        viewer.set("play", "on")
        while live.first_shown_at is None:
            viewer.step()
            state = live.state
            if state.error:
                raise RuntimeError(f"generation failed: {state.error}")
            if time.perf_counter() - launched > timeout:
                raise RuntimeError(f"no generated frame within {timeout:g} s ({state.worker})")
        first_frame_s = live.first_shown_at - launched
        first_parts = first_frame_parts(launched, live.worker.started_at, live.worker.status, live.first_shown_at)
        if viewer.eye_size() != (eye, eye):
            raise RuntimeError(f"the window gives {viewer.eye_size()} px per eye, not {eye}x{eye} (screen too small?)")
        stereo_fps = _drive(viewer, seconds)
        status = live.worker.status  # frames arrive a clip at a time: rate over all sampling so far
        generated_fps = status.frames_generated / (time.perf_counter() - status.generating_since)
        frame_ms = _frame_breakdown(live.worker.times, viewer)
        live.close()
        idle_fps = _drive(viewer, min(seconds, 3.0))
    return {"stereo_fps": round(stereo_fps, 2), "generated_fps": round(generated_fps, 3),
            "first_frame_s": round(first_frame_s, 2), "first_frame_parts": first_parts, "idle_stereo_fps": round(idle_fps, 2),
            "frame_ms": frame_ms, "eye_px": eye, "seconds": seconds, "worker": worker}


FIRST_FRAME_PARTS = (("worker_start_s", "launch", "starting"), ("imports_s", "starting", "loading model"),
                     ("model_s", "loading model", "preparing portrait"), ("portrait_s", "preparing portrait", "tracking driving"),
                     ("driving_s", "tracking driving", "generating"), ("first_clip_s", "generating", "in buffer"),
                     ("to_screen_s", "in buffer", "shown"))


def first_frame_parts(launched: float, started_at: float, status, shown_at: float) -> dict[str, float]:
    """Seconds of each step from launch to the first frame shown (FIRST_FRAME_PARTS: name, from, to),
    from the worker's phase log (app.live.worker.WorkerStatus.phases). They add up to first_frame_s."""
    marks = {"launch": launched, "starting": started_at, **dict(status.phases), "in buffer": status.first_frame_time,
             "shown": shown_at}
    return {name: round(marks[b] - marks[a], 3) for name, a, b in FIRST_FRAME_PARTS
            if marks.get(a) is not None and marks.get(b) is not None}


def _frame_breakdown(times, viewer) -> dict[str, float]:
    """Where a generated frame's time goes: the worker's conditions / network / decode ms and
    network passes per frame (model.diffusion.pipeline.GenerationTimes), the window's upload ms."""
    out = times.per_frame_ms() if times is not None else {}
    out["upload_ms"] = round(1000 * viewer.upload_seconds / max(viewer.uploads, 1), 2)
    return out


def _snapshot(xrv) -> dict:
    s = xrv.session.stats
    return {"with_layer": s.with_layer, "submitted": s.submitted, "work_s": s.work_s, "display_ns": s.last_display_ns,
            "mirror_s": xrv.mirror_s, "mirror_frames": xrv.mirror_frames, "t": time.perf_counter()}


def _phase(a: dict, b: dict, period_s: float) -> dict:
    frames = b["submitted"] - a["submitted"]
    asked = int(round((b["display_ns"] - a["display_ns"]) / 1e9 / period_s)) if period_s > 0 else frames
    seconds = b["t"] - a["t"]
    with_layer = b["with_layer"] - a["with_layer"]
    return {
        "layer_ratio": round(with_layer / asked, 4) if asked else 0.0,
        "headset_fps": round(with_layer / seconds, 2) if seconds > 0 else 0.0,
        "ms_per_frame": round(1000.0 * (b["work_s"] - a["work_s"]) / frames, 2) if frames else 0.0,
        "ms_per_frame_with_mirror": round(1000.0 * (b["work_s"] - a["work_s"] + b["mirror_s"] - a["mirror_s"]) / frames, 2) if frames else 0.0,
        "mirror_fps": round((b["mirror_frames"] - a["mirror_frames"]) / seconds, 2) if seconds > 0 else 0.0,
        "asked": asked, "with_layer": with_layer, "seconds": round(seconds, 2),
    }


def measure_xr(checkpoint: Path, portrait: Path, seconds: float, steps: int | None, threads: int | None,
               timeout: float, graphics: str = "auto", device: str = "cpu", worker: str = "process",
               startup: float = 0.0) -> dict:
    """The headset loop of imp-viewer (app/xr/view.py) with live generation, in two phases;
    `startup` as in `measure`."""
    from app.cli.viewer import sliders_driving
    from app.live.session import LiveSession
    from app.live.worker import GenerationJob
    from model.data.portrait_cache import default_cache_dir
    from app.viewer.viewer import Viewer
    from app.xr.view import run_xr

    launched = time.perf_counter() - startup
    job = GenerationJob(checkpoint=checkpoint, portrait=portrait, driving=sliders_driving, steps=steps, device=device, threads=threads,
                        cache_dir=default_cache_dir())
    live = LiveSession(job, process=worker == "process")
    marks: dict[str, dict] = {}
    failure: list[str] = []

    def on_frame(xrv) -> None:
        now = time.perf_counter()
        if "start" not in marks:
            state = live.state
            if state.error:
                failure.append(f"generation failed: {state.error}")
            elif now - launched > timeout:
                failure.append(f"no generated frame within {timeout:g} s ({state.worker})")
            elif live.first_shown_at is not None and xrv.session.stats.with_layer:
                marks["start"] = _snapshot(xrv)
        elif "mirror" not in marks and now - marks["start"]["t"] >= seconds:
            marks["mirror"] = _snapshot(xrv)
            xrv.mirror = False
        elif "mirror" in marks and "end" not in marks and now - marks["mirror"]["t"] >= seconds:
            marks["end"] = _snapshot(xrv)
            marks["period"] = xrv.session.stats.period_s
            marks["eye"] = xrv.session.sizes[0]
            marks["graphics"] = xrv.session.graphics

    with Viewer(None, "bench", size=(1280, 720), vsync=False, live=live) as viewer:
        live.start()
        run_xr(viewer, graphics=graphics, should_stop=lambda: bool(failure) or "end" in marks, on_frame=on_frame)
        status = live.worker.status
        generated_fps = status.frames_generated / (time.perf_counter() - status.generating_since) if status.generating_since else 0.0
    if failure:
        raise RuntimeError(failure[0])
    if "end" not in marks:
        raise RuntimeError("the headset session ended before the measurement did")
    with_mirror = _phase(marks["start"], marks["mirror"], marks["period"])
    without = _phase(marks["mirror"], marks["end"], marks["period"])
    return {"display": "xr", "graphics": marks["graphics"], "eye_px": list(marks["eye"]),
            "runtime_hz": round(1.0 / marks["period"], 2) if marks["period"] else None,
            "with_mirror": with_mirror, "without_mirror": without, "generated_fps": round(generated_fps, 3),
            "first_frame_s": round(live.first_shown_at - launched, 2), "seconds": seconds}


def run(args: argparse.Namespace) -> int:
    startup = seconds_since_process_start()  # before the virtual display: a desktop user has none to start
    from model.net.checkpoint import resolve_checkpoint
    from app.cli.viewer import virtual_display
    from model.resources import asset_path

    from model.runtime import resolve_device, worker_device

    try:
        checkpoint = resolve_checkpoint(args.checkpoint)
        args.device = worker_device(args.device)  # as imp-viewer
    except (FileNotFoundError, ValueError) as exc:
        print(f"imp bench viewer: {exc}")
        return 2
    portrait = args.portrait or asset_path("astronaut.png")
    if args.display == "xr":
        return _run_xr(args, checkpoint, portrait, startup)
    size = (2 * args.eye + 64, args.eye + 64)
    go = lambda: measure(checkpoint, portrait, args.eye, args.seconds, args.steps, args.threads, args.timeout, device=args.device,
                         worker=args.worker, startup=startup)
    try:
        if os.environ.get("DISPLAY"):
            result = go()
        else:
            with virtual_display(size):
                result = go()
    except RuntimeError as exc:
        print(f"imp bench viewer: {exc}")
        return 1
    result["device"] = args.device = resolve_device(args.device)  # what the worker chose
    if args.json:
        print(json.dumps(result))
    else:
        print(f"stereo {args.eye}^2 per eye: {result['stereo_fps']:.1f} fps while generating "
              f"({result['idle_stereo_fps']:.1f} fps idle); generated {result['generated_fps']:.2f} MPI frames/s; "
              f"first frame after {result['first_frame_s']:.1f} s")
        parts = result["first_frame_parts"]
        print("first frame: " + ", ".join(f"{name[:-2].replace('_', ' ')} {parts[name]:.2f} s" for name, _, _ in FIRST_FRAME_PARTS
                                          if name in parts))
        ms = result["frame_ms"]
        print(f"per generated frame: conditions {ms.get('conditions_ms', 0):.1f} ms, {ms.get('passes', 0):g} network passes "
              f"{ms.get('network_ms', 0):.1f} ms, decode to MPI frame {ms.get('decode_ms', 0):.1f} ms, "
              f"upload {ms['upload_ms']:.1f} ms (render thread) [{args.device}, worker {args.worker}]")
    return 0


def _run_xr(args: argparse.Namespace, checkpoint: Path, portrait: Path, startup: float) -> int:
    from app.cli.viewer import virtual_display
    from app.xr.session import XRUnavailable, probe_runtime

    try:
        probe_runtime()
    except XRUnavailable as exc:
        print(f"imp bench viewer: {exc}")
        return 2
    try:
        if os.environ.get("DISPLAY"):
            result = measure_xr(checkpoint, portrait, args.seconds, args.steps, args.threads, args.timeout, device=args.device,
                                worker=args.worker, startup=startup)
        else:
            with virtual_display((1280, 720)):
                result = measure_xr(checkpoint, portrait, args.seconds, args.steps, args.threads, args.timeout, device=args.device,
                                    worker=args.worker, startup=startup)
    except (RuntimeError, XRUnavailable) as exc:
        print(f"imp bench viewer: {exc}")
        return 1
    from model.runtime import resolve_device

    result["device"] = resolve_device(args.device)  # what the worker chose
    if args.json:
        print(json.dumps(result))
        return 0
    w, h = result["eye_px"]
    print(f"headset ({result['graphics']}, {w}x{h} per eye, runtime at {result['runtime_hz']} Hz) while generating "
          f"{result['generated_fps']:.2f} MPI frames/s:")
    for name in ("with_mirror", "without_mirror"):
        r = result[name]
        print(f"  {name.replace('_', ' '):15s} {100 * r['layer_ratio']:5.1f} % of the frames asked for submitted with a layer "
              f"({r['with_layer']}/{r['asked']}), {r['headset_fps']:.1f} frames/s, {r['ms_per_frame']:.1f} ms per headset frame "
              f"({r['ms_per_frame_with_mirror']:.1f} with the mirror's share; mirror {r['mirror_fps']:.1f} fps)")
    return 0
