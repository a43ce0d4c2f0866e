import torch
import pytest

from model.geometry import camera, mpi
from model.training import losses, lpips


def _render(alpha, frontal=None, bg=None):
    B, D, H, W = alpha.shape
    frontal = torch.zeros(B, 3, H, W) if frontal is None else frontal
    K = camera.crop_intrinsics(W).expand(B, 3, 3)
    depths = mpi.plane_depths(torch.full((B,), 0.85), torch.full((B,), 1.05), D)
    return mpi.render(frontal, frontal, alpha, depths, K, K, torch.eye(4).expand(B, 4, 4), background=bg)


def test_smoothness_zero_for_planar_disparity_and_damped_at_edges():
    flat = torch.full((1, 1, 16, 16), 1.1)
    img = torch.zeros(1, 3, 16, 16)
    assert losses.edge_aware_smoothness(flat, img) < 1e-7
    step = flat.clone()
    step[..., 8:] = 1.2
    rough = losses.edge_aware_smoothness(step, img)
    edge_img = img.clone()
    edge_img[..., 8:] = 1.0  # an image edge where the disparity jumps: allowed
    assert rough > 0 and losses.edge_aware_smoothness(step, edge_img) < 0.1 * rough
    # scale invariant: doubling disparity changes nothing
    assert torch.allclose(losses.edge_aware_smoothness(2 * step, img), rough)


def test_disparity_loss_only_where_mesh_covers():
    d = torch.full((1, 1, 4, 4), 1.0)
    mesh = torch.full((1, 1, 4, 4), 1.0)
    mesh[..., :2] = 2.0
    cov = torch.zeros(1, 1, 4, 4)
    cov[..., 2:] = 1.0
    assert losses.disparity_loss(d, mesh, cov) == 0
    cov[..., :2] = 1.0
    assert abs(losses.disparity_loss(d, mesh, cov).item() - 0.25) < 1e-6


def test_mpi_losses_zero_for_perfect_prediction_and_weighted_sum():
    H = W = 16
    alpha = torch.zeros(1, 4, H, W)
    alpha[:, 2, 4:12, 4:12] = 1.0
    frontal = torch.rand(1, 3, H, W) * 2 - 1
    bg = torch.rand(1, 3, H, W) * 2 - 1
    r = _render(alpha, frontal, bg)
    matte = r.mask.detach()
    total, parts = losses.mpi_losses(r, r.rgb.detach(), matte)
    assert parts["l2_full"] == 0 and parts["l2_foreground"] == 0 and parts["mask"] == 0
    assert set(parts) == {"l2_full", "l2_foreground", "mask", "smoothness"}
    wrong_matte = torch.zeros_like(matte)
    total2, parts2 = losses.mpi_losses(r, r.rgb.detach(), wrong_matte)
    expected = parts2["l2_full"] + parts2["l2_foreground"] + 0.01 * parts2["mask"] + 0.01 * parts2["smoothness"]
    assert abs(total2.item() - expected) < 1e-6 and parts2["mask"] > 0


def test_lpips_layout_loads_from_file_and_measures(tmp_path):
    torch.manual_seed(0)
    model = lpips.LPIPS()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    for k in range(5):  # LPIPS linear weights are non-negative
        w = getattr(model, f"lin{k}").model[1].weight
        w.data = w.data.abs()
    path = tmp_path / "lpips_alex.pth"
    torch.save(model.state_dict(), path)
    loaded = lpips.load_lpips(path)
    a = torch.rand(2, 3, 64, 64) * 2 - 1
    b = a + 0.3 * torch.randn_like(a)
    assert torch.all(loaded(a, a) < 1e-6)
    assert torch.all(loaded(a, b) > 0)
    assert torch.allclose(loaded(a, b), model(a, b))
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    assert torch.allclose(lpips.load_lpips(tmp_path / "w.safetensors")(a, b), model(a, b))


def test_lpips_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        lpips.load_lpips(tmp_path / "missing.pth")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not LPIPS"):
        lpips.load_lpips(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"definitely not a tensor file")
    with pytest.raises(ValueError, match="safely"):
        lpips.load_lpips(tmp_path / "junk.pth")
