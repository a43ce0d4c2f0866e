"""Checkpoints: safetensors round trip with config + training state, and clear errors."""
from __future__ import annotations

import pytest
import torch

from model.net.checkpoint import CheckpointError, load_checkpoint, load_model, read_config, save_checkpoint
from model.net.config import get_config
from model.net.unet import MPIUNet


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = MPIUNet(get_config("tiny"))
    with torch.no_grad():
        model.geometry.inject[0].weight.normal_()  # a non-zero zero conv must survive too
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, model.cfg, state={"step": 123, "stage": 2, "lr": 1e-4},
                    extra={"adam.m.0": torch.arange(5.0)})
    return path, model


def test_round_trip(saved) -> None:
    path, model = saved
    ckpt = load_checkpoint(path, "tiny")
    assert ckpt.config == get_config("tiny") and read_config(path) == get_config("tiny")
    assert ckpt.state == {"step": 123, "stage": 2, "lr": 1e-4}
    assert torch.equal(ckpt.extra["adam.m.0"], torch.arange(5.0))
    reloaded, _ = load_model(path, get_config("tiny"))
    for (k, a), (k2, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not path.with_suffix(".safetensors.tmp").exists()


def test_other_config_names_the_differing_fields(saved) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, "small")
    msg = str(info.value)
    assert "'tiny'" in msg and "'small'" in msg and "planes: 8 != 12" in msg and "res: 64 != 128" in msg
    assert "name" in msg and "frames: 8 != 16" in msg


