"""`imp bench soak`: the viewer left running, measured.

Live (default): what `imp-viewer` runs (portrait + checkpoint + driving, the generation worker
filling the ring buffer, the window playing it at the driving fps, 1280x720 with the panel, on a
private Xvfb when there is no display) for --minutes. Reported:
- rss_mb: resident memory (this process and the generation worker process, not the private Xvfb)
  after the first generated frame was shown (start), at the end, the
  growth between them and the largest value, sampled every --sample seconds; one value per
  minute, the growth after the first minute and the trend after it (least-squares MB per minute;
  warm-up levels off in the first minute, a leak keeps climbing);
- frames generated / shown, frames lost (generated, never shown and not waiting in the buffer:
  must be 0), stalls (a frame was due and the buffer was empty: generation slower than playback),
  window hitches (more than 0.25 s between two window frames), the worker's error if any;
- with --driving VIDEO: the video stands in for a webcam (read at its frame rate by the capture
  thread, stale frames dropped, as a camera would be) and the capture-to-shown latency of every
  frame shown is reported (median, 95th percentile, max).

--clip CLIP plays a clip file instead (streamed, as `imp-viewer --clip`) and reports the same
memory figures; --make-clip SECONDS first writes a synthetic 512^2, 24-plane clip of that length
to CLIP when it does not exist (`imp bench soak --clip /tmp/minute.mpi --make-clip 60 --minutes 2`).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from model.runtime import add_device_argument

HITCH_S = 0.25  # a window frame later than this after the previous one is a hitch


def video_as_webcam(video: str, portrait, on_progress=None):
    """A video read as a live camera would be (module level: the worker process unpickles it)."""
    from app.live.webcam import WebcamDriving

    return WebcamDriving(video, portrait.track, realtime=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the shipped demo model)")
    parser.add_argument("--portrait", type=Path, help="portrait image (default: the shipped astronaut)")
    parser.add_argument("--driving", type=Path, help="a video standing in for the webcam (latency figures)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per clip (default: the checkpoint's)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads of the worker (default: all cores but one; %(default)s here)")
    add_device_argument(parser, "where the generation worker runs the network")
    parser.add_argument("--worker", choices=("process", "thread"), default="process",
                        help="generation in a separate process (default, as imp-viewer) or on a thread of the viewer")
    parser.add_argument("--clip", type=Path, help="play this clip file (streamed) instead of generating")
    parser.add_argument("--make-clip", type=float, metavar="SECONDS",
                        help="with --clip: write a synthetic 512^2, 24-plane clip of this length there first, if absent")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def rss_figures(samples: list[tuple[float, float]]) -> dict:
    """The rss_mb figures of (seconds since the first frame, RSS MB) samples, in time order."""
    rss = [r for _, r in samples]
    # one value per minute too: warm-up (allocator, caches) levels off, a leak keeps climbing
    minutes = [next(r for t, r in samples if t >= 60.0 * m) for m in range(int(samples[-1][0] // 60.0) + 1)]
    out = {"start": round(rss[0], 1), "end": round(rss[-1], 1), "growth": round(rss[-1] - rss[0], 1),
           "max": round(max(rss), 1), "samples": len(rss), "per_minute": [round(r, 1) for r in minutes]}
    if len(minutes) > 2:
        # the allocator and caches settle within the first minute; what still grows after it is a leak.
        # Single values swing by tens of MB (clips, GL buffers): the trend is the least-squares slope.
        import numpy as np

        after = np.asarray(minutes[1:], np.float64)
        out["growth_after_minute_1"] = round(rss[-1] - minutes[1], 1)
        out["trend_mb_per_minute"] = round(float(np.polyfit(np.arange(len(after)), after, 1)[0]), 3)
    return out


def _proc_rss_kb(pid: int | str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _is_python_child(pid: str) -> bool:
    """A process multiprocessing started (the generation worker, its resource tracker), not Xvfb."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"multiprocessing" in f.read()
    except OSError:
        return False


def rss_mb() -> float:
    """Resident set size of this process and of the processes multiprocessing started for it (the
    generation worker) now, MB (Linux /proc; elsewhere this process's peak so far)."""
    try:
        own = os.getpid()
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == own and _is_python_child(entry):
                    children.append(entry)
        total = _proc_rss_kb(own)
        for pid in children:
            try:
                total += _proc_rss_kb(pid)
            except OSError:  # ended meanwhile
                pass
        return total / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_clip(path: Path, seconds: float, size: int = 512, planes: int = 24, fps: float = 25.0) -> None:
    """A synthetic clip (the head of bench/synthetic.py sliding a little each frame), lossless."""
    from dataclasses import replace

    import numpy as np

    from bench.synthetic import head_mpi
    from model.formats.clip import ClipWriter

    base = head_mpi(size, planes, seed=0, supersample=1)
    with ClipWriter(path, fps=fps) as writer:
        for i in range(int(round(seconds * fps))):
            shift = int(round(4 * np.sin(i / 12.0)))
            writer.append(replace(base, frontal=np.roll(base.frontal, shift, axis=2), alpha=np.roll(base.alpha, shift, axis=2)))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return round(float(np.percentile(values, q)) * 1000.0, 1)


