"""`imp prepare VIDEOS_OR_FOLDERS... -o DATASET [--res 128]`: track, crop, matte and write a
training dataset (format: model/data/dataset.py). Interrupted runs continue where they stopped."""
from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER", help="video files, or folders searched recursively for videos")
    parser.add_argument("-o", "--output", required=True, metavar="DATASET", help="dataset folder (created; an existing one is resumed)")
    parser.add_argument("--res", type=int, default=128, help="square crop resolution in pixels (default 128)")
    parser.add_argument("--max-frames", type=int, default=None, help="use at most this many frames per video")
    parser.add_argument("--min-frames", type=int, default=16, help="skip videos with fewer frames (default 16)")
    parser.add_argument("--min-found", type=float, default=0.5, help="skip videos where the face is found in fewer than this fraction of frames (default 0.5)")
    parser.add_argument("--retry-skipped", action="store_true", help="try again the videos an earlier run skipped")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from model.data.dataset import DatasetError
    from model.data.prepare import PrepareConfig, PrepareError, prepare_dataset

    if args.res < 16:
        print(f"imp prepare: --res {args.res} is too small (at least 16)", file=sys.stderr)
        return 2
    cfg = PrepareConfig(res=args.res, max_frames=args.max_frames, min_frames=args.min_frames,
                        min_found=args.min_found, retry_skipped=args.retry_skipped)
    t0 = time.perf_counter()
    try:
        manifest = prepare_dataset(args.inputs, args.output, cfg, progress=not args.quiet,
                                   log=lambda msg: print(f"imp prepare: {msg}", file=sys.stderr))
    except (PrepareError, DatasetError) as exc:
        print(f"imp prepare: {exc}", file=sys.stderr)
        return 2
    ok = [v for v in manifest["videos"] if v.get("status") == "ok"]
    skipped = [v for v in manifest["videos"] if v.get("status") == "skipped"]
    frames = sum(int(v["frames"]) for v in ok)
    print(f"{args.output}: {len(ok)} videos ready ({frames} frames at {cfg.res}^2), {len(skipped)} skipped, "
          f"{time.perf_counter() - t0:.1f} s")
    for v in skipped:
        print(f"  skipped {v['source']}: {v['reason']}")
    return 0 if ok else 1
