"""`imp track INPUT -o TRACK.npz [--mesh OUT.ply [--frame N]]`: face tracking of a portrait or a video."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="portrait image (png / jpg) or talking-head video")
    parser.add_argument("-o", "--output", type=Path, required=True, help="track file to write (.npz)")
    parser.add_argument("--mesh", type=Path, help="also write the posed head mesh of one frame (.ply / .obj)")
    parser.add_argument("--frame", type=int, default=0, help="frame for --mesh (default 0)")
    parser.add_argument("--max-frames", type=int, help="track only the first N frames of a video")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from model.tracking import TrackingError, track
    from model.tracking.pose import yaw_pitch_roll
    from model.formats.video import VideoError

    try:
        result = track(args.input, progress=True, max_frames=args.max_frames)
    except (TrackingError, VideoError) as exc:
        print(f"imp track: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result.save(args.output)
    ypr = yaw_pitch_roll(result.T_cam_from_head)
    missing = int((~result.found).sum())
    print(
        f"{args.input}: {len(result)} frame(s), face found in {len(result) - missing}"
        f"{f' ({missing} interpolated)' if missing else ''}; crop x0 y0 size = {result.crop.tolist()}; "
        f"head distance {np.median(result.T_cam_from_head[:, 2, 3]):.2f} m; "
        f"yaw {ypr[:, 0].min():+.1f}..{ypr[:, 0].max():+.1f} deg -> {args.output}"
    )
    if args.mesh is not None:
        import trimesh

        if not 0 <= args.frame < len(result):
            print(f"imp track: --frame {args.frame} is outside 0..{len(result) - 1}", file=sys.stderr)
            return 2
        args.mesh.parent.mkdir(parents=True, exist_ok=True)
        mesh = trimesh.Trimesh(result.vertices_cam(args.frame), result.faces, process=False)
        mesh.export(args.mesh)
        print(f"frame {args.frame} mesh (camera frame, metres) -> {args.mesh}")
    return 0
