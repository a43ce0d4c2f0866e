"""A portrait's head crop at the model's resolution, without torch: tracked, cut, matted and
inpainted (or read from the portrait cache, model/data/portrait_cache.py).

It is the part of preparing a portrait that both generation backends share: the torch pipeline
(`model.diffusion.pipeline.prepare_portrait` adds the mesh code and the reference coordinate map
as tensors) and the torch-free one of the viewer's worker (model/coldstart), whose first clip
must not wait for torch's import.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.geometry.crop_camera import crop_camera_K
from model.tracking.track import Track


@dataclass(frozen=True)
class PortraitCrop:
    """A portrait seen by the MPI camera (its head crop at resolution R)."""

    track: Track  # in source-image pixels
    image: np.ndarray  # (R, R, 3) uint8: the head crop; where the source image ends, the background
    # with the person continued over it (model.data.matting.continue_person)
    matte: np.ndarray  # (R, R) float32 in [0, 1], the continued person's too
    background: np.ndarray  # (R, R, 3) uint8: the crop with the person inpainted
    valid: np.ndarray  # (R, R) float32 in [0, 1]: how much a generated MPI may show there: 1 on the
    # source image (and around the head), the continued person's matte past its edges
    photo: np.ndarray  # (R, R) bool: crop pixels inside the source image

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float32: the MPI camera, the crop camera at R."""
        return crop_camera_K(self.res).astype(np.float32)

    @property
    def res(self) -> int:
        return int(self.image.shape[0])

    @property
    def T_cam_from_head(self) -> np.ndarray:
        """(4, 4) float32: the portrait's head in the MPI camera."""
        return self.track.T_cam_from_head[0].astype(np.float32)


def read_portrait_image(image: str | Path | np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path or an array (grey / RGBA converted); clear errors."""
    from model.tracking.track import TrackingError, _read_image

    try:
        return _read_image(image)[0]
    except TrackingError as exc:
        raise ValueError(str(exc)) from None


def crop_portrait(image: str | Path | np.ndarray, res: int, cache_dir: Path | None = None) -> PortraitCrop:
    """Track, crop, matte and inpaint a portrait (path or RGB uint8 array) at crop resolution `res`.
    With `cache_dir` the tracking, matte and background of an image prepared before are read from
    there (and new ones kept). Raises model.tracking.TrackingError when it has no face, ValueError
    when it is no image."""
    from model.data import matting
    from model.data.portrait_cache import PreparedCrop, load_prepared, portrait_key, save_prepared
    from model.tracking.crop import crop_affine, crop_image, valid_mask

    rgb = read_portrait_image(image)
    key = portrait_key(rgb, res) if cache_dir is not None else None
    prepared = load_prepared(cache_dir, key, res) if key is not None else None
    if prepared is None:
        from model.tracking import track_image

        track = track_image(rgb)
    else:
        track = prepared.track
    A = crop_affine(track.K, res)
    # edge pixels repeated, not black: the crop's outermost row of the photo is a blend of what
    # lies on both sides of its edge, and blended with black it drew a dark line along the edge
    crop = crop_image(rgb, A, res, border="replicate")
    valid = valid_mask(A, track.image_size, res)
    if prepared is None:  # the slow part with the tracking: MediaPipe's matte
        matte = np.clip(crop_image(matting.matte_image(rgb), A, res, border="replicate"), 0.0, 1.0).astype(np.float32) * valid
        prepared = PreparedCrop(track, matte, matting.portrait_background(crop, matte, valid))
        if key is not None:
            save_prepared(cache_dir, key, prepared)
    crop = np.where(valid[..., None], crop, prepared.background)  # filled with the background, as training frames are
    landmarks = np.asarray(track.landmarks[0], np.float64) @ A[:2, :2].T + A[:2, 2]  # in the crop's pixels
    crop, matte, shown = matting.continue_person(crop, prepared.matte, prepared.background, valid,
                                                 matting.bust_matte(landmarks, (res, res)))
    return PortraitCrop(track, crop, matte, prepared.background, shown, valid)
