"""`imp eval [--checkpoint CKPT] --data DATASET [--videos ID ...] [--json OUT]`: self-reenactment on
held-out prepared videos (first frame as portrait): frontal L1 / PSNR / SSIM, side-view consistency,
SGBM stereo disparity error and landmark distance, as a table like the paper's table 1
(model/evaluation/reenactment.py). Without --checkpoint: the demo model in assets/."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", nargs="+",
                        help="checkpoint(s) written by `imp train` (several: one table row each); default: the demo model")
    parser.add_argument("--data", required=True, metavar="DATASET", help="dataset folder written by `imp prepare`")
    parser.add_argument("--videos", nargs="+", metavar="ID", help="video ids to evaluate (default: all in DATASET); use held-out ones")
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per video (default: all)")
    parser.add_argument("--sample-steps", type=int, default=None, help="DDIM steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-landmarks", action="store_true", help="skip the MediaPipe landmark distance")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; more can be far slower on a busy CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def row_name(path: Path, state: dict, taken) -> str:
    """A table row name: RUN/stage@step for a run's checkpoint, FILE-STEM@step for another file;
    numbered when already `taken` (two checkpoints must never share a row)."""
    from model.training.loop import CHECKPOINT

    step = state.get("step")
    base = f"{path.parent.parent.name}/{path.parent.name}@{step}" if path.name == CHECKPOINT else f"{path.stem}@{step}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base} ({n})", n + 1
    return name


def run(args: argparse.Namespace) -> int:
    from model.runtime import torch_threads

    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from model.net.checkpoint import CheckpointError
    from model.data.dataset import DatasetError, PreparedDataset
    from model.evaluation.reenactment import EvalSettings, evaluate, format_table, model_generator
    from model.runtime import resolve_device
    from model.net.variant import demo_checkpoint, load_trained

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"imp eval: {exc}", file=sys.stderr)
        return 2
    try:
        paths = [Path(p) for p in args.checkpoint] if args.checkpoint else [demo_checkpoint()]
    except FileNotFoundError as exc:
        print(f"imp eval: {exc}", file=sys.stderr)
        return 2
    rows, outputs = {}, {}
    for path in paths:
        try:
            model, state = load_trained(path, device)
            trained_on = set(state.get("videos") or [])
            evaluated = set(args.videos) if args.videos else {e["id"] for e in PreparedDataset(args.data).entries}
            overlap = sorted(trained_on & evaluated)
            if overlap:
                print(f"imp eval: warning: {path} was trained on {overlap}; these are not held out", file=sys.stderr)
            steps = args.sample_steps or model.cfg.diffusion.sample_steps
            settings = EvalSettings(max_frames=args.max_frames, sample_steps=steps, seed=args.seed,
                                    landmarks=not args.no_landmarks, progress=not args.quiet)
            with torch.no_grad():
                result = evaluate(args.data, model.cfg, model_generator(model, steps, args.seed, progress=not args.quiet),
                                  args.videos, settings)
        except (CheckpointError, DatasetError, FileNotFoundError, ValueError) as exc:
            print(f"imp eval: {exc}", file=sys.stderr)
            return 2
        result["checkpoint"] = str(path)
        result["stage"], result["step"] = state.get("stage"), state.get("step")
        result["variant"] = state.get("variant")
        result["sample_steps"] = steps
        rows[row_name(path, state, rows)] = result
        outputs[str(path)] = result
    print(format_table(rows))
    if args.json:
        payload = next(iter(outputs.values())) if len(outputs) == 1 else {"checkpoints": outputs}
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0
