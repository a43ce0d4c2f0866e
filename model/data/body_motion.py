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
programming (a torso moves little between frames; a matte flickers), then refines each frame's
whole-pixel shift to a fraction of a pixel from its own matte (`subpixel_offsets`). Shifts are
fractions of the crop's size, so a driver's carry over to any portrait: both crops span the same
0.4 m at the head.
A driving video is matted once (`video_body_motion`), for its torso and for whether its hair follows
the head's steadier poses (model/data/hair_motion.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.data.matting import TORSO_MOVES

if TYPE_CHECKING:
    from model.data.dataset import PreparedVideo
    from model.tracking.track import Track

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
    if len(mattes) == 0:
        return np.zeros((0, 2), np.float32)
    return TorsoTracker(reference, chins[0], valid).add(mattes, chins)


class TorsoTracker:
    """torso_shifts a batch of frames at a time (a live stream: the webcam): each batch's path is the
    best one given every frame so far (its Viterbi state is carried on), not revised later. The
    first batch starts with the reference frame itself. Arguments as torso_shifts'; chin (2,) the
    reference frame's."""

    def __init__(self, reference: np.ndarray, chin: np.ndarray, valid: np.ndarray):
        import cv2

        R = np.asarray(reference).shape[-1]
        self._scale = ESTIMATE_RES / R
        reference = self._at_estimate_res(np.asarray(reference, np.float32))
        if R != ESTIMATE_RES:
            valid = cv2.resize(np.asarray(valid, np.uint8), (ESTIMATE_RES, ESTIMATE_RES), interpolation=cv2.INTER_NEAREST) > 0
        sx, sy = SEARCH_PX
        self.cands = np.array([(dx, dy) for dy in range(-sy, sy + 1) for dx in range(-sx, sx + 1)], np.float32)
        self._grid = (2 * sy + 1, 2 * sx + 1)
        self._shift_cost = (SHIFT_COST * np.abs(self.cands).sum(1)).reshape(self._grid).astype(np.float32)
        # the reference with its edges continued by the largest shift: every shifted copy is a window of it
        self._padded = cv2.copyMakeBorder(reference, sy, sy, sx, sx, cv2.BORDER_REPLICATE)
        ys, xs = np.mgrid[:ESTIMATE_RES, :ESTIMATE_RES]
        self._ys, self._xs = ys, xs
        self._below_ref = np.asarray(valid, bool) & (ys > self._chin(chin)[1] - ABOVE_CHIN * ESTIMATE_RES)
        self._total: np.ndarray | None = None  # the Viterbi state after the last frame

    @classmethod
    def from_first_frame(cls, matte: np.ndarray, landmarks: np.ndarray, valid: np.ndarray) -> "TorsoTracker":
        """The tracker of a video whose first frame has this matte (R, R) and face (landmarks (478, 2)
        in its crop's pixels): its reference is that matte continued past the source with a bust
        (model.data.matting.continued_matte, bust_matte), as the portrait continues a frame."""
        from model.data.matting import bust_matte, continued_matte
        from model.tracking.facemesh import CHIN

        valid = np.asarray(valid, bool)
        return cls(continued_matte(matte, valid, bust_matte(landmarks, valid.shape)), np.asarray(landmarks)[CHIN], valid)

    def _at_estimate_res(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if image.shape[-1] == ESTIMATE_RES:
            return image
        return cv2.resize(image, (ESTIMATE_RES, ESTIMATE_RES), interpolation=cv2.INTER_AREA)

    def _chin(self, chin: np.ndarray) -> np.ndarray:
        return (np.asarray(chin, np.float64) + 0.5) * self._scale - 0.5

    def _cost(self, matte: np.ndarray, chin: np.ndarray) -> np.ndarray:
        """(C,): how well each shifted reference matches a frame's matte beside and below its head."""
        import cv2

        res = ESTIMATE_RES
        cx, cy = self._chin(chin)
        region = self._below_ref & ((np.abs(self._xs - cx) > NECK_HALF_WIDTH * res) | (self._ys > cy + BELOW_CHIN * res))
        count = int(region.sum())
        cost = np.zeros(len(self.cands), np.float32)
        if count >= MIN_PIXELS:
            # mean squared difference over the region for every shift at once: window (j, i) of the
            # padded reference is the reference moved by (sx - i, sy - j)
            sq = cv2.matchTemplate(self._padded, self._at_estimate_res(np.asarray(matte, np.float32)), cv2.TM_SQDIFF,
                                   mask=region.astype(np.float32))
            cost = sq[::-1, ::-1].reshape(-1) / count
        return cost + self._shift_cost.reshape(-1)

    def add(self, mattes: np.ndarray, chins: np.ndarray) -> np.ndarray:
        """(n, 2) float32 shifts (fractions of the crop) of the next n frames: mattes (n, R, R),
        chins (n, 2) pixels."""
        n = len(mattes)
        ny, nx = self._grid
        start = 0
        if self._total is None:  # the reference frame: shift 0
            self._total = np.where((self.cands == 0).all(1), 0.0, np.inf).reshape(ny, nx)
            start = 1
        back = np.zeros((n, ny * nx), np.int64)
        path = np.full(n, int(np.flatnonzero((self.cands == 0).all(1))[0]), np.int64)
        costs = np.zeros((n, ny, nx), np.float32)  # the reference frame's stay 0: it is not refined
        for t in range(start, n):
            best, src = _l1_distance_transform(self._total, STEP_COST)
            back[t] = src.reshape(-1)
            costs[t] = self._cost(mattes[t], chins[t]).reshape(ny, nx)
            self._total = best + costs[t]
            costs[t] -= self._shift_cost  # refined on the matte's cost alone (subpixel_offsets)
        if n > start:
            path[-1] = int(self._total.argmin())
            for t in range(n - 1, start, -1):
                path[t - 1] = back[t, path[t]]
        return ((self.cands[path] + subpixel_offsets(costs, path)) / ESTIMATE_RES).astype(np.float32)


def subpixel_offsets(costs: np.ndarray, path: np.ndarray) -> np.ndarray:
    """(n, 2) offsets in [-0.5, 0.5] px (x, y) from each frame's chosen whole-pixel shift to the
    minimum of a parabola through its cost and its two neighbours' along each axis: a torso that
    drifts by half a pixel otherwise stays put or jumps a whole one, and at 128² that half pixel of
    shirt outline cost 1.5 dB on a slowly swaying speaker (MimicTalk German). costs (n, NY, NX): the
    matte's cost per shift without SHIFT_COST, whose kink at 0 pulled every vertex near it to 0 (a
    quarter-pixel drift stayed put); zero for a frame that is not refined. path (n,): the chosen
    flat index into (NY, NX)."""
    n, ny, nx = costs.shape
    j, i = np.divmod(np.asarray(path, np.int64), nx)
    t = np.arange(n)
    c = costs.astype(np.float64)
    mid = c[t, j, i]
    ix, iy = np.clip(i - 1, 0, nx - 1), np.clip(i + 1, 0, nx - 1)
    jx, jy = np.clip(j - 1, 0, ny - 1), np.clip(j + 1, 0, ny - 1)
    return np.stack([_parabola_vertex(c[t, j, ix], mid, c[t, j, iy], (i > 0) & (i < nx - 1)),
                     _parabola_vertex(c[t, jx, i], mid, c[t, jy, i], (j > 0) & (j < ny - 1))], 1)


def _parabola_vertex(before: np.ndarray, at: np.ndarray, after: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(n,) the vertex of the parabola through (-1, before), (0, at), (1, after), in [-0.5, 0.5];
    0 where it opens downwards or the sample is at the search's edge (not inner)."""
    curve = before - 2 * at + after
    ok = inner & (curve > 1e-12)
    out = np.zeros(len(at))
    # clipped, not dropped, where the frame's own minimum lies farther: the path's step cost may hold
    # a torso back from a real drift (dropping those lost 0.02 dB on the tuning videos)
    out[ok] = np.clip(0.5 * (before - after)[ok] / curve[ok], -0.5, 0.5)
    return out


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
    from its mattes (~2 ms a frame)."""
    from model.tracking.facemesh import CHIN

    n = len(video) if n is None else min(n, len(video))
    if n == 0:
        return np.zeros((0, 2), np.float32)
    mattes = np.asarray(video.mattes[:n], np.float32) / 255.0  # at the dataset's res, as video.K
    T = np.asarray(video.T_cam_from_head[:n], np.float64)
    K = np.asarray(video.K, np.float64)

    def in_crop(points: np.ndarray, T: np.ndarray) -> np.ndarray:  # head-frame points (..., 3) -> crop pixels (..., 2)
        p = (points @ T[..., :3, :3].swapaxes(-1, -2) + T[..., None, :3, 3]) @ K.T
        return p[..., :2] / p[..., 2:]

    vertices = video.track.vertices_head()[:n].astype(np.float64)
    first = in_crop(vertices[0], T[0])  # the whole first face (its bust); only the chin of the others
    chins = in_crop(vertices[:, CHIN:CHIN + 1], T)[:, 0]
    return TorsoTracker.from_first_frame(mattes[0], first, video.valid_mask).add(mattes, chins)


def crop_matte(matter, frame: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(ESTIMATE_RES, ESTIMATE_RES) float32: the person matte of a source frame (H, W, 3) RGB by
    `matter` (model.data.matting.SelfieMatter), in the crop of affine A (model.tracking.crop.crop_affine
    at ESTIMATE_RES): the whole frame is matted, as `imp prepare` mattes it."""
    from model.tracking.crop import crop_image

    return crop_image(matter(frame), A, ESTIMATE_RES)


def video_body_motion(path: str | Path, track: "Track", progress: bool = True,
                      on_frame: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, int]:
    """(torso_shifts (n, 2), hair_steadiness) of a video's n tracked frames, matted here (MediaPipe
    selfie segmentation) in the fixed crop of its `track` (model.tracking.track_video's): the
    torso's motion and which poses its hair follows (model/data/hair_motion.py).
    on_frame(done, n) after each frame matted."""
    from tqdm import tqdm

    from model.data.hair_motion import hair_steadiness
    from model.data.matting import SelfieMatter
    from model.formats import video
    from model.tracking.crop import crop_affine, valid_mask
    from model.tracking.facemesh import CHIN

    n = len(track)
    A = crop_affine(np.asarray(track.K, np.float64), ESTIMATE_RES)
    mattes = np.zeros((n, ESTIMATE_RES, ESTIMATE_RES), np.float32)
    count = 0
    with SelfieMatter() as matter:
        for i, frame in enumerate(tqdm(video.iter_frames(path, n), total=n, desc="matting driving", unit="frame",
                                       leave=False, disable=not progress)):
            mattes[i] = crop_matte(matter, frame, A)
            count += 1
            if on_frame is not None:
                on_frame(count, n)
    if count == 0:
        return np.zeros((n, 2), np.float32), 0
    points = np.asarray(track.landmarks, np.float64)[:count] @ A[:2, :2].T + A[:2, 2]  # in the crop's pixels
    valid = valid_mask(A, tuple(track.image_size), ESTIMATE_RES)
    tracker = TorsoTracker.from_first_frame(mattes[0], points[0], valid)
    shifts = tracker.add(mattes[:count], points[:, CHIN])
    if count < n:  # a video that decodes fewer frames than were tracked: the last shift holds
        shifts = np.concatenate([shifts, np.repeat(shifts[-1:], n - count, 0)])
    steadiness = hair_steadiness(mattes[:count], points, track.T_cam_from_head[:count], track.crop_camera(ESTIMATE_RES),
                                 valid, track.fps)
    return shifts, steadiness
