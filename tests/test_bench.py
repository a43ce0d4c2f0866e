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
