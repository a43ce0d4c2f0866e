"""Evaluation by self-reenactment on held-out prepared videos (paper sec. 4, table 1).

For each video the first frame is the portrait and the video's own track drives it:

- frontal: MPIs built in each frame's camera (as at inference), their frontal renderings against
  the real frames 1..N-1: L1 (colours in [0, 1]), PSNR, SSIM, over the real pixels (where the
  fixed head crop leaves the video the frames are filled, not real); and where that error is:
  PSNR and share of the squared error in the face, the rest of the person (hair, neck, torso) and
  the background (`region_errors`);
- side: MPIs built in the *reference* camera (frame 0's head pose, each frame's expression
  rasterised there, as L_side trains), rendered into each target camera and compared with the real
  frame: L1, PSNR over the image and inside the face (the target mesh's coverage in the target
  camera). A model without real 3D cannot move its content the way the head moved. The whole-image
  figures are bounded by what no MPI can do: the MPI moves rigidly with the head, the torso and
  background in the real frame do not; the face figures isolate the head;
- stereo: SGBM on each frontal MPI's 5 cm stereo pair against the MPI's own disparity and against
  the tracked mesh's (model/evaluation/metrics.py);
- landmarks: MediaPipe's 468 mesh points on generated vs real frames, mean distance in px;
- identity: dlib's face-recognition distance of each generated frame to its real frame, and the
  share recognised as the same person (< 0.6).

A generator (model/evaluation/generators.py) is any function (Conditions, real frames) ->
MPIPrediction: a trained model, the oracle (real frames over the mesh depth; tests) or the warp
baseline. Its MPIs are scored as generation delivers them (`as_delivered`: the alpha cut to a few
pixels around the identity condition's person; since 2026-12-06's eighth session, before which the
network's MPIs were scored as they came).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from model.data.dataset import DatasetError, PreparedDataset, PreparedVideo
from model.data.pairs import VideoSource, coordinate_channels, image_to_tensor, rasterise
from model.diffusion.pipeline import delivered
from model.diffusion.process import Conditions
from model.evaluation.generators import Generator
from model.evaluation.metrics import l1, landmark_distance, psnr, ssim, stereo_check
from model.geometry import camera, conditions, mpi
from model.net.unet import MPIPrediction


@dataclass
class EvalSettings:
    max_frames: int | None = None  # per video (default: all)
    sample_steps: int | None = None  # DDIM steps (default: the config's)
    seed: int = 0
    landmarks: bool = True
    identity: bool = True  # dlib identity figures (model/evaluation/identity.py; the [eval] extra)
    progress: bool = True


@dataclass
class VideoMetrics:
    video: str
    frames: int
    frontal: dict[str, float] = field(default_factory=dict)
    side: dict[str, float] = field(default_factory=dict)
    stereo: dict[str, float] = field(default_factory=dict)
    landmarks: dict[str, float] = field(default_factory=dict)
    identity: dict[str, float] = field(default_factory=dict)


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
    portrait_img = image_to_tensor(src.portrait(0)[0])[None]  # continued past the source's edges, as generation's
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
    identity = src.identity(0, src.vertices[idx], (T_tgt if not reference_camera else T_mpi).contiguous(),
                            None if reference_camera else src.torso_from(0, idx),
                            None if reference_camera else src.hair_from(0, idx))[None] if cfg.identity_warp else None
    cond = Conditions(coords=coordinate_channels(coords, cov, cfg.coord_channels)[None],
                      mesh_alpha=conditions.alpha_planes(disp, cov, depths)[None], portrait=portrait,
                      first_frame=portrait_img, first_frame_flag=torch.ones(1), background=src.background()[None],
                      identity=identity, valid=src.valid()[None])
    return VideoConditions(cond, depths, T_rel.contiguous())


REGIONS = ("face", "person", "background")  # the frontal error's parts, `region_errors`


def region_errors(frames: Tensor, real: Tensor, valid: Tensor, face: Tensor, person: Tensor) -> dict[str, float]:
    """Where the frontal error is: PSNR (`<region>_psnr`) and share of the squared error
    (`<region>_share`) of the face (the real frame's tracked mesh), the rest of the person (its
    matte off the mesh: hair, ears, neck, torso) and the background, within the valid pixels.
    frames, real (N, 3, H, W) in [-1, 1]; valid, face, person (N or 1, 1, H, W) bool."""
    se = ((frames - real) / 2).square().sum(1, keepdim=True)
    valid = valid.expand_as(se)
    total = float(se[valid].sum())
    out = {}
    for name, mask in zip(REGIONS, (face, person & ~face, ~person & ~face)):
        mask = mask.expand_as(se) & valid
        out[f"{name}_psnr"] = psnr(frames, real, mask)
        out[f"{name}_share"] = float(se[mask].sum()) / total if total > 0 else math.nan
    return out


def as_delivered(pred: MPIPrediction, cond: Conditions, photo: np.ndarray) -> MPIPrediction:
    """An MPI video (batch 1) as `imp generate` and the viewer would deliver it from these
    conditions, photo (R, R) bool being the source's frame (model.diffusion.pipeline.delivered: the
    alpha cut around the condition's person, the condition past the frame). Cross-identity pairs go
    through `delivered` too (Portrait.keep_condition_outside), with the portrait's photo."""
    identity = None if cond.identity is None else cond.identity[0]
    f, r, a = delivered(pred.frontal[0], pred.residual[0], pred.alpha[0], identity, cond.background[0], photo)
    return MPIPrediction(f[None], r[None], a[None])


