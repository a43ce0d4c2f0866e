"""`imp bench clip`: MPI clip files (model/formats/clip.py) on a synthetic head clip that slides
1 px per frame: bytes per frame of the lossless and compact modes, the frontal view's PSNR after a
compact round trip, and write / read seconds per frame."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # no defaults from model.formats.clip here: it imports torch, and every `imp bench` parser
    # (imp bench viewer's first frame among them) would wait 1.5-2 s for it
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="MPI sizes in pixels (default 256 512)")
    parser.add_argument("--planes", type=int, default=24, help="MPI planes (default 24)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--colour-crf", type=int, default=None, help="compact mode: colour video CRF (default: CompactSettings')")
    parser.add_argument("--alpha-crf", type=int, default=None, help="compact mode: alpha video CRF (default: CompactSettings')")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def measure(size: int, planes: int, frames: int, settings) -> list[dict]:
    """One row per mode: bytes per frame (background apart), raw ratio, PSNR, write / read s per frame."""
    import tempfile
    import time
    from pathlib import Path

    import numpy as np

    from bench import synthetic
    from model.formats.clip import MODES, SUFFIX, ClipReader, MPIClip, MPIFrame, load_clip, save_clip
    from model.geometry import mpi

    def frontal_view(frame: MPIFrame):
        t = frame.tensors()
        return mpi.render_in_mpi_camera(t["frontal"], t["residual"], t["alpha"], t.get("background"))

    head = synthetic.head_mpi(size, planes)
    clip = MPIClip.from_frames([MPIFrame(*(np.roll(a, i, axis=-1) for a in (head.frontal, head.residual, head.alpha)), head.K,
                                         head.T_cam_from_head, head.near, head.far, head.background) for i in range(frames)], fps=25.0)
    raw = sum(a[0].nbytes for a in (clip.frontal, clip.residual, clip.alpha))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            path = Path(tmp) / f"{mode}{SUFFIX}"
            t0 = time.perf_counter()
            save_clip(clip, path, mode, settings)
            t1 = time.perf_counter()
            back = load_clip(path)
            t2 = time.perf_counter()
            errs = [float((frontal_view(back.frame(i)) - frontal_view(clip.frame(i))).pow(2).mean()) for i in range(len(clip))]
            psnr = float(np.mean([float("inf") if e == 0 else -10.0 * np.log10(e) for e in errs]))
            with ClipReader(path) as reader:  # the background is stored once per clip: count it apart
                bg = sum(length for tag, _, length in reader._chunks if tag == b"BGND")
            per_frame = (path.stat().st_size - bg) / len(clip)
            rows.append({"size": size, "mode": mode, "bytes_per_frame": per_frame, "raw_ratio": raw / per_frame,
                         "background_bytes": bg, "psnr_db": psnr, "write_s_per_frame": (t1 - t0) / len(clip),
                         "read_s_per_frame": (t2 - t1) / len(clip)})
    return rows


def run(args: argparse.Namespace) -> int:
    from model.formats.clip import CompactSettings

    crfs = {"colour_crf": args.colour_crf, "alpha_crf": args.alpha_crf}
    settings = CompactSettings(**{k: v for k, v in crfs.items() if v is not None})
    rows = []
    if not args.json:
        print(f"{'size':>5} {'mode':>9} {'bytes/frame':>12} {'raw ratio':>9} {'bg bytes':>9} {'PSNR dB':>8} {'write s/f':>9} {'read s/f':>9}")
    for size in args.sizes:
        for r in measure(size, args.planes, args.frames, settings):
            rows.append(r)
            if not args.json:
                print(f"{r['size']:>5} {r['mode']:>9} {r['bytes_per_frame']:>12,.0f} {r['raw_ratio']:>9.1f} {r['background_bytes']:>9,} "
                      f"{r['psnr_db']:>8.2f} {r['write_s_per_frame']:>9.3f} {r['read_s_per_frame']:>9.3f}", flush=True)
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0
