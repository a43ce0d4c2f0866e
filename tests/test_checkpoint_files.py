"""Checkpoint files of a run (model/training/checkpoint_files.py, model/atomic_write.py): the temporary
file and its folder are fsynced before the rename and the folder after it; a stage keeps its last
N step files plus the one it resumed from, `latest` names the newest; a damaged newest file is
skipped on resume."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from model import atomic_write
from model.net.checkpoint import load_checkpoint, save_checkpoint
from model.training import checkpoint_files
from model.training.loop import RunSettings, train
from model.training.step import TrainOptions
from tests.train_fixtures import MICRO, conditions_cache, one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


def test_save_fsyncs_file_and_folder_around_the_rename(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", f"{Path(src).name} -> {Path(dst).name}"))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_write.os, "fsync", fsync)
    monkeypatch.setattr(atomic_write.os, "replace", replace)
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "ckpt" / "model.safetensors"
    save_checkpoint(path, net, MICRO, {"step": 1})
    folder = str(path.parent)
    assert events == [("fsync", str(path) + ".tmp"), ("fsync", folder), ("rename", "model.safetensors.tmp -> model.safetensors"),
                      ("fsync", folder)]
    assert load_checkpoint(path).state == {"step": 1}


def test_keep_last_plus_the_resumed_one_and_latest_is_the_newest(data, tmp_path, tmp_path_factory):
    common = dict(data=data, progress=False, tensorboard=False, cache_dir=conditions_cache(tmp_path_factory), workers=0,
                  checkpoint_every=1, keep_last=2)
    stage = tmp_path / "run" / "bootstrap"
    train(MICRO, TrainOptions(stage="bootstrap", steps=3, lr=1e-3), RunSettings(out=tmp_path / "run", **common), log=lambda m: None)
    assert [s for s, _ in checkpoint_files.step_files(stage)] == [2, 3]
    assert os.path.samefile(stage / "latest.safetensors", checkpoint_files.step_path(stage, 3))  # a link, not a copy
    train(MICRO, TrainOptions(stage="bootstrap", steps=7, lr=1e-3), RunSettings(out=tmp_path / "run", resume=True, **common),
          log=lambda m: None)
    assert [s for s, _ in checkpoint_files.step_files(stage)] == [3, 6, 7]  # 3: resumed from
    assert load_checkpoint(stage / "latest.safetensors").state["step"] == 7
    with pytest.raises(ValueError, match="keep_last"):
        checkpoint_files.prune(stage, 0)


def test_resume_skips_a_damaged_newest_checkpoint(data, tmp_path, tmp_path_factory):
    common = dict(data=data, progress=False, tensorboard=False, cache_dir=conditions_cache(tmp_path_factory), workers=0,
                  checkpoint_every=1, keep_last=3)
    opts = TrainOptions(stage="bootstrap", steps=4, lr=1e-3)
    whole = train(MICRO, opts, RunSettings(out=tmp_path / "whole", **common), log=lambda m: None)
    train(MICRO, opts, RunSettings(out=tmp_path / "run", stop_after=3, **common), log=lambda m: None)
    stage = tmp_path / "run" / "bootstrap"
    newest = checkpoint_files.step_path(stage, 3)
    newest.write_bytes(newest.read_bytes()[:1000])  # what a disk that lost the end of the file leaves (also `latest`: same file)
    warnings: list[str] = []
    path, ckpt = checkpoint_files.newest_readable(stage, MICRO, warn=warnings.append)
    assert path == checkpoint_files.step_path(stage, 2) and ckpt.state["step"] == 2
    assert len(warnings) == 1 and "unreadable" in warnings[0] and "step-000000003" in warnings[0]
    rest = train(MICRO, opts, RunSettings(out=tmp_path / "run", resume=True, **common), log=lambda m: None)
    assert rest.step == 4 and rest.weights_digest == whole.weights_digest


def test_auto_resume_starts_then_continues(data, tmp_path, tmp_path_factory):
    """The same command twice (a requeued job): the first starts the run, the second continues it."""
    common = dict(data=data, progress=False, tensorboard=False, cache_dir=conditions_cache(tmp_path_factory), workers=0,
                  auto_resume=True)
    first = train(MICRO, TrainOptions(stage="bootstrap", steps=4, lr=1e-3), RunSettings(out=tmp_path / "run", stop_after=2, **common),
                  log=lambda m: None)
    messages: list[str] = []
    second = train(MICRO, TrainOptions(stage="bootstrap", steps=4, lr=1e-3), RunSettings(out=tmp_path / "run", **common),
                   log=messages.append)
    assert (first.step, second.step) == (2, 4) and len(second.losses) == 2
    assert any("resuming bootstrap at step 2" in m for m in messages)
