"""`imp bench train`: it runs the real training loop for each stage / branch on real footage and
reports throughput for all of them."""
from __future__ import annotations

import json

import pytest

from app.cli import imp as cli
from tests.train_fixtures import one_torch_thread, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_train_tiny_reports_every_branch(shared_data, tmp_path_factory, capsys) -> None:
    data = prepared_dataset(shared_data, tmp_path_factory)
    assert cli.main(["bench", "train", "--config", "tiny", "--data", str(data), "--steps", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["config"], r["res"], r["timed_steps"]) == ("tiny", 64, 2)
    for branch in ("bootstrap", "alternating_mpi", "alternating_side"):
        assert r[f"{branch}_samples_s"] > 0 and r[f"{branch}_cpu_s_per_step"] > 0
    # an L_side step adds k pseudo-ground-truth sampling steps and a rasterisation to an L_mpi step
    assert r["alternating_side_cpu_s_per_step"] > r["alternating_mpi_cpu_s_per_step"]
    lo, hi = sorted((r["alternating_mpi_samples_s"], r["alternating_side_samples_s"]))
    assert lo <= r["alternating_p0.2_samples_s"] <= hi
