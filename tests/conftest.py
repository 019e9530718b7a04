"""Shared test options: ``pytest --device cuda`` runs the device-aware tests on a GPU."""

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