def test_non_checkpoint_files_are_clear_errors(tmp_path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04 this is a pickle, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(junk)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not an im-portrait checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_the_header_is_read_as_the_safetensors_library_reads_it(saved, tmp_path) -> None:
    """read_config parses the header by hand (no NumPy / torch import in front of imp-viewer's
    worker): the same metadata as the library's, and a torn file is a clear error."""
    from safetensors import safe_open

    from model.net.checkpoint import _safetensors_metadata

    path, _ = saved
    with safe_open(str(path), framework="pt") as f:
        assert _safetensors_metadata(path) == f.metadata()
    data = path.read_bytes()
    for name, cut in (("short", data[:6]), ("torn", data[:200]), ("huge", (10**12).to_bytes(8, "little") + data[8:])):
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(cut)
        with pytest.raises(CheckpointError, match="not a safetensors file"):
            read_config(bad)


def test_export_weights_drops_optimiser_tensors_keeps_state(tmp_path):
    import torch

    from model.net.checkpoint import export_weights, load_checkpoint, save_checkpoint
    from model.net.config import get_config
    from model.net.unet import MPIUNet

    cfg = get_config("tiny")
    torch.manual_seed(0)
    net = MPIUNet(cfg)
    src = save_checkpoint(tmp_path / "train.safetensors", net, cfg, {"step": 7, "variant": {"alpha_source": "network"}},
                          extra={"adam/m0": torch.ones(1000)})
    dst = export_weights(src, tmp_path / "demo.safetensors", note={"data": "15 videos"})
    out = load_checkpoint(dst)
    assert out.extra == {} and out.state["step"] == 7 and out.state["export"] == {"data": "15 videos"}
    for k, v in net.state_dict().items():
        assert torch.equal(out.weights[k], v)
    assert dst.stat().st_size < src.stat().st_size
    # the sampling settings to ship with (measured on held-out data) replace the config's, nothing else
    tuned = load_checkpoint(export_weights(src, tmp_path / "tuned.safetensors", sampling={"sample_steps": 4, "portrait_guidance": 1.0}))
    assert tuned.config.diffusion.sample_steps == 4 and tuned.config.diffusion.portrait_guidance == 1.0
    assert tuned.config.planes == cfg.planes and tuned.state["export_sampling"] == {"sample_steps": 4, "portrait_guidance": 1.0}
    with pytest.raises(ValueError, match="not sampling settings"):
        export_weights(src, tmp_path / "bad.safetensors", sampling={"planes": 4})


def test_export_gate_shift_moves_only_the_detail_gates(tmp_path):
    """export_weights(gate_shift=...) adds the shift to the DetailHead's two gate logits and to
    nothing else, records it, and refuses a config without the identity condition."""
    import torch

    from model.net.checkpoint import export_weights, load_checkpoint, save_checkpoint
    from model.net.config import get_config
    from model.net.unet import MPIUNet

    cfg = get_config("demo")
    torch.manual_seed(0)
    net = MPIUNet(cfg)
    src = save_checkpoint(tmp_path / "train.safetensors", net, cfg, {"step": 1})
    out = load_checkpoint(export_weights(src, tmp_path / "shifted.safetensors", gate_shift=-2.0))
    key = "colour_head.detail.conv2.bias"
    for k, v in net.state_dict().items():
        if k != key:
            assert torch.equal(out.weights[k], v), k
    torch.testing.assert_close(out.weights[key][6:], net.state_dict()[key][6:] - 2.0)
    assert torch.equal(out.weights[key][:6], net.state_dict()[key][:6])
    assert out.state["export_gate_shift"] == -2.0
    tiny = save_checkpoint(tmp_path / "tiny.safetensors", MPIUNet(get_config("tiny")), get_config("tiny"), {"step": 1})
    with pytest.raises(ValueError, match="identity condition"):
        export_weights(tiny, tmp_path / "bad.safetensors", gate_shift=-1.0)


@pytest.mark.parametrize("name, value", [("mouth_gate_shift", 2.0), ("person_gate_shift", -2.0), ("copy_exactly", True)])
def test_export_gate_shift_by_region_is_recorded_and_applied_on_load(tmp_path, name, value):
    """export_weights(mouth_gate_shift= / person_gate_shift= / copy_exactly=...) changes no weight; load_model gives
    it to the DetailHead; a later export without it keeps it; a config without the identity
    condition refuses it."""
    import torch

    from model.net.checkpoint import export_weights, load_checkpoint, load_model, save_checkpoint
    from model.net.config import get_config
    from model.net.unet import MPIUNet

    cfg = get_config("demo")
    torch.manual_seed(0)
    net = MPIUNet(cfg)
    src = save_checkpoint(tmp_path / "train.safetensors", net, cfg, {"step": 1})
    assert getattr(load_model(src)[0].colour_head.detail, name) == 0.0
    out = export_weights(src, tmp_path / "shifted.safetensors", gate_shift=-2.0, **{name: value})
    loaded, ckpt = load_model(out)
    assert getattr(loaded.colour_head.detail, name) == value and ckpt.state[f"export_{name}"] == value
    again = load_checkpoint(export_weights(out, tmp_path / "again.safetensors"))
    assert again.state[f"export_{name}"] == value
    for k, v in load_checkpoint(out).weights.items():
        assert torch.equal(again.weights[k], v), k
    tiny = save_checkpoint(tmp_path / "tiny.safetensors", MPIUNet(get_config("tiny")), get_config("tiny"), {"step": 1})
    with pytest.raises(ValueError, match="identity condition"):
        export_weights(tiny, tmp_path / "bad.safetensors", **{name: 1.0})


def test_export_identity_unmix_sets_the_config_and_changes_no_weight(tmp_path):
    import dataclasses

    import torch

    from model.net.checkpoint import export_weights, load_checkpoint, save_checkpoint
    from model.net.config import get_config
    from model.net.unet import MPIUNet

    cfg = dataclasses.replace(get_config("demo"), identity_unmix=False)
    torch.manual_seed(0)
    net = MPIUNet(cfg)
    src = save_checkpoint(tmp_path / "train.safetensors", net, cfg, {"step": 1})
    out = load_checkpoint(export_weights(src, tmp_path / "unmix.safetensors", gate_shift=-2.0, identity_unmix=True))
    assert out.config == dataclasses.replace(cfg, identity_unmix=True) and out.state["export_identity_unmix"] is True
    again = load_checkpoint(export_weights(tmp_path / "unmix.safetensors", tmp_path / "again.safetensors"))
    assert again.config.identity_unmix and again.state["export_gate_shift"] == -2.0  # kept, not applied twice
    for k, v in out.weights.items():
        assert torch.equal(again.weights[k], v), k
    tiny = save_checkpoint(tmp_path / "tiny.safetensors", MPIUNet(get_config("tiny")), get_config("tiny"), {"step": 1})
    with pytest.raises(ValueError, match="identity condition"):
        export_weights(tiny, tmp_path / "bad.safetensors", identity_unmix=True)
