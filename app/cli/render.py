"""`imp render CLIP -o OUT.mp4 --view VIEW`: offline rendering of an MPI clip with the GL renderer.

Views (one output frame per MPI frame, at the clip's frame rate):
  front       the MPI camera itself
  stereo-sbs  left | right eye side by side (twice as wide), parallel eyes 5 cm apart around the
              MPI camera: the layout phone VR viewers (Cardboard) and 3D TVs play
  anaglyph    red / cyan (app.gl.stereo: red = left luminance, green + blue = right) from the same
              eyes converged on the head joint (principal points shifted), so the head sits at
              screen depth instead of floating in front of it
  orbit       the camera swings about the head joint, yaw = A sin(2 pi i / N), A = 10 deg by default
  dolly       dolly zoom: the camera moves along its axis between 0.7x and 1.5x the head distance
              (0.7 -> 1.5 -> 0.7 over the clip) while the focal length keeps the head's size
`--size` sets the output height per eye (width follows the MPI's aspect); default: the MPI's size.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

VIEWS = ("front", "stereo-sbs", "anaglyph", "orbit", "dolly")
ORBIT_DEGREES = 10.0
DOLLY_RANGE = (0.7, 1.5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", type=Path, help="MPI clip (.mpi, from imp lift / the generator / save_clip)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="video to write (.mp4, H.264)")
    parser.add_argument("--view", choices=VIEWS, default="front", help="camera path / stereo layout (default: front)")
    parser.add_argument("--size", type=int, default=None, help="output height in pixels per eye (default: the MPI's height)")
    parser.add_argument("--baseline", type=float, default=0.05, help="stereo views: metres between the eyes (default 0.05)")
    parser.add_argument("--orbit-degrees", type=float, default=ORBIT_DEGREES, help="orbit: yaw amplitude (default 10)")
    parser.add_argument("--dolly-range", type=float, nargs=2, default=DOLLY_RANGE, metavar=("NEAR", "FAR"),
                        help="dolly: camera distance range as multiples of the MPI camera's (default 0.7 1.5)")
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality, lower = better (default 18)")


def output_size(mpi_hw: tuple[int, int], height: int | None) -> tuple[int, int]:
    """(w, h) of one eye's image: `height` rows (default the MPI's), the MPI's aspect ratio."""
    H, W = mpi_hw
    if height is None:
        return W, H
    return max(1, round(W * height / H)), int(height)


def view_camera(view: str, K: np.ndarray, T_cam_from_head: np.ndarray, phase: float, mpi_hw: tuple[int, int],
                out_wh: tuple[int, int], orbit_degrees: float = ORBIT_DEGREES,
                dolly_range: tuple[float, float] = DOLLY_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3), T_view_from_head (4, 4)) float32 of `view` at `phase` = i / N in [0, 1) of the clip,
    for an image of out_wh = (w, h) pixels. Stereo views return the centre of the eye pair."""
    import torch

    from model.geometry import camera

    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: choose one of {', '.join(VIEWS)}")
    H, W = mpi_hw
    K_t = camera.scale_intrinsics(torch.as_tensor(np.asarray(K, np.float32)), out_wh[0] / W, out_wh[1] / H)
    T_t = torch.as_tensor(np.asarray(T_cam_from_head, np.float32))
    if view == "orbit":
        T_t = camera.orbit(T_t, math.radians(orbit_degrees) * math.sin(2.0 * math.pi * phase))
    elif view == "dolly":
        lo, hi = dolly_range
        factor = lo + (hi - lo) * 0.5 * (1.0 - math.cos(2.0 * math.pi * phase))
        K_t, T_t = camera.dolly_zoom(K_t, T_t, factor * T_t[2, 3])
    return K_t.numpy(), T_t.numpy()


def stereo_cameras(K: np.ndarray, T_view_from_head: np.ndarray, baseline: float, converge: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(K, T_eye_from_head)] for the left and right eye at -/+ baseline / 2 along the camera's x
    axis (model.geometry.camera.stereo_pair). With `converge` the principal points move by -/+ f b / 2z,
    z the head joint's depth, so the joint projects to the same pixel in both eyes."""
    import torch

    from model.geometry import camera

    left, right = camera.stereo_pair(torch.as_tensor(np.asarray(T_view_from_head, np.float32)), baseline)
    shift = K[0, 0] * baseline / 2.0 / float(T_view_from_head[2, 3]) if converge else 0.0
    eyes = []
    for sign, T in ((-1.0, left), (1.0, right)):
        K_eye = np.array(K, np.float32, copy=True)
        K_eye[0, 2] += sign * shift
        eyes.append((K_eye, T.numpy()))
    return eyes


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    import moderngl
    from tqdm import tqdm

    from app.gl.renderer import MPIRenderer
    from app.gl.stereo import compose
    from model.formats.clip import ClipError, open_clip
    from model.formats.video import VideoWriter

    if args.view not in VIEWS:  # reachable when called without the parser
        print(f"imp render: unknown view {args.view!r}: choose one of {', '.join(VIEWS)}", file=sys.stderr)
        return 2
    if args.size is not None and args.size < 2:
        print(f"imp render: --size must be at least 2 pixels, got {args.size}", file=sys.stderr)
        return 2
    try:
        reader = open_clip(args.clip)
    except ClipError as exc:
        print(f"imp render: {exc}", file=sys.stderr)
        return 2
    try:
        ctx = moderngl.create_standalone_context(backend="egl")
    except Exception as exc:
        reader.close()
        print(f"imp render: cannot create a headless OpenGL (EGL) context: {exc}; install Mesa's EGL (scripts/setup.sh)", file=sys.stderr)
        return 1
    info = reader.info
    mpi_hw = (info.height, info.width)
    size = output_size(mpi_hw, args.size)
    n = len(reader)
    # a half-written video never carries the output's name (the extension picks the container)
    partial = args.output.with_name(f".{args.output.stem}.partial{args.output.suffix}")
    renderer = None
    try:
        renderer = MPIRenderer(ctx)
        with reader, VideoWriter(partial, fps=info.fps, crf=args.crf) as writer:
            for i, frame in enumerate(tqdm(reader.frames(), total=n, unit="frame", desc=f"imp render {args.view}")):
                renderer.upload(frame)
                K, T = view_camera(args.view, frame.K, frame.T_cam_from_head, i / n, mpi_hw, size,
                                   args.orbit_degrees, tuple(args.dolly_range))
                if args.view in ("stereo-sbs", "anaglyph"):
                    layout = "sbs" if args.view == "stereo-sbs" else "anaglyph"
                    eyes = stereo_cameras(K, T, args.baseline, converge=layout == "anaglyph")
                    image = compose([renderer.render(K_eye, T_eye, size) for K_eye, T_eye in eyes], layout)
                else:
                    image = renderer.render(K, T, size)
                writer.write(_to_u8(image))
        partial.replace(args.output)
    except ClipError as exc:
        print(f"imp render: {exc}", file=sys.stderr)
        return 2
    finally:
        reader.close()
        partial.unlink(missing_ok=True)
        if renderer is not None:
            renderer.release()
        ctx.release()
    width = size[0] * (2 if args.view == "stereo-sbs" else 1)
    print(f"wrote {args.output}: {n} frames, {width}x{size[1]}, {info.fps:g} fps ({args.view})")
    return 0
