"""Shared test set-up.

``pytest --device cuda`` runs the device-aware tests on a GPU. Every test gets its own
LANDSCAPE_HOME, so no test writes results into the repository, and one torch thread: the
tensors are tiny and the machine's two cores are shared, where a second intra-op thread made
small passes up to 10x slower.
"""

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
