"""`imp eval [--checkpoint CKPT ...] --data DATASET [--videos ID ...] [--portraits IMG ...] [--json OUT]`:

- self-reenactment on held-out prepared videos (first frame as portrait): frontal L1 / PSNR /
  SSIM, side-view consistency, SGBM stereo disparity error, landmark distance and identity
  distance to the real frames, as a table like the paper's table 1
  (model/evaluation/reenactment.py);
- with --portraits, cross-identity: every portrait driven by every --cross-videos video (default:
  the --videos ones): identity distance to the portrait, same-person rate, landmark distance to
  the retargeted driving mesh (model/evaluation/cross_identity.py);
- --warp-baseline adds a row for the portrait carried by the meshes alone (no learning);
- --warp-only: that row alone, no network run (a change of the identity condition measured on
  any videos, training ones included, without touching the held-out ones);
- several checkpoints: one row each, and every later one's differences to the first (a distilled
  student against its teacher: `--checkpoint TEACHER STUDENT`).

Without --checkpoint: the demo model in assets/."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.runtime import add_device_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", nargs="+",
                        help="checkpoint(s) written by `imp train` (several: one table row each); default: the demo model")
    parser.add_argument("--data", required=True, metavar="DATASET", help="dataset folder written by `imp prepare`")
    parser.add_argument("--videos", nargs="+", metavar="ID", help="video ids to evaluate (default: all in DATASET); use held-out ones")
    parser.add_argument("--portraits", nargs="+", metavar="IMG", help="cross-identity: portrait images (held out: nobody in the training videos)")
    parser.add_argument("--cross-videos", nargs="+", metavar="ID", help="cross-identity driving videos (default: --videos)")
    parser.add_argument("--cross-frames", type=int, default=32, help="cross-identity: driving frames per pair (default 32)")
    parser.add_argument("--no-self", action="store_true", help="skip self-reenactment (cross-identity only)")
    parser.add_argument("--warp-baseline", action="store_true", help="add a row for the warp baseline (the portrait carried by the meshes, nothing learned)")
    parser.add_argument("--warp-only", action="store_true",
                        help="only the warp baseline, no network (at the checkpoint's config): measures a change of the identity "
                             "condition, on any videos (training ones too: the warp learns nothing)")
    parser.add_argument("--samples", metavar="DIR", help="cross-identity: write one PNG per pair (portrait, driving, generated frames)")
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per video (default: all)")
    parser.add_argument("--sample-steps", type=int, default=None, help="DDIM steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-landmarks", action="store_true", help="skip the MediaPipe landmark distance")
    parser.add_argument("--no-identity", action="store_true", help="skip the dlib identity figures")
    add_device_argument(parser, "where the network runs (fp16 on a GPU)")
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


def _identity_available(args: argparse.Namespace) -> bool:
    """Whether dlib's identity figures can be computed; says why not in one line."""
    from model.evaluation.identity import FaceIdentity, IdentityUnavailable

    try:
        FaceIdentity().load()
    except IdentityUnavailable as exc:
        print(f"imp eval: identity figures off: {exc}", file=sys.stderr)
        return False
    return True


