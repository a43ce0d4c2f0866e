"""`imp export CLIP -o OUT.glb [--frame N]`: one MPI frame as a glTF binary of alpha-blended textured
planes in metres (model.formats.gltf), for Blender, three.js or any glTF viewer."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", type=Path, help="MPI clip (.mpi)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="glTF binary to write (.glb)")
    parser.add_argument("--frame", type=int, default=0, help="frame index, 0-based; negative counts from the end (default 0)")


def run(args: argparse.Namespace) -> int:
    from model.formats.clip import ClipError, open_clip
    from model.formats.gltf import export_glb

    if args.output.suffix.lower() != ".glb":
        print(f"imp export: {args.output}: the output is a glTF binary, name it *.glb", file=sys.stderr)
        return 2
    try:
        with open_clip(args.clip) as reader:
            n = len(reader)
            index = args.frame + n if args.frame < 0 else args.frame
            if not 0 <= index < n:
                print(f"imp export: {args.clip}: frame {args.frame} is out of range, the clip has {n} frame{'s' if n != 1 else ''} "
                      f"(0..{n - 1}, or -1..-{n} from the end)", file=sys.stderr)
                return 2
            frame = reader.frame(index)
    except ClipError as exc:
        print(f"imp export: {exc}", file=sys.stderr)
        return 2
    glb = export_glb(frame, args.output)
    H, W = frame.size
    print(f"wrote {args.output}: frame {index}, {frame.num_planes} planes of {W}x{H}"
          f"{' + background' if frame.background is not None else ''}, {len(glb) / 1e6:.2f} MB")
    return 0
