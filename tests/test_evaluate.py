"""The one evaluator against the naive reference in tests/reference.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.evaldata import SMALL_MACS, channels_last, macs_per_sample, small_model_threads
from landscape.evaluate import (
    METRICS,
    REDUCTIONS,
    EvalData,
    Evaluator,
    bn_statistics,
    evaluate_point,
    evaluate_points,
)
from landscape.metrics import chunk_sums, evaluate_model, values
from landscape.models import build_model
from landscape.store import Store
from tests.reference import ece, logits, point_metrics, recalibrate_bn


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
    return point_metrics(model, params, xtr, ytr, xte, yte, batch_size=batch_size, subset=subset)


def _close(got: dict, want: dict, rel: float = 1e-5, abs_: float = 1e-6) -> None:
    for m in METRICS:
        assert got[m] == pytest.approx(want[m], rel=rel, abs=abs_), m


def _basis(params: dict, k: int, seed: int = 5) -> tuple[list[dict], list[float]]:
    """k basis vectors and coords whose combination is ``params`` (random other directions)."""
    g = torch.Generator().manual_seed(seed)
    dirs = [
        {n: 0.3 * torch.randn(p.shape, generator=g) for n, p in params.items()}
        for _ in range(k - 1)
    ]
    coords = [1.0] + [0.7 - 0.5 * j for j in range(k - 1)]
    first = {
        n: p - sum(c * d[n] for c, d in zip(coords[1:], dirs, strict=True))
        for n, p in params.items()
    }
    return [first, *dirs], coords


# (BN batch size, eval chunk, bn_subset): one batch; equal chunks; a subset that cuts a batch;
# different chunkings; a subset larger than the data.
CASES = [(2048, 256, None), (16, 16, None), (16, 16, 50), (7, 16, 48), (32, 8, 1000)]


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize(("batch_size", "eval_batch_size", "subset"), CASES)
def test_evaluate_point_matches_reference(net, batch_size, eval_batch_size, subset):
    model, params, xtr, ytr, xte, yte = _setup(net)
    data = EvalData(xtr, ytr, xte, yte, subset, batch_size, eval_batch_size)
    got = evaluate_point(model, params, data)
    _close(got, _reference(model, params, xtr, ytr, xte, yte, batch_size=batch_size, subset=subset))


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("first_layer", ["auto", "plain"])
def test_evaluator_on_a_basis_matches_reference(net, k, first_layer):
    model, params, xtr, ytr, xte, yte = _setup(net)
    data = EvalData(xtr, ytr, xte, yte, 50, 16, 16)
    basis, coords = _basis(params, k)
    ev = Evaluator(model, data, basis, first_layer=first_layer, chunk_bytes=2**12)
    assert (ev.layer is not None) == (first_layer == "auto" and k > 1)
    want = _reference(model, params, xtr, ytr, xte, yte, batch_size=16, subset=50)
    _close(ev(coords), want, rel=1e-4, abs_=1e-5)
    flat = torch.stack([torch.cat([b[n].reshape(-1) for n in params]) for b in basis])
    _close(Evaluator(model, data, flat)(coords), want, rel=1e-4, abs_=1e-5)  # (k, P) basis


@pytest.mark.parametrize("net", list(NETS))
def test_several_points_reduced_at_once_match_reference(net):
    """``many``: each point's logits into one buffer, the metrics of all points reduced in one
    go (groups of 2 here): each point's metrics are the reference's at that point."""
    model, params, xtr, ytr, xte, yte = _setup(net)
    data = EvalData(xtr, ytr, xte, yte, 50, 16, 16)
    basis, coords = _basis(params, 2)
    ev = Evaluator(model, data, basis)
    ev.group = 2
    scales = [1.0, 0.5, 1.5, 0.8, 1.2]  # the points scale * params
    got = ev.many(np.array([[s * c for c in coords] for s in scales]))
    for s, metrics in zip(scales, got, strict=True):
        point = {n: s * v for n, v in params.items()}
        want = _reference(model, point, xtr, ytr, xte, yte, batch_size=16, subset=50)
        _close(metrics, want, rel=1e-4, abs_=1e-5)


def test_metrics_of_stacked_logits_equal_one_at_a_time():
    torch.manual_seed(0)
    logits, y = torch.randn(4, 3, 50, 10) * 4, torch.randint(0, 10, (50,))
    stacked = chunk_sums(logits, y, 30)  # (4, 3, 2, WIDTH)
    for i in range(4):
        for j in range(3):
            torch.testing.assert_close(stacked[i, j], chunk_sums(logits[i, j], y, 30))


def test_accuracy_with_tied_logits_follows_argmax():
    """Rows whose largest logit is shared: the prediction is argmax's first index."""
    logits = torch.zeros(6, 4)  # all tied: argmax says class 0
    logits[3:, 1] = logits[3:, 3] = 2.0  # tied between 1 and 3: class 1
    y = torch.tensor([0, 2, 3, 1, 3, 0])
    acc = values(chunk_sums(logits, y)[0], 6)["acc"]
    assert acc == int((logits.argmax(1) == y).sum()) / 6 == 2 / 6


