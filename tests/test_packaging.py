"""The distribution ships what it needs: shaders/ and assets/ must be found from a wheel too."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.cli import imp as cli
from model import resources

REPO = Path(__file__).resolve().parents[1]


def test_resources_found_from_checkout():
    assert resources.asset_path("astronaut.png").is_file()
    assert resources.resource_dir("shaders").is_dir()
    with pytest.raises(FileNotFoundError, match="no-such-asset"):
        resources.asset_path("no-such-asset.bin")


def test_imp_help_lists_commands(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.slow
def test_wheel_contains_shaders_and_assets(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("im_portrait-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped_shaders = {Path(n).name for n in names if n.startswith("model/shaders/")}
    assert shipped_shaders >= {p.name for p in (REPO / "shaders").iterdir() if p.suffix in {".glsl", ".vert", ".frag", ".comp"}}
    assert "model/assets/astronaut.png" in names
    for init in REPO.glob("*/**/__init__.py"):
        rel = init.relative_to(REPO).as_posix()
        if rel.split("/")[0] in {"model", "app", "bench"}:
            assert rel in names, f"{rel} missing from the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "imp-viewer = app.cli.viewer:main" in text and "imp = app.cli.imp:main" in text
