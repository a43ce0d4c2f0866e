"""`imp generate --portrait IMG (--driving VIDEO | --animate) [--checkpoint CKPT] -o CLIP`: a portrait
driven by a talking-head video (or by the built-in gentle animation) -> an MPI clip, sampled clip by
clip with the diffusion model (model/diffusion/pipeline.py) and streamed to disk (model.formats.clip.ClipWriter: the
file appears under its name only when complete). `imp render CLIP` and `imp-viewer --clip CLIP`
play the result.

Without --checkpoint the shipped demo model (model.net.checkpoint.demo_checkpoint) is used when the
installation has one."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from model.runtime import add_device_argument

ANIMATE_SECONDS = 8.0  # --animate without --max-frames: one period of the built-in animation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--portrait", required=True, type=Path, metavar="IMG", help="portrait image (png / jpg) with one visible face")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--driving", type=Path, metavar="VIDEO", help="driving talking-head video (any identity; the portrait's own video = self-driving)")
    src.add_argument("--animate", action="store_true",
                     help=f"no driving video: the built-in gentle animation (talking mouth, blinks, head sway; {ANIMATE_SECONDS:g} s unless --max-frames)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="CLIP", help="MPI clip to write (.mpi)")
    parser.add_argument("--checkpoint", type=Path, metavar="CKPT", default=None,
                        help="model checkpoint (.safetensors) written by `imp train`; default: the shipped demo model assets/demo.safetensors")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per clip (default: the checkpoint config's sample_steps)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; the same seed and inputs give the same clip (default 0)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="generate at most N frames")
    parser.add_argument("--mode", choices=("lossless", "compact"), default="lossless",
                        help="clip storage: lossless (exact, zlib) or compact (H.264 colours and alpha) (default lossless)")
    parser.add_argument("--fps", type=float, default=25.0, help="--animate: frame rate of the animation (default 25)")
    parser.add_argument("--no-first-frame", action="store_true",
                        help="do not give the portrait as the first clip's first-frame condition")
    add_device_argument(parser, "where the network runs (fp16 on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _fail(message: str, code: int = 2) -> int:
    print(f"imp generate: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    for name in ("steps", "max_frames", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _fail(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not args.fps > 0:
        return _fail(f"--fps must be positive, got {args.fps}")
    from model.net.checkpoint import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as exc:
        return _fail(str(exc))
    if not args.portrait.is_file():
        return _fail(f"{args.portrait}: no such portrait image")
    if args.driving is not None and not args.driving.is_file():
        return _fail(f"{args.driving}: no such driving video")
    if args.output.is_dir():
        return _fail(f"{args.output} is a folder; give the clip file to write, e.g. {args.output / 'out.mpi'}")

    import torch
    from tqdm import tqdm

    from model.net.checkpoint import CheckpointError
    from model.formats.clip import ClipWriter
    from model.data.driving import VideoDriving, default_driving
    from model.data.portrait_cache import default_cache_dir
    from model.diffusion.pipeline import Generator
    from model.tracking.track import TrackingError
    from model.formats.video import VideoError
    from model.runtime import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        generator = Generator.from_checkpoint(ckpt, resolve_device(args.device))
    except (CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    cfg = generator.cfg
    if args.steps is not None and args.steps > cfg.diffusion.train_timesteps:
        return _fail(f"--steps must be at most the model's {cfg.diffusion.train_timesteps} training timesteps, got {args.steps}")
    try:
        portrait = generator.prepare(args.portrait, default_cache_dir())
    except (ValueError, TrackingError) as exc:
        return _fail(f"portrait: {exc}")
    try:
        if args.driving is not None:
            driving = VideoDriving(args.driving, portrait.track, max_frames=args.max_frames, cache_dir=default_cache_dir())
        else:
            frames = args.max_frames or round(ANIMATE_SECONDS * args.fps)
            driving = default_driving(portrait.track, fps=args.fps, max_frames=frames)
    except (VideoError, TrackingError, ValueError) as exc:
        return _fail(f"driving: {exc}")
    total = driving.remaining() if args.max_frames is None else min(args.max_frames, driving.remaining() or args.max_frames)
    steps = args.steps or cfg.diffusion.sample_steps
    clips = 1 + max(0, -(-(total - cfg.frames) // (cfg.frames - 1)))
    print(f"model {cfg.name} ({ckpt}): {cfg.res}^2, {cfg.planes} planes, {cfg.frames}-frame clips; "
          f"{total} frames = {clips} clip(s) x {steps} steps")
    bar = tqdm(total=clips * steps, desc="generating", unit="step")
    last = [0]

    def on_progress(status) -> None:
        done = status.clip * steps + status.step
        bar.update(done - last[0])
        last[0] = done
        bar.set_postfix(clip=f"{status.clip + 1}/{clips}", frames=status.frames_done)

    t1 = time.perf_counter()
    written = 0
    try:
        with ClipWriter(args.output, mode=args.mode, fps=driving.fps) as writer:
            for frames in generator.generate_clips(driving, seed=args.seed, steps=steps, max_frames=args.max_frames,
                                                   first_frame="none" if args.no_first_frame else "portrait",
                                                   progress=on_progress):
                for frame in frames:
                    writer.append(frame)
                written += len(frames)
    except OSError as exc:
        bar.close()
        return _fail(f"{args.output}: cannot write the clip ({exc})")
    except ValueError as exc:
        bar.close()
        return _fail(str(exc))
    bar.close()
    t2 = time.perf_counter()
    print(f"{args.output}: {written} frames, {cfg.planes} planes at {cfg.res}^2, {driving.fps:g} fps, {args.mode} "
          f"(prepare {t1 - t0:.1f} s, sampling {t2 - t1:.1f} s = {(t2 - t1) / max(written, 1):.2f} s/frame)")
    return 0
