"""`imp lift PORTRAIT -o CLIP [--res 256 --planes 24]`: the non-learned 3D baseline, a portrait
lifted into a one-frame MPI clip from its face-mesh depth and its matte (model/lift.py)."""
from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("portrait", metavar="PORTRAIT", help="portrait image (png / jpg) with one visible face")
    parser.add_argument("-o", "--output", required=True, metavar="CLIP", help="MPI clip file to write (model.formats.clip format)")
    parser.add_argument("--res", type=int, default=256, help="MPI resolution in pixels (default 256)")
    parser.add_argument("--planes", type=int, default=24, help="number of MPI planes (default 24)")
    parser.add_argument("--frames", type=int, default=1, help="number of (identical) frames in the clip (default 1)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate stored in the clip (default 25)")
    parser.add_argument("--preview", metavar="PNG", default=None,
                        help="also write a PNG strip: views orbited -5, 0, +5 degrees about the head joint")


def run(args: argparse.Namespace) -> int:
    import math

    import numpy as np

    from model.formats import clip as clip_io
    from model.lift import lift_clip, render_view
    from model.tracking.track import TrackingError

    if args.res < 32 or args.planes < 2:
        print(f"imp lift: need --res >= 32 and --planes >= 2 (got {args.res}, {args.planes})", file=sys.stderr)
        return 2
    save_clip = getattr(clip_io, "save_clip", None)
    if save_clip is None:
        print("imp lift: this installation has no MPI clip writer (model.formats.clip.save_clip)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        clip = lift_clip(args.portrait, args.res, args.planes, frames=args.frames, fps=args.fps)
    except (FileNotFoundError, ValueError, TrackingError) as exc:
        print(f"imp lift: {exc}", file=sys.stderr)
        return 2
    save_clip(clip, args.output)
    print(f"{args.output}: {len(clip)} frame(s), {clip.num_planes} planes at {args.res}^2, "
          f"near {float(clip.near[0]):.3f} m, far {float(clip.far[0]):.3f} m ({time.perf_counter() - t0:.1f} s)")
    if args.preview:
        from PIL import Image

        frame = clip.frame(0)
        views = [render_view(frame, math.radians(a)) for a in (-5.0, 0.0, 5.0)]
        Image.fromarray(np.concatenate(views, 1)).save(args.preview)
        print(f"{args.preview}: views at -5, 0, +5 degrees")
    return 0
