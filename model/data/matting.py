"""Foreground mattes and the inpainted background (paper sec. 3.3).

Mattes come from MediaPipe selfie segmentation (`mediapipe.solutions.selfie_segmentation`, whose
model ships inside the mediapipe wheel). Optionally (`refine=True`) a guided filter (opencv-contrib)
snaps the soft edges to the image's; it is off by default because against a chroma key of the
green-screen clip d0 it does not measurably help (IoU 0.976 without, 0.975 with). The background is the portrait with the person removed: the matte is
dilated (to swallow the halo of soft edges), and the hole and what the head crop shows past the
photo's edges are filled by pull-push (`portrait_background`). Over a video, each background pixel
is the median of the frames where the person does not cover it, and only pixels that the person
covers in every frame (and those outside the source frame, which a head crop can reach) are
inpainted with OpenCV (`inpaint`; the prepared datasets the shipped weights were trained on have
it).

Images are RGB uint8 (H, W, 3); mattes float32 (H, W) in [0, 1]. Prepared portraits keep a
portrait's matte and background on disk (model/data/portrait_cache.py): a change to what this
module makes needs a new FORMAT number there.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import numpy as np

from model.geometry import continuation

PERSON_THRESHOLD = 0.1  # matte above this counts as person when building the background
MIN_MATTE = 0.02  # below this coverage a pixel keeps its image colour (the matting equation is ill-posed)
INPAINT_MAX_SIDE = 256  # inpainting runs at most at this size: large holes are smooth anyway, and Telea is slow


class SelfieMatter:
    """MediaPipe selfie segmentation as a callable: image (H, W, 3) uint8 RGB -> matte (H, W) float32.

    model_selection 0 is the general (square, 256x256) model, 1 the landscape one. Use as a
    context manager (or call close()) to release the MediaPipe graph."""

    def __init__(self, model_selection: int = 0, refine: bool = False):
        import mediapipe as mp

        from model.tracking.native_logs import hush_mediapipe
        hush_mediapipe()  # MediaPipe's C++ log lines stay out of the user's terminal (unless --verbose)

        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
        self.refine = refine

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_rgb(image)
        mask = self._seg.process(image).segmentation_mask
        if mask is None:  # pragma: no cover - mediapipe returns a mask for every valid image
            return np.zeros(image.shape[:2], np.float32)
        mask = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
        if self.refine:
            mask = refine_matte(image, mask)
        return mask

    def close(self) -> None:
        self._seg.close()

    def __enter__(self) -> "SelfieMatter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def refine_matte(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Guided-filter the network's matte (H, W) with the image as guide: edges snap to the image's.

    The radius scales with the image (about 1/64 of the short side), eps is in [0,1]^2 units."""
    import cv2

    radius = max(2, min(image.shape[:2]) // 64)
    guide = image.astype(np.float32) / 255.0
    out = cv2.ximgproc.guidedFilter(guide, mask.astype(np.float32), radius, 1e-3)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def matte_image(image: np.ndarray, refine: bool = False) -> np.ndarray:
    """Matte (H, W) float32 in [0, 1] of one RGB uint8 image."""
    with SelfieMatter(refine=refine) as matter:
        return matter(image)


def matte_frames(frames: Iterable[np.ndarray], refine: bool = False) -> Iterator[np.ndarray]:
    """Mattes of a sequence of frames, one MediaPipe graph for all of them."""
    with SelfieMatter(refine=refine) as matter:
        for frame in frames:
            yield matter(frame)


def person_mask(matte: np.ndarray, dilate_px: int | None = None) -> np.ndarray:
    """Bool mask (H, W) of where the person is, grown by `dilate_px` (default 1/40 of the short side)
    so that the soft edge and its colour bleed count as person too."""
    import cv2

    if dilate_px is None:
        dilate_px = max(2, min(matte.shape[:2]) // 40)
    hard = (matte > PERSON_THRESHOLD).astype(np.uint8)
    if dilate_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        hard = cv2.dilate(hard, kernel)
    return hard.astype(bool)


def inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill `hole` (H, W) bool of an RGB uint8 image from its surroundings (OpenCV Telea).

    Runs at most at INPAINT_MAX_SIDE px (the fill of a large hole is smooth, and Telea's cost grows
    with the hole's area) and keeps every pixel outside the hole exactly."""
    import cv2

    image = _check_rgb(image)
    hole = np.asarray(hole, bool)
    if not hole.any():
        return image.copy()
    if hole.all():
        # nothing to inpaint from: a neutral grey is the least wrong guess
        return np.full_like(image, 127)
    H, W = hole.shape
    scale = min(1.0, INPAINT_MAX_SIDE / max(H, W))
    small_hw = (max(1, round(W * scale)), max(1, round(H * scale)))
    small = cv2.resize(image, small_hw, interpolation=cv2.INTER_AREA) if scale < 1 else image
    small_hole = cv2.resize(hole.astype(np.uint8), small_hw, interpolation=cv2.INTER_NEAREST) if scale < 1 else hole.astype(np.uint8)
    if scale < 1:
        # any low-res pixel touching the hole is unknown: the hole's colour must not leak in
        small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_hole, max(3, round(min(small_hw) / 50)), cv2.INPAINT_TELEA)
    if scale < 1:
        filled = cv2.resize(filled, (W, H), interpolation=cv2.INTER_LINEAR)
    out = image.copy()
    out[hole] = filled[hole]
    return out


def portrait_background(image: np.ndarray, matte: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The background (H, W, 3) uint8 of a portrait's crop: the person (matte (H, W), person_mask)
    and what lies past the photo's edges (valid (H, W) bool, the crop pixels inside the photo)
    filled with the photo's background continued smoothly (pull-push over the whole crop).
    OpenCV's inpainting (`inpaint`, which a video's median background still uses) propagated the
    edges' colours along lines across a hole that is often half the crop: wedges and flat tiles of
    other shades, which the viewer shows behind the head."""
    from model.geometry.pull_push import fill_in, full_levels

    image = _check_rgb(image)
    known = np.asarray(valid, bool) & ~person_mask(matte)
    if not known.any():
        return np.full_like(image, 127)  # nothing to continue: a neutral grey is the least wrong guess
    planes = image.astype(np.float32).transpose(2, 0, 1)[None]
    filled = fill_in(planes, known[None, None].astype(np.float32), full_levels(known.shape))[0].transpose(1, 2, 0)
    return np.where(known[..., None], image, np.clip(np.round(filled), 0, 255).astype(np.uint8))


def inpaint_background(image: np.ndarray, matte: np.ndarray, dilate_px: int | None = None) -> np.ndarray:
    """The image (H, W, 3) uint8 with the person (matte > threshold, dilated) removed and inpainted."""
    return inpaint(image, person_mask(matte, dilate_px))


def median_background(frames: np.ndarray, mattes: np.ndarray, max_samples: int = 48,
                      dilate_px: int | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Background (H, W, 3) uint8 of a video: per pixel the median over the frames where the person
    does not cover it; pixels the person covers in every sampled frame are inpainted.

    frames (N, H, W, 3) uint8; mattes (N, H, W) float in [0, 1] or uint8 in [0, 255]. At most
    `max_samples` frames, evenly spaced, are used. valid (H, W) bool, if given: the pixels inside
    the source frame. The rest (black in a crop that leaves the frame) is inpainted too, so that
    the black never flows into the person's hole; the result covers the whole crop."""
    frames = np.asarray(frames)
    mattes = np.asarray(mattes)
    if frames.ndim != 4 or mattes.shape != frames.shape[:3]:
        raise ValueError(f"frames (N, H, W, 3) and mattes (N, H, W) expected, got {frames.shape} and {mattes.shape}")
    if valid is not None and valid.shape != frames.shape[1:3]:
        raise ValueError(f"valid (H, W) = {frames.shape[1:3]} expected, got {valid.shape}")
    if mattes.dtype == np.uint8:
        mattes = mattes.astype(np.float32) / 255.0
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_samples, len(frames))).round().astype(int))
    person = np.stack([person_mask(mattes[i], dilate_px) for i in idx])  # (n, H, W)
    stack = frames[idx].astype(np.float32)
    stack[person] = np.nan
    seen = ~person.all(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: inpainted below
        med = np.nanmedian(stack, axis=0)
    med = np.where(seen[..., None], med, 0.0)
    bg = np.clip(np.round(med), 0, 255).astype(np.uint8)
    return inpaint(bg, ~seen if valid is None else ~seen | ~np.asarray(valid, bool))


def unmix_foreground(image: np.ndarray, matte: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Foreground colour F (H, W, 3) uint8 with image = m F + (1 - m) B, clipped to [0, 255].

    image, background (H, W, 3) uint8; matte (H, W) float in [0, 1]. Compositing the raw image
    with its own matte over a background counts the background twice at soft edges (a halo of the
    old background around hair); F composited with m over B gives the image back."""
    I = image.astype(np.float32)
    B = background.astype(np.float32)
    m = np.asarray(matte, np.float32)[..., None]
    F = np.where(m > MIN_MATTE, (I - (1.0 - m) * B) / np.maximum(m, MIN_MATTE), I)
    return np.clip(np.round(F), 0, 255).astype(np.uint8)


PERSON_TOP_FADE = 0.06  # of the crop: the person continued above the source image fades out over this (a head is round)
PERSON_TOP_ROUND = 2.0  # ... and narrows by this many pixels a side per pixel above it: a crown the photo's top just grazes must not stand up as a tuft
PERSON_SIDE_FADE = 0.12  # of the crop: ... and past its left / right edge over this (shoulders, hair end somewhere)
PERSON_SPREAD = continuation.SPREAD  # the continued person is blurred by this many pixels per pixel away from the source: no long stripes
SPREAD_LEVELS = continuation.SPREAD_LEVELS  # Gaussian widths (px of a 128 px crop) between which a pixel's blur is interpolated
HEAD_MOVES = 0.25  # of the crop: how far a moving head may carry the person past the source's sides and top (d20 rises by a fifth); the clip's alpha is cut to the condition's matte there, frame by frame
TORSO_MOVES = (8, 32)  # px of a 128 px crop, x and y: how far a driver's torso may move the body (model/data/body_motion.py)
# a bust where the source ends under the chin (a close-up, a video framed at the collar): in face
# widths, a neck this wide (half) down to this far below the chin, shoulders rounding out to this
# half-width this far below it. Averages of an upright adult; only where the source shows nothing
NECK_HALF_WIDTH = 0.35
NECK_DROP = 0.3
SHOULDER_HALF_WIDTH = 1.45
SHOULDER_DROP = 1.0


def bust_matte(landmarks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 in [0, 1]: where a bust under the face of landmarks (478, 2) (MediaPipe's, in
    the crop's pixels) would be: a neck under the chin widening into round shoulders (NECK_*,
    SHOULDER_*; upright, centred on the chin). continue_person's body where the source ends above
    the shoulders: continued straight down, a neck between collars became a column."""
    from model.tracking.facemesh import CHEEKS, CHIN

    H, W = hw
    pts = np.asarray(landmarks, np.float64)
    cx, cy = pts[CHIN]
    fw = float(np.linalg.norm(pts[CHEEKS[1]] - pts[CHEEKS[0]]))
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    t = np.clip((yy - cy - NECK_DROP * fw) / ((SHOULDER_DROP - NECK_DROP) * fw), 0.0, 1.0)
    half = fw * (NECK_HALF_WIDTH + (SHOULDER_HALF_WIDTH - NECK_HALF_WIDTH) * (1.0 - (1.0 - t) ** 2))  # round shoulders
    inside = np.clip(half - np.abs(xx - cx) + 0.5, 0.0, 1.0) * np.clip(yy - cy + 0.5, 0.0, 1.0)
    return inside.astype(np.float32)


def _continuation(matte: np.ndarray, valid: np.ndarray):
    """Where each crop pixel takes the person from when it is continued past the source (see
    continue_person): (rows (H, W), columns (H, W), fade (H, W) in [0, 1], (x0, x1, y0, y1) the
    source rectangle it continues from), or None when there is nothing to continue."""
    import cv2

    if valid.all() or not valid.any():
        return None
    H, W = valid.shape
    ys, xs = np.nonzero(valid)
    # where the source ends inside the crop, its outermost row may be only partly covered, blended
    # with the black beyond (a dataset frame is cut so): the person runs on from the row inside it
    x0, x1 = xs.min() + (xs.min() > 0), xs.max() - (xs.max() < W - 1)
    y0, y1 = ys.min() + (ys.min() > 0), ys.max() - (ys.max() < H - 1)
    if x0 > x1 or y0 > y1:
        return None
    yy, xx = np.mgrid[:H, :W]
    cy, cx = np.clip(yy, y0, y1), np.clip(xx, x0, x1)
    # past the sides the person fades out sideways; below the source's bottom corners it fades with
    # the distance from the corner (a quarter disc): run straight down, a corner's dress or arm stood
    # up beside the bust as a block with a straight side
    aside = np.maximum.reduce([x0 - xx, xx - x1, np.zeros_like(xx)]).astype(np.float64)
    aside = np.where(yy > y1, np.hypot(aside, np.where(aside > 0, yy - y1, 0)), aside)
    fade = np.clip(1.0 - (y0 - yy) / max(1.0, PERSON_TOP_FADE * H), 0.0, 1.0) * \
        np.clip(1.0 - aside / max(1.0, PERSON_SIDE_FADE * W), 0.0, 1.0) * \
        _shoulder_lines(matte, (x0, x1, y0, y1), yy, xx)
    top = matte[y0, np.clip(np.arange(W), x0, x1)][None]  # (1, W): what the photo's top row shows
    for d in range(1, y0 + 1):  # rows above the photo: the top row's matte eroded the more, the higher
        r = int(np.ceil(PERSON_TOP_ROUND * d))
        fade[y0 - d] *= np.clip(cv2.erode(top, np.ones((1, 2 * r + 1), np.uint8))[0] / np.maximum(top[0], MIN_MATTE), 0.0, 1.0)
    return cy, cx, fade, (x0, x1, y0, y1)


SHOULDER_COLUMNS = 0.07  # of the crop: the shoulder's slope at a source's side is read over this many columns inside it
SHOULDER_SLOPE = (0.2, 1.5)  # ... and kept between these (px down per px out): a shoulder falls away from the neck


def _shoulder_lines(matte: np.ndarray, rect: tuple[int, int, int, int], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]: 0 above the shoulders' outline continued past the source's sides. Where the
    person at a side's bottom (the shoulder the photo cuts) runs up that side to a row below the
    source's top, its outline goes on past the side falling as it falls over the SHOULDER_COLUMNS
    inside (SHOULDER_SLOPE). Continued along its row, a shoulder cut by a close-up's side stood out
    as a flat band (male_face's T-shirt: dark blobs beside the bust); above it the side runs on as
    before (hair). matte (H, W); rect (x0, x1, y0, y1) the source's rectangle; yy, xx (H, W) the
    pixel grid."""
    x0, x1, y0, y1 = rect
    H, W = matte.shape
    out = np.ones((H, W), np.float64)
    n = max(2, round(SHOULDER_COLUMNS * W))
    person = matte > 0.5
    rows = np.arange(H)[:, None]
    # the top row of the person run that ends at the source's bottom row, for every column
    above = ~person & (rows < y1)
    top = np.where(person[y1], np.max(np.where(above, rows, y0 - 1), 0) + 1, H)
    for edge, step, outward in ((x0, 1, x0 - xx), (x1, -1, xx - x1)):
        if edge in (0, W - 1) or not person[y1, edge] or top[edge] <= y0:
            continue  # the source reaches the crop's side, no shoulder is cut, or the person fills the side
        inner = top[np.clip(edge + step * np.arange(1, n + 1), x0, x1)]  # a source narrower than n: its own columns
        inner = np.where(inner < H, inner, top[edge])
        slope = np.clip(np.mean((top[edge] - inner) / np.arange(1, n + 1)), *SHOULDER_SLOPE)
        line = top[edge] + slope * outward
        # rows above the gap over the cut shoulder keep what the side shows there (hair runs on)
        higher = np.flatnonzero(person[:top[edge], edge])
        gap = higher[-1] + 1 if higher.size else 0
        out = np.where((outward > 0) & (yy >= gap), np.minimum(out, np.clip(yy - line + 0.5, 0.0, 1.0)), out)
    return out


def continued_matte(matte: np.ndarray, valid: np.ndarray, bust: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32: the matte (H, W) of a crop continued past its source image (valid (H, W)
    bool) as continue_person continues it (with the same `bust`), without the colours."""
    matte = np.asarray(matte, np.float32)
    valid = np.asarray(valid, bool)
    grid = _continuation(matte, valid)
    if grid is None:
        return matte
    return _continued(matte, valid, grid, bust)[0]


BUST_COLOUR_ROWS = 4  # the bust takes the colour of the person in this many rows at the source's bottom ...
BUST_COLOUR_SPREAD = 0.12  # ... blurred over this much of the crop


def _continued(matte: np.ndarray, valid: np.ndarray, grid: tuple, bust: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(the continued matte (H, W) float32, the weights (H, W) of the source pixels whose colour the
    bust may take, or None when there is no bust): the outline runs straight on past the source
    (`_continuation`), filled out to the bust where the source shows a person at its bottom (the
    clothes a bust is coloured like are in its bottom rows; none, no bust)."""
    cy, cx, fade, (_, _, _, y1) = grid
    outside = matte[cy, cx] * fade
    weights = None
    if bust is not None:
        band = np.zeros(matte.shape, np.float32)
        band[max(0, y1 - BUST_COLOUR_ROWS + 1):y1 + 1] = 1.0
        w = matte * band * valid
        if w.sum() >= 1.0:
            weights = w
            outside = np.maximum(outside, bust)
    return np.where(valid, matte, outside).astype(np.float32), weights


COLOUR_TELL = 24.0  # uint8 levels: colours this far apart are told apart (`_unlike`)


def _unlike(colour: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]: how surely colour (H, W, 3) is not other ((H, W, 3) or (3,)); 0 alike."""
    d2 = np.square(colour.astype(np.float32) - np.asarray(other, np.float32)).sum(-1)
    return (1.0 - np.exp(-d2 / (2.0 * COLOUR_TELL ** 2))).astype(np.float32)


SKIN_SHADING = (0.6, 1.6)  # how much darker / brighter than under the chin the neck's skin may be lit elsewhere


def _not_skin(colour: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]: how surely colour (H, W, 3) is not the skin (3,) lit more or less brightly
    (SKIN_SHADING): a neck is lighter at the collar than in the chin's shadow (male_face: 198 against
    175 in red), and compared as it is, its lower part passed for clothes."""
    skin = np.asarray(skin, np.float32)
    gain = np.clip(colour.astype(np.float32) @ skin / max(float(skin @ skin), 1.0), *SKIN_SHADING)
    # a pixel only a little off the skin is skin (0.16 at male_face's collar lent the chest a brown band)
    return np.clip(2.0 * _unlike(colour, gain[..., None] * skin) - 0.5, 0.0, 1.0)


def _neck_skin(fg: np.ndarray, matte: np.ndarray, valid: np.ndarray, bust: np.ndarray) -> np.ndarray | None:
    """(3,) the median colour of the person just under the chin within the neck's width (the
    bust's top rows), or None where the source does not show it."""
    rows = np.flatnonzero(bust.max(1) > 0.5)
    if not rows.size:
        return None
    neck = bust[rows[0]] > 0.5
    half = max(1, int(neck.sum()) // 2)
    band = np.zeros(matte.shape, bool)
    band[rows[0]:rows[0] + half] = neck
    take = band & valid & (matte > 0.5)
    return np.median(fg[take], axis=0) if take.sum() >= 3 else None


def _shoulders_top(bust: np.ndarray) -> int:
    """The first row of bust_matte's `bust` (H, W) wider than its neck: where its shoulders begin
    (H when they do not within the crop)."""
    widths = (bust > 0.5).sum(1)
    rows = np.flatnonzero(widths)
    if not rows.size:
        return bust.shape[0]
    wider = rows[widths[rows] > widths[rows[0]] + 1]
    return int(wider[0]) if wider.size else bust.shape[0]


def _clothes_weights(weights: np.ndarray, clothes_like: np.ndarray) -> np.ndarray:
    """The weights (H, W) of the bottom rows' pixels whose colour the bust takes, the surer they
    show clothes (clothes_like (H, W) in [0, 1]: continue_person's). Unchanged when that leaves less
    than a pixel (a source whose bottom rows show no clothes: bare shoulders)."""
    sure = weights * clothes_like
    return sure if sure.sum() >= 1.0 else weights


def _bust_colour(colour: np.ndarray, spread_alpha: np.ndarray, fg: np.ndarray, weights: np.ndarray,
                 valid: np.ndarray) -> np.ndarray:
    """continue_person's colour (H, W, 3) outside the source where the bust fills the person out:
    where the straight continuation is thin, the clothes' colour (fg (H, W, 3) at the source pixels
    of `weights`), blurred (a pixel far from them takes their mean)."""
    import cv2

    H = colour.shape[0]
    mean = (fg * weights[..., None]).sum((0, 1)) / weights.sum()
    sigma = BUST_COLOUR_SPREAD * H
    num = cv2.GaussianBlur(fg * weights[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(weights, (0, 0), sigma)[..., None]
    near = np.clip(den / 0.05, 0.0, 1.0)
    clothes = near * num / np.maximum(den, 1e-6) + (1.0 - near) * mean
    own = np.clip(spread_alpha / 0.5, 0.0, 1.0)[..., None]  # where the continuation has a person, its colour
    return np.where(valid[..., None], colour, own * colour + (1.0 - own) * clothes)


def continue_person(image: np.ndarray, matte: np.ndarray, background: np.ndarray,
                    valid: np.ndarray, bust: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The person of a crop continued past the edges of its source image: (image (H, W, 3) uint8,
    matte (H, W) float32, shown (H, W) float32 in [0, 1]).

    image, background (H, W, 3) uint8 (image filled with background outside the source); matte
    (H, W) float in [0, 1]; valid (H, W) bool, the crop pixels inside the source image (a
    rectangle: the crop is axis-aligned). A head crop reaches past a close-up photo's edges, and
    there the person stopped at a straight line with the background under it: a bust cut off at
    the photo's bottom. Outside the source, each pixel takes the person (unmixed colour, by its
    matte) of the nearest pixel inside the rectangle: its outline runs straight on (a torso is a
    column), its colour is blurred the more the farther it is (PERSON_SPREAD), so that a narrow
    detail at the edge (a neck between collars) does not run on as a stripe. Clothes continue down
    to the crop's edge; past the sides (shoulders, hair) the matte fades out over PERSON_SIDE_FADE
    of the crop, above the source (hair cut by the photo's top) over PERSON_TOP_FADE, narrowing
    like a crown (PERSON_TOP_ROUND). `bust` (H, W) (bust_matte, None: none): a neck and shoulders
    the continued person fills out to, coloured like the clothes nearest it (a source that ends at
    the collar would continue as a column). `shown` is
    how much a generated MPI may show (its alpha is multiplied by it): 1 on the source and HEAD_MOVES
    around the person beside and above it, where a moving head carries hair; below the source, the
    continued person's matte. Elsewhere outside the source the network was never taught anything
    (its loss leaves those pixels out): it paints an opaque frame along the crop's border, and
    specks next to the continued torso."""
    import cv2

    valid = np.asarray(valid, bool)
    matte = np.asarray(matte, np.float32)
    grid = _continuation(matte, valid)
    if grid is None:
        return image, matte, valid.astype(np.float32)
    cy, cx, fade, (x0, x1, y0, y1) = grid
    H, W = valid.shape
    yy, xx = np.mgrid[:H, :W]
    fg = unmix_foreground(image, matte, background).astype(np.float32)
    # how surely a pixel shows clothes: not the background's colour there (a matte that runs past
    # dark clothes into a dark background) nor the neck's skin (just under the chin). Below the
    # source a bottom-row pixel lends the person below it colour by that where the bust's shoulders
    # have begun, and the bust's clothes colour fills in (`_bust_colour`): a neck cut by the photo's
    # bottom at the collar ran on down the chest as a column of skin. Above the shoulders the neck
    # runs on (a video cut under the chin shows more neck when the speaker rises)
    clothes_like = _unlike(fg, background)
    lend = clothes_like[cy, cx]
    skin = None if bust is None else _neck_skin(fg, matte, valid, bust)
    if skin is not None:
        clothes_like = clothes_like * _not_skin(fg, skin)
        lend = np.where(yy >= _shoulders_top(bust), clothes_like[cy, cx], lend)
    lend = np.where(yy > y1, lend, 1.0)
    rgba = np.concatenate([fg * matte[..., None], matte[..., None]], -1)[cy, cx] * (fade * lend)[..., None]
    # blurred copies at a few widths; each pixel interpolates linearly between the two around its own
    sigma = PERSON_SPREAD * np.maximum.reduce([x0 - xx, xx - x1, y0 - yy, yy - y1, np.zeros_like(xx)]).astype(np.float32)
    levels = [s * H / 128.0 for s in SPREAD_LEVELS]
    pos = np.interp(sigma, levels, np.arange(len(levels)))
    spread = sum(np.clip(1.0 - np.abs(pos - k), 0.0, 1.0)[..., None] *
                 (rgba if s == 0 else cv2.GaussianBlur(rgba, (0, 0), s, borderType=cv2.BORDER_REPLICATE))
                 for k, s in enumerate(levels))
    # the outline itself runs on unblurred (a torso is a column), only its colour spreads
    m, weights = _continued(matte, valid, grid, bust)
    colour = spread[..., :3] / np.maximum(spread[..., 3:], MIN_MATTE)
    if weights is not None:
        colour = _bust_colour(colour, spread[..., 3], fg, _clothes_weights(weights, clothes_like), valid)
    outside = m[..., None] * colour + (1.0 - m[..., None]) * background.astype(np.float32)
    out = np.where(valid[..., None], image, np.clip(np.round(outside), 0, 255).astype(np.uint8))
    moves = person_mask(m, max(2, round(HEAD_MOVES * H))) & (yy <= y1)
    # below the source, where the body may rise to with the driver's torso (the clip's alpha is cut
    # to the moved condition's there: model.diffusion.clips.keep_condition_outside)
    sx, sy = (round(v * H / 128.0) for v in TORSO_MOVES)
    rises = cv2.dilate(m, np.ones((sy + 1, 2 * sx + 1), np.uint8), anchor=(sx, 0), borderType=cv2.BORDER_REPLICATE)
    return out, m, np.maximum.reduce([(valid | moves).astype(np.float32), m, rises * (yy > y1)]).astype(np.float32)
