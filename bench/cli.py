"""`imp bench <name>`: one sub-subcommand per benchmark module.

Each module in BENCHES provides `add_arguments(parser)` and `run(args) -> int`, keeping heavy imports
(torch, moderngl) inside run() so `imp --help` stays fast. Add a benchmark with one line here."""
from __future__ import annotations

import argparse
import importlib

# name -> (module, one-line help)
BENCHES: dict[str, tuple[str, str]] = {
    "render": ("bench.render", "GL MPI renderer vs the torch reference: views/s, stereo pairs/s"),
    "model": ("bench.model", "denoiser speed and memory per config: s/step, s/frame, peak RSS"),
    "conditions": ("bench.conditions", "mesh conditions ms/frame (torch z-buffer rasteriser) at 512^2 and 128^2"),
    "train": ("bench.train", "training throughput per config: samples/s of bootstrap, stage-2 L_mpi and L_side steps"),
    "data": ("bench.data", "data loader alone vs a full training step: samples/s per worker count, which one limits"),
    "clip": ("bench.clip", "MPI clip files: bytes per frame (lossless / compact), compact PSNR, write / read s"),
    "viewer": ("bench.viewer", "live viewer: stereo fps at 512^2 per eye while generating, generated fps, first frame s; "
               "--display xr: headset frames submitted per frame asked for, ms per headset frame with / without the mirror"),
    "soak": ("bench.soak", "the viewer left running (default 30 min): RSS growth, lost frames, stalls; --driving VIDEO: "
             "webcam latency; --clip: streamed clip memory"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    for name, (module, help_text) in BENCHES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_bench_module=module)
        importlib.import_module(module).add_arguments(p)


def run(args: argparse.Namespace) -> int:
    module = getattr(args, "_bench_module", None)
    if module is None:
        print("imp bench: choose a benchmark: " + ", ".join(BENCHES) + " (imp bench --help)")
        return 2
    return int(importlib.import_module(module).run(args) or 0)
