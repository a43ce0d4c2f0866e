"""model/geometry/portrait_warp.py, the identity condition, on real footage: a frame warped onto its
own mesh gives itself back; onto a later frame's mesh it lands where that frame's face is; inside
the mouth and on the side of the head turned away it says it does not know; and the warp
baseline's frontal view is the condition composited over the background."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.dataset import PreparedDataset
from model.data.pairs import VideoSource
from model.evaluation.generators import warp_generator
from model.evaluation.metrics import psnr
from model.geometry import mpi
from model.geometry.camera import euler_rotation
from model.geometry.raster import rasterize
from model.geometry.portrait_warp import (EYES_ABOVE_JOINT, HAIR_LEAN, IDENTITY_CHANNELS, SEAM_LEVELS, fill_in, head_proxy_positions, mouth_mask,
                                          portrait_warp, seam_shift, warp_composite)
from model.net.config import get_config
from tests.train_fixtures import one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CFG = get_config("tiny")


@pytest.fixture(scope="module")
def source(shared_data, tmp_path_factory) -> VideoSource:
    data = prepared_dataset(shared_data, tmp_path_factory)
    return VideoSource(PreparedDataset(data)[0], "v", CFG, None)


def _warp(src: VideoSource, ref: int, vertices, T) -> torch.Tensor:
    i = np.array([ref])
    return portrait_warp(src.frames(i)[0], src.mattes(i)[0], src.vertices[ref], src.T[ref], vertices, T, src.topology,
                         src.K, (src.res, src.res))


def test_a_frame_onto_its_own_mesh_gives_itself_back(source):
    out = _warp(source, 0, source.vertices[:1], source.T[:1])
    assert out.shape == (1, IDENTITY_CHANNELS, source.res, source.res)
    rgb, alpha, conf = out[:, :3], out[:, 3:4], out[:, 4:5]
    image, matte = source.frames(np.array([0])), source.mattes(np.array([0]))
    on_mesh = source.own(np.array([0]))[1] > 0.5
    trusted = (conf > 0.5) & on_mesh
    assert trusted.float().mean() > 0.1  # a frontal face: most of it is trusted
    assert psnr(rgb, image, trusted) > 28
    off = ~on_mesh
    # off the mesh the identity homography: the matted portrait itself (premultiplied); next to the
    # mesh up to the mesh's own sampling positions (interpolated with perspective-correct weights,
    # a few hundredths of a pixel from the pixel centres), which the head plane continues there
    assert torch.allclose(alpha[off], matte[off], atol=2e-3)
    assert torch.allclose(rgb.masked_select(off.expand_as(rgb)), (image * matte).masked_select(off.expand_as(rgb)), atol=4e-3)


def test_fill_in_continues_known_values_a_few_pixels_and_no_farther():
    H = W = 64
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    dist = ((xs - 32) ** 2 + (ys - 32) ** 2).sqrt() - 12  # px outside a disk of radius 12
    known = (dist <= 0).float()[None, None]
    values = torch.stack([3.0 + 0.05 * xs, -2.0 + 0.0 * ys])[None]
    out = fill_in(values, known, SEAM_LEVELS)
    inside = dist <= 0
    assert torch.allclose(out[0][:, inside], values[0][:, inside], atol=1e-5)  # known values stay
    # past the border the values go on, fading out: a constant -2 stays negative and shrinks ring by ring
    rings = [float(out[0, 1][(dist > r) & (dist <= r + 1)].mean()) for r in range(0, 8)]
    assert -2.0 < rings[0] < -1.0 and all(a < b for a, b in zip(rings, rings[1:]))
    assert (out[0, 1][dist > 0] <= 0).all() and (out[0, 1][dist > 0] >= -2.0 - 1e-5).all()
    assert (out[0][:, dist > 2 ** (SEAM_LEVELS + 1) + 2] == 0).all()  # and far away nothing is added


def test_near_the_mesh_the_head_plane_takes_over_the_meshs_sampling_positions(source):
    # later frames whose head moved: the mesh and the head plane map its border differently
    T_p = source.T[0]
    pv = source.vertices[0] @ T_p[:3, :3].T + T_p[:3, 3]
    uv_p = (pv @ source.K.T)[:, :2] / pv[:, 2:]
    pixel = mpi._pixel_grid(source.res, source.res, T_p)[..., :2].permute(2, 0, 1)[None]
    box = lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)  # noqa: E731
    jumps = []
    for k in range(1, len(source)):
        T = source.T[k:k + 1]
        verts = source.vertices[k:k + 1] @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
        frags = rasterize(verts, source.topology.faces, source.K, (source.res,) * 2)
        mesh_uv, cov = frags.interpolate(uv_p, source.topology.faces), frags.coverage
        plane_uv = head_proxy_positions(source.K, T_p, T, (source.res,) * 2)
        border = (torch.nn.functional.max_pool2d(cov, 3, 1, 1) > 0) & (cov == 0)  # first pixels off the mesh
        # a seam is a jump in the sampling offset (where a pixel samples the portrait, minus the
        # pixel): each border pixel against the mean offset of its covered 3x3 neighbours
        neighbour = box((mesh_uv - pixel) * cov) / box(cov).clamp(min=1e-6)
        jump_plane = (plane_uv - pixel - neighbour).norm(dim=1, keepdim=True)[border]
        jump_seam = (plane_uv + seam_shift(mesh_uv, plane_uv, cov) - pixel - neighbour).norm(dim=1, keepdim=True)[border]
        jumps.append((float(jump_plane.mean()), float(jump_seam.mean())))
    plane, seam = np.array(jumps).T
    assert plane.max() > 0.2, "the fixture's head must move enough for a seam"  # 0.33 px at 64^2
    moved = plane > 0.1
    assert np.all(seam[moved] < 0.5 * plane[moved]), jumps


def _head_at(yaw_deg: float = 0.0, pitch_deg: float = 0.0, z: float = 0.8) -> torch.Tensor:
    """(4, 4) camera from head: the head z m ahead, turned by yaw (about its down axis) and pitch."""
    T = torch.eye(4)
    T[:3, :3] = euler_rotation(np.radians(yaw_deg), np.radians(pitch_deg), 0.0)
    T[2, 3] = z
    return T


K_PROXY = torch.tensor([[320.0, 0.0, 63.5], [0.0, 320.0, 63.5], [0.0, 0.0, 1.0]])


def test_the_head_proxy_of_a_still_head_is_the_portrait_itself_and_has_no_seam_when_it_turns():
    T_p = _head_at()
    still = head_proxy_positions(K_PROXY, T_p, T_p[None], (128, 128))
    pixel = mpi._pixel_grid(128, 128, T_p)[..., :2].permute(2, 0, 1)[None]
    assert torch.allclose(still, pixel, atol=1e-3)
    # turned and nodded: the sampling positions change smoothly from row to row, across the eyes'
    # height where the leaning plane meets the upright one as well
    moved = head_proxy_positions(K_PROXY, T_p, _head_at(12.0, 8.0)[None], (128, 128))
    step = (moved[0, :, 1:] - moved[0, :, :-1]).norm(dim=0)  # (127, 128) px per row
    kink_row = int(round(float(K_PROXY[1, 1] * -EYES_ABOVE_JOINT / 0.8 + K_PROXY[1, 2])))
    assert float(step.max()) < 1.5 and float(step[kink_row - 3:kink_row + 3].max()) < 1.5
    assert float((moved - pixel).norm(dim=1).mean()) > 1.0, "the head must move for this test to mean anything"


def test_hair_above_the_forehead_moves_with_a_turning_head_more_than_the_joints_plane_would():
    # the head turns (the nose moves sideways in the image) and nods (the nose moves down):
    # the hair above the eyes lies in front of the joint and follows the face part of the way
    # (measured on held-out videos: 0.12-0.22 px per degree more than the joint's plane gave)
    T_p = _head_at()
    for turn, axis in (((10.0, 0.0), 0), ((0.0, 10.0), 1)):
        T = _head_at(*turn)[None]
        nose = torch.tensor([0.0, 0.0, -0.1, 1.0])
        nose_motion = ((K_PROXY @ (T[0] @ nose)[:3]) / (T[0] @ nose)[2] - (K_PROXY @ (T_p @ nose)[:3]) / (T_p @ nose)[2])[axis]
        lean = head_proxy_positions(K_PROXY, T_p, T, (128, 128))
        upright = head_proxy_positions(K_PROXY, T_p, T, (128, 128), lean=0.0)
        top, below = (slice(20, 40), slice(44, 84)), (slice(80, 100), slice(44, 84))  # above the eyes (row ~52), below
        # a pixel's content came from where it samples: content moved by (pixel - sample)
        gain = float((upright - lean)[0, axis][top].mean())
        sign, size = float(np.sign(float(nose_motion))), abs(float(nose_motion))
        assert size > 5.0
        assert 0.05 * size < sign * gain < 0.5 * size, (turn, gain, float(nose_motion))
        assert torch.allclose(lean[0, :, below[0], below[1]], upright[0, :, below[0], below[1]])  # below the eyes, the joint's plane as before
    assert HAIR_LEAN > 0


def test_onto_a_later_frame_it_lands_on_that_frames_face(source):
    k = len(source) - 1
    out = _warp(source, 0, source.vertices[k:k + 1], source.T[k:k + 1])
    frames = source.frames(np.array([0, k]))
    face = (source.own(np.array([k]))[1] > 0.5) & (out[:, 4:5] > 0.5)
    moved = float((source.T[k, :3, 3] - source.T[0, :3, 3]).norm())
    assert moved > 0.002, "the fixture video's head must move for this test to mean anything"
    assert psnr(out[:, :3], frames[1:], face) > psnr(frames[:1], frames[1:], face) + 1.0


def test_mouth_and_turned_away_side_have_no_confidence(source):
    faces, mouth = source.topology.faces, source.topology.mouth
    assert 10 < int(mouth.sum()) < 40
    # open the mouth: move the lower-lip / jaw side of the inner-mouth triangles down 1.5 cm
    v = source.vertices[0].clone()
    lower = v[:, 1] > v[faces[mouth]].reshape(-1, 3)[:, 1].mean()
    jaw = lower & (v[:, 1] < v[:, 1].max()) & ((v[:, 0] - v[faces[mouth]].reshape(-1, 3)[:, 0].mean()).abs() < 0.04)
    v[jaw, 1] += 0.015
    out = _warp(source, 0, v[None], source.T[:1])
    frags = rasterize(v[None] @ source.T[0, :3, :3].T + source.T[0, :3, 3], faces, source.K, (source.res, source.res))
    in_mouth = (mouth[frags.face.clamp(min=0)] & (frags.face >= 0))[0]
    assert int(in_mouth.sum()) > 3
    assert (out[0, 4][in_mouth] == 0).all() and (out[0, :3][:, in_mouth] == -1).all()  # black, not trusted
    assert torch.equal(mouth_mask(out)[0, 0] > 0, in_mouth)  # what the network is told is the mouth
    # turn the head 70 degrees: much of what the driving view shows is edge-on or hidden in the portrait
    T = source.T[:1].clone()
    T[0, :3, :3] = T[0, :3, :3] @ euler_rotation(1.22, 0.0, 0.0)
    turned = _warp(source, 0, source.vertices[:1], T)
    on_turned = rasterize(source.vertices[:1] @ T[0, :3, :3].T + T[0, :3, 3], faces, source.K, (source.res, source.res)).face[0] >= 0
    on_front = (frags.face[0] >= 0) & ~in_mouth
    low_front, low_turned = float((out[0, 4][on_front] < 0.3).float().mean()), float((turned[0, 4][on_turned] < 0.3).float().mean())
    assert low_turned > 0.15 and low_turned > 3 * low_front, (low_turned, low_front)


def test_warp_baseline_frontal_view_is_the_condition_over_the_background(source):
    from model.diffusion.process import Conditions
    from model.geometry import conditions as mesh_cond

    n = 3
    idx = np.arange(n)
    ident = _warp(source, 0, source.vertices[idx], source.T[idx])
    coords, cov, disp = source.own(idx)
    alpha = mesh_cond.alpha_planes(disp, cov, mesh_cond.mpi_depths(source.T[idx], CFG.planes))
    bg = source.background()[None]
    cond = Conditions(coords=coords[None], mesh_alpha=alpha[None], portrait=torch.zeros(1, 3, 1, 1), first_frame=bg,
                      first_frame_flag=torch.ones(1), background=bg, identity=ident[None])
    pred = warp_generator(cond)
    frontal = mpi.render_in_mpi_camera(pred.frontal[0], pred.residual[0], pred.alpha[0], bg.expand(n, -1, -1, -1))
    assert psnr(frontal, warp_composite(ident, bg), None) > 45


def test_unmixed_condition_over_its_background_gives_the_portrait_back_at_soft_edges(source):
    """identity_unmix: the portrait's colour is solved from image = m F + (1 - m) B, so frame 0's
    condition onto its own meshes, composited over the background, is frame 0 where the matte is
    soft (hair); the raw image, matted, put the background in twice there."""
    import dataclasses

    unmixed = VideoSource(source.video, "v", dataclasses.replace(CFG, identity_unmix=True), None)
    i = np.array([0])
    image, matte, bg = source.frames(i), source.mattes(i), source.background()[None]
    # the frame's real pixels: outside them the condition carries the person continued past the edge
    real = source.valid()[None] > 0.5
    soft = ((matte > 0.1) & (matte < 0.9) & (source.own(i)[1] < 0.5) & real).expand_as(image)
    assert soft.float().mean() > 0.005, "the fixture's portrait needs soft matte edges"
    raw = warp_composite(source.identity(0, source.vertices[:1], source.T[:1]), bg)
    fixed = warp_composite(unmixed.identity(0, source.vertices[:1], source.T[:1]), bg)
    err_raw, err_fixed = (float((x - image).abs()[soft].mean()) for x in (raw, fixed))
    assert err_fixed < 0.01 and err_fixed < 0.25 * err_raw, (err_fixed, err_raw)


def test_training_pairs_move_the_body_by_the_videos_torso_motion(source, monkeypatch):
    """VideoSource.torso_track is measured from the prepared mattes (model/data/body_motion.py);
    an L_mpi pair's condition moves the reference's body by target minus reference, an L_side
    pair's keeps it (its head keeps the reference pose)."""
    from model.data.pairs import PairSampler

    track = source.torso_track
    assert track.shape == (len(source), 2) and np.array_equal(track[0], [0, 0])
    assert torch.equal(source.torso_from(3, np.array([3])), torch.zeros(1, 2))
    import dataclasses

    cfg = dataclasses.replace(CFG, identity_warp=True)
    sampler = PairSampler(source.video.path.parent, cfg)
    src = sampler.sources[0]
    # a made-up rise of the body after frame 4, so that the test does not hang on this clip's own motion
    rise = np.zeros((len(src), 2), np.float32)
    rise[4:, 1] = -0.1
    src.__dict__["torso_track"] = rise
    src.__dict__["hair_track"] = None  # the hair on the head's poses (tests/test_hair_motion.py)
    picks = [(0, 0, 2)]  # reference frame 0, a clip from frame 2
    moved = sampler.make_batch(picks, side=False).identity[0]
    clip = np.arange(2, 2 + cfg.frames)
    still = src.identity(0, src.vertices[clip], src.T[clip])
    torso = src.identity(0, src.vertices[clip], src.T[clip], src.torso_from(0, clip))
    assert torch.equal(moved, torso)
    assert torch.equal(moved[:2], still[:2]) and (moved[2:] - still[2:]).abs().mean() > 1e-3
    side = sampler.make_batch(picks, side=True).identity[0]
    assert torch.equal(side, src.identity(0, src.vertices[clip], src.T[0].expand(cfg.frames, 4, 4).contiguous()))


