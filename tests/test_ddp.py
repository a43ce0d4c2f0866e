"""Multi-process training: 2 CPU processes with gloo (DistributedDataParallel), each drawing its own
batches, must end with bit-identical replicas that differ from their starting weights; in the
bootstrap stage and in guidance distillation."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from model.net.unet import MPIUNet
from tests.train_fixtures import MICRO, conditions_cache, prepared_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, cache: str, result_dir: str, teacher: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from model.data.pairs import PairSampler
    from model.training.loop import RunSettings, train
    from model.training.distill import student_config
    from model.training.step import TrainOptions

    opts = TrainOptions(stage="bootstrap" if teacher is None else "distill", steps=2, lr=1e-3, teacher=teacher)
    cfg = MICRO if teacher is None else student_config(MICRO)
    result = train(cfg, opts, RunSettings(out=Path(out), data=Path(data), progress=False, tensorboard=False,
                                            cache_dir=Path(cache)), log=lambda m: None)
    picks = PairSampler(data, MICRO, Path(cache), seed=opts.seed).draw(0, rank, opts.batch)
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps({"digest": result.weights_digest, "step": result.step,
                                                                  "picks": picks}))


@pytest.mark.parametrize("stage", ["bootstrap", "distill"])
def test_two_gloo_replicas_stay_identical(shared_data, tmp_path_factory, tmp_path, stage):
    from model.data.pairs import PairSampler
    from model.net.checkpoint import save_checkpoint
    from model.net.variant import Variant
    from model.training.distill import student_config

    data = prepared_dataset(shared_data, tmp_path_factory)
    cache = conditions_cache(tmp_path_factory)
    teacher = None
    if stage == "distill":  # a teacher with random weights, read as a stage-2 model
        teacher = tmp_path / "teacher.safetensors"
        torch.manual_seed(1)
        save_checkpoint(teacher, MPIUNet(MICRO), MICRO, {"step": 0, "variant": Variant().to_dict()})
    cfg = MICRO if teacher is None else student_config(MICRO)
    PairSampler(data, MICRO, cache).prepare_cache()  # so the two ranks do not both rasterise
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path / "run"), str(cache), str(tmp_path),
                            None if teacher is None else str(teacher)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["step"] == r1["step"] == 2
    assert r0["picks"] != r1["picks"]  # different data on each replica ...
    assert r0["digest"] == r1["digest"]  # ... yet the same weights: gradients were averaged

    from model.net.checkpoint import load_checkpoint
    from model.training.loop import weights_digest

    ckpt = load_checkpoint(tmp_path / "run" / stage / "latest.safetensors")
    assert ckpt.state["world_size"] == 2
    net = MPIUNet(cfg)
    net.load_state_dict(ckpt.weights)
    assert weights_digest(net) == r0["digest"]
    torch.manual_seed(0)
    start = MPIUNet(cfg)
    if teacher is not None:
        from model.training.distill import student_weights

        start.load_state_dict(student_weights(load_checkpoint(teacher).weights, start))
    assert weights_digest(start) != r0["digest"]  # it trained
