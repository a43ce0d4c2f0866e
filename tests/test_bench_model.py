"""`imp bench model`: the figures it reports are measured and complete."""
from __future__ import annotations

import torch

from bench.model import measure


def test_measure_tiny_reports_every_field() -> None:
    r = measure("tiny", steps=4, timed_steps=1, guidance="none", threads=torch.get_num_threads())
    for key in ("config", "params", "res", "frames", "planes", "s_per_step", "s_per_frame", "peak_rss_gb"):
        assert key in r
    assert (r["config"], r["res"], r["frames"], r["planes"]) == ("tiny", 64, 8, 8)
    assert r["params"] > 1e5 and r["s_per_step"] > 0 and r["peak_rss_gb"] > 0.05
    assert r["evals_per_step"] == 1  # no guidance: one network evaluation per step
    assert abs(r["s_per_frame"] - r["s_per_step"] * 4 / 7) < 1e-3
