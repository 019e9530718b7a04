"""The fast point evaluator against the reference in landscape.params (recalibrate_bn, evaluate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.evaluate import (
    METRICS,
    SMALL_MACS,
    EvalData,
    channels_last,
    evaluate_point,
    evaluate_points,
    macs_per_sample,
    small_model_threads,
)
from landscape.models import build_model
from landscape.params import evaluate, recalibrate_bn
from landscape.store import Store


def _bn1d_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.BatchNorm1d(4)
    )


# name -> (constructor, input shape of one sample, classes)
NETS = {
    "cnn": (lambda: build_model("cnn", channels=(4, 8), hidden=16), (1, 8, 8), 10),
    "resnet": (
        lambda: build_model("resnet20", in_shape=(3, 8, 8), width=4, blocks=1),
        (3, 8, 8),
        10,
    ),
    "bn1d": (_bn1d_net, (6,), 4),
    "mlp": (lambda: build_model("mlp", widths=(12,)), (1, 8, 8), 10),
}


def _setup(net: str, n_train: int = 70, n_test: int = 23, seed: int = 0):
    """(model, random params that are not the model's own, x_train, y_train, x_test, y_test)."""
    make, shape, classes = NETS[net]
    torch.manual_seed(seed)
    model = make()
    params = {n: torch.randn_like(p) * 0.5 for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(seed + 1)
    x_train = torch.randn(n_train, *shape, generator=g)
    x_test = torch.randn(n_test, *shape, generator=g)
    y_train = torch.randint(0, classes, (n_train,), generator=g)
    y_test = torch.randint(0, classes, (n_test,), generator=g)
    return model, params, x_train, y_train, x_test, y_test


def _reference(model, params, xtr, ytr, xte, yte, *, batch_size, subset) -> dict[str, float]:
    buffers = recalibrate_bn(model, params, xtr, batch_size=batch_size, subset=subset)
    tr = evaluate(model, params, buffers, xtr, ytr)
    te = evaluate(model, params, buffers, xte, yte)
    return {"train_loss": tr.loss, "train_acc": tr.acc, "test_loss": te.loss, "test_acc": te.acc}


# (BN batch size, eval chunk, bn_subset): one batch; shared chunks (input layer computed once);
# a subset that cuts a chunk; different chunkings; a subset larger than the data.
CASES = [(2048, 256, None), (16, 16, None), (16, 16, 50), (7, 16, 48), (32, 8, 1000)]


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize(("batch_size", "eval_batch_size", "subset"), CASES)
def test_evaluate_point_matches_reference(net, batch_size, eval_batch_size, subset):
    model, params, xtr, ytr, xte, yte = _setup(net)
    data = EvalData(xtr, ytr, xte, yte, subset, batch_size, eval_batch_size)
    got = evaluate_point(model, params, data)
    want = _reference(model, params, xtr, ytr, xte, yte, batch_size=batch_size, subset=subset)
    for m in METRICS:
        assert got[m] == pytest.approx(want[m], rel=1e-5, abs=1e-6), m


def test_evaluate_point_leaves_model_alone():
    model, params, xtr, ytr, xte, yte = _setup("cnn")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate_point(model, params, EvalData(xtr, ytr, xte, yte, None, 16, 16))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_recalibration_stops_after_last_bn_and_shares_input_layer(monkeypatch):
    """The head runs only in eval passes; the first conv runs once per chunk, not twice."""
    model, params, xtr, ytr, xte, yte = _setup("cnn", n_train=64, n_test=20)
    head_calls = {"train": 0, "eval": 0}

    def count_head(mod, args, out):
        head_calls["train" if mod.training else "eval"] += 1

    model.classifier.register_forward_hook(count_head)  # deep copies keep their hooks
    first_conv = []
    conv_forward = nn.Conv2d._conv_forward

    def counting(self, x, weight, bias):
        if weight.shape[1] == 1:  # the first conv: one input channel
            first_conv.append(x.shape[0])
        return conv_forward(self, x, weight, bias)

    monkeypatch.setattr(nn.Conv2d, "_conv_forward", counting)
    data = EvalData(xtr, ytr, xte, yte, None, 16, 16)
    got = evaluate_point(model, params, data)
    # 4 train + 2 test chunks evaluated; the head never runs in the recalibration pass except
    # in its first forward (which learns how many BN calls one forward makes).
    assert head_calls == {"train": 1, "eval": 6}
    # 4 train chunks, computed in the recalibration pass and reused; then the 2 test chunks.
    assert first_conv == [16, 16, 16, 16, 16, 4]
    want = _reference(model, params, xtr, ytr, xte, yte, batch_size=16, subset=None)
    for m in METRICS:
        assert got[m] == pytest.approx(want[m], rel=1e-5, abs=1e-6)


def test_evaluate_points_resumes_from_partial(tmp_path):
    model, params, xtr, ytr, xte, yte = _setup("cnn")
    data = EvalData(xtr, ytr, xte, yte)
    points = [{n: p * (1 + 0.1 * i) for n, p in params.items()} for i in range(6)]
    store = Store(tmp_path)
    calls = []

    def failing(i):
        if i == 3:
            raise KeyboardInterrupt  # a kill in the middle of the run
        calls.append(i)
        return points[i]

    with pytest.raises(KeyboardInterrupt):
        evaluate_points(model, failing, 6, data, store=store, kind="t", key="k", save_every_s=0)
    assert calls == [0, 1, 2]
    calls.clear()

    def counting(i):
        calls.append(i)
        return points[i]

    got = evaluate_points(model, counting, 6, data, store=store, kind="t", key="k")
    assert calls == [3, 4, 5]  # only the points the partial result lacks
    clean = evaluate_points(model, points.__getitem__, 6, data)
    assert got["done"].all()
    for m in METRICS:
        np.testing.assert_allclose(got[m], clean[m], rtol=1e-6)


def test_evaluate_points_shards_cover_all_points():
    model, params, xtr, ytr, xte, yte = _setup("mlp")
    data = EvalData(xtr, ytr, xte, yte)
    points = [{n: p * (1 - 0.2 * i) for n, p in params.items()} for i in range(5)]
    full = evaluate_points(model, points.__getitem__, 5, data)
    r0 = evaluate_points(model, points.__getitem__, 5, data, shard=(0, 2))
    r1 = evaluate_points(model, points.__getitem__, 5, data, shard=(1, 2))
    assert r0["done"].tolist() == [True, False, True, False, True]
    assert (r0["done"] ^ r1["done"]).all()
    for m in METRICS:
        merged = np.where(r0["done"], r0[m], r1[m])
        np.testing.assert_allclose(merged, full[m], rtol=1e-6)


def test_progress_reports_every_point():
    model, params, xtr, ytr, xte, yte = _setup("mlp")
    seen = []
    evaluate_points(
        model,
        lambda i: params,
        3,
        EvalData(xtr, ytr, xte, yte),
        progress=lambda d, t, s: seen.append((d, t, s)),
        stage="here",
    )
    assert seen == [(1, 3, "here"), (2, 3, "here"), (3, 3, "here")]


def test_macs_per_sample_closed_form():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )
    # conv: 4 channels x 64 positions x (1 x 3 x 3) fan-in; linear: 10 x 256.
    assert macs_per_sample(model, torch.randn(5, 1, 8, 8)) == 4 * 64 * 9 + 10 * 256


def test_small_model_threads():
    torch.set_num_threads(2)
    small = nn.Linear(10, 3)
    with small_model_threads(small, torch.randn(4, 10)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    big = nn.Linear(2000, SMALL_MACS // 2000)
    with small_model_threads(big, torch.randn(4, 2000)):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("shape", [(5, 1, 4, 4), (5, 3, 2, 6)])
def test_channels_last(shape):
    x = torch.randn(shape)
    y = channels_last(x)
    assert torch.equal(x, y)
    assert y.stride(1) == 1 and y.stride(3) == shape[1]
    assert channels_last(y) is y
    flat = torch.randn(5, 7)
    assert channels_last(flat) is flat


def test_eval_data_checks_and_describe():
    x, y = torch.randn(10, 1, 2, 2), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="bn_subset"):
        EvalData(x, y, x, y, bn_subset=0)
    with pytest.raises(ValueError, match="batch sizes"):
        EvalData(x, y, x, y, eval_batch_size=0)
    d = EvalData(x, y, x[:4], y[:4], bn_subset=6, batch_size=3)
    assert d.describe() == {"n_train": 10, "n_test": 4, "bn_samples": 6, "bn_batch_size": 3}
    assert EvalData(x, y, x, y, bn_subset=60).bn_samples == 10


@pytest.mark.parametrize("net", ["cnn", "resnet"])
def test_evaluate_points_on_device(net, device):
    """``pytest --device cuda``: the same numbers as the CPU reference (TF32 tolerance)."""
    model, params, xtr, ytr, xte, yte = _setup(net)
    data = EvalData(*(v.to(device) for v in (xtr, ytr, xte, yte)), None, 16, 16)
    on_device = {n: p.to(device) for n, p in params.items()}
    got = evaluate_points(model, lambda i: on_device, 2, data)
    want = _reference(model, params, xtr, ytr, xte, yte, batch_size=16, subset=None)
    for m in METRICS:
        np.testing.assert_allclose(got[m], want[m], rtol=2e-3, atol=1e-4)