def test_the_body_begins_under_the_chin_and_beside_the_neck_from_above_it():
    """body_weight: 0 on the head, 1 a band below the chin; beside the neck (farther than NECK_SIDE
    from the face's midline) the body begins SHOULDER_RISE above the chin, so that shoulders as high
    as the chin stay with the body, not roll with the head; it follows the face's tilt."""
    from model.geometry.portrait_warp import NECK_SIDE, SHOULDER_RISE, body_weight

    H = W = 128
    bridge, chin = torch.tensor([64.0, 40.0]), torch.tensor([64.0, 80.0])  # 40 px bridge to chin
    band = 4.0
    w = body_weight(torch.zeros(1), bridge, chin, band, (H, W))[0]
    assert w.shape == (H, W) and float(w.min()) == 0.0 and float(w.max()) == 1.0
    assert float(w[70, 64]) == 0.0 and float(w[85, 64]) == 1.0  # the midline: the chin's line
    side = int(64 + NECK_SIDE * 40 + band + 2)
    level = int(80 - SHOULDER_RISE * 40)
    assert float(w[level + 6, side]) == 1.0 and float(w[level - 6, side]) == 0.0  # beside the neck: from above the chin
    assert float(w[level + 6, 64 + int(NECK_SIDE * 40) - 2]) == 0.0  # within the neck's width: still the head's
    # a face tilted by 90 degrees (down = +x): the same, turned
    t = body_weight(torch.zeros(1), torch.tensor([40.0, 64.0]), torch.tensor([80.0, 64.0]), band, (H, W))[0]
    torch.testing.assert_close(t, w.T)


