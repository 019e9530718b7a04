"""Shared test set-up.

``pytest --device cuda`` runs the device-aware tests on a GPU. Every test gets its own
LANDSCAPE_HOME, so no test writes results into the repository, and one torch thread: the
tensors are tiny and the machine's two cores are shared, where a second intra-op thread made
small passes up to 10x slower.
"""

from pathlib import Path

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for device-aware tests (cpu, cuda)")


@pytest.fixture
def device(request) -> str:
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("CUDA requested but not available")
    return name


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_HOME", str(tmp_path / "landscape_home"))


@pytest.fixture
def home(tmp_path):
    """The test's LANDSCAPE_HOME (set for every test by ``_isolated_home``)."""
    return tmp_path / "landscape_home"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    """Two tiny training runs on digits (5 snapshots each), the inputs of the PCA study."""
    from landscape.train import TrainConfig, train

    folders = []
    for seed in (0, 1):
        cfg = TrainConfig(
            arch="mlp",
            arch_kwargs={"widths": [6]},
            epochs=2,
            batch_size=256,
            snapshots=5,
            seed=seed,
            lr=0.5,
        )
        train(cfg, tmp_path / f"run{seed}")
        folders.append(tmp_path / f"run{seed}")
    return folders


@pytest.fixture(scope="module")
def ends(tmp_path_factory):
    """Two tiny digits CNN checkpoints (seeds 1 and 2), the ends of the curve tests."""
    from tests.curve_checkpoints import tiny_checkpoint

    folder = tmp_path_factory.mktemp("ends")
    return tiny_checkpoint(folder / "a.safetensors", 1), tiny_checkpoint(
        folder / "b.safetensors", 2
    )


@pytest.fixture(scope="module")
def digits():
    """The bundled digits data set."""
    from landscape.data import load_dataset

    return load_dataset("digits")