def evaluate_video(video: PreparedVideo, vid: str, cfg, generate: Generator, settings: EvalSettings) -> VideoMetrics:
    src = VideoSource(video, vid, cfg, cache_dir=None)
    n = len(src) if settings.max_frames is None else min(len(src), settings.max_frames)
    if n < 2:
        raise DatasetError(f"{vid}: needs at least 2 frames for self-reenactment")
    real = src.frames(np.arange(n))
    out = VideoMetrics(vid, n)

    front = video_conditions(src, n, reference_camera=False)
    photo = src.valid()[0].numpy() > 0.5  # the video's frame: to generation what a portrait's photo is
    mpis = as_delivered(generate(front.cond, real[None]), front.cond, photo)
    frames = mpi.render_in_mpi_camera(mpis.frontal[0], mpis.residual[0], mpis.alpha[0], front.cond.background.expand(n, -1, -1, -1))
    frames = frames.clamp(-1, 1)
    valid = src.valid()[None].expand(n - 1, 1, -1, -1) > 0.5  # the real frames' real pixels (the crop may leave the video)
    out.frontal = {"l1": l1(frames[1:], real[1:], valid), "psnr": psnr(frames[1:], real[1:], valid),
                   "ssim": ssim(frames[1:], real[1:], valid)}
    _, target_cov, _ = src.own(np.arange(1, n))
    out.frontal.update(region_errors(frames[1:], real[1:], valid, target_cov > 0.5, src.mattes(np.arange(1, n)) > 0.5))

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
    smpi = as_delivered(generate(side.cond, real[None]), side.cond, photo)
    K = src.K.expand(n, 3, 3)
    rendered = mpi.render(smpi.frontal[0], smpi.residual[0], smpi.alpha[0], side.depths, K, K, side.T_tgt_from_mpi,
                          side.cond.background.expand(n, -1, -1, -1)).rgb.clamp(-1, 1)
    face = target_cov > 0.5
    out.side = {"l1": l1(rendered[1:], real[1:]), "psnr": psnr(rendered[1:], real[1:]),
                "face_l1": l1(rendered[1:], real[1:], face), "face_psnr": psnr(rendered[1:], real[1:], face)}

    if settings.landmarks:
        d, found = landmark_distance(to_uint8(frames[1:]), to_uint8(real[1:]))
        out.landmarks = {"distance_px": d, "detected_fraction": found}
    if settings.identity:
        out.identity = identity_to_real(to_uint8(frames[1:]), to_uint8(real[1:]))
    return out


def to_uint8(x: Tensor) -> np.ndarray:
    """Images (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def identity_to_real(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """dlib identity distance of each generated frame to its real frame ((N, H, W, 3) uint8 both):
    mean distance over frames where both faces are found, the share of frames recognised as the
    same person (found and < 0.6; a frame without a detected face counts as not recognised) and
    the share where the generated face was found."""
    from model.evaluation.identity import FaceIdentity

    fi = FaceIdentity()
    d = []
    for g, r in zip(generated, real):
        eg, er = fi.embed(g), fi.embed(r)
        d.append(np.nan if eg is None or er is None else fi.distance(eg.embedding, er.embedding))
    d = np.asarray(d)
    found = np.isfinite(d)
    return {"distance": float(np.nanmean(d)) if found.any() else math.nan,
            "same_person_rate": float((d[found] < fi.threshold).sum() / max(1, len(d))), "detected_fraction": float(found.mean())}


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
        "frontal": {k: mean("frontal", k) for k in ("l1", "psnr", "ssim", *(f"{r}_{m}" for r in REGIONS for m in ("psnr", "share")))},
        "side": {k: mean("side", k) for k in ("l1", "psnr", "face_l1", "face_psnr")},
        "stereo": {k: mean("stereo", k) for k in ("disparity_error_px", "matched_fraction", "mesh_error_px")},
        "landmarks": {k: mean("landmarks", k) for k in ("distance_px", "detected_fraction")} if settings.landmarks else {},
        "identity": {k: mean("identity", k) for k in ("distance", "same_person_rate", "detected_fraction")} if settings.identity else {},
        "per_video": [{"video": r.video, "frames": r.frames, "frontal": clean(r.frontal), "side": clean(r.side),
                       "stereo": clean(r.stereo), "landmarks": clean(r.landmarks), "identity": clean(r.identity)} for r in results],
    }


