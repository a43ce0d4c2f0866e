"""`imp bench data`: the loader alone per worker count and a full training step (in its own
process), on real footage, with the figures a user needs to see which one limits."""
from __future__ import annotations

import json

import pytest

from app.cli import imp as cli
from tests.train_fixtures import one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_data_tiny_reports_loader_and_step(shared_data, tmp_path_factory, capsys) -> None:
    data = prepared_dataset(shared_data, tmp_path_factory)
    assert cli.main(["bench", "data", "--config", "tiny", "--data", str(data), "--workers", "0", "1", "--batches", "9",
                     "--train-steps", "1", "--device", "cpu", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["config"], r["res"], r["frames"], r["device"]) == ("tiny", 64, 8, "cpu")
    assert [x["workers"] for x in r["loader"]] == [0, 1]
    assert all(x["samples_s"] > 0 and x["batches"] == 9 for x in r["loader"])
    assert sum(x["side_batches"] for x in r["loader"]) > 0  # the stage-2 stream includes L_side batches (steps 8, 9 for seed 0)
    assert r["step_workers"] == 1 and r["step_samples_s"] > 0 and r["timed_steps"] == 1
    assert 0 <= r["step_data_wait_s"] < r["step_s"] and 0.1 < r["step_peak_rss_gb"] < 8


def test_bench_data_refuses_an_unknown_config(capsys) -> None:
    assert cli.main(["bench", "data", "--config", "huge"]) == 2
    assert "huge" in capsys.readouterr().err
