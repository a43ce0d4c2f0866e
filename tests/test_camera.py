import math

import torch

from model.geometry import camera


def test_crop_intrinsics_default_focal_and_centre():
    K = camera.crop_intrinsics(512)
    assert K[0, 0] == 2.5 * 512 and K[1, 1] == 2.5 * 512
    assert K[0, 2] == 255.5 and K[1, 2] == 255.5
    assert abs(camera.fov_degrees(K, 512).item() - 22.62) < 0.01


def test_invert_and_relative_pose():
    R = camera.euler_rotation(0.3, -0.2, 0.1)
    T = camera.make_pose(R, torch.tensor([0.1, -0.2, 1.0]))
    assert torch.allclose(camera.invert_pose(T) @ T, torch.eye(4), atol=1e-6)
    T2 = camera.make_pose(camera.euler_rotation(-0.1, 0.0, 0.2), torch.tensor([0.0, 0.1, 0.9]))
    rel = camera.relative_pose(T, T2)
    assert torch.allclose(rel @ T, T2, atol=1e-6)


def test_euler_round_trip():
    angles = torch.tensor([[0.4, -0.3, 0.2], [-1.0, 0.5, -2.0]])
    R = camera.euler_rotation(angles[:, 0], angles[:, 1], angles[:, 2])
    assert torch.allclose(camera.rotation_to_euler(R), angles, atol=1e-5)


def test_look_at_puts_target_on_axis():
    eye = torch.tensor([0.3, -0.1, -1.0])
    T = camera.look_at(eye, torch.zeros(3))
    target_cam = T[:3, :3] @ torch.zeros(3) + T[:3, 3]
    assert torch.allclose(target_cam[:2], torch.zeros(2), atol=1e-6)
    assert abs(target_cam[2].item() - eye.norm().item()) < 1e-6


def test_stereo_pair_baseline_along_camera_x():
    T = camera.make_pose(camera.euler_rotation(0.2, 0.1, 0.0), torch.tensor([0.0, 0.0, 1.0]))
    left, right = camera.stereo_pair(T, baseline=0.05)
    c_left = camera.invert_pose(left)[:3, 3]
    c_right = camera.invert_pose(right)[:3, 3]
    x_axis_world = T[0, :3]  # camera x axis in head coordinates
    assert abs((c_right - c_left).norm().item() - 0.05) < 1e-6
    assert torch.allclose((c_right - c_left) / 0.05, x_axis_world, atol=1e-5)
    # a point straight ahead appears further right in the left eye: positive disparity f*b/z
    K = camera.crop_intrinsics(512)
    p = torch.zeros(1, 3)
    ul, _ = camera.project(K, left, p)
    ur, _ = camera.project(K, right, p)
    assert abs((ul - ur)[0, 0].item() - K[0, 0].item() * 0.05 / 1.0) < 1e-3


def test_dolly_zoom_keeps_head_size():
    K = camera.crop_intrinsics(256)
    T = camera.translation(torch.tensor([0.0, 0.0, 1.0]))
    K2, T2 = camera.dolly_zoom(K, T, 2.0)
    # a 20 cm wide head at the joint keeps its pixel width
    pts = torch.tensor([[-0.1, 0.0, 0.0], [0.1, 0.0, 0.0]])
    u1, _ = camera.project(K, T, pts)
    u2, z2 = camera.project(K2, T2, pts)
    assert torch.allclose(u1, u2, atol=1e-3)
    assert torch.allclose(z2, torch.full((2,), 2.0))


def test_orbit_keeps_joint_fixed_and_turns_view():
    T = camera.translation(torch.tensor([0.0, 0.0, 1.0]))
    T2 = camera.orbit(T, math.radians(10.0))
    assert torch.allclose(T2[:3, 3], T[:3, 3], atol=1e-6)  # joint still at (0, 0, 1)
    centre = camera.invert_pose(T2)[:3, 3]
    assert abs(centre.norm().item() - 1.0) < 1e-6
    assert abs(abs(centre[0].item()) - math.sin(math.radians(10.0))) < 1e-6


def test_scale_intrinsics_keeps_pixel_centres():
    K = camera.crop_intrinsics(512)
    K2 = camera.scale_intrinsics(K, 0.25)
    assert torch.allclose(K2, camera.crop_intrinsics(128))


def test_apply_matrix_rounds_like_its_numpy_twin_on_any_cpu():
    # the viewer's torch-free worker must give the training code's conditions bit for bit; a matmul
    # rounds differently with and without fused multiply-adds, depending on the CPU's BLAS kernel
    from model.coldstart.raster import apply_matrix as twin

    g = torch.Generator().manual_seed(0)
    points, M = torch.randn(4, 500, 3, generator=g), torch.randn(4, 3, 3, generator=g)
    out = camera.apply_matrix(points, M)
    assert torch.equal(out, torch.from_numpy(twin(points.numpy(), M.numpy())))
    torch.testing.assert_close(out, points @ M.transpose(1, 2))
    assert torch.equal(camera.apply_matrix(points[0], M[0]), out[0])  # unbatched matrices too
