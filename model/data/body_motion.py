"""How a driver's torso moves in its fixed head crop, from the person mattes of its frames.

The identity condition (model/geometry/portrait_warp.py) moves the portrait's head with the
driver's tracked head; the body below the neck stayed where the portrait has it. A head that
turns or nods leaves the shoulders where they are, but a speaker who rises in the chair, leans, or
is filmed by a hand-held camera moves them too, and a still torso then leaves the real shirt's
place dark (LivePortrait d20, the held-out set's worst video, rises in his chair: 84 % of its
error was the torso). The head's motion does not tell the body's: moving the torso with it lifted
d20 and lost on the videos whose heads move over a still body. The face tracker sees no
shoulders, and MediaPipe's pose landmarks and image alignment of the torso were unreliable on
these crops (a white shirt has no texture); the person matte's outline is reliable: the shoulders'
silhouette against the background.

`torso_shifts` finds, per frame, the translation of the reference frame's matte (continued past
the source's edges as the portrait is: model.data.matting.continued_matte) that best matches the
frame's matte beside and below the head, and makes the sequence of them smooth by dynamic
programming (a torso moves little between frames; a matte flickers). Shifts are fractions of the
crop's size, so a driver's carry over to any portrait: both crops span the same 0.4 m at the head.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.data.matting import TORSO_MOVES

if TYPE_CHECKING:
    from model.data.dataset import PreparedVideo

ESTIMATE_RES = 128  # mattes are compared at this size (px below are of it)
SEARCH_PX = TORSO_MOVES  # the largest shift found, x and y (a speaker rising in the chair: 24 px)
NECK_HALF_WIDTH = 0.22  # of the crop: beside the head (hair, ears) and neck nothing tells the torso
ABOVE_CHIN = 0.2  # of the crop: the shoulders' outline is compared from this far above the reference's chin
BELOW_CHIN = 0.06  # ... and under the head from this far below the frame's own chin
SHIFT_COST = 1e-3  # per px of shift: a flat match (a torso filling the crop's bottom) stays put
STEP_COST = 0.05  # per px of change between frames: one noisy matte does not make the torso jump
MIN_PIXELS = 50  # fewer compared pixels than this tell nothing: the frame keeps its neighbours' shift


def torso_shifts(mattes: np.ndarray, reference: np.ndarray, chins: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(n, 2) float32: the torso's translation (x right, y down, fractions of the crop's size) in
    each of n frames relative to the reference frame, whose shift is 0 (the first frame).

    mattes (n, R, R) float in [0, 1]: the person matte of each frame's crop; reference (R, R): the
    reference frame's matte continued past the source (model.data.matting.continued_matte); chins
    (n, 2): the chin's pixel position in each crop; valid (R, R) bool: the crop's pixels inside the
    source video (a fixed crop: the same for every frame)."""
    import cv2

    mattes = np.asarray(mattes, np.float32)
    n, R = mattes.shape[0], mattes.shape[-1]
    if n == 0:
        return np.zeros((0, 2), np.float32)
    s = ESTIMATE_RES / R
    if R != ESTIMATE_RES:
        mattes = np.stack([cv2.resize(m, (ESTIMATE_RES, ESTIMATE_RES), interpolation=cv2.INTER_AREA) for m in mattes])
        reference = cv2.resize(np.asarray(reference, np.float32), (ESTIMATE_RES, ESTIMATE_RES), interpolation=cv2.INTER_AREA)
        valid = cv2.resize(np.asarray(valid, np.uint8), (ESTIMATE_RES, ESTIMATE_RES), interpolation=cv2.INTER_NEAREST) > 0
    chins = (np.asarray(chins, np.float64) + 0.5) * s - 0.5
    res = ESTIMATE_RES
    sx, sy = SEARCH_PX
    cands = np.array([(dx, dy) for dy in range(-sy, sy + 1) for dx in range(-sx, sx + 1)], np.float32)
    # the reference with its edges continued by the largest shift: every shifted copy is a window of it
    padded = cv2.copyMakeBorder(np.asarray(reference, np.float32), sy, sy, sx, sx, cv2.BORDER_REPLICATE)
    ys, xs = np.mgrid[:res, :res]
    below_ref = valid & (ys > chins[0, 1] - ABOVE_CHIN * res)
    cost = np.zeros((n, len(cands)), np.float32)
    for t in range(1, n):
        region = below_ref & ((np.abs(xs - chins[t, 0]) > NECK_HALF_WIDTH * res) | (ys > chins[t, 1] + BELOW_CHIN * res))
        count = int(region.sum())
        if count >= MIN_PIXELS:
            # mean squared difference over the region for every shift at once: window (j, i) of the
            # padded reference is the reference moved by (sx - i, sy - j)
            sq = cv2.matchTemplate(padded, mattes[t], cv2.TM_SQDIFF, mask=region.astype(np.float32))
            cost[t] = sq[::-1, ::-1].reshape(-1) / count
    cost += SHIFT_COST * np.abs(cands).sum(1)
    return _smooth_path(cost, cands) / res


