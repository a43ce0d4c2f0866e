"""Multi-process training: 2 CPU processes with gloo (DistributedDataParallel), each drawing its own
batches, must end with bit-identical replicas that differ from their starting weights."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.train_fixtures import MICRO, conditions_cache, prepared_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, cache: str, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from model.data.pairs import PairSampler
    from model.training.loop import RunSettings, train
    from model.training.step import TrainOptions

    opts = TrainOptions(stage="bootstrap", steps=2, lr=1e-3)
    result = train(MICRO, opts, RunSettings(out=Path(out), data=Path(data), progress=False, tensorboard=False,
                                            cache_dir=Path(cache)), log=lambda m: None)
    picks = PairSampler(data, MICRO, Path(cache), seed=opts.seed).draw(0, rank, opts.batch)
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps({"digest": result.weights_digest, "step": result.step,
                                                                  "picks": picks}))


def test_two_gloo_replicas_stay_identical(shared_data, tmp_path_factory, tmp_path):
    data = prepared_dataset(shared_data, tmp_path_factory)
    cache = conditions_cache(tmp_path_factory)
    from model.data.pairs import PairSampler

    PairSampler(data, MICRO, cache).prepare_cache()  # so the two ranks do not both rasterise
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path / "run"), str(cache), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["step"] == r1["step"] == 2
    assert r0["picks"] != r1["picks"]  # different data on each replica ...
    assert r0["digest"] == r1["digest"]  # ... yet the same weights: gradients were averaged

    from model.net.checkpoint import load_checkpoint
    from model.training.loop import weights_digest
    from model.net.unet import MPIUNet

    ckpt = load_checkpoint(tmp_path / "run" / "bootstrap" / "latest.safetensors")
    assert ckpt.state["world_size"] == 2
    net = MPIUNet(MICRO)
    net.load_state_dict(ckpt.weights)
    assert weights_digest(net) == r0["digest"]
    torch.manual_seed(0)
    assert weights_digest(MPIUNet(MICRO)) != r0["digest"]  # it trained
