"""The GPU path of training, checked on the CPU: activation checkpointing gives bit-equal gradients
while keeping far fewer activations, bf16 autocast covers the pseudo-ground-truth passes of L_side
as well as the training pass, and the CUDA switches leave a CPU run alone."""
from __future__ import annotations

import pytest
import torch

from model.diffusion.process import make_schedule
from model.net.config import get_config
from model.net.unet import MPIUNet
from model.net.variant import VariantModel
from model.training import activation_checkpointing, cuda
from model.training.loop import RunSettings, train
from model.training.step import TrainOptions, set_stage, training_step
from tests.train_fixtures import MICRO, conditions_cache, one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def sampler(data, tmp_path_factory):
    from model.data.pairs import PairSampler

    return PairSampler(data, MICRO, conditions_cache(tmp_path_factory), seed=0)


def _trained_net() -> MPIUNet:
    """MICRO with every zero-initialised projection perturbed, so every layer has a gradient."""
    torch.manual_seed(0)
    net = MPIUNet(MICRO)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return net


class SavedBytes(torch.nn.Module):
    """`model`, counting the bytes autograd keeps for the backward pass of its forward calls."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.bytes += t.numel() * t.element_size()
        return t

    def forward(self, *args, **kwargs):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            return self.model(*args, **kwargs)


def _step(net: MPIUNet, stage: str, batch, checkpointed: bool) -> tuple[dict[str, torch.Tensor], tuple[int, int], float]:
    """(gradients, (bytes the network kept for backward, bytes the rendering and losses kept), loss)
    of one training step."""
    opts = TrainOptions(stage=stage, k_steps=2)
    set_stage(net, stage)
    if checkpointed:
        activation_checkpointing.enable(net)
    model = SavedBytes(VariantModel(net, opts.variant))
    net.zero_grad(set_to_none=True)
    outside = SavedBytes(lambda: training_step(model, model, batch, make_schedule(MICRO.diffusion), opts,
                                               torch.Generator().manual_seed(7), 0.7, 0.1, recompute=checkpointed))
    out = outside()  # the network's own hooks count inside it, these the rest of the step
    out.loss.backward()
    activation_checkpointing.disable(net)
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return grads, (model.bytes, outside.bytes), float(out.loss.detach())


@pytest.mark.parametrize("stage, side", [("bootstrap", False), ("alternating", True)], ids=["bootstrap", "alternating-L_side"])
def test_activation_checkpointing_gives_the_plain_gradients_with_fewer_activations(sampler, stage, side):
    batch = sampler.batch(0, 0, 1, side=side)
    plain, plain_bytes, plain_loss = _step(_trained_net(), stage, batch, checkpointed=False)
    ckpt, ckpt_bytes, ckpt_loss = _step(_trained_net(), stage, batch, checkpointed=True)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    assert ckpt_loss == plain_loss
    different = [n for n in plain if not torch.equal(plain[n], ckpt[n])]
    assert not different, different[:5]
    assert any(float(g.abs().max()) > 0 for g in plain.values())
    assert ckpt_bytes[0] < 0.5 * plain_bytes[0], (ckpt_bytes, plain_bytes)  # the network
    assert ckpt_bytes[1] < 0.5 * plain_bytes[1], (ckpt_bytes, plain_bytes)  # the rendering in the target cameras and the losses


def test_checkpointing_switch_auto_is_on_for_paper_only():
    assert activation_checkpointing.wanted("auto", get_config("paper"))
    assert not any(activation_checkpointing.wanted("auto", get_config(n)) for n in ("tiny", "small", "demo"))
    assert activation_checkpointing.wanted("on", MICRO) and not activation_checkpointing.wanted("off", get_config("paper"))
    with pytest.raises(ValueError, match="auto"):
        activation_checkpointing.wanted("sometimes", MICRO)
    net = MPIUNet(MICRO)
    n = activation_checkpointing.enable(net)
    assert n > 10 and activation_checkpointing.enable(net) == n  # twice is once
    activation_checkpointing.disable(net)
    assert not any(getattr(m, "_activation_checkpointed", False) for m in net.modules())
    assert set(MPIUNet(MICRO).state_dict()) == set(net.state_dict())


def test_a_run_with_checkpointing_ends_with_the_plain_run_weights(data, tmp_path, tmp_path_factory):
    opts = TrainOptions(stage="bootstrap", steps=2, lr=1e-3)
    common = dict(data=data, progress=False, tensorboard=False, cache_dir=conditions_cache(tmp_path_factory), workers=0)
    on = train(MICRO, opts, RunSettings(out=tmp_path / "on", activation_checkpointing="on", **common), log=lambda m: None)
    off = train(MICRO, opts, RunSettings(out=tmp_path / "off", activation_checkpointing="off", **common), log=lambda m: None)
    assert on.weights_digest == off.weights_digest


def test_autocast_covers_the_pseudo_ground_truth_passes(sampler):
    """With amp, every network call of an L_side step (k sampling passes and the training pass)
    runs under bf16 autocast; the losses get float32 predictions. (On the CPU here: the CLI turns
    amp on for CUDA only, the code path is the same.)"""
    net = _trained_net()
    set_stage(net, "alternating")
    calls: list[tuple[bool, bool]] = []

    class Recorder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            calls.append((torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()))
            return self.model(*args, **kwargs)

    model = Recorder(VariantModel(net, TrainOptions(stage="alternating").variant))
    batch = sampler.batch(0, 0, 1, side=True)
    k = 3
    out = training_step(model, model, batch, make_schedule(MICRO.diffusion), TrainOptions(stage="alternating", k_steps=k, amp=True),
                        torch.Generator().manual_seed(7), 0.7, 0.1)
    assert len(calls) == k + 1
    assert all(autocast for autocast, _ in calls)
    assert [grad for _, grad in calls] == [False] * k + [True]  # the k sampling passes, then the training pass
    assert out.loss.dtype == torch.float32 and out.pred.frontal.dtype == torch.float32
    calls.clear()
    training_step(model, model, batch, make_schedule(MICRO.diffusion), TrainOptions(stage="alternating", k_steps=k),
                  torch.Generator().manual_seed(7), 0.7, 0.1)
    assert len(calls) == k + 1 and not any(autocast for autocast, _ in calls)


def test_cuda_switches_leave_a_cpu_run_alone():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    assert cuda.configure(torch.device("cpu"), tf32=True, deterministic=True) == []
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    net = torch.nn.Linear(2, 2)
    assert cuda.compiled(net, False) is net
