"""Package list only (everything else is in pyproject.toml): the code packages are found on disk,
and shaders/ + assets/ are shipped inside `model` (mapped by package-dir in pyproject.toml)."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["model", "model.*", "app", "app.*", "bench", "bench.*"]) + ["model.shaders", "model.assets"])
