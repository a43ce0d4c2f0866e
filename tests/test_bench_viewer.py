"""`imp bench viewer --json` end to end with a randomly initialised tiny checkpoint on Xvfb: the
figures exist, are positive and consistent with the run (small eyes and a short window for speed)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")



def test_bench_viewer_json(xvfb_display, tiny_checkpoint):
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "app.cli", "bench", "viewer", "--json", "--checkpoint", str(tiny_checkpoint),
           "--seconds", "3", "--steps", "1", "--eye", "128", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=repo, env={**os.environ, "DISPLAY": xvfb_display})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) >= {"stereo_fps", "generated_fps", "first_frame_s"}
    assert result["eye_px"] == 128 and result["seconds"] == 3
    assert 0.0 < result["first_frame_s"] < 120.0
    # where the first frame's seconds went: every step of the worker, adding up to the whole
    parts = result["first_frame_parts"]
    assert list(parts) == ["worker_start_s", "imports_s", "model_s", "portrait_s", "driving_s", "first_clip_s", "to_screen_s"]
    assert all(v >= 0.0 for v in parts.values()) and parts["imports_s"] > 0.0 and parts["first_clip_s"] > 0.0
    assert abs(sum(parts.values()) - result["first_frame_s"]) < 0.05
    assert result["stereo_fps"] > 1.0 and result["idle_stereo_fps"] > 1.0
    assert result["generated_fps"] > 0.0  # tiny model, one step: at least one clip within the 3 s window
    # where a generated frame's time goes: every part measured, and together no more than the worker's time per frame
    ms = result["frame_ms"]
    assert result["device"] == "cpu"
    assert ms["passes"] > 0 and ms["network_ms"] > 0 and ms["conditions_ms"] > 0 and ms["decode_ms"] > 0 and ms["upload_ms"] > 0
    assert ms["conditions_ms"] + ms["network_ms"] + ms["decode_ms"] <= 1.1 * 1000.0 / result["generated_fps"]


def test_first_frame_counts_from_the_process_start_and_the_bench_parser_is_light():
    """first_frame_s counts from the start of the process (the interpreter's and `imp`'s own
    start-up included): seconds_since_process_start in a fresh interpreter that slept 0.5 s. And
    `imp bench`'s parser imports no torch, which would otherwise sit in front of the worker."""
    code = ("import sys, time; time.sleep(0.5)\n"
            "from bench.viewer import seconds_since_process_start\n"
            "age = seconds_since_process_start()\n"
            "from app.cli.imp import build_parser\n"
            "build_parser(only='bench').parse_args(['bench', 'viewer'])\n"
            "print(age, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    age, torch_loaded = out.stdout.split()
    assert 0.5 <= float(age) < 10.0
    assert torch_loaded == "False"