def _smooth_path(cost: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """(n, 2): the sequence of candidate shifts (C, 2), a (dy, dx) grid in row-major order, starting
    at (0, 0) with the least sum of per-frame costs (n, C) and STEP_COST per px of change between
    frames (Viterbi; each step's minimum over the previous frame by an L1 distance transform)."""
    n = len(cost)
    ny, nx = len(np.unique(cands[:, 1])), len(np.unique(cands[:, 0]))
    total = np.where((cands == 0).all(1), 0.0, np.inf).reshape(ny, nx)
    back = np.zeros((n, ny * nx), np.int32)
    for t in range(1, n):
        best, src = _l1_distance_transform(total, STEP_COST)
        back[t] = src.reshape(-1)
        total = best + cost[t].reshape(ny, nx)
    path = np.zeros(n, np.int64)
    path[-1] = int(total.argmin())
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return cands[path].astype(np.float32)


def _l1_distance_transform(f: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """min over (j, i) of f[j, i] + step (|y - j| + |x - i|) for every cell (y, x) of f (NY, NX),
    and the flat index of the cell it comes from: a forward and a backward pass per axis (L1 is
    separable)."""
    ny, nx = f.shape
    g = f.copy()
    src_x = np.tile(np.arange(nx), (ny, 1))
    for x, prev in [(x, x - 1) for x in range(1, nx)] + [(x, x + 1) for x in range(nx - 2, -1, -1)]:
        better = g[:, prev] + step < g[:, x]
        g[:, x] = np.where(better, g[:, prev] + step, g[:, x])
        src_x[:, x] = np.where(better, src_x[:, prev], src_x[:, x])
    src_y = np.tile(np.arange(ny)[:, None], (1, nx))
    for y, prev in [(y, y - 1) for y in range(1, ny)] + [(y, y + 1) for y in range(ny - 2, -1, -1)]:
        better = g[prev] + step < g[y]
        g[y] = np.where(better, g[prev] + step, g[y])
        src_y[y] = np.where(better, src_y[prev], src_y[y])
    return g, src_y * nx + np.take_along_axis(src_x, src_y, 0)


def prepared_torso_shifts(video: "PreparedVideo", n: int | None = None) -> np.ndarray:
    """(n, 2) torso_shifts of a prepared video's first n frames (default all) against its first,
    from its mattes (~4 ms a frame)."""
    from model.data.matting import bust_matte, continued_matte
    from model.tracking.facemesh import CHIN

    n = len(video) if n is None else min(n, len(video))
    mattes = np.asarray(video.mattes[:n], np.float32) / 255.0  # at the dataset's res, as video.K
    valid = video.valid_mask
    T = np.asarray(video.T_cam_from_head[:n], np.float64)
    points = np.einsum("nij,nvj->nvi", T[:, :3, :3], video.track.vertices_head()[:n].astype(np.float64)) + T[:, None, :3, 3]
    points = points @ np.asarray(video.K, np.float64).T
    points = points[..., :2] / points[..., 2:]  # (n, V, 2) in the crop's pixels
    reference = continued_matte(mattes[0], valid, bust_matte(points[0], valid.shape))
    return torso_shifts(mattes, reference, points[:, CHIN], valid)


def video_torso_shifts(path: str | Path, K_source: np.ndarray, image_size: tuple[int, int], landmarks_source: np.ndarray,
                       progress: bool = True) -> np.ndarray:
    """(n, 2) torso_shifts of a video's first n frames (n = len(landmarks_source)), matted here
    (MediaPipe selfie segmentation) in the fixed crop of its track: K_source (3, 3) the track's
    source intrinsics (model.tracking.crop), image_size (W, H), landmarks_source (n, 478, 2) the
    tracked face in source pixels."""
    from tqdm import tqdm

    from model.data.matting import SelfieMatter, bust_matte, continued_matte
    from model.formats import video
    from model.tracking.crop import crop_affine, crop_image, valid_mask
    from model.tracking.facemesh import CHIN

    n = len(landmarks_source)
    A = crop_affine(np.asarray(K_source, np.float64), ESTIMATE_RES)
    mattes = np.zeros((n, ESTIMATE_RES, ESTIMATE_RES), np.float32)
    count = 0
    with SelfieMatter() as matter:
        for i, frame in enumerate(tqdm(video.iter_frames(path, n), total=n, desc="matting driving", unit="frame",
                                       leave=False, disable=not progress)):
            mattes[i] = crop_image(matter(frame), A, ESTIMATE_RES)
            count += 1
    mattes = mattes[:count]
    valid = valid_mask(A, tuple(image_size), ESTIMATE_RES)
    points = np.asarray(landmarks_source, np.float64)[:count] @ A[:2, :2].T + A[:2, 2]  # in the crop's pixels
    reference = continued_matte(mattes[0], valid, bust_matte(points[0], valid.shape)) if count else mattes[:0]
    shifts = torso_shifts(mattes, reference, points[:, CHIN], valid)
    if count < n:  # a video that decodes fewer frames than were tracked: the last shift holds
        shifts = np.concatenate([shifts, np.repeat(shifts[-1:] if count else np.zeros((1, 2), np.float32), n - count, 0)])
    return shifts
