"""Cross-identity evaluation: held-out portraits driven by held-out videos of other people, the
way a user runs the model (model/diffusion/pipeline.py: the portrait tracked, cropped, matted and
inpainted; the driver's expressions retargeted onto its template and its head motion transferred).

Per (portrait, driving video) pair, the first `frames` driving frames are generated and judged:

- identity: dlib's face-recognition distance between the portrait photo and each generated frame,
  and the share of frames recognised as the portrait's person (face found and distance < 0.6; a
  frame without a detected face counts as not recognised);
- following the driver: MediaPipe's 468 mesh points on each generated frame against the retargeted
  driving mesh projected into the MPI camera (mean px): expression and pose as asked.

`samples` writes one PNG per pair (portrait crop, driving frames, generated frames) to look at.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data.body_motion import prepared_torso_shifts
from model.data.dataset import DatasetError, PreparedDataset, PreparedVideo
from model.data.driving import VideoDriving
from model.data.hair_motion import prepared_hair_steadiness
from model.diffusion.pipeline import image_to_model, mesh_inputs, prepare_portrait, read_portrait_image
from model.diffusion.process import Conditions
from model.evaluation.generators import Generator
from model.evaluation.metrics import landmark_distance_to
from model.geometry import camera, mpi

SAMPLE_COLUMNS = 6  # frames shown per row in a sample sheet


@dataclass
class CrossSettings:
    frames: int = 32  # driving frames per pair
    landmarks: bool = True
    samples: Path | None = None  # folder for one PNG per pair
    progress: bool = True


@dataclass
class PairMetrics:
    portrait: str
    video: str
    frames: int
    identity: dict[str, float] = field(default_factory=dict)
    landmarks: dict[str, float] = field(default_factory=dict)


def pair_conditions(portrait, driving_frames, cfg) -> Conditions:
    """Conditions of a whole driving sequence (batch 1) for a prepared Portrait, as the pipeline
    builds them clip by clip: the portrait is clip 0's first frame."""
    coords, alpha, _ = mesh_inputs(driving_frames.vertices_head, driving_frames.T_cam_from_head, portrait.code, cfg)
    image = image_to_model(portrait.image)
    return Conditions(coords=coords[None], mesh_alpha=alpha[None], portrait=portrait.reference[None], first_frame=image[None],
                      first_frame_flag=torch.ones(1), background=image_to_model(portrait.background)[None],
                      identity=portrait.identity(driving_frames, cfg.identity_unmix)[None] if cfg.identity_warp else None,
                      valid=torch.from_numpy(portrait.valid).float()[None, None])


def driving_points(driving_frames, K: np.ndarray) -> np.ndarray:
    """(N, 478, 2): the retargeted driving mesh projected into the MPI camera, in pixels."""
    uv, _ = camera.project(torch.from_numpy(K), torch.from_numpy(driving_frames.T_cam_from_head),
                           torch.from_numpy(driving_frames.vertices_head))
    return uv.numpy()


