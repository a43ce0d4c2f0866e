"""Evaluation by self-reenactment on held-out prepared videos (paper sec. 4, table 1; issue 5).

For each video the first frame is the portrait and the video's own track drives it:

- frontal: MPIs built in each frame's camera (as at inference), their frontal renderings against
  the real frames 1..N-1: L1 (colours in [0, 1]), PSNR, SSIM;
- side: MPIs built in the *reference* camera (frame 0's head pose, each frame's expression
  rasterised there, as L_side trains), rendered into each target camera and compared with the real
  frame: L1, PSNR over the image and inside the face (the target mesh's coverage in the target
  camera). A model without real 3D cannot move its content the way the head moved. The whole-image
  figures are bounded by what no MPI can do: the MPI moves rigidly with the head, the torso and
  background in the real frame do not; the face figures isolate the head;
- stereo: each frontal MPI rendered as a 5 cm stereo pair (model.geometry.camera.stereo_pair); OpenCV
  StereoSGBM's disparity against the MPI's own expected disparity f * b / z in the left view,
  mean |difference| in pixels inside the face (the driving mesh's coverage, seen by the left eye).
  It checks that what a viewer's eyes fuse is the depth the MPI claims. A flat MPI passes that check
  perfectly, so the same SGBM disparity is also compared with the tracked mesh's f * b / z
  (`mesh_error_px`): whether the eyes fuse the shape of the face;
- landmarks: MediaPipe face mesh on generated and on real frames (both upscaled to
  LANDMARK_SIZE px, the same detector), mean distance of the 468 mesh points in model pixels.

A generator is any function (Conditions, real frames) -> MPIPrediction, so the metrics can be
checked with an oracle MPI built from the real frames and the mesh (tests) as well as run on a
trained model (`model_generator`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from model.geometry import camera, conditions, mpi
from model.data.dataset import DatasetError, PreparedDataset, PreparedVideo
from model.diffusion.process import Conditions
from model.data.pairs import VideoSource, coordinate_channels, rasterise
from model.net.unet import MPIPrediction
from model.net.variant import mesh_alpha_with_back_plane

STEREO_BASELINE = 0.05  # m, the paper's stereo experiment
STEREO_SIZE = 256  # px: the stereo pair is rendered at about this size (as a viewer would), errors reported in MPI px
LANDMARK_SIZE = 256  # px: MediaPipe needs a face larger than the training crops
MESH_POINTS = 468

Generator = Callable[[Conditions, Tensor], MPIPrediction]


@dataclass
class EvalSettings:
    max_frames: int | None = None  # per video (default: all)
    sample_steps: int | None = None  # DDIM steps (default: the config's)
    seed: int = 0
    landmarks: bool = True
    progress: bool = True


@dataclass
class VideoMetrics:
    video: str
    frames: int
    frontal: dict[str, float] = field(default_factory=dict)
    side: dict[str, float] = field(default_factory=dict)
    stereo: dict[str, float] = field(default_factory=dict)
    landmarks: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- image metrics

def _masked_mean(x: Tensor, mask: Tensor | None) -> float:
    """Mean of x (N, C, H, W) over all entries, or over the pixels where mask (N, 1, H, W) is set
    (NaN when none is)."""
    if mask is None:
        return float(x.mean())
    m = mask.to(x.dtype).expand_as(x)
    return float((x * m).sum() / m.sum()) if float(m.sum()) > 0 else math.nan


def l1(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Mean |a - b| of images (N, C, H, W) in [-1, 1], measured on the [0, 1] scale; inside mask
    (N, 1, H, W) bool when given."""
    return _masked_mean((a - b).abs() / 2, mask)


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """PSNR (dB) of images (N, C, H, W) in [-1, 1] (peak 1 on the [0, 1] scale), inside mask
    (N, 1, H, W) bool when given; inf when equal."""
    mse = _masked_mean(((a - b) / 2).square(), mask)
    return mse if math.isnan(mse) else math.inf if mse == 0 else 10 * math.log10(1 / mse)


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004; Gaussian window, K1 0.01, K2 0.03) of images (N, C, H, W) in
    [-1, 1], computed on the [0, 1] scale per channel, valid region only."""
    a, b = (a.double() + 1) / 2, (b.double() + 1) / 2
    C = a.shape[1]
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(C, 1, window, window)
    win = min(window, a.shape[-1], a.shape[-2])
    if win < window:
        k = k[..., :win, :win] / k[..., :win, :win].sum((-1, -2), keepdim=True)
    f = lambda t: F.conv2d(t, k, groups=C)
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return float(s.mean())


# ------------------------------------------------------------------------------------------ stereo

def sgbm_disparity(left: np.ndarray, right: np.ndarray, max_disparity: float) -> np.ndarray:
    """OpenCV StereoSGBM disparity (H, W) float in pixels of the input (NaN where invalid) for two
    RGB uint8 images of a rectified pair, the right camera +x of the left. Small images are
    upscaled first (the matcher needs texture over its block) and the result scaled back."""
    import cv2

    h, w = left.shape[:2]
    s = max(1, int(round(256 / w)))
    L = cv2.cvtColor(cv2.resize(left, (w * s, h * s), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2GRAY)
    R = cv2.cvtColor(cv2.resize(right, (w * s, h * s), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2GRAY)
    num = 16 * int(math.ceil((max_disparity * s * 1.5 + 8) / 16))
    block = 5
    matcher = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num, blockSize=block, P1=8 * block * block,
                                    P2=32 * block * block, uniquenessRatio=5, speckleWindowSize=50, speckleRange=2,
                                    mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    d = matcher.compute(L, R).astype(np.float32) / 16.0
    d[d <= 0] = np.nan
    d = cv2.resize(d, (w, h), interpolation=cv2.INTER_AREA if s > 1 else cv2.INTER_NEAREST) / s
    return d


def stereo_check(frame: MPIPrediction, depths: Tensor, K: Tensor, mesh_alpha: Tensor, baseline: float = STEREO_BASELINE,
                 background: Tensor | None = None) -> tuple[float, float, float]:
    """One MPI frame's stereo figures, inside the face as the left eye sees it:
    (mean |SGBM - MPI's expected disparity| px, share of face pixels SGBM matched,
    mean |SGBM - tracked mesh's disparity| px).

    frame: frontal, residual (3, H, W), alpha (D, H, W); depths (D,); K (3, 3); mesh_alpha (D, H, W)
    the driving mesh's alpha planes in the MPI camera. SGBM's map lives on the left image's pixels,
    so the face and the mesh's disparity are rendered into the left eye too (as an MPI: the mesh's
    alpha planes composite to its coverage and to its disparity, the far plane's where uncovered)."""
    eye = torch.eye(4)
    T_left, T_right = camera.stereo_pair(eye, baseline)
    H, W = frame.alpha.shape[-2:]
    s = max(1, STEREO_SIZE // W)
    K_eye = camera.scale_intrinsics(K, s)
    hw = (H * s, W * s)
    cams = [depths[None], K[None], K_eye[None]]
    bg = None if background is None else background[None]
    left = mpi.render(*(t[None] for t in frame), *cams, T_left[None], bg, out_hw=hw)
    right = mpi.render(*(t[None] for t in frame), *cams, T_right[None], bg, out_hw=hw)
    blank = torch.zeros_like(frame.frontal)[None]
    mesh_left = mpi.render(blank, blank, mesh_alpha[None], *cams, T_left[None], out_hw=hw)
    fb = float(K_eye[0, 0]) * baseline
    expected = (fb * left.disparity[0, 0]).numpy()
    mesh_expected = (fb * mesh_left.disparity[0, 0]).numpy()
    to_u8 = lambda x: np.ascontiguousarray(((x[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy())
    measured = sgbm_disparity(to_u8(left.rgb), to_u8(right.rgb), float(max(expected.max(), mesh_expected.max())))
    face = (mesh_left.mask[0, 0] > 0.5).numpy()
    valid = face & np.isfinite(measured)
    if not valid.any():
        return math.nan, 0.0, math.nan
    return (float(np.abs(measured[valid] - expected[valid]).mean()) / s, float(valid.sum() / max(1, face.sum())),
            float(np.abs(measured[valid] - mesh_expected[valid]).mean()) / s)


# --------------------------------------------------------------------------------------- landmarks

def landmark_distance(generated: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(mean distance in px of the 468 MediaPipe mesh points between generated and real frames,
    share of frames where both were detected); frames (N, H, W, 3) uint8 of the same size."""
    import cv2

    from model.tracking.facemesh import FaceMeshRunner

    n, h, w = generated.shape[:3]
    s = LANDMARK_SIZE / w
    dists = []
    with FaceMeshRunner(static=True) as runner:
        for g, r in zip(generated, real):
            pts = [runner(cv2.resize(np.ascontiguousarray(im), (LANDMARK_SIZE, int(round(h * s))), interpolation=cv2.INTER_CUBIC))
                   for im in (g, r)]
            if pts[0] is None or pts[1] is None:
                continue
            dists.append(float(np.linalg.norm(pts[0][:MESH_POINTS, :2] - pts[1][:MESH_POINTS, :2], axis=1).mean() / s))
    return (float(np.mean(dists)) if dists else math.nan), len(dists) / max(1, n)


# ------------------------------------------------------------------------------ conditions, models

@dataclass
class VideoConditions:
    cond: Conditions  # batch of 1, all frames
    depths: Tensor  # (N, D) plane depths of each frame's MPI camera
    T_tgt_from_mpi: Tensor  # (N, 4, 4)


def video_conditions(src: VideoSource, n: int, reference_camera: bool) -> VideoConditions:
    """Self-reenactment conditions of frames 0..n-1: the portrait is frame 0; the MPI camera is each
    frame's own camera, or frame 0's for the side check."""
    cfg = src.cfg
    idx = np.arange(n)
    r_coords, r_cov, _ = src.own(np.array([0]))
    portrait_img = src.frames(np.array([0]))
    portrait = torch.cat([portrait_img, coordinate_channels(r_coords, r_cov, cfg.coord_channels)], 1)
    T_tgt = src.T[idx]
    if reference_camera:
        T_mpi = src.T[0].expand(n, 4, 4)
        c = rasterise(src.vertices[idx], src.faces, src.code, src.K, T_mpi, src.res, cfg.planes)
        coords, cov, disp, depths = c.coords, c.coverage, c.disparity, c.depths
        T_rel = T_tgt @ camera.invert_pose(T_mpi)
    else:
        coords, cov, disp = src.own(idx)
        depths = conditions.mpi_depths(T_tgt, cfg.planes)
        T_rel = torch.eye(4).expand(n, 4, 4)
    identity = src.identity(0, src.vertices[idx], (T_tgt if not reference_camera else T_mpi).contiguous())[None] if cfg.identity_warp else None
    cond = Conditions(coords=coordinate_channels(coords, cov, cfg.coord_channels)[None],
                      mesh_alpha=conditions.alpha_planes(disp, cov, depths)[None], portrait=portrait,
                      first_frame=portrait_img, first_frame_flag=torch.ones(1), background=src.background()[None],
                      identity=identity)
    return VideoConditions(cond, depths, T_rel.contiguous())


def model_generator(model: torch.nn.Module, sample_steps: int, seed: int, progress: bool = False) -> Generator:
    """Sample MPI videos with DDIM and the paper's guidance, clips chained through the first frame."""
    from model.diffusion.process import make_schedule
    from model.diffusion.sampler import DDIMScheduler, sample_video

    cfg = model.cfg
    ddim = DDIMScheduler(make_schedule(cfg.diffusion), cfg.diffusion.eta)
    ddim.set_timesteps(sample_steps)

    def generate(cond: Conditions, real: Tensor) -> MPIPrediction:
        g = torch.Generator().manual_seed(seed)
        return sample_video(model, cond, ddim, cfg.frames, generator=g, progress=progress).mpi

    return generate


def oracle_generator(cond: Conditions, real: Tensor) -> MPIPrediction:
    """Not a model: the real frames as frontal and residual images over the mesh alpha planes and an
    opaque back plane. Its frontal view is exact and its depth is the tracked mesh, so it pins
    down what the metrics give for a perfect 2D generator with mesh geometry (tests)."""
    return MPIPrediction(real, real, mesh_alpha_with_back_plane(cond.mesh_alpha))


# ------------------------------------------------------------------------------------- evaluation

def evaluate_video(video: PreparedVideo, vid: str, cfg, generate: Generator, settings: EvalSettings) -> VideoMetrics:
    src = VideoSource(video, vid, cfg, cache_dir=None)
    n = len(src) if settings.max_frames is None else min(len(src), settings.max_frames)
    if n < 2:
        raise DatasetError(f"{vid}: needs at least 2 frames for self-reenactment")
    real = src.frames(np.arange(n))
    out = VideoMetrics(vid, n)

    front = video_conditions(src, n, reference_camera=False)
    mpis = generate(front.cond, real[None])
    frames = mpi.render_in_mpi_camera(mpis.frontal[0], mpis.residual[0], mpis.alpha[0], front.cond.background.expand(n, -1, -1, -1))
    frames = frames.clamp(-1, 1)
    out.frontal = {"l1": l1(frames[1:], real[1:]), "psnr": psnr(frames[1:], real[1:]), "ssim": ssim(frames[1:], real[1:])}

    errors, matched, mesh_errors = [], [], []
    for i in range(1, n):
        frame = MPIPrediction(mpis.frontal[0, i], mpis.residual[0, i], mpis.alpha[0, i])
        e, m, me = stereo_check(frame, front.depths[i], src.K, front.cond.mesh_alpha[0, i], background=front.cond.background[0])
        if not math.isnan(e):
            errors.append(e)
            mesh_errors.append(me)
        matched.append(m)
    out.stereo = {"disparity_error_px": float(np.mean(errors)) if errors else math.nan, "matched_fraction": float(np.mean(matched)),
                  "mesh_error_px": float(np.mean(mesh_errors)) if mesh_errors else math.nan}

    side = video_conditions(src, n, reference_camera=True)
    # an oracle sees the real frames, which are not aligned with the reference camera: that is the
    # point of the side check (a 2D generator cannot follow the head's 3D motion)
    smpi = generate(side.cond, real[None])
    K = src.K.expand(n, 3, 3)
    rendered = mpi.render(smpi.frontal[0], smpi.residual[0], smpi.alpha[0], side.depths, K, K, side.T_tgt_from_mpi,
                          side.cond.background.expand(n, -1, -1, -1)).rgb.clamp(-1, 1)
    _, target_cov, _ = src.own(np.arange(1, n))
    face = target_cov > 0.5
    out.side = {"l1": l1(rendered[1:], real[1:]), "psnr": psnr(rendered[1:], real[1:]),
                "face_l1": l1(rendered[1:], real[1:], face), "face_psnr": psnr(rendered[1:], real[1:], face)}

    if settings.landmarks:
        u8 = lambda x: ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        d, found = landmark_distance(u8(frames[1:]), u8(real[1:]))
        out.landmarks = {"distance_px": d, "detected_fraction": found}
    return out


def evaluate(data: str, cfg, generate: Generator, videos: list[str] | None = None,
             settings: EvalSettings = EvalSettings()) -> dict:
    """Metrics per video and averaged over frames of all videos, in the JSON layout of `imp eval`."""
    ds = PreparedDataset(data)
    known = [e["id"] for e in ds.entries]
    missing = sorted(set(videos or []) - set(known))
    if missing:
        raise DatasetError(f"--videos: no video(s) {missing} with status ok in {ds.root}; known: {', '.join(known)}")
    chosen = videos or known
    results = []
    for vid in tqdm(chosen, desc="eval videos", disable=not settings.progress):
        results.append(evaluate_video(PreparedVideo.open(ds.root / vid), vid, cfg, generate, settings))

    def mean(group: str, key: str) -> float | None:
        vals = [(getattr(r, group).get(key), r.frames - 1) for r in results]
        vals = [(v, w) for v, w in vals if v is not None and not math.isnan(v) and not math.isinf(v)]
        if not vals:
            return None
        return float(sum(v * w for v, w in vals) / sum(w for _, w in vals))

    clean = lambda d: {k: (None if isinstance(v, float) and (math.isnan(v) or math.isinf(v)) else v) for k, v in d.items()}
    return {
        "videos": chosen,
        "frontal": {k: mean("frontal", k) for k in ("l1", "psnr", "ssim")},
        "side": {k: mean("side", k) for k in ("l1", "psnr", "face_l1", "face_psnr")},
        "stereo": {k: mean("stereo", k) for k in ("disparity_error_px", "matched_fraction", "mesh_error_px")},
        "landmarks": {k: mean("landmarks", k) for k in ("distance_px", "detected_fraction")} if settings.landmarks else {},
        "per_video": [{"video": r.video, "frames": r.frames, "frontal": clean(r.frontal), "side": clean(r.side),
                       "stereo": clean(r.stereo), "landmarks": clean(r.landmarks)} for r in results],
    }


def format_table(rows: dict[str, dict]) -> str:
    """A table like the paper's table 1: one row per method (name -> `evaluate` result)."""
    w = max([28] + [len(name) for name in rows])
    head = (f"{'method':<{w}} | {'L1':>6} {'PSNR':>6} {'SSIM':>6} | {'side L1':>7} {'side PSNR':>9} {'face PSNR':>9} | "
            f"{'SGBM err px':>11} {'vs mesh':>7} | {'LMD px':>6}")
    f = lambda v, d=3: "   n/a" if v is None else f"{v:.{d}f}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<{w}} | {f(r['frontal']['l1']):>6} {f(r['frontal']['psnr'], 2):>6} {f(r['frontal']['ssim']):>6} | "
                     f"{f(r['side']['l1']):>7} {f(r['side']['psnr'], 2):>9} {f(r['side'].get('face_psnr'), 2):>9} | {f(r['stereo']['disparity_error_px'], 2):>11} "
                     f"{f(r['stereo'].get('mesh_error_px'), 2):>7} | "
                     f"{f(r.get('landmarks', {}).get('distance_px'), 2):>6}")
    return "\n".join(lines)
