"""`imp export-onnx [--checkpoint CKPT] [--out PATH]`: a guidance-distilled student checkpoint ->
the ONNX file the viewer's generation worker runs in ONNX Runtime for its first clip, without
importing torch (model/coldstart/onnx_export.py). scripts/setup.sh runs it for the demo model.

Default checkpoint: the shipped demo model; default file: the cache's copy for that checkpoint
(model.coldstart.onnx_network.onnx_path under $IMP_CACHE_DIR or ~/.cache/im-portrait), where the
worker looks for it."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, metavar="CKPT", default=None,
                        help="student checkpoint (.safetensors); default: the shipped demo model assets/demo.safetensors")
    parser.add_argument("--out", type=Path, metavar="PATH", default=None,
                        help="ONNX file to write; default: CACHE/onnx/<checkpoint sha256[:16]>.onnx, where imp-viewer looks")
    parser.add_argument("--if-stale", action="store_true",
                        help="write only if PATH is missing, unreadable, or an export of other weights or of an older format "
                             "(what scripts/setup.sh runs)")


def _fail(message: str, code: int = 2) -> int:
    print(f"imp export-onnx: {message}", file=sys.stderr)
    return code


def _current(path: Path, checkpoint: Path) -> bool:
    """Whether `path` is a loadable export of this checkpoint's bytes in the current format."""
    from model.coldstart.onnx_network import OnnxModelError, OnnxNetwork, checkpoint_digest

    try:
        return OnnxNetwork(path).checkpoint_sha256 == checkpoint_digest(checkpoint)
    except OnnxModelError:
        return False


def run(args: argparse.Namespace) -> int:
    from model.coldstart.onnx_network import onnx_path
    from model.data.portrait_cache import default_cache_dir
    from model.net.checkpoint import CheckpointError, resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as exc:
        return _fail(str(exc))
    out = args.out if args.out is not None else onnx_path(ckpt, default_cache_dir())
    if out.is_dir():
        return _fail(f"{out} is a folder; give the file to write, e.g. {out / 'model.onnx'}")

    if args.if_stale and _current(out, ckpt):
        print(f"{out} ({out.stat().st_size / 1e6:.1f} MB): already an export of {ckpt.name}, kept")
        return 0

    from model.coldstart.onnx_export import export_onnx  # imports torch

    started = time.perf_counter()
    try:
        path = export_onnx(ckpt, out)
    except (CheckpointError, ValueError, RuntimeError, OSError) as exc:  # CheckpointError: also a RuntimeError; said, not traced
        return _fail(str(exc))
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB, {ckpt.name}, {time.perf_counter() - started:.1f} s)")
    return 0
