"""Where the shipped shaders and assets are, from a source checkout or an installed wheel.

In a checkout they sit at the top of the repository (../shaders, ../assets from this file); a wheel
ships them inside this package as `model/shaders` and `model/assets` (see pyproject.toml)."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The directory `shaders` or `assets`, wherever this installation keeps it."""
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"im-portrait resource folder '{name}' not found next to {_HERE} or its parent; "
        "the installation is incomplete: reinstall with `pip install -e .` from a checkout"
    )


def shader_source(filename: str) -> str:
    """Text of one GLSL file from shaders/."""
    return (resource_dir("shaders") / filename).read_text()


def asset_path(filename: str) -> Path:
    """Path of one file from assets/ (it must exist)."""
    path = resource_dir("assets") / filename
    if not path.exists():
        raise FileNotFoundError(f"asset '{filename}' is missing from {path.parent}")
    return path
