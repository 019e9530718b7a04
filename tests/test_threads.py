"""The one thread policy (landscape.evaldata.small_model_threads) in the Hessian path."""

import pytest
import torch
from torch import nn

import landscape.hessian as hessian_module
from landscape.evaldata import EvalData
from landscape.hessian import hvp, top_eigen
from landscape.params import flatten


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    return model, params, x, y


def test_hvp_runs_a_small_model_on_one_thread(two_threads):
    model, params, x, y = _tiny()
    seen = []
    real = torch.autograd.grad

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.autograd, "grad", spy)
        hvp(model, params, {}, x, y, torch.ones(flatten(params).numel()))
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2  # restored


def test_lanczos_products_run_on_one_thread(two_threads, monkeypatch):
    model, params, x, y = _tiny()
    data = EvalData(x_train=x, y_train=y, x_test=x, y_test=y, batch_size=16)
    seen = []
    real = hessian_module.hvp

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(hessian_module, "hvp", spy)
    vals, _, n = top_eigen(model, params, {}, data, k=2)
    assert n == len(seen) > 0 and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_train_runs_a_small_model_on_one_thread(two_threads, monkeypatch, tmp_path):
    import sys

    from landscape.train import TrainConfig

    train_module = sys.modules["landscape.train"]  # `landscape.train` is the function train

    seen = []
    real = train_module.Loop.epoch

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(train_module.Loop, "epoch", spy)
    cfg = TrainConfig(epochs=1, snapshots=0)
    train_module.train(cfg, tmp_path / "run")
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
