"""Shared fixtures: the real footage in ../shared/data (skipped when absent), an EGL context and
an Xvfb display, all made on demand."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def portrait_cache(tmp_path_factory) -> Path:
    """Prepared portraits (model/data/portrait_cache.py) of this run go to a folder of their own,
    shared by its tests and the processes they start, never the user's cache."""
    folder = tmp_path_factory.mktemp("portrait-cache")
    os.environ["IMP_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests using it skip on a clone without it."""
    if not (SHARED_DATA / "videos").is_dir():
        pytest.skip(f"real footage not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return REPO / "assets" / "astronaut.png"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the `tiny` config with random weights (seed 0), for pipeline / viewer tests."""
    import torch

    from model.net.checkpoint import save_checkpoint
    from model.net.config import get_config
    from model.net.unet import MPIUNet

    cfg = get_config("tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, MPIUNet(cfg), cfg, {"step": 0})
    return path


@pytest.fixture(scope="session")
def gl_context():
    """A headless moderngl context (EGL; Mesa llvmpipe on this machine)."""
    moderngl = pytest.importorskip("moderngl")
    try:
        ctx = moderngl.create_standalone_context(backend="egl")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no EGL context available: {exc}")
    yield ctx
    ctx.release()


@pytest.fixture(scope="session")
def xvfb_display():
    """DISPLAY of a private Xvfb server started for the test session."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (scripts/setup.sh installs it)")
    for number in range(90, 140):
        if not Path(f"/tmp/.X{number}-lock").exists():
            break
    proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        time.sleep(0.05)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    yield f":{number}"
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
    proc.terminate()
    proc.wait(timeout=10)
