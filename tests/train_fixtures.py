"""A tiny prepared dataset of real footage for the training tests (test_train*.py, test_ddp.py,
test_eval.py): two short videos, 24 frames each at 64 px, written once per test session by
`imp prepare` into pytest's session temp folder, plus a conditions cache shared by all runs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from model.net.config import get_config

VIDEOS = ("videos/dreamtalk/W009_front_neutral_level1_001.mp4", "videos/LivePortrait/d18.mp4")
FRAMES = 24
RES = 64

# the tiny config at 32 px and 4 frames: the fastest config with the real structure, for tests
# that need many steps; the bit-exact resume and the CLI tests use `tiny` itself
MICRO = dataclasses.replace(get_config("tiny"), name="tiny-micro", res=32, frames=4, planes=4)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread while a module's tests run: on a busy 2-core machine two OpenMP threads
    spin-wait and make these small steps 10-100x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def prepared_dataset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATASET folder (made on first use in this session)."""
    from app.cli import imp as cli

    root = tmp_path_factory.getbasetemp() / "train-dataset"
    if not (root / "manifest.json").exists():
        code = cli.main(["prepare", *(str(shared_data / v) for v in VIDEOS), "-o", str(root), "--res", str(RES),
                         "--max-frames", str(FRAMES), "--min-frames", "8", "--quiet"])
        assert code == 0
    return root


def conditions_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "train-conditions-cache"
