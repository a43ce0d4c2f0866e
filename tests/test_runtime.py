"""model/runtime.py: the --device every network command shares (auto|cpu|cuda[:N]), on this
GPU-less machine, and the CPU thread budget."""
from __future__ import annotations

import pytest
import torch

from app.cli.imp import build_parser
from app.cli.viewer import build_parser as viewer_parser
from model.runtime import check_device, resolve_device, torch_threads


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == resolve_device("auto") == resolve_device(" AUTO ") == expected
    assert resolve_device("cpu") == "cpu"


def test_device_names_are_checked_without_resolving_auto() -> None:
    """check_device (imp-viewer's, before its worker imports torch) keeps "auto" and rejects what
    resolve_device rejects by spelling."""
    assert check_device(None) == check_device(" AUTO ") == "auto"
    assert check_device("CPU") == "cpu" and check_device("cuda:1") == "cuda:1" and check_device("cuda") == "cuda"
    for bad in ("gpu", "cuda:x", "cuda:", "cpu:0"):
        with pytest.raises(ValueError, match=r"expected auto\|cpu\|cuda\[:N\]"):
            check_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the messages of a machine without a GPU")
@pytest.mark.parametrize("name, needle", [("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
                                          ("gpu", "expected auto|cpu|cuda[:N]"), ("cuda:x", "expected auto|cpu|cuda[:N]")])
def test_a_device_that_cannot_be_had_is_a_clear_error(name: str, needle: str) -> None:
    with pytest.raises(ValueError, match=r"--device") as info:
        resolve_device(name)
    assert needle in str(info.value)


@pytest.mark.parametrize("argv", [["generate", "--portrait", "p.png", "--animate", "-o", "x.mpi"], ["eval", "--data", "d"],
                                  ["train", "--data", "d", "--out", "r"], ["bench", "model"], ["bench", "viewer"],
                                  ["bench", "soak"], ["bench", "data"]])
def test_every_network_command_takes_device_auto_by_default(argv: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(argv).device == "auto"
    assert parser.parse_args(argv + ["--device", "cuda:1"]).device == "cuda:1"
    assert viewer_parser().parse_args([]).device == "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_commands_refuse_a_missing_gpu_in_one_line(capsys, tmp_path) -> None:
    from app.cli.imp import main
    from model.resources import asset_path

    code = main(["generate", "--portrait", str(asset_path("astronaut.png")), "--animate", "--device", "cuda",
                 "-o", str(tmp_path / "x.mpi")])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA is not available" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.mpi").exists()
    assert main(["bench", "model", "--config", "tiny", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_torch_threads_restores_the_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_single_threaded_blas_leaves_one_numpy_thread() -> None:
    """In a fresh process (the limit is process-wide): NumPy's BLAS runs on one thread afterwards."""
    import subprocess
    import sys

    code = ("from threadpoolctl import threadpool_info; from model.runtime import single_threaded_blas; "
            "single_threaded_blas(); print([p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[1]", done.stdout
