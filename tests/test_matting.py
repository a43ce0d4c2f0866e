"""Mattes (MediaPipe selfie segmentation) against a chroma key of real green-screen footage, and
the background inpainting / median on images whose true background is known."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.data import matting
from model.formats import video


def _chroma_person(frame: np.ndarray) -> np.ndarray:
    """Person mask of a green-screen frame: everything that is not clearly green."""
    f = frame.astype(int)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return ~((g > r + 25) & (g > b + 15))


def test_selfie_matte_matches_green_screen_key(shared_data):
    """d0 is shot on a green screen: the chroma key is an independent ground truth. The clip has a
    black letterbox bar at the bottom, which is neither green nor person: its rows are left out."""
    frames, _ = video.read_video(shared_data / "videos/LivePortrait/d0.mp4", max_frames=40)
    with matting.SelfieMatter() as matter:
        for i in (0, 39):
            m = matter(frames[i])
            assert m.dtype == np.float32 and m.shape == frames[i].shape[:2]
            assert 0.0 <= m.min() and m.max() <= 1.0
            rows = frames[i].max(-1).max(-1) >= 20
            key = _chroma_person(frames[i])[rows]
            ours = (m > 0.5)[rows]
            iou = (key & ours).sum() / (key | ours).sum()
            assert iou >= 0.95, f"frame {i}: IoU {iou:.3f} with the chroma key"


def test_astronaut_matte_and_background(astronaut_path):
    img = np.asarray(Image.open(astronaut_path).convert("RGB"))
    m = matting.matte_image(img)
    assert m[90:170, 180:260].mean() > 0.95  # the face
    assert m[20:120, 440:500].mean() < 0.05  # the wall right of the shuttle model
    bg = matting.inpaint_background(img, m)
    hole = matting.person_mask(m)
    assert np.array_equal(bg[~hole], img[~hole])  # the background is untouched
    # the face is gone: where it was, the fill looks like the wall around the head, not like skin
    face = img[100:160, 190:250].reshape(-1, 3).astype(float).mean(0)
    wall = img[10:60, 300:350].reshape(-1, 3).astype(float).mean(0)
    filled = bg[100:160, 190:250].reshape(-1, 3).astype(float).mean(0)
    assert np.linalg.norm(filled - wall) < 0.5 * np.linalg.norm(face - wall)


def test_inpaint_fills_a_hole_in_a_smooth_background():
    H, W = 300, 400
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.stack([xx * 200 / W, yy * 200 / H, np.full_like(xx, 90)], -1).astype(np.uint8)
    img = bg.copy()
    hole = (yy - 150) ** 2 + (xx - 200) ** 2 < 60 ** 2
    img[hole] = (255, 0, 255)
    out = matting.inpaint(img, hole)
    assert np.array_equal(out[~hole], img[~hole])
    err = np.abs(out[hole].astype(int) - bg[hole].astype(int)).mean()
    assert err < 12, f"mean error {err:.1f} in the filled hole"


def test_median_background_recovers_a_static_scene_behind_a_moving_person():
    rng = np.random.default_rng(0)
    N, H, W = 12, 64, 80
    scene = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    frames = np.repeat(scene[None], N, 0)
    mattes = np.zeros((N, H, W), np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(N):
        disc = (yy - 32) ** 2 + (xx - (15 + 4 * i)) ** 2 < 12 ** 2
        frames[i][disc] = rng.integers(0, 256, (int(disc.sum()), 3))
        mattes[i][disc] = 1.0
    bg = matting.median_background(frames, mattes, dilate_px=2)
    covered_always = np.stack([matting.person_mask(m, 2) for m in mattes]).all(0)
    assert not covered_always.all()
    assert np.array_equal(bg[~covered_always], scene[~covered_always])
    with pytest.raises(ValueError, match="mattes"):
        matting.median_background(frames, mattes[:, :10])


def test_median_background_does_not_pull_the_black_outside_the_frame_into_the_person():
    """A crop that leaves the source frame is black there (matte 0). The person reaching that edge
    in every frame leaves a hole to inpaint beside the black: given `valid`, the black is unknown
    too, so the hole takes the scene's colour and the whole crop is covered by it."""
    N, H, W = 6, 48, 48
    scene = np.full((H, W, 3), (200, 190, 170), np.uint8)
    valid = np.ones((H, W), bool)
    valid[36:] = False  # the source frame ends at row 36
    frames = np.repeat(scene[None], N, 0)
    frames[:, ~valid] = 0
    mattes = np.zeros((N, H, W), np.float32)
    mattes[:, 20:36, 14:34] = 1.0  # a torso down to the frame's edge, in every frame
    frames[:, 20:36, 14:34] = (60, 40, 30)
    hole = np.stack([matting.person_mask(m) for m in mattes]).all(0) & valid
    old = matting.median_background(frames, mattes)
    assert old[hole].mean() < 150, "without `valid` the black flows in (what this test guards against)"
    bg = matting.median_background(frames, mattes, valid=valid)
    assert np.abs(bg[hole].astype(int) - scene[hole].astype(int)).max() <= 6  # Telea is not exact on a flat colour
    assert np.abs(bg[~valid].astype(int) - scene[~valid].astype(int)).max() <= 6
    assert np.array_equal(bg[valid & ~hole], scene[valid & ~hole])
    with pytest.raises(ValueError, match="valid"):
        matting.median_background(frames, mattes, valid=valid[:10])


