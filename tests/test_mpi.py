import math

import torch

from model.geometry import camera, mpi


def _random_mpi(B=2, D=6, H=24, W=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    frontal = torch.rand(B, 3, H, W, generator=g)
    residual = torch.rand(B, 3, H, W, generator=g)
    alpha = torch.rand(B, D, H, W, generator=g)
    return frontal, residual, alpha


def test_plane_depths_back_to_front_equal_disparity():
    d = mpi.plane_depths(0.85, 1.05, 24)
    assert d.shape == (24,)
    assert abs(d[0].item() - 1.05) < 1e-6 and abs(d[-1].item() - 0.85) < 1e-6
    steps = (1.0 / d).diff()
    assert torch.all(steps > 0) and torch.allclose(steps, steps[0].expand_as(steps), atol=1e-6)
    near, far = mpi.near_far(1.0)
    assert abs(near.item() - 0.85) < 1e-7 and abs(far.item() - 1.05) < 1e-7


def test_transmittance_and_colour_model():
    alpha = torch.tensor([0.5, 0.25, 0.2]).view(3, 1, 1)
    T = mpi.transmittance(alpha)
    assert torch.allclose(T.flatten(), torch.tensor([0.75 * 0.8, 0.8, 1.0]))
    frontal, residual = torch.ones(3, 1, 1), torch.zeros(3, 1, 1)
    c = mpi.layer_colours(frontal, residual, alpha)
    assert torch.allclose(c[:, 0].flatten(), T.flatten())


def test_single_opaque_plane_shifts_by_f_b_over_z():
    H = W = 64
    z = 0.9
    K = camera.crop_intrinsics(W).unsqueeze(0)
    # a vertical bar texture on one opaque plane at depth z
    frontal = torch.zeros(1, 3, H, W)
    frontal[..., 20:24] = 1.0
    alpha = torch.zeros(1, 3, H, W)
    alpha[:, 1] = 1.0
    depths = torch.tensor([[1.05, z, 0.85]])
    # plane at index 1 must be exactly z: build depths directly
    b = 0.01
    T = camera.translation(torch.tensor([[-b, 0.0, 0.0]]))  # camera moved by +b along x
    out = mpi.render(frontal, frontal, alpha, depths, K, K, T).rgb
    f = K[0, 0, 0].item()
    shift = f * b / z
    col = out[0, 0, H // 2]
    src_col = frontal[0, 0, H // 2]
    xs = torch.arange(W, dtype=torch.float32)
    centroid_src = (src_col * xs).sum() / src_col.sum()
    centroid_out = (col * xs).sum() / col.sum()
    assert abs((centroid_src - centroid_out).item() - shift) < 1e-3


def test_identity_camera_returns_composite():
    frontal, residual, alpha = _random_mpi()
    B, D = alpha.shape[:2]
    K = camera.crop_intrinsics(32).expand(B, 3, 3)
    T = torch.eye(4).expand(B, 4, 4)
    depths = mpi.plane_depths(torch.full((B,), 0.85), torch.full((B,), 1.05), D)
    bg = torch.rand(B, 3, 24, 32)
    r = mpi.render(frontal, residual, alpha, depths, K, K, T, background=bg)
    ref = mpi.render_in_mpi_camera(frontal, residual, alpha, bg)
    assert torch.allclose(r.rgb, ref, atol=1e-5)
    assert torch.allclose(r.mask, 1 - torch.prod(1 - alpha, 1, keepdim=True), atol=1e-5)


def test_frontal_view_is_the_composite_of_the_layer_colours():
    """render_in_mpi_camera sums over the alpha planes only; it must equal the definition, the
    per-plane colours composited, in value and in gradient (training renders through it)."""
    frontal, residual, alpha = (x.requires_grad_() for x in _random_mpi(B=3, D=12))
    bg = torch.rand(3, 3, 24, 32, requires_grad=True)
    for background in (bg, None):
        fast = mpi.render_in_mpi_camera(frontal, residual, alpha, background)
        slow, _, _ = mpi.composite(mpi.layer_colours(frontal, residual, alpha), alpha.unsqueeze(2), background)
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)
        weights = torch.rand_like(fast)
        inputs = (frontal, residual, alpha) + ((bg,) if background is not None else ())
        g_fast = torch.autograd.grad((fast * weights).sum(), inputs)
        g_slow = torch.autograd.grad((slow * weights).sum(), inputs)
        for a, b in zip(g_fast, g_slow):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_one_opaque_plane_composite_is_its_colour():
    frontal, residual, _ = _random_mpi(B=1, D=4)
    alpha = torch.zeros(1, 4, 24, 32)
    alpha[:, 2] = 1.0
    out = mpi.render_in_mpi_camera(frontal, residual, alpha, background=torch.rand(1, 3, 24, 32))
    # transmittance in front of plane 2 is 1 - alpha_3 = 1 -> colour is the frontal image
    assert torch.allclose(out, frontal, atol=1e-6)


def test_expected_disparity_of_opaque_plane():
    H = W = 32
    alpha = torch.zeros(1, 5, H, W)
    alpha[:, 3] = 1.0
    depths = mpi.plane_depths(torch.tensor([0.85]), torch.tensor([1.05]), 5)
    K = camera.crop_intrinsics(W).unsqueeze(0)
    r = mpi.render(torch.zeros(1, 3, H, W), torch.zeros(1, 3, H, W), alpha, depths, K, K, torch.eye(4).unsqueeze(0))
    assert torch.allclose(r.disparity, 1.0 / depths[0, 3].expand(1, 1, H, W), atol=1e-5)
    assert torch.allclose(r.mask, torch.ones(1, 1, H, W))


def test_gradients_reach_frontal_residual_alpha():
    frontal, residual, alpha = _random_mpi(B=1, D=4)
    frontal.requires_grad_(True)
    residual.requires_grad_(True)
    alpha.requires_grad_(True)
    K = camera.crop_intrinsics(32).unsqueeze(0)
    T = camera.orbit(camera.translation(torch.tensor([[0.0, 0.0, 1.0]])), math.radians(5.0)) @ camera.invert_pose(
        camera.translation(torch.tensor([[0.0, 0.0, 1.0]]))
    )
    depths = mpi.plane_depths(torch.tensor([0.85]), torch.tensor([1.05]), 4)
    r = mpi.render(frontal, residual, alpha, depths, K, K, T, background=torch.rand(1, 3, 24, 32))
    (r.rgb.sum() + r.disparity.sum()).backward()
    for t in (frontal, residual, alpha):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_homography_matches_point_projection():
    K = camera.crop_intrinsics(64).unsqueeze(0)
    T = camera.make_pose(camera.euler_rotation(0.1, -0.05, 0.02), torch.tensor([0.03, -0.02, 0.01])).unsqueeze(0)
    depths = torch.tensor([[1.0]])
    Hm = mpi.plane_homographies(K, K, T, depths)[0, 0]
    uv = torch.tensor([10.0, 40.0, 1.0])
    X = depths[0, 0] * torch.linalg.inv(K[0]) @ uv
    proj, _ = camera.project(K[0], T[0], X.unsqueeze(0))
    h = Hm @ uv
    assert torch.allclose(h[:2] / h[2], proj[0], atol=1e-3)