def test_first_layer_reuse_and_fallbacks():
    model, params, xtr, ytr, xte, yte = _setup("cnn")
    data = EvalData(xtr, ytr, xte, yte)
    basis, coords = _basis(params, 3)
    assert Evaluator(model, data, basis, first_layer="reuse").layer == "features.0"
    # The cached responses (3 x 93 samples) do not fit: plain evaluation, same numbers.
    small = Evaluator(model, data, basis, budget_bytes=1000)
    assert small.layer is None
    _close(small(coords), Evaluator(model, data, basis)(coords))
    with pytest.raises(ValueError, match="reusable"):
        Evaluator(model, data, basis, first_layer="reuse", budget_bytes=1000)
    # A network that reads its input before its first layer's output can be reused.
    twice = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    twice[3] = twice[1]  # the same layer called twice: not reusable
    tp = {n: p.detach() for n, p in twice.named_parameters()}
    assert Evaluator(twice, data, [tp, tp]).layer is None
    with pytest.raises(ValueError, match="first_layer"):
        Evaluator(model, data, basis, first_layer="bogus")


def test_evaluator_leaves_model_alone():
    model, params, xtr, ytr, xte, yte = _setup("cnn")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    basis, coords = _basis(params, 2)
    Evaluator(model, EvalData(xtr, ytr, xte, yte, None, 16, 16), basis)(coords)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("net", ["cnn", "bn1d", "resnet"])
@pytest.mark.parametrize("subset", [None, 30])
def test_bn_statistics_match_reference(net, subset):
    model, params, xtr, ytr, xte, yte = _setup(net)
    got = bn_statistics(model, params, EvalData(xtr, ytr, xte, yte, subset, 16))
    want = recalibrate_bn(model, params, xtr, batch_size=16, subset=subset)
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-6)


def test_buffers_at_a_combined_point_match_reference():
    model, params, xtr, ytr, xte, yte = _setup("cnn")
    basis, coords = _basis(params, 3)
    ev = Evaluator(model, EvalData(xtr, ytr, xte, yte, None, 16), basis)
    assert ev.layer is not None
    got = ev.buffers(coords)
    want = recalibrate_bn(model, params, xtr, batch_size=16)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-5)


def test_ece_along_a_curve_matches_numpy():
    """ECE at points of a quadratic Bezier curve against numpy binning of the logits."""
    model, params, xtr, ytr, xte, yte = _setup("mlp", n_train=300, n_test=120)
    g = torch.Generator().manual_seed(9)
    ends = [{n: p * s for n, p in params.items()} for s in (1.0, 0.2)]
    bend = {n: p + 0.5 * torch.randn(p.shape, generator=g) for n, p in params.items()}
    basis = [ends[0], bend, ends[1]]
    ev = Evaluator(model, EvalData(xtr, ytr, xte, yte), basis)
    for t in (0.0, 0.3, 0.8):
        w = [(1 - t) ** 2, 2 * t * (1 - t), t**2]
        got = ev(w)
        point = {n: sum(c * b[n] for c, b in zip(w, basis, strict=True)) for n in params}
        buffers = dict(model.named_buffers())
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            want = ece(logits(model, point, buffers, x), y)
            assert abs(got[f"{split}_ece"] - want) < 1e-6


def test_metrics_come_from_reductions():
    assert METRICS == tuple(f"{s}_{m.name}" for s in ("train", "test") for m in REDUCTIONS)
    assert {"train_loss", "train_acc", "train_ece", "test_loss", "test_acc", "test_ece"} <= set(
        METRICS
    )


def test_evaluate_model_uses_own_weights():
    model, _, xtr, ytr, _, _ = _setup("cnn")
    model.eval()
    want = point_metrics(model, dict(model.named_parameters()), xtr, ytr, xtr, ytr)
    model.train()
    got = evaluate_model(model, xtr, ytr, batch_size=32)
    assert model.training
    buffers = dict(model.named_buffers())
    params = {n: p.detach() for n, p in model.named_parameters()}
    out = logits(model, params, buffers, xtr)
    assert got["ece"] == pytest.approx(ece(out, ytr), abs=1e-6)
    assert got["acc"] == pytest.approx(float((out.argmax(1) == ytr).double().mean()))
    assert got["loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(out, ytr)), rel=1e-5
    )
    del want


def test_many_matches_one_at_a_time():
    model, params, xtr, ytr, xte, yte = _setup("mlp")
    data = EvalData(xtr, ytr, xte, yte)
    basis, _ = _basis(params, 3)
    coords = np.random.default_rng(0).normal(size=(7, 3))
    for first_layer in ("auto", "plain"):
        ev = Evaluator(model, data, basis, first_layer=first_layer, points_per_pass=3)
        assert ev.points_per_pass == 3
        for got, c in zip(ev.many(coords), coords, strict=True):
            _close(got, ev(c), rel=1e-5, abs_=1e-6)
    bn_model, bn_params, *rest = _setup("cnn")
    with pytest.raises(ValueError, match="without BatchNorm"):
        Evaluator(bn_model, EvalData(*rest), [bn_params], points_per_pass=2)


