"""`imp`: the command-line tools. Each subcommand lives in its own module and is imported only
when it runs, so `imp --help` stays fast and one broken optional dependency cannot break the rest.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int | None`."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Keep sorted by the order a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "track": ("app.cli.track", "face tracking of a portrait or video: landmarks, metric head pose, template, expressions"),
    "prepare": ("app.cli.prepare", "videos -> training dataset: track, fixed head crop, mattes, background (resumable)"),
    "lift": ("app.cli.lift", "portrait -> one-frame MPI clip from its face-mesh depth and matte (non-learned 3D baseline)"),
    "train": ("app.cli.train", "prepared videos -> diffusion model: bootstrap / alternating stages, resumable, torchrun DDP"),
    "eval": ("app.cli.eval", "self-reenactment metrics on held-out videos: frontal L1/PSNR/SSIM, side view, SGBM stereo, landmarks"),
    "generate": ("app.cli.generate", "portrait + driving video (or --animate) -> MPI clip with the diffusion model"),
    "render": ("app.cli.render", "MPI clip -> mp4: front, stereo side-by-side, anaglyph, orbit or dolly-zoom view (GL)"),
    "export": ("app.cli.export", "one MPI frame -> glTF binary (.glb) of alpha-blended textured planes in metres"),
    "export-onnx": ("app.cli.export_onnx", "student checkpoint -> ONNX file for ONNX Runtime: the viewer's first clip without torch"),
    "bench": ("bench.cli", "benchmarks: render, model, viewer (prints tables or --json)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only` given, the arguments of that one command alone:
    some command modules import torch (1.4 s here), which `imp prepare` and its worker-count
    speed-up should not pay for."""
    parser = argparse.ArgumentParser(prog="imp", description="im-portrait tools: 3D talking heads as MPI videos")
    parser.add_argument("--verbose", action="store_true", help="leave the log lines of MediaPipe's C++ code on the terminal")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if only is not None and name != only:
            continue
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as exc:  # show the command anyway, explain when it is run
            p.set_defaults(_import_error=exc)
    return parser


def _command_named(argv: list[str]) -> str | None:
    """The command an argument list runs (the first word that names one), or None."""
    return next((a for a in argv if a in COMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=_command_named(argv) or "")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    if args.verbose:
        from model.tracking.native_logs import set_verbose

        set_verbose(True)
    if getattr(args, "_import_error", None) is not None:
        print(f"imp {args.command}: cannot load {args._module}: {args._import_error}", file=sys.stderr)
        return 2
    try:
        code = importlib.import_module(args._module).run(args)
    except KeyboardInterrupt:
        print(f"imp {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