def _run(args: argparse.Namespace) -> int:
    import json

    import torch

    from model.data.dataset import DatasetError, PreparedDataset
    from model.evaluation.cross_identity import CrossSettings, evaluate_cross
    from model.evaluation.generators import model_generator, warp_generator
    from model.evaluation.reenactment import EvalSettings, evaluate
    from model.evaluation.table import format_cross_table, format_differences, format_region_table, format_table
    from model.net.checkpoint import CheckpointError, demo_checkpoint, read_config
    from model.net.precision import for_inference
    from model.net.variant import load_trained
    from model.runtime import resolve_device

    try:
        device = resolve_device(args.device)
        paths = [Path(p) for p in args.checkpoint] if args.checkpoint else [demo_checkpoint()]
    except (ValueError, FileNotFoundError) as exc:
        print(f"imp eval: {exc}", file=sys.stderr)
        return 2
    if args.warp_only and len(paths) > 1:
        print("imp eval: --warp-only runs no network and takes one --checkpoint (for its config)", file=sys.stderr)
        return 2
    identity = not args.no_identity and _identity_available(args)
    if args.portraits and not identity:
        print("imp eval: cross-identity (--portraits) measures identity: install the [eval] extra or leave --portraits out",
              file=sys.stderr)
        return 2
    cross_videos = args.cross_videos or args.videos
    if args.portraits and not cross_videos:
        print("imp eval: --portraits needs driving videos: --cross-videos ID ... (or --videos)", file=sys.stderr)
        return 2

    rows, cross_rows, outputs, named = {}, {}, {}, {}
    methods = []  # (row name, config, generator, checkpoint state or None)
    try:
        for path in [] if args.warp_only else paths:
            model, state = load_trained(path, device)
            model = for_inference(model, device)  # fp16 autocast on a GPU, as generation
            trained_on = set(state.get("videos") or [])
            evaluated = set(args.videos) if args.videos else {e["id"] for e in PreparedDataset(args.data).entries}
            overlap = sorted(trained_on & (evaluated | set(cross_videos or [])))
            if overlap:
                print(f"imp eval: warning: {path} was trained on {overlap}; these are not held out", file=sys.stderr)
            steps = args.sample_steps or model.cfg.diffusion.sample_steps
            methods.append((row_name(path, state, [m[0] for m in methods]), model.cfg,
                            model_generator(model, steps, args.seed, progress=not args.quiet),
                            {"checkpoint": str(path), "stage": state.get("stage"), "step": state.get("step"),
                             "variant": state.get("variant"), "sample_steps": steps}))
        if args.warp_baseline or args.warp_only:
            # at the (first) checkpoint's config: its resolution and planes
            owner, cfg = (str(paths[0]), read_config(paths[0])) if args.warp_only else methods[0][:2]
            if not cfg.identity_warp:
                raise ValueError(f"the warp baseline needs a config with the identity condition; {owner} has none")
            methods.append(("warp baseline (no learning)", cfg, warp_generator, {"method": "warp"}))
        for name, cfg, generate, info in methods:
            result = dict(info)
            with torch.no_grad():
                if not args.no_self:
                    settings = EvalSettings(max_frames=args.max_frames, sample_steps=info.get("sample_steps"), seed=args.seed,
                                            landmarks=not args.no_landmarks, identity=identity, progress=not args.quiet)
                    result.update(evaluate(args.data, cfg, generate, args.videos, settings))
                    rows[name] = result
                if args.portraits:
                    tag = name.replace("/", "_").replace(" ", "_") + "--"
                    cross = CrossSettings(frames=args.cross_frames, landmarks=not args.no_landmarks,
                                          samples=Path(args.samples) if args.samples else None, progress=not args.quiet)
                    result["cross_identity"] = evaluate_cross(args.data, cfg, generate, args.portraits, cross_videos, cross, tag)
                    cross_rows[name] = result["cross_identity"]
            outputs[info.get("checkpoint", name)] = result
            named[name] = result
    except (CheckpointError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"imp eval: {exc}", file=sys.stderr)
        return 2
    if rows:
        print("self-reenactment (each video driven from its first frame as the portrait)")
        print(format_table(rows))
        print("\nfrontal error by region (face: the tracked mesh; person: hair, ears, neck, torso; share of the squared error)")
        print(format_region_table(rows))
    if cross_rows:
        print(f"\ncross-identity ({len(args.portraits)} portraits x {len(cross_videos)} driving videos, {args.cross_frames} frames each)")
        print(format_cross_table(cross_rows))
    checkpoints = [name for name, *_, info in methods if "checkpoint" in info]
    if len(checkpoints) > 1:
        print(f"\ndifferences to {checkpoints[0]}")
        print(format_differences({n: named[n] for n in checkpoints}, checkpoints[0]))
    if args.json:
        payload = next(iter(outputs.values())) if len(outputs) == 1 else {"checkpoints": outputs}
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0
