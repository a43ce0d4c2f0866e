"""Preemption: a training run SIGKILLed (with its loader worker, as a cluster kills a job) at random
moments, ten times in a row, and resumed each time, loses at most the checkpoint interval and ends
bit-exact with a run that was never interrupted; and a crash at each point of a checkpoint save
leaves a checkpoint that resumes."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.net.checkpoint import load_checkpoint
from model.training import checkpoint_files
from model.training.loop import RunSettings, train
from model.training.step import TrainOptions
from tests.train_fixtures import MICRO, conditions_cache, one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
EVERY = 3  # checkpoint interval (steps)
KEEP = 2
KILLS = 10
OPTS = dict(stage="alternating", lr=1e-3, p_side=0.3, k_steps=2)  # L_side steps too: pseudo ground truth, side rasterising

# the killed process: the real loop with one loader worker, printing each finished step
CHILD = """
import sys
from pathlib import Path

import torch

from model.training.loop import RunSettings, train
from model.training.step import TrainOptions
from tests.train_fixtures import MICRO

torch.set_num_threads(1)
data, cache, out, init, resume = sys.argv[1:6]
opts = TrainOptions(steps=10 ** 6, **{opts!r})
train(MICRO, opts, RunSettings(out=Path(out), data=Path(data), init=Path(init), resume=resume == "1", checkpoint_every={every},
                               keep_last={keep}, progress=False, tensorboard=False, cache_dir=Path(cache), workers=1,
                               on_step=lambda s: print("step", s, flush=True)), log=lambda m: None)
"""


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


def _settings(out: Path, data: Path, cache: Path, init: Path | None = None, **kw) -> RunSettings:
    return RunSettings(out=out, data=data, init=init, progress=False, tensorboard=False, cache_dir=cache, checkpoint_every=EVERY,
                       workers=1, **kw)


def _state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {**ckpt.weights, **{"extra/" + k: v for k, v in ckpt.extra.items()}}


def _bit_equal(a: Path, b: Path) -> bool:
    sa, sb = _state(a), _state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_ten_sigkills_ten_bit_exact_resumes(data, tmp_path, tmp_path_factory):
    cache = conditions_cache(tmp_path_factory)
    boot = train(MICRO, TrainOptions(stage="bootstrap", steps=1, lr=1e-3), _settings(tmp_path / "boot", data, cache),
                 log=lambda m: None).checkpoint
    run, stage = tmp_path / "killed", tmp_path / "killed" / "alternating"
    code = CHILD.format(opts=OPTS, every=EVERY, keep=KEEP)
    rng = random.Random(14)
    kept: list[tuple[int, Path]] = []  # (step, copy of the newest checkpoint after each kill)
    for kill in range(KILLS):
        resume = "1" if checkpoint_files.step_files(stage) else "0"
        proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(cache), str(run), str(boot), resume], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        first = proc.stdout.readline()  # the first step of this invocation is done: we are inside the run
        assert first.startswith("step"), f"kill {kill}: the run did not start: {first!r} {proc.stderr.read()[-2000:]}"
        time.sleep(rng.uniform(0.0, 1.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the training process and its loader worker, no chance to clean up
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        done = int(([first] + out.splitlines())[-1].split()[1])
        found = checkpoint_files.newest_readable(stage, MICRO)
        saved = 0 if found is None else int(found[1].state["step"])  # none yet: killed before the first save
        assert 0 <= done - saved <= EVERY, f"kill {kill}: {done} steps done, newest checkpoint at {saved}"
        assert len(checkpoint_files.step_files(stage)) <= KEEP + 2  # last KEEP, the one resumed from, one not pruned yet
        print(f"kill {kill}: SIGKILL after step {done}, resumes from step {saved}")  # shown with -s
        if found is not None:
            copy = tmp_path / f"after-kill-{kill}.safetensors"
            shutil.copyfile(found[0], copy)
            kept.append((saved, copy))

    last = kept[-1][0]
    assert last >= KILLS  # the invocations got steps done between the kills (one or more each)
    total = last + EVERY + 1
    whole = train(MICRO, TrainOptions(steps=total, **OPTS), _settings(tmp_path / "whole", data, cache, boot, keep_last=10 ** 6),
                  log=lambda m: None)
    reference = dict(checkpoint_files.step_files(whole.checkpoint.parent))
    for kill, (saved, copy) in enumerate(kept):  # each resume point is the uninterrupted run's state at that step
        assert _bit_equal(copy, reference[saved]), f"checkpoint after kill {kill} (step {saved}) differs from the uninterrupted run"
    rest = train(MICRO, TrainOptions(steps=total, **OPTS), _settings(run, data, cache, boot, resume=True, keep_last=KEEP),
                 log=lambda m: None)
    assert rest.step == whole.step == total
    assert rest.weights_digest == whole.weights_digest
    assert _bit_equal(rest.checkpoint, whole.checkpoint)


@pytest.mark.parametrize("crash_at", ["write", "publish", "link", "prune"])
def test_a_crash_anywhere_in_a_save_leaves_a_resumable_checkpoint(data, tmp_path, tmp_path_factory, monkeypatch, crash_at):
    """Saving step 4 dies while writing the file, at its rename, while relinking `latest` or while
    deleting old step files: the resume finds step 2 or step 4, whole, and continues."""
    cache = conditions_cache(tmp_path_factory)
    opts = TrainOptions(stage="bootstrap", steps=6, lr=1e-3)
    settings = lambda **kw: RunSettings(out=tmp_path / "run", data=data, progress=False, tensorboard=False, cache_dir=cache,
                                        checkpoint_every=2, workers=0, keep_last=1, **kw)
    train(MICRO, opts, settings(stop_after=2), log=lambda m: None)

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash(crash_at)

    if crash_at == "write":
        import safetensors.torch

        real = safetensors.torch.save_file

        def half(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as f:
                f.truncate(100)  # what a kill in the middle of the write leaves
            raise Crash(crash_at)

        monkeypatch.setattr(safetensors.torch, "save_file", half)
    elif crash_at == "publish":  # the file is complete, not renamed yet
        import model.net.checkpoint

        monkeypatch.setattr(model.net.checkpoint, "publish", crash)
    elif crash_at == "link":
        monkeypatch.setattr(checkpoint_files, "link_atomic", crash)
    else:
        monkeypatch.setattr(checkpoint_files, "prune", crash)
    with pytest.raises(Crash):
        train(MICRO, opts, settings(resume=True), log=lambda m: None)
    monkeypatch.undo()

    stage = tmp_path / "run" / "bootstrap"
    path, ckpt = checkpoint_files.newest_readable(stage, MICRO)
    assert int(ckpt.state["step"]) == (4 if crash_at in ("link", "prune") else 2)
    result = train(MICRO, opts, settings(resume=True), log=lambda m: None)
    assert result.step == 6
    assert not list(stage.glob("*.tmp"))
    whole = train(MICRO, opts, RunSettings(out=tmp_path / "whole", data=data, progress=False, tensorboard=False, cache_dir=cache,
                                           workers=0), log=lambda m: None)
    assert result.weights_digest == whole.weights_digest
