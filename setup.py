"""Packages of the distribution; the rest of the metadata is in pyproject.toml.

The default runs stay at the top of the source tree (``checkpoints/``, made by ``landscape
defaults``) and ship inside the wheel as ``landscape/_checkpoints``, where
``landscape.workspace.default_checkpoints()`` finds them in an installed package. pyproject.toml
alone cannot map a folder outside the package into it while also finding the packages.
"""

from setuptools import find_packages, setup

CHECKPOINT_FILES = ["*.safetensors", "*/run.json", "*/*.safetensors", "*/trajectory/*.safetensors"]

setup(
    packages=[*find_packages(include=["landscape", "landscape.*"]), "landscape._checkpoints"],
    package_dir={"landscape._checkpoints": "checkpoints"},
    package_data={"landscape._checkpoints": CHECKPOINT_FILES},
)
