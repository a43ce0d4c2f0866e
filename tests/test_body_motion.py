"""model/data/body_motion.py: the torso's motion from person mattes. On drawn busts: a torso moved
by a known amount under a head that moves on its own is found to a pixel, a still torso under a
nodding, turning head stays at 0, one flickering matte does not make it jump. On real footage: the
speaker of LivePortrait d20, who rises in his chair, is found rising; W011's torso, which stays,
stays. And the identity condition moves the portrait's body by it (portrait_warp.moved_torso)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import body_motion
from model.data.matting import continued_matte
from model.geometry.portrait_warp import moved_torso

R = 128


def _bust(head: tuple[float, float], torso: tuple[float, float]) -> np.ndarray:
    """(R, R) matte: an elliptic head centred at `head` (x, y px) above a neck and a shoulder
    trapezoid whose top-middle is at `torso`. Drawn 8x larger and averaged down, so that a shape
    moved by a fraction of a pixel changes its edge pixels' values (a polygon filled at R would
    snap to whole pixels)."""
    import cv2

    s = 8  # supersampling

    def at(points) -> np.ndarray:  # pixel-centre coordinates at R -> the large image's
        return np.round((np.asarray(points, np.float64) + 0.5) * s - 0.5).astype(np.int32)

    m = np.zeros((R * s, R * s), np.uint8)
    hx, hy = head
    tx, ty = torso
    cv2.ellipse(m, tuple(at((hx, hy))), (16 * s, 21 * s), 0, 0, 360, 255, -1)
    neck = np.array([[tx - 8, hy], [tx + 8, hy], [tx + 8, ty + 5], [tx - 8, ty + 5]])
    shoulders = np.array([[tx - 14, ty], [tx + 14, ty], [tx + 48, ty + 22], [tx + 48, R + 40], [tx - 48, R + 40], [tx - 48, ty + 22]])
    cv2.fillPoly(m, [at(neck), at(shoulders)], 255)
    m = cv2.resize(m.astype(np.float32) / 255.0, (R, R), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(m, (0, 0), 0.8)


def _shifts(heads, torsos, valid=None) -> np.ndarray:
    valid = np.ones((R, R), bool) if valid is None else valid
    mattes = np.stack([_bust(h, t) for h, t in zip(heads, torsos)])
    chins = np.array([(hx, hy + 21) for hx, hy in heads], np.float64)
    return body_motion.torso_shifts(mattes, continued_matte(mattes[0], valid), chins, valid) * R


def test_a_moved_torso_is_found_under_a_head_moving_on_its_own():
    n = 30
    heads = [(64 + 6 * np.sin(i), 50 + 3 * np.cos(i)) for i in range(n)]  # the head sways, not with the body
    ramp = np.clip(np.arange(n) / 10, 0, 1)[:, None]
    moves = ramp * [3.0, -9.0]  # the body rises and leans right over 10 frames, then stays there
    found = _shifts(heads, [(64 + dx, 80 + dy) for dx, dy in moves])
    assert found.shape == (n, 2) and found.dtype == np.float32
    np.testing.assert_array_equal(found[0], [0, 0])
    # a torso's shift changes only when the matte holds it for a few frames (STEP_COST): it may lag
    # the rise, not overshoot it, and then sits where the body is
    assert np.all(np.diff(found[:, 1]) <= 0) and np.all(found[:, 1] >= moves[:, 1] - 1)
    assert np.abs(found[15:] - moves[15:]).max() <= 1.0, found


def test_a_still_torso_stays_while_the_head_nods_and_turns():
    n = 10
    heads = [(64 + 8 * np.sin(0.7 * i), 48 + 6 * np.sin(1.3 * i)) for i in range(n)]
    found = _shifts(heads, [(64, 80)] * n)
    assert np.abs(found).max() < 0.1, found  # the sub-pixel refinement may see a hundredth of one


def test_one_flickering_matte_does_not_make_the_torso_jump():
    n = 9
    heads = [(64, 50)] * n
    torsos = [(64, 80)] * n
    torsos[4] = (64, 68)  # one frame's matte says 12 px up, its neighbours say still
    found = _shifts(heads, torsos)
    # the path stays; the flickering frame's own refinement may lean half a pixel towards its matte
    assert np.abs(np.delete(found, 4, 0)).max() < 0.1 and np.abs(found[4]).max() <= 0.5, found


def test_a_torso_drifting_by_fractions_of_a_pixel_is_found_to_a_fraction():
    """Whole-pixel shifts alone would hold 0 or jump to 1 (subpixel_offsets)."""
    n = 40
    moves = np.array([(0.0, 0.0)] + [(0.5, -0.25)] * 9 + [(2.5, -1.75)] * 30)
    found = _shifts([(64, 50)] * n, [(64 + dx, 80 + dy) for dx, dy in moves])
    assert np.abs(found[1:10] - moves[1:10]).max() <= 0.05, found[:10]
    # after the larger move the whole-pixel path sits within a pixel of it (its shift cost holds the
    # vertical, which these shoulders tell weakly, at -1), and the refinement reaches half a pixel on
    assert np.abs(found[20:, 0] - moves[20:, 0]).max() <= 0.05, found[20:]
    assert np.all(found[20:, 1] <= -1.5) and np.all(found[20:, 1] >= -2.0), found[20:]


def test_subpixel_offsets_is_the_parabola_vertex_and_stays_inside_half_a_pixel():
    x = np.arange(-2, 3, dtype=np.float64)
    costs = np.stack([np.add.outer((x - 0.3) ** 2, (x + 0.2) ** 2),  # minimum at (x -0.2, y 0.3) from the middle
                      np.add.outer(x ** 2, -np.abs(x)),  # y: opens downwards along x -> 0
                      np.add.outer(x ** 2, x ** 2)]).astype(np.float32)  # chosen at the search's edge -> 0
    path = np.array([12, 12, 10])  # (j, i) = (2, 2), (2, 2), (2, 0)
    off = body_motion.subpixel_offsets(costs, path)
    np.testing.assert_allclose(off[0], [-0.2, 0.3], atol=1e-6)
    assert off[1, 0] == 0 and off[2, 0] == 0
    assert np.all(np.abs(off) <= 0.5)


def test_a_torso_rising_from_below_the_source_is_found():
    """A crop whose source ends above its bottom (the torso continues past it, as portraits do)."""
    valid = np.zeros((R, R), bool)
    valid[:110] = True
    n = 24
    moves = np.clip(np.arange(n) / 8, 0, 1) * -10.0
    mattes = np.stack([_bust((64, 52), (64, 96 + dy)) * valid for dy in moves])
    chins = np.tile([64.0, 73.0], (n, 1))
    found = body_motion.torso_shifts(mattes, continued_matte(mattes[0], valid), chins, valid) * R
    assert np.abs(found[12:, 1] - moves[12:]).max() <= 1.0 and np.abs(found[:, 0]).max() <= 1.0, found


@pytest.mark.slow
def test_real_footage(shared_data):
    """d20 rises in his chair within his first 3 s (his shirt comes up from the crop's bottom);
    W011's shoulders stay (her head moves)."""
    pytest.importorskip("mediapipe")
    from model.data.driving_cache import driving_video_track

    _, rising, _ = driving_video_track(shared_data / "videos/LivePortrait/d20.mp4", None, progress=False, max_frames=80)
    _, still, _ = driving_video_track(shared_data / "videos/dreamtalk/W011_front_neutral_level1_001.mp4", None,
                                   progress=False, max_frames=80)
    rising, still = rising * R, still * R
    assert rising[-1, 1] <= -6 and np.all(np.diff(rising[:, 1]) <= 1), rising[::8]
    assert np.abs(still).max() <= 5 and np.abs(still[:, 1]).max() <= 1, still[::8]


def test_moved_torso_moves_the_body_and_continues_its_edges():
    """A body moved up brings its bottom row on below it, blurred the more the farther (a narrow
    detail at the edge, a white shirt between lapels, does not run down as a streak); moved aside,
    its side column repeats."""
    torso = torch.zeros(4, 32, 32)
    torso[:, 20:] = 1.0  # a body below row 20 ...
    torso[:, 20:, 15:17] = 3.0  # ... with a bright two-column detail down to the bottom row
    same = moved_torso(torso, None, (32, 32))
    assert same.shape == (1, 4, 32, 32) and torch.equal(same[0], torso)
    assert torch.equal(moved_torso(torso, torch.zeros(2, 2), (32, 32))[0], torso)
    up = moved_torso(torso, torch.tensor([[0.0, -12 / 32], [2 / 32, 0.0]]), (32, 32))
    assert up.shape == (2, 4, 32, 32)
    assert torch.allclose(up[0, :, 8:20], torso[:, 20:32])  # risen by 12 px
    below = up[0, 0, 20:]  # rows 1..12 past the portrait's bottom row
    peak, spread = below[:, 15:17].mean(1), (below > 1.05).sum(1)
    assert torch.allclose(below[0], torso[0, 31], atol=0.35)  # right under the edge: nearly the edge row
    assert (peak[1:] <= peak[:-1] + 1e-5).all() and peak[-1] < 2.0 and spread[-1] > spread[0]  # blurred, not a streak
    assert torch.allclose(below.mean(1), torso[0, 31].mean().expand(12), atol=0.05)  # the same colour on the whole
    assert torch.allclose(up[1, :, :, 2:], torso[:, :, :30]) and torch.allclose(up[1, :, :, :2], torso[:, :, :1].expand(4, 32, 2))
