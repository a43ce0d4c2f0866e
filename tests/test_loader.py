"""The training data loader (model/data/loader.py) on real footage: worker processes deliver, in
step order, exactly the batches the training process would build itself, from any start step, the
deferred (GPU) L_side rasterising gives the same conditions, starting workers leaves torch's
global RNG alone, and a run split over different worker counts ends bit-exact."""
from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from model.data import loader as loader_module
from model.data.loader import ALIGN, BatchLoader, PackedBatch, SamplerSpec, default_workers
from model.data.pairs import PairSampler
from model.training.loop import RunSettings, train
from model.training.step import TrainOptions, chooses_side
from tests.train_fixtures import MICRO, conditions_cache, one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPTS = TrainOptions(stage="alternating", p_side=0.4, seed=5)


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def spec(data, tmp_path_factory):
    return SamplerSpec(data, MICRO, conditions_cache(tmp_path_factory), None, (), OPTS.seed)


def _same(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f.name
        else:
            assert x == y, f.name


def test_workers_deliver_the_in_process_batches_in_step_order(spec):
    sampler = spec.build()
    side_of = functools.partial(chooses_side, OPTS)
    start, stop = 3, 11
    sides = [side_of(s) for s in range(start, stop)]
    assert any(sides) and not all(sides)  # both branches, so the L_side rasterising in a worker is covered
    rng_before = torch.get_rng_state()
    got = list(BatchLoader(spec, 1, 2, start, stop, side_of, "cpu", workers=2))
    assert torch.equal(torch.get_rng_state(), rng_before)  # a checkpoint saves this state: the loader must not draw from it
    assert [step for step, _ in got] == list(range(start, stop))
    for step, batch in got:
        assert batch.side == side_of(step)
        _same(batch, sampler.batch(step, 1, 2, side_of(step)))


def test_deferred_conditions_equal_the_in_worker_ones(spec):
    """On a GPU the mesh conditions in the MPI camera (L_side rasterising, alpha planes) are made by
    the training process (PendingBatch.finish); done on the CPU that path must give the batch the
    workers give, also after packing into the one buffer a worker sends."""
    sampler = spec.build()
    for step in range(3):
        picks = sampler.draw(step, 0, 2)
        for side in (False, True):
            pending = sampler.gather(picks, side, defer=True)
            assert len(pending.pending) == 2 and "mesh_alpha" not in pending.tensors  # left for the device
            expected = sampler.make_batch(picks, side)
            _same(pending.finish("cpu"), expected)
            packed = PackedBatch.pack(pending, shared=False)
            assert len({t.untyped_storage().data_ptr() for t in packed.unpack().tensors.values()}) == 1
            _same(packed.unpack().finish("cpu"), expected)
            # the alpha planes (D per frame, most of a paper batch) stay behind: only their inputs cross
            total = sum(t.numel() * t.element_size() for t in (getattr(expected, f.name) for f in dataclasses.fields(expected))
                        if isinstance(t, torch.Tensor))
            alpha = expected.mesh_alpha.numel() * expected.mesh_alpha.element_size()
            if side:  # the meshes and poses to rasterise instead of the conditions (small beside them at any real size)
                assert packed.buffer.numel() < total
            else:
                assert packed.buffer.numel() <= total - alpha + ALIGN * len(packed.layout)


def test_default_workers_leave_a_core_to_each_training_process(monkeypatch):
    monkeypatch.setattr(loader_module, "cpu_cores", lambda: 2)
    assert default_workers(1) == 1 and default_workers(2) == 0
    monkeypatch.setattr(loader_module, "cpu_cores", lambda: 64)
    assert default_workers(8) == 7 and default_workers(1) == loader_module.MAX_AUTO_WORKERS
    with pytest.raises(ValueError, match="workers"):
        BatchLoader(SamplerSpec(None, MICRO, None, None, (), 0), 0, 1, 0, 1, bool, "cpu", workers=-1)


def test_a_run_split_over_worker_counts_is_bit_exact(data, tmp_path, tmp_path_factory):
    """Two steps with 2 workers, stop, resume in-process (0 workers): the weights of one
    uninterrupted run with 1 worker."""
    cache = conditions_cache(tmp_path_factory)
    opts = TrainOptions(stage="bootstrap", steps=4, lr=1e-3)
    common = dict(data=data, progress=False, tensorboard=False, cache_dir=cache)
    whole = train(MICRO, opts, RunSettings(out=tmp_path / "whole", workers=1, **common), log=lambda m: None)
    part = train(MICRO, opts, RunSettings(out=tmp_path / "split", workers=2, stop_after=2, **common), log=lambda m: None)
    assert part.step == 2
    rest = train(MICRO, opts, RunSettings(out=tmp_path / "split", workers=0, resume=True, **common), log=lambda m: None)
    assert rest.step == whole.step == 4 and rest.weights_digest == whole.weights_digest
    assert rest.losses == whole.losses[2:]