def soak(args: argparse.Namespace) -> dict:
    from app.viewer.viewer import Viewer

    seconds = args.minutes * 60.0
    live = clip = None
    if args.clip is not None:
        from app.live.clip_stream import ClipStream

        clip = ClipStream(args.clip)
        source = str(args.clip)
    else:
        import functools

        from app.cli.viewer import sliders_driving
        from app.live.session import LiveSession
        from app.live.worker import GenerationJob
        from model.net.checkpoint import resolve_checkpoint
        from model.data.portrait_cache import default_cache_dir
        from model.resources import asset_path

        portrait = args.portrait or asset_path("astronaut.png")
        driving = sliders_driving if args.driving is None else functools.partial(video_as_webcam, str(args.driving))
        job = GenerationJob(checkpoint=resolve_checkpoint(args.checkpoint), portrait=portrait, driving=driving,
                            steps=args.steps, device=args.device, threads=args.threads, cache_dir=default_cache_dir())
        live = LiveSession(job, process=args.worker == "process")
        source = "soak"
    samples: list[tuple[float, float]] = []
    hitches = 0
    stalls = 0
    was_waiting = False
    started = None
    with Viewer(clip, source, size=(1280, 720), vsync=False, live=live) as viewer:
        if live is not None:
            live.start()
        launched = time.perf_counter()
        last_frame = last_sample = launched
        while True:
            viewer.step()
            now = time.perf_counter()
            if now - last_frame > HITCH_S and started is not None:
                hitches += 1
            last_frame = now
            if live is not None:
                state = live.state
                if state.error:
                    break
                if state.waiting and not was_waiting and started is not None:
                    stalls += 1
                was_waiting = state.waiting
                if started is None and live.first_shown_at is not None:
                    started = now
                if started is None and now - launched > 600:
                    raise RuntimeError(f"no generated frame within 600 s ({state.worker})")
            elif started is None:
                started = now
            if started is not None and (not samples or now - last_sample >= args.sample):
                samples.append((now - started, rss_mb()))
                last_sample = now
            if started is not None and now - started >= seconds:
                break
        samples.append((time.perf_counter() - (started or launched), rss_mb()))
        result: dict = {"minutes": args.minutes, "window_frames": viewer.frames_drawn, "window_hitches": hitches}
        if live is not None:
            state = live.state
            lost = state.frames_generated - state.frames_shown - state.fill
            latencies = list(live.latencies)
            result.update(frames_generated=state.frames_generated, frames_shown=state.frames_shown, frames_lost=lost,
                          stalls=stalls, error=state.error)
            if args.driving is not None:
                result["latency_ms"] = {"median": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                                        "max": _percentile(latencies, 100), "frames": len(latencies),
                                        "dropped_camera_frames": getattr(getattr(live.worker.driving, "capture", None), "dropped", None)}
        else:
            result.update(clip_frames=len(clip), clip_error=clip.error, clip_frames_read=clip.frames_read)
    result["rss_mb"] = rss_figures(samples)
    return result


def run(args: argparse.Namespace) -> int:
    from app.cli.viewer import virtual_display

    if args.make_clip is not None:
        if args.clip is None:
            print("imp bench soak: --make-clip needs --clip PATH")
            return 2
        if not args.clip.exists():
            print(f"imp bench soak: writing a {args.make_clip:g} s synthetic 512^2, 24-plane clip to {args.clip} ...", flush=True)
            make_clip(args.clip, args.make_clip)
    try:
        if os.environ.get("DISPLAY"):
            result = soak(args)
        else:
            with virtual_display((1280, 720)):
                result = soak(args)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"imp bench soak: {exc}")
        return 1
    if args.json:
        print(json.dumps(result))
        return 0
    r = result["rss_mb"]
    print(f"{result['minutes']:g} min: RSS {r['start']:.0f} -> {r['end']:.0f} MB (growth {r['growth']:+.1f} MB, max {r['max']:.0f}); "
          f"{result['window_frames']} window frames, {result['window_hitches']} hitches > {HITCH_S:g} s")
    if "growth_after_minute_1" in r:
        print(f"RSS per minute: {' '.join(f'{v:.0f}' for v in r['per_minute'])} MB; "
              f"growth after minute 1: {r['growth_after_minute_1']:+.1f} MB, trend {r['trend_mb_per_minute']:+.2f} MB/min")
    if "frames_generated" in result:
        print(f"generated {result['frames_generated']}, shown {result['frames_shown']}, lost {result['frames_lost']}, "
              f"stalls {result['stalls']}, error: {result['error'] or 'none'}")
    if "latency_ms" in result:
        lat = result["latency_ms"]
        print(f"webcam capture -> shown: median {lat['median']} ms, 95 % {lat['p95']} ms, max {lat['max']} ms "
              f"over {lat['frames']} frames ({lat['dropped_camera_frames']} stale camera frames dropped)")
    if "clip_frames" in result:
        print(f"clip of {result['clip_frames']} frames streamed ({result['clip_frames_read']} read), "
              f"error: {result['clip_error'] or 'none'}")
    return 1 if result.get("error") or result.get("clip_error") or result.get("frames_lost") else 0
