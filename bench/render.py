"""`imp bench render`: throughput of the GL MPI renderer (offscreen EGL) against the torch reference.

Every GL view is timed up to `ctx.finish()` (the frame is really drawn, not just queued), after a
warm-up. The views orbit the head within +/-10 degrees, so no single camera is special. The
head-like MPI has its alpha in a few planes per pixel, like a trained model's output; the random
one has alpha everywhere, the worst case for empty-space culling.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--res", type=int, default=512, help="MPI and view size in pixels (square, default 512)")
    parser.add_argument("--planes", type=int, default=24, help="MPI planes (default 24)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed GL views before each measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _rate(step: Callable[[], None], seconds: float, warmup: int, min_steps: int = 3, cpu: list | None = None) -> float:
    """Calls of `step` per second over at least `seconds` and `min_steps` calls. Appends the
    process CPU time per call in ms (all threads) to `cpu` if given: on a shared machine that says
    more about the cost than the wall-clock rate."""
    for _ in range(warmup):
        step()
    n = 0
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    while n < min_steps or time.perf_counter() - start < seconds:
        step()
        n += 1
    if cpu is not None:
        cpu.append(1000.0 * (_cpu_seconds() - cpu_start) / n)
    return n / (time.perf_counter() - start)


def _orbit_views(T_cam_from_head, count: int = 16) -> list:
    import numpy as np
    import torch

    from model.geometry import camera

    T = torch.from_numpy(np.asarray(T_cam_from_head, np.float32))
    angles = np.deg2rad(10.0) * np.sin(np.linspace(0.0, 2.0 * np.pi, count, endpoint=False))
    return [camera.orbit(T, float(a), float(a) * 0.5).numpy() for a in angles]


def measure(res: int, planes: int, seconds: float, warmup: int, cpu_ms: list | None = None) -> dict:
    """The figures `imp bench render --json` prints; `cpu_ms` gets the CPU ms per head-like view."""
    import moderngl
    import numpy as np
    import torch

    from app.gl.renderer import MPIRenderer
    from model.geometry import camera, mpi
    from bench import synthetic

    ctx = moderngl.create_standalone_context(backend="egl")
    try:
        renderer = MPIRenderer(ctx)
        fbo = ctx.framebuffer(color_attachments=[ctx.texture((res, res), 4)])
        pair_fbo = ctx.framebuffer(color_attachments=[ctx.texture((2 * res, res), 4)])

        def gl_views_per_s(frame) -> float:
            renderer.upload(frame)
            views = _orbit_views(frame.T_cam_from_head)
            i = [0]

            def view() -> None:
                fbo.use()
                fbo.clear(0.0, 0.0, 0.0, 0.0)
                renderer.draw(frame.K, views[i[0] % len(views)], (0, 0, res, res))
                ctx.finish()
                i[0] += 1

            return _rate(view, seconds, warmup, cpu=cpu)

        cpu = cpu_ms
        head = synthetic.head_mpi(res, planes)
        gl_mono = gl_views_per_s(head)
        cpu = None

        # stereo: both eyes side by side in one framebuffer, one finish per pair
        eyes = [tuple(T.numpy() for T in camera.stereo_pair(torch.from_numpy(v))) for v in _orbit_views(head.T_cam_from_head)]
        renderer.upload(head)
        j = [0]

        def pair() -> None:
            left, right = eyes[j[0] % len(eyes)]
            pair_fbo.use()
            pair_fbo.clear(0.0, 0.0, 0.0, 0.0)
            renderer.draw(head.K, left, (0, 0, res, res))
            renderer.draw(head.K, right, (res, 0, res, res))
            ctx.finish()
            j[0] += 1

        gl_stereo = _rate(pair, seconds, warmup)

        # torch reference on the same MPI and views
        t = head.tensors()
        T_cam = np.asarray(head.T_cam_from_head, np.float64)
        rel = [torch.from_numpy((v @ np.linalg.inv(T_cam)).astype(np.float32))[None] for v in _orbit_views(T_cam)]
        k = [0]

        def torch_view() -> None:
            with torch.no_grad():
                mpi.render(t["frontal"], t["residual"], t["alpha"], t["depths"], t["K_src"], t["K_src"],
                           rel[k[0] % len(rel)], t["background"], (res, res))
            k[0] += 1

        torch_rate = _rate(torch_view, seconds, warmup=1)

        gl_random = gl_views_per_s(synthetic.random_mpi(res, planes))
        renderer.release()
        for target in (fbo, pair_fbo):
            target.color_attachments[0].release()
            target.release()
    finally:
        ctx.release()
    return {
        "res": res,
        "planes": planes,
        "gl_views_per_s": round(gl_mono, 2),
        "gl_stereo_pairs_per_s": round(gl_stereo, 2),
        "torch_views_per_s": round(torch_rate, 3),
        "ratio": round(gl_mono / torch_rate, 1),
        "random_alpha": {"gl_views_per_s": round(gl_random, 2)},
    }


def run(args: argparse.Namespace) -> int:
    if args.res < 8 or args.planes < 2 or args.seconds <= 0:
        print("imp bench render: need --res >= 8, --planes >= 2 and --seconds > 0")
        return 2
    cpu_ms: list[float] = []
    result = measure(args.res, args.planes, args.seconds, args.warmup, cpu_ms)
    if args.json:
        print(json.dumps(result))
        return 0
    rows = [
        ("GL views/s (head-like MPI, mono)", result["gl_views_per_s"]),
        ("GL stereo pairs/s (head-like MPI)", result["gl_stereo_pairs_per_s"]),
        ("torch reference views/s (same MPI)", result["torch_views_per_s"]),
        ("ratio GL / torch", result["ratio"]),
        ("GL views/s (random alpha everywhere)", result["random_alpha"]["gl_views_per_s"]),
        ("GL CPU ms per head-like view (all threads)", round(cpu_ms[0], 2)),
    ]
    print(f"MPI render benchmark: {result['res']}x{result['res']}, {result['planes']} planes, offscreen EGL, "
          f"each view timed to glFinish; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(other processes slow the figures down)")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")
    return 0