def test_a_head_risen_off_the_still_body_leaves_no_gap_at_the_neck(source):
    """The driver lifts the head 3 cm; the body stays. Under the portrait's chin the neck is whole
    (it faded in over the neck band, and a rising head left a translucent gap of background between
    chin and collar); above it, where the risen chin was, the neck's top row runs on up behind it
    (NECK_BEHIND) in the neck's colour."""
    from model.geometry.portrait_warp import NECK_BAND

    T = source.T[:1].clone()
    T[0, 1, 3] -= 0.03  # up (y down in the camera)
    out = _warp(source, 0, source.vertices[:1], T)
    alpha = out[0, 3]
    matte = source.mattes(np.array([0]))[0, 0]
    image = source.frames(np.array([0]))[0]
    chin = source.landmarks(0)[152]
    band = float(source.K[0, 0]) * NECK_BAND / float(T[0, 2, 3])  # px
    rise = float(source.K[1, 1]) * 0.03 / float(T[0, 2, 3])
    assert rise > 3
    cols = slice(int(chin[0]) - 3, int(chin[0]) + 4)
    below = slice(int(np.ceil(chin[1])) + 1, int(chin[1] + band))
    shown = matte[below, cols] > 0.99  # the portrait's own neck there
    # the fixture's photo ends two rows under the chin: one row of its own neck there at least
    assert shown.sum() >= 7 and float(alpha[below, cols][shown].min()) > 0.95  # 0.16 when the neck faded in
    above = slice(int(np.ceil(chin[1] - rise)) + 1, int(chin[1]))  # where the chin was
    assert float(alpha[above, cols].min()) > 0.8
    neck = image[:, int(np.ceil(chin[1])) + 1, cols].mean(-1)  # the neck's top row
    colour = out[0, :3, above, cols] / alpha[above, cols].clamp(min=1e-6)
    assert float((colour - neck[:, None, None]).abs().mean()) < 0.15
