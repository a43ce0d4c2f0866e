"""`imp bench render --json`: one JSON object with the agreed keys and positive figures (tiny run)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_render_json(gl_context):  # gl_context: skips where there is no EGL
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "render", "--json", "--res", "48", "--planes", "6",
         "--seconds", "0.05", "--warmup", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # exactly one JSON object on stdout
    assert set(result) == {"res", "planes", "gl_views_per_s", "gl_stereo_pairs_per_s", "torch_views_per_s", "ratio", "random_alpha"}
    assert result["res"] == 48 and result["planes"] == 6
    for key in ("gl_views_per_s", "gl_stereo_pairs_per_s", "torch_views_per_s", "ratio"):
        assert result[key] > 0, key
    assert result["random_alpha"]["gl_views_per_s"] > 0


def test_bench_lists_render():
    from app.cli.imp import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "nope"])
    args = build_parser().parse_args(["bench", "render", "--res", "64"])
    assert args.res == 64 and args.planes == 24 and not args.json


@pytest.mark.slow
def test_soak_memory_figures_tell_a_leak_from_swings():
    """rss_figures: one value per minute, and a trend after the first minute that is ~0 for values
    swinging around a level (warm-up first) and the leak's rate for a steady climb."""
    import numpy as np

    from bench.soak import rss_figures

    t = np.arange(0, 30 * 60 + 1, 10.0)
    swings = 600 + 40 * np.minimum(t / 60, 1) + 30 * np.sin(t / 37.0)  # warm-up, then noise
    flat = rss_figures(list(zip(t, swings)))
    assert len(flat["per_minute"]) == 31 and flat["per_minute"][0] == flat["start"] == 600.0
    assert abs(flat["trend_mb_per_minute"]) < 0.5 and flat["max"] > flat["end"] - 1
    leak = rss_figures(list(zip(t, swings + 2.0 * t / 60)))  # +2 MB a minute on top
    assert abs(leak["trend_mb_per_minute"] - 2.0) < 0.5  # where the end-minus-minute-1 difference can even be negative
    short = rss_figures([(0.0, 500.0), (10.0, 510.0)])
    assert short["per_minute"] == [500.0] and "trend_mb_per_minute" not in short


def test_bench_soak_live_and_clip_json(xvfb_display, tiny_checkpoint, tmp_path):
    """`imp bench soak` for a few seconds (the real figure is 30 minutes): live with a random tiny
    model, then a streamed clip it writes itself; one JSON object each, nothing lost."""
    env = {**__import__("os").environ, "DISPLAY": xvfb_display}
    out = subprocess.run([sys.executable, "-m", "app.cli", "bench", "soak", "--json", "--minutes", "0.1", "--sample", "1",
                          "--checkpoint", str(tiny_checkpoint), "--steps", "1", "--threads", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=170, env=env)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    live = json.loads(out.stdout.strip().splitlines()[-1])
    assert live["frames_shown"] > 0 and live["frames_lost"] == 0 and live["error"] is None
    assert live["rss_mb"]["samples"] >= 3 and live["rss_mb"]["start"] > 0
    assert live["rss_mb"]["per_minute"][0] == live["rss_mb"]["start"]
    clip = tmp_path / "short.mpi"
    out = subprocess.run([sys.executable, "-m", "app.cli", "bench", "soak", "--json", "--minutes", "0.05", "--sample", "1",
                          "--clip", str(clip), "--make-clip", "0.4"], cwd=REPO, capture_output=True, text=True, timeout=170, env=env)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    played = json.loads(out.stdout.strip().splitlines()[-1])
    assert played["clip_frames"] == 10 and played["clip_frames_read"] >= 10 and played["clip_error"] is None
