"""`imp bench conditions`: speed of the mesh conditions (model/geometry/conditions.py, torch z-buffer) per
frame, batched as training uses them.

The mesh is the real face mesh tracked on assets/astronaut.png (478 vertices, the tracker's
triangles), posed by cameras orbiting the head within +/-10 degrees, so no single view is special.
Times are wall-clock per frame over a batch, the fastest of a few calls after a warm-up, on the
current torch thread count.
"""
from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--res", type=int, nargs="+", default=[128, 512], help="square image sizes (default 128 512)")
    parser.add_argument("--batch", type=int, default=8, help="frames per call (default 8)")
    parser.add_argument("--planes", type=int, default=24, help="MPI planes (default 24)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement; the fastest is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls after a warm-up: on a shared machine the minimum is the
    figure least disturbed by other processes (as in timeit)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(res_list: list[int], batch: int, planes: int, repeats: int) -> dict:
    """The figures `imp bench conditions --json` prints: ms per frame per resolution."""
    import numpy as np
    import torch

    from model.geometry import camera, conditions
    from model.geometry.raster import rasterize
    from model.resources import asset_path
    from model.tracking.track import track_image

    track = track_image(asset_path("astronaut.png"))
    verts = torch.from_numpy(track.vertices_head(0)).expand(batch, -1, -1).contiguous()
    faces = torch.from_numpy(track.faces).long()
    code = conditions.canonical_code(verts[0])
    T0 = torch.from_numpy(track.T_cam_from_head[0])
    angles = np.deg2rad(10.0) * np.sin(np.linspace(0.0, 2.0 * np.pi, batch, endpoint=False))
    T = torch.stack([camera.orbit(T0, float(a), 0.5 * float(a)) for a in angles])
    out = {"batch": batch, "planes": planes, "threads": torch.get_num_threads(), "faces": int(faces.shape[0]), "results": []}
    for res in res_list:
        K = camera.crop_intrinsics(res)
        cam = verts @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
        raster = _best_seconds(lambda: rasterize(cam, faces, K, (res, res)), repeats)
        full = _best_seconds(lambda: conditions.mesh_conditions(verts, faces, code, K, T, (res, res), planes), repeats)
        ss2 = _best_seconds(lambda: conditions.mesh_conditions(verts, faces, code, K, T, (res, res), planes, supersample=2), repeats)
        out["results"].append({
            "res": res,
            "raster_ms_per_frame": 1000.0 * raster / batch,
            "conditions_ms_per_frame": 1000.0 * full / batch,
            "conditions_ss2_ms_per_frame": 1000.0 * ss2 / batch,
        })
    return out


def run(args: argparse.Namespace) -> int:
    result = measure(args.res, args.batch, args.planes, args.repeats)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"mesh conditions, batch {result['batch']}, {result['planes']} planes, {result['faces']} triangles, "
          f"{result['threads']} torch threads (ms per frame)")
    print(f"{'res':>6} {'rasterise':>10} {'conditions':>11} {'2x supersampled':>16}")
    for r in result["results"]:
        print(f"{r['res']:>6} {r['raster_ms_per_frame']:>10.2f} {r['conditions_ms_per_frame']:>11.2f} {r['conditions_ss2_ms_per_frame']:>16.2f}")
    return 0