def _sample_sheet(path: Path, portrait: np.ndarray, driving: np.ndarray, generated: np.ndarray) -> None:
    import cv2

    idx = np.linspace(0, len(generated) - 1, min(SAMPLE_COLUMNS, len(generated))).round().astype(int)
    R = generated.shape[1]
    resize = lambda im: cv2.resize(np.ascontiguousarray(im), (R, R), interpolation=cv2.INTER_AREA)
    top = np.concatenate([resize(portrait)] + [resize(driving[i]) for i in idx], 1)
    bottom = np.concatenate([np.zeros_like(top[:, :R])] + [generated[i] for i in idx], 1)
    sheet = np.concatenate([top, bottom], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def driver_body_motion(video: PreparedVideo, settings: CrossSettings) -> tuple[np.ndarray, int]:
    """A prepared driving video's torso shifts over the frames a pair uses and its hair's steadiness
    (model/data/body_motion.py, hair_motion.py): the same for every portrait it drives."""
    return prepared_torso_shifts(video, min(settings.frames, len(video))), prepared_hair_steadiness(video)


def evaluate_pair(portrait_path: Path, portrait, video: PreparedVideo, vid: str, cfg, generate: Generator, fi,
                  reference, settings: CrossSettings, body: tuple[np.ndarray, int], tag: str = "") -> PairMetrics:
    """One portrait (a prepared model.diffusion.pipeline.Portrait, its file and dlib embedding
    `reference`) driven by a prepared video's track, its body moving as `body` says
    (driver_body_motion)."""
    from model.evaluation.reenactment import to_uint8

    n = min(settings.frames, len(video))
    torso, hair = body
    drive = VideoDriving(video.track, portrait.track, max_frames=n, progress=False, torso_shift=torso,
                         hair_steadiness=hair).all_frames
    cond = pair_conditions(portrait, drive, cfg)
    mpis = generate(cond, None)
    # as imp generate's clips (Generator.mpi_frames)
    frontal, residual, alpha = portrait.keep_condition_outside(mpis.frontal[0], mpis.residual[0], mpis.alpha[0],
                                                               None if cond.identity is None else cond.identity[0])
    frames = mpi.render_in_mpi_camera(frontal, residual, alpha, cond.background.expand(n, -1, -1, -1)).clamp(-1, 1)
    images = to_uint8(frames)
    out = PairMetrics(portrait_path.name, vid, n)
    d = np.array([np.nan if (e := fi.embed(im)) is None else fi.distance(reference, e.embedding) for im in images])
    found = np.isfinite(d)
    out.identity = {"distance": float(np.nanmean(d)) if found.any() else math.nan,
                    "same_person_rate": float((d[found] < fi.threshold).sum() / n), "detected_fraction": float(found.mean())}
    if settings.landmarks:
        dist, det = landmark_distance_to(images, driving_points(drive, portrait.K))
        out.landmarks = {"distance_px": dist, "detected_fraction": det}
    if settings.samples is not None:
        _sample_sheet(Path(settings.samples) / f"{tag}{Path(portrait_path).stem}--{vid}.png", portrait.image,
                      np.asarray(video.images(np.arange(n))), images)
    return out


def evaluate_cross(data: str, cfg, generate: Generator, portraits: list[str], videos: list[str],
                   settings: CrossSettings = CrossSettings(), tag: str = "") -> dict:
    """Every portrait x every driving video; the means over all generated frames (and per pair), in
    the JSON layout of `imp eval` ("cross_identity")."""
    from model.evaluation.identity import FaceIdentity
    from model.tracking.track import TrackingError

    ds = PreparedDataset(data)
    known = [e["id"] for e in ds.entries]
    missing = sorted(set(videos) - set(known))
    if missing:
        raise DatasetError(f"--cross-videos: no video(s) {missing} with status ok in {ds.root}; known: {', '.join(known)}")
    fi = FaceIdentity().load()
    drivers = {vid: PreparedVideo.open(ds.root / vid) for vid in videos}
    bodies = {vid: driver_body_motion(video, settings) for vid, video in drivers.items()}  # once per video, not per pair
    results: list[PairMetrics] = []
    bar = tqdm(total=len(portraits) * len(videos), desc="cross-identity pairs", disable=not settings.progress)
    for p in portraits:
        path = Path(p)
        try:
            portrait = prepare_portrait(path, cfg)
        except (TrackingError, ValueError) as exc:
            raise ValueError(f"{path}: cannot use this portrait: {exc}") from exc
        ref = fi.embed(read_portrait_image(path))
        if ref is None:
            raise ValueError(f"{path}: dlib finds no face in this portrait, so identity cannot be measured against it")
        for vid in videos:
            results.append(evaluate_pair(path, portrait, drivers[vid], vid, cfg, generate, fi, ref.embedding, settings,
                                         bodies[vid], tag))
            bar.update(1)
    bar.close()

    def mean(group: str, key: str) -> float | None:
        vals = [(getattr(r, group).get(key), r.frames) for r in results]
        vals = [(v, w) for v, w in vals if v is not None and not math.isnan(v)]
        return float(sum(v * w for v, w in vals) / sum(w for _, w in vals)) if vals else None

    clean = lambda d: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
    return {
        "portraits": [str(p) for p in portraits], "videos": list(videos), "frames_per_pair": settings.frames,
        "identity": {k: mean("identity", k) for k in ("distance", "same_person_rate", "detected_fraction")},
        "landmarks": {k: mean("landmarks", k) for k in ("distance_px", "detected_fraction")} if settings.landmarks else {},
        "per_pair": [{"portrait": r.portrait, "video": r.video, "frames": r.frames, "identity": clean(r.identity),
                      "landmarks": clean(r.landmarks)} for r in results],
    }
