"""`imp prepare VIDEOS_OR_FOLDERS... -o DATASET [--res 128] [--workers N] [--shard I/N]`: track, crop,
matte and write a training dataset (format: model/data/dataset.py). Interrupted runs continue where
they stopped. `imp prepare --merge DATASET [SHARD_DIRS...]` folds the manifests of `--shard` runs
into DATASET/manifest.json (recipe for a cluster: docs/training.md)."""
from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="VIDEO_OR_FOLDER",
                        help="video files, or folders searched recursively for videos (with --merge: shard folders)")
    parser.add_argument("-o", "--output", metavar="DATASET", help="dataset folder (created; an existing one is resumed)")
    parser.add_argument("--res", type=int, default=128, help="square crop resolution in pixels (default 128)")
    parser.add_argument("--max-frames", type=int, default=None, help="use at most this many frames per video")
    parser.add_argument("--min-frames", type=int, default=16, help="skip videos with fewer frames (default 16)")
    parser.add_argument("--min-found", type=float, default=0.5, help="skip videos where the face is found in fewer than this fraction of frames (default 0.5)")
    parser.add_argument("--retry-skipped", action="store_true", help="try again the videos an earlier run skipped")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="videos prepared at once: one in this process, the others each in a process of its own "
                             "(default: all cores of this machine or job)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="prepare only videos I, I+N, I+2N, ... of the sorted inputs (I from 0, e.g. $SLURM_ARRAY_TASK_ID/N); "
                             "writes DATASET/manifest-shard-I-of-N.json; merge with --merge when all shards are done")
    parser.add_argument("--merge", metavar="DATASET", default=None,
                        help="merge the shard manifests in DATASET (and the shard folders given as inputs, whose videos "
                             "are moved into DATASET) into DATASET/manifest.json, then exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from model.data.dataset import DatasetError
    from model.data.prepare import PrepareConfig, PrepareError, Shard, default_workers, merge_shards, prepare_dataset

    say = lambda msg: print(f"imp prepare: {msg}", file=sys.stderr)
    if args.merge is not None:
        if args.output is not None and args.output != args.merge:
            say(f"--merge {args.merge} writes into {args.merge}; drop -o {args.output}")
            return 2
        try:
            manifest = merge_shards(args.merge, args.inputs, log=say)
        except (PrepareError, DatasetError, OSError) as exc:
            say(str(exc))
            return 2
        ok = [v for v in manifest["videos"] if v.get("status") == "ok"]
        print(f"{args.merge}: {len(ok)} videos ready ({sum(int(v['frames']) for v in ok)} frames at {manifest['res']}^2), "
              f"{len(manifest['videos']) - len(ok)} skipped")
        return 0 if ok else 1
    if not args.inputs or args.output is None:
        say("name the videos (or folders) and -o DATASET, or use --merge DATASET [SHARD_DIRS...]")
        return 2
    if args.res < 16:
        say(f"--res {args.res} is too small (at least 16)")
        return 2
    cfg = PrepareConfig(res=args.res, max_frames=args.max_frames, min_frames=args.min_frames,
                        min_found=args.min_found, retry_skipped=args.retry_skipped)
    t0 = time.perf_counter()
    try:
        shard = Shard.parse(args.shard) if args.shard else Shard()
        workers = default_workers() if args.workers is None else args.workers
        manifest = prepare_dataset(args.inputs, args.output, cfg, progress=not args.quiet, log=say, workers=workers, shard=shard)
    except (PrepareError, DatasetError) as exc:
        say(str(exc))
        return 2
    ok = [v for v in manifest["videos"] if v.get("status") == "ok"]
    skipped = [v for v in manifest["videos"] if v.get("status") == "skipped"]
    frames = sum(int(v["frames"]) for v in ok)
    part = f" (shard {shard.index}/{shard.count}; `imp prepare --merge {args.output}` when all are done)" if shard.count > 1 else ""
    print(f"{args.output}: {len(ok)} videos ready ({frames} frames at {cfg.res}^2), {len(skipped)} skipped, "
          f"{time.perf_counter() - t0:.1f} s, {workers} worker(s){part}")
    for v in skipped:
        print(f"  skipped {v['source']}: {v['reason']}")
    return 0 if ok else 1