def test_unmixed_foreground_composited_over_its_background_gives_the_image_back():
    H, W = 32, 40
    rng = np.random.default_rng(1)
    F = rng.integers(40, 200, (H, W, 3)).astype(np.float32)
    B = rng.integers(40, 200, (H, W, 3)).astype(np.float32)
    m = rng.uniform(0.2, 1.0, (H, W)).astype(np.float32)
    m[:4] = 0.0  # no person: the image's own colour
    I = np.round(m[..., None] * F + (1 - m[..., None]) * B).astype(np.uint8)
    F2 = matting.unmix_foreground(I, m, B.astype(np.uint8))
    recon = m[..., None] * F2.astype(np.float32) + (1 - m[..., None]) * B
    assert np.abs(recon - I).max() <= 1.0
    assert np.array_equal(F2[:4], I[:4])
    # the raw image as the foreground would put the background in twice
    assert np.abs(m[..., None] * I + (1 - m[..., None]) * B - I).max() > 10


def _cut_photo() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 64^2 crop whose photo (rows 8..47, columns 8..55) ends 16 rows above the crop's bottom:
    grey background, a red torso with a narrow white neck (columns 31-32) standing on the photo's
    bottom edge, and hair reaching its top edge. Returns image, matte, background, valid."""
    H = W = 64
    valid = np.zeros((H, W), bool)
    valid[8:48, 8:56] = True
    bg = np.full((H, W, 3), 100, np.uint8)
    person = np.zeros((H, W, 3), np.uint8)
    matte = np.zeros((H, W), np.float32)
    person[30:48, 20:44] = (200, 30, 30)
    person[30:48, 31:33] = (255, 255, 255)
    matte[30:48, 20:44] = 1.0
    person[8:30, 26:38] = (60, 40, 20)
    matte[8:30, 26:38] = 1.0
    image = np.where(matte[..., None] > 0, person, bg).astype(np.uint8)
    return image, matte * valid, bg, valid


def test_a_person_cut_by_the_photos_edge_runs_on_past_it():
    """A close-up photo ends inside the head crop: the person there runs on instead of stopping at a
    straight line. The torso continues to the crop's bottom in its own colours (a narrow detail
    at the edge blurs away with distance instead of running on as a stripe); hair cut by the top
    edge fades out above it; only the photo and the person are `shown`."""
    image, matte, bg, valid = _cut_photo()
    out, m, shown = matting.continue_person(image, matte, bg, valid)
    np.testing.assert_array_equal(out[valid], image[valid])
    np.testing.assert_array_equal(m[valid], matte[valid])
    # below the photo: the torso, opaque, to the crop's bottom; beside it the background
    assert (m[48:, 20:44] > 0.99).all() and (m[48:, :18] == 0).all() and (m[48:, 46:] == 0).all()
    np.testing.assert_array_equal(out[48:, :18], bg[48:, :18])
    assert abs(int(out[63, 22, 0]) - 200) < 10 and int(out[63, 22, 1]) < 50  # the jacket's red
    # the white neck: white right under the edge, mixed with the red a dozen rows down
    assert out[47, 31].min() > 200
    assert out[63, 31, 1] < out[47, 31, 1] - 60
    # above the photo the hair fades out within PERSON_TOP_FADE of the crop
    fade = int(np.ceil(matting.PERSON_TOP_FADE * 64))
    assert m[8, 30] > 0.5 and m[9 - fade - 1, 30] == 0 and (m[:8, :24] == 0).all()
    # shown: the photo, the torso by its matte and as far beside it as a driver's torso may move it
    # (matting.TORSO_MOVES: 4 px at 64), nothing in the corners below
    assert shown.dtype == np.float32 and (shown[valid] == 1).all()
    assert (shown[48:] >= m[48:]).all() and (shown[48:, 16:48] == 1).all() and (shown[48:, 49:] == 0).all()
    assert shown[63, 30] == 1 and shown[63, 2] == 0 and shown[63, 61] == 0 and shown[0, 0] == 0


def test_a_person_wider_than_the_photo_rounds_off_below_its_corners():
    """A close-up whose bottom rows are person from side to side (menglu2's bare shoulders, her
    white dress in the corners): beside the photo the person fades out sideways, and below its
    bottom corners with the distance from the corner, so that no corner stands down the crop as a
    block with a straight side; under the photo the torso runs on to the bottom."""
    image, matte, bg, valid = _cut_photo()
    matte[30:48, 8:56] = 1.0  # the torso fills the photo's width
    matte = matte * valid
    _, m, _ = matting.continue_person(image, matte, bg, valid)
    fade = matting.PERSON_SIDE_FADE * 64
    side = lambda d: max(0.0, 1.0 - d / fade)  # noqa: E731
    # the person runs on from the photo's second-outermost column and row (54, 46: its outermost
    # may be blended with the black past the source, `_continuation`)
    assert m[40, 57] == pytest.approx(side(3), abs=1e-5)  # beside the photo: the side fade
    assert m[48, 57] == pytest.approx(side(np.hypot(3, 2)), abs=1e-5)  # just below the corner: nearly as beside it
    assert m[56, 56] == 0 and m[63, 57] == 0  # farther down no column beside the photo
    assert (m[48:, 9:55] > 0.99).all()  # under the photo the torso runs on


def test_a_shoulder_cut_by_the_photos_side_falls_away_past_it():
    """A close-up cut at the sides through the shoulders (dreamtalk's male_face): past the side the
    shoulder's outline falls on as it falls inside the photo, instead of running on along its rows
    as a flat band (dark blobs beside the bust); hair higher up the side still runs on."""
    image, matte, bg, valid = _cut_photo()
    for c in range(8, 20):  # the left shoulder: its top falls one row per column outward
        matte[30 + 20 - c:48, c] = 1.0
    matte[10:20, 8:12] = 1.0  # hair at the side, above the gap over the shoulder
    matte = matte * valid
    _, m, _ = matting.continue_person(image, matte, bg, valid)
    # the outline at the photo's (second) column 9 is at row 41, falling 1 px per px outward
    assert (m[30:47, :4] == 0).all() and m[42, 5] == 0 and m[43, 7] == pytest.approx(0.5 * (1 - 2 / (matting.PERSON_SIDE_FADE * 64)))
    assert m[46, 7] > 0.5 and m[47, 5] > 0.2  # under the outline, the person (fading sideways)
    assert m[15, 6] > 0.5  # the hair


def test_a_photo_that_covers_the_crop_is_left_as_it_is():
    image, matte, bg, _ = _cut_photo()
    valid = np.ones(matte.shape, bool)
    out, m, shown = matting.continue_person(image, matte, bg, valid)
    assert out is image and m is matte and shown.all()


def test_hair_cut_by_the_photos_top_rounds_off_above_it():
    """Above the photo the continued matte narrows like a crown: a wide cut keeps its middle and
    loses its sides; a crown the photo's top only grazes (a few columns) does not stand up as a tuft."""
    image, matte, bg, valid = _cut_photo()  # hair, columns 26-37, cut by the top edge (row 8, continued from row 9)
    matte[8:10, 44:47] = 1.0  # and a three-column tuft beside it
    out, m, _ = matting.continue_person(image, matte, bg, valid)
    width = [(m[y, 20:40] > 0).sum() for y in (9, 7, 6)]
    assert m[7, 31] > 0.3 and width[0] > width[1] > width[2], width
    assert (m[:8, 40:50] == 0).all()


def _face_landmarks(chin: tuple[float, float], face_width: float) -> np.ndarray:
    """(478, 2) landmarks with only what bust_matte reads set: the chin and the two cheeks."""
    from model.tracking.facemesh import CHEEKS, CHIN

    pts = np.zeros((478, 2))
    pts[CHIN] = chin
    pts[CHEEKS[0]] = (chin[0] - face_width / 2, chin[1] - face_width / 2)
    pts[CHEEKS[1]] = (chin[0] + face_width / 2, chin[1] - face_width / 2)
    return pts


def test_bust_is_a_neck_under_the_chin_widening_into_shoulders():
    bust = matting.bust_matte(_face_landmarks((31.5, 20.0), 16.0), (64, 64))
    assert bust.shape == (64, 64) and bust.dtype == np.float32
    assert (bust[:20] == 0).all()  # nothing above the chin
    width = lambda y: float(bust[y].sum())
    neck = 2 * matting.NECK_HALF_WIDTH * 16
    shoulders = 2 * matting.SHOULDER_HALF_WIDTH * 16
    assert abs(width(22) - neck) <= 1.5  # a neck right under the chin
    assert abs(width(20 + round(matting.SHOULDER_DROP * 16) + 2) - shoulders) <= 1.5  # full shoulders a face width down
    assert all(width(y) <= width(y + 1) for y in range(20, 63))
    np.testing.assert_allclose(bust[:, :32], bust[:, 32:][:, ::-1], atol=1e-6)  # centred on the chin


def test_a_photo_ending_at_the_collar_continues_into_shoulders_in_the_clothes_colour():
    """A close-up that ends under the chin (the neck between red collars at its bottom): with a bust,
    the person below the photo widens into shoulders instead of running down as a column, coloured
    like the collar beside the neck, not like the neck's skin; the photo stays as it is."""
    H = W = 64
    valid = np.zeros((H, W), bool)
    valid[:40] = True  # the photo ends at row 39
    bg = np.full((H, W, 3), 100, np.uint8)
    image = bg.copy()
    matte = np.zeros((H, W), np.float32)
    image[10:40, 24:40] = (220, 170, 140)  # a face and neck, skin
    matte[10:40, 24:40] = 1.0
    image[36:40, 22:42] = (200, 30, 30)  # red collars beside the neck at the photo's bottom
    image[36:40, 29:35] = (220, 170, 140)
    matte[36:40, 22:42] = 1.0
    matte = matte * valid
    bust = matting.bust_matte(_face_landmarks((32.0, 32.0), 16.0), (H, W))
    out, m, shown = matting.continue_person(image, matte, bg, valid, bust)
    plain, m_plain, _ = matting.continue_person(image, matte, bg, valid)
    np.testing.assert_array_equal(out[valid], image[valid])
    assert (m_plain[60, :18] == 0).all() and (m[60, 12:18] > 0.99).all()  # shoulders where the column had none
    assert (m >= m_plain - 1e-6).all()
    assert abs(int(out[60, 14, 0]) - 200) < 25 and int(out[60, 14, 1]) < 70, out[60, 14]  # the collar's red
    assert (shown[40:] >= m[40:]).all()
    # the bust as it will be when the driver rises (TORSO_MOVES: 16 px at 64) may show too
    assert (shown[40:44] >= m[56:60] - 1e-6).all() and (shown[40:44] > 0.99).sum() > (m[40:44] > 0.99).sum()
    np.testing.assert_allclose(matting.continued_matte(matte, valid, bust), m, atol=1e-6)


def test_a_bust_takes_the_clothes_colour_not_the_background_a_matte_ran_into_nor_the_neck():
    """A video framed at the collar (LivePortrait d20's first frame): white collars under the neck,
    and the matte at the photo's bottom runs past them into a dark background of the same colour
    as the clean plate there. The body below the photo (where a rising driver brings it into view)
    is the collar's white, not that dark, nor the neck's skin."""
    H = W = 64
    valid = np.zeros((H, W), bool)
    valid[:40] = True
    bg = np.full((H, W, 3), 30, np.uint8)
    image = bg.copy()
    matte = np.zeros((H, W), np.float32)
    image[12:40, 26:38] = (220, 170, 140)  # face and neck, skin
    matte[12:40, 26:38] = 1.0
    image[36:40, 22:42] = (235, 235, 245)  # the collars, white, beside and under the neck
    image[36:38, 30:34] = (220, 170, 140)
    matte[36:40, 22:54] = 1.0  # ... and the matte runs on into the dark background on the right
    bust = matting.bust_matte(_face_landmarks((32.0, 32.0), 16.0), (H, W))
    out, m, _ = matting.continue_person(image, matte * valid, bg, valid, bust)
    np.testing.assert_array_equal(out[valid], image[valid])
    for y, x in ((60, 14), (60, 50), (46, 48), (46, 32)):  # the shoulders, under the dark run, under the collar
        assert m[y, x] > 0.99 and out[y, x].min() > 170, (y, x, out[y, x])


def _cut_above_a_dark_shirt(bottom: int, clothes_rows: int):
    """(image, matte, background, valid, bust) of a 64 px crop whose photo ends at row `bottom`: a
    face and neck in skin (in the chin's shadow) over a plain background, a dark shirt beside the
    neck in the photo's last `clothes_rows` rows, the chin at row 32."""
    H = W = 64
    valid = np.zeros((H, W), bool)
    valid[:bottom] = True
    bg = np.full((H, W, 3), 200, np.uint8)
    image = bg.copy()
    matte = np.zeros((H, W), np.float32)
    image[12:bottom, 26:38] = (175, 122, 106)
    matte[12:bottom, 26:38] = 1.0
    image[bottom - clothes_rows:bottom, 14:26] = image[bottom - clothes_rows:bottom, 38:50] = (20, 20, 30)
    matte[bottom - clothes_rows:bottom, 14:50] = 1.0
    return image, matte * valid, bg, valid, matting.bust_matte(_face_landmarks((32.0, 32.0), 16.0), (H, W))


def test_a_neck_cut_by_the_photos_bottom_does_not_run_on_down_the_chest():
    """A close-up cut at the collar of a dark shirt (dreamtalk's male_face): the neck shows at the
    photo's bottom, lit brighter there than in the chin's shadow. Below the photo the chest is the
    shirt's colour, not a column of skin under the neck nor a brown band of the skin mixed into the
    shirt; the photo stays as it is."""
    image, matte, bg, valid, bust = _cut_above_a_dark_shirt(40, 6)
    image[36:40, 26:38] = (200, 150, 132)  # the neck lit brighter at the collar
    out, m, _ = matting.continue_person(image, matte, bg, valid, bust)
    np.testing.assert_array_equal(out[valid], image[valid])
    for y in (41, 44, 52, 60):  # under the neck, right under the photo's bottom and farther down
        assert m[y, 32] > 0.99 and out[y, 32].max() < 50, (y, out[y, 32])  # the shirt is (20, 20, 30)


def test_a_neck_cut_under_the_chin_runs_on_down_to_the_shoulders():
    """A video cut under the chin (LIA's): below it the neck goes on, in its skin, down to where the
    bust's shoulders begin; the chest below that is the clothes' colour."""
    image, matte, bg, valid, bust = _cut_above_a_dark_shirt(34, 2)
    top = matting._shoulders_top(bust)
    assert 34 < top < 40  # NECK_DROP of a 16 px face under the chin
    out, m, _ = matting.continue_person(image, matte, bg, valid, bust)
    assert m[top - 1, 32] > 0.99 and abs(int(out[top - 1, 32, 0]) - 175) < 30, out[top - 1, 32]  # still the neck
    assert m[60, 32] > 0.99 and out[60, 32].max() < 90, out[60, 32]  # the chest, in the clothes' colour


def _close_up_crop(res: int = 128):
    """A head crop reaching past a close-up photo: the photo (a diagonal gradient behind a magenta
    person) covers the middle; the crop has the photo's edge pixels repeated past it."""
    yy, xx = np.mgrid[0:res, 0:res]
    true_bg = np.stack([60 + xx * 100 / res, 80 + yy * 80 / res, 150 + 0 * xx], -1)
    valid = (yy >= 20) & (yy < 110) & (xx >= 30) & (xx < 100)
    matte = (((yy - 70) ** 2 / 30 ** 2 + (xx - 64) ** 2 / 22 ** 2) < 1).astype(np.float32) * valid
    img = np.where(matte[..., None] > 0, np.array([255, 0, 255]), true_bg)
    ys, xs = np.clip(yy, 20, 109), np.clip(xx, 30, 99)
    return img[ys, xs].round().astype(np.uint8), matte, valid, true_bg


def test_portrait_background_continues_the_photo_smoothly_past_its_edges():
    crop, matte, valid, true_bg = _close_up_crop()
    bg = matting.portrait_background(crop, matte, valid)
    known = valid & ~matting.person_mask(matte)
    assert bg.shape == crop.shape and bg.dtype == np.uint8
    assert np.array_equal(bg[known], crop[known])  # the photo's own background is kept exactly
    # the person is gone: no magenta left in the hole or past the photo (its green is the bg's)
    assert bg[~known][:, 1].min() > 60
    # no wedges or tiles: OpenCV's inpainting of this crop jumps by up to 15 levels between
    # neighbours past the photo; the continuation changes by at most a few, like the photo's gradient
    filled = bg.astype(int)
    steps = np.maximum(np.abs(np.diff(filled, axis=0))[:, :-1], np.abs(np.diff(filled, axis=1))[:-1]).max(-1)
    outside = ~known[:-1, :-1] & ~known[1:, :-1] & ~known[:-1, 1:]
    assert steps[outside].max() <= 4, steps[outside].max()
    # and it stays near the colours around it (the photo's background), not grey or black
    assert np.abs(bg[~known].astype(float).mean(0) - true_bg[known].mean(0)).max() < 25


def test_portrait_background_without_any_background_is_grey():
    crop, _, valid, _ = _close_up_crop()
    assert (matting.portrait_background(crop, valid.astype(np.float32), valid) == 127).all()