def test_evaluate_points_resumes_from_partial(tmp_path, monkeypatch):
    model, params, xtr, ytr, xte, yte = _setup("cnn")
    data = EvalData(xtr, ytr, xte, yte)
    coords = (1 + 0.1 * np.arange(6))[:, None]  # the points params * (1 + 0.1 i)
    store = Store(tmp_path)
    calls = []
    call = Evaluator._logits_at  # the work of one point

    def failing(self, c, out):
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the run
        calls.append(round(float(c[0]), 6))
        return call(self, c, out)

    monkeypatch.setattr(Evaluator, "_logits_at", failing)
    with pytest.raises(KeyboardInterrupt):
        evaluate_points(
            model, [params], coords, data, store=store, kind="t", key="k", save_every_s=0
        )
    assert calls == [1.0, 1.1, 1.2]
    # Saved: the points of every call that completed (the first call has one point).
    saved, _ = store.load_partial("t", "k")
    assert 1 <= len(saved) <= 3 and sorted(saved.tolist()) == list(range(len(saved)))
    calls.clear()
    monkeypatch.setattr(Evaluator, "_logits_at", lambda *a: calls.append(0) or call(*a))
    got = evaluate_points(model, [params], coords, data, store=store, kind="t", key="k")
    assert len(calls) == 6 - len(saved)  # only the points the partial result lacks
    monkeypatch.setattr(Evaluator, "_logits_at", call)
    clean = evaluate_points(model, [params], coords, data)
    assert got["done"].all()
    for m in METRICS:
        np.testing.assert_allclose(got[m], clean[m], rtol=1e-6)


def test_evaluate_points_ignores_partials_without_every_metric(tmp_path):
    model, params, xtr, ytr, xte, yte = _setup("mlp")
    store = Store(tmp_path)
    old = {m: np.zeros(2) for m in ("train_loss", "train_acc", "test_loss", "test_acc")}
    store.append_partial("t", "k", np.arange(2), old)
    got = evaluate_points(
        model,
        [params],
        np.ones((2, 1)),
        EvalData(xtr, ytr, xte, yte),
        store=store,
        kind="t",
        key="k",
    )
    assert (got["train_loss"] > 0).all()
    index, values = store.load_partial("t", "k")  # started over with every metric
    assert sorted(index) == [0, 1] and set(values) == set(METRICS)


def test_partial_saves_append_only_the_new_points(tmp_path, monkeypatch):
    """Each save writes the points evaluated since the last one, not the whole grid again."""
    model, params, xtr, ytr, xte, yte = _setup("mlp")
    store = Store(tmp_path)
    writes: list[int] = []
    append = Store.append_partial

    def counting(self, kind, key, index, columns):
        writes.append(len(index))
        return append(self, kind, key, index, columns)

    monkeypatch.setattr(Store, "append_partial", counting)
    coords = np.linspace(0.5, 1.5, 7)[:, None]
    data = EvalData(xtr, ytr, xte, yte)
    evaluate_points(model, [params], coords, data, store=store, kind="t", key="k", save_every_s=0)
    # One save per call of the evaluator (its first has one point), each only with the new
    # points: never the ones already saved.
    assert writes[0] == 1 and min(writes) >= 1 and sum(writes) == 7
    index, values = store.load_partial("t", "k")
    assert sorted(index) == list(range(7))


def test_evaluate_points_shards_cover_all_points():
    model, params, xtr, ytr, xte, yte = _setup("mlp")
    data = EvalData(xtr, ytr, xte, yte)
    basis, _ = _basis(params, 2)
    coords = np.stack([np.ones(5), np.linspace(-1, 1, 5)], 1)
    full = evaluate_points(model, basis, coords, data)
    r0 = evaluate_points(model, basis, coords, data, shard=(0, 2))
    r1 = evaluate_points(model, basis, coords, data, shard=(1, 2))
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
        [params],
        np.ones((3, 1)),
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


@pytest.mark.parametrize("net", ["cnn", "resnet", "mlp"])
def test_evaluate_points_on_device(net, device):
    """``pytest --device cuda``: the same numbers as the CPU reference (TF32 tolerance)."""
    model, params, xtr, ytr, xte, yte = _setup(net)
    data = EvalData(*(v.to(device) for v in (xtr, ytr, xte, yte)), None, 16, 16)
    basis, _ = _basis({n: p.to(device) for n, p in params.items()}, 3)
    coords = np.array([[1.0, 0.7, 0.2]] * 3)
    got = evaluate_points(model, basis, coords, data)
    want = _reference(model, params, xtr, ytr, xte, yte, batch_size=16, subset=None)
    for m in METRICS:
        np.testing.assert_allclose(got[m], want[m], rtol=2e-3, atol=1e-4)
