"""Weight points: flat vectors, sparsity; the evaluator's BN statistics and evaluate_model
(landscape.evaluate) against independent references."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from landscape.evaluate import EvalData, bn_statistics
from landscape.metrics import evaluate_model
from landscape.models import build_model, prunable_names
from landscape.params import (
    flatten,
    has_batchnorm,
    param_names,
    sparsity,
    split_state,
    unflatten,
)

N = 40


def _bn1d_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.BatchNorm1d(4)
    )


# name -> (constructor, input shape of one sample)
NETS = {
    "cnn": (lambda: build_model("cnn", channels=(4, 8), hidden=16), (1, 8, 8)),
    "resnet": (
        lambda: build_model("resnet20", in_shape=(3, 8, 8), width=4, blocks=1),
        (3, 8, 8),
    ),
    "bn1d": (_bn1d_net, (6,)),
}


def _setup(net: str, seed: int = 0):
    """(model, random params, inputs): the params are not the model's own weights."""
    make, shape = NETS[net]
    torch.manual_seed(seed)
    model = make()
    params = {n: torch.randn_like(p) * 0.5 + 0.1 for n, p in model.named_parameters()}
    x = torch.randn(N, *shape) * 2 + 0.5
    return model, params, x


def _bn_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    return {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm)}


def _reference_stats(model: nn.Module, params, batches):
    """Per-BN-layer (mean, unbiased var) of the layer's inputs, averaged over batches.

    Captured with forward hooks on a copy of the model in train mode (batch statistics), in
    float64: an independent computation of what a cumulative-average recalibration must give.
    """
    ref = copy.deepcopy(model)
    ref.load_state_dict(params, strict=False)
    ref.train()
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in _bn_layers(ref)}
    handles = [
        m.register_forward_pre_hook(lambda _m, inp, n=n: captured[n].append(inp[0].detach()))
        for n, m in _bn_layers(ref).items()
    ]
    with torch.no_grad():
        for xb in batches:
            ref(xb)
    for h in handles:
        h.remove()
    stats = {}
    for n, inputs in captured.items():
        means, vars_ = [], []
        for t in inputs:
            t = t.double().transpose(0, 1).reshape(t.shape[1], -1)  # (channels, values)
            means.append(t.mean(1))
            vars_.append(t.var(1, unbiased=True))
        stats[n] = (torch.stack(means).mean(0), torch.stack(vars_).mean(0), len(inputs))
    return stats


def _assert_matches_reference(buffers, stats):
    assert stats
    for n, (mean, var, count) in stats.items():
        torch.testing.assert_close(
            buffers[f"{n}.running_mean"].double(), mean, rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(buffers[f"{n}.running_var"].double(), var, rtol=1e-5, atol=1e-5)
        assert int(buffers[f"{n}.num_batches_tracked"]) == count


# ---------------------------------------------------------------- flat vectors and names


def test_flatten_matches_parameters_to_vector():
    model, _, _ = _setup("cnn")
    named = dict(model.named_parameters())
    vec = flatten(named)
    assert torch.equal(vec, parameters_to_vector(model.parameters()))
    names = param_names(model)[::-1]
    assert torch.equal(flatten(named, names), torch.cat([named[n].reshape(-1) for n in names]))


def test_unflatten_round_trip_and_vector_to_parameters():
    model, params, _ = _setup("resnet")
    vec = flatten(params)
    back = unflatten(vec, params)
    assert list(back) == list(params)
    for n in params:
        assert back[n].shape == params[n].shape and torch.equal(back[n], params[n])
    # Reference: torch's own vector -> parameters, in registration order.
    vector_to_parameters(vec, model.parameters())
    for n, p in model.named_parameters():
        assert torch.equal(back[n], p)
    assert torch.equal(flatten(unflatten(vec * 3, params)), vec * 3)


@pytest.mark.parametrize("delta", [-1, 1, -5])
def test_unflatten_wrong_length(delta):
    like = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    n = 10 + delta
    with pytest.raises(ValueError, match=f"vector has {n} entries, the model needs 10"):
        unflatten(torch.zeros(n), like)


def test_param_names_and_split_state():
    model, _, _ = _setup("cnn")
    state = model.state_dict()
    params, buffers = split_state(model, state)
    assert param_names(model) == [n for n, _ in model.named_parameters()]
    assert set(params) == set(param_names(model))
    assert set(buffers) == {n for n, _ in model.named_buffers()}
    assert set(params) | set(buffers) == set(state) and not set(params) & set(buffers)
    assert all(params[k] is state[k] for k in params)
    assert any(k.endswith("num_batches_tracked") for k in buffers)
    mlp = build_model("mlp")
    mp, mb = split_state(mlp, mlp.state_dict())
    assert mb == {} and set(mp) == set(mlp.state_dict())


def test_has_batchnorm():
    assert has_batchnorm(build_model("cnn"))
    assert has_batchnorm(_bn1d_net())
    assert not has_batchnorm(build_model("mlp"))


# ---------------------------------------------------------------- sparsity


@pytest.mark.parametrize("tol", [1e-3, 1e-2])
def test_sparsity_against_numpy(tol):
    torch.manual_seed(0)
    model = build_model("cnn", channels=(4, 8), hidden=16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    for v in state.values():
        if v.is_floating_point():
            r = torch.rand(v.shape, generator=gen)
            v[r < 0.3] = 0.0
            v[(r >= 0.3) & (r < 0.4)] = 5e-3  # small but not zero
            v[(r >= 0.4) & (r < 0.45)] = -5e-4
    prunable = prunable_names(model)
    got = sparsity(state, prunable, tol=tol)

    arrays = {k: state[k].numpy() for k in prunable}
    total = sum(a.size for a in arrays.values())
    assert got["count"] == total
    assert got["zero"] == pytest.approx(sum(np.sum(a == 0) for a in arrays.values()) / total)
    small = sum(np.sum(np.abs(a) < tol) for a in arrays.values()) / total
    assert got["small"] == pytest.approx(small)
    assert got["small"] >= got["zero"] > 0.2
    assert got["layers"] == pytest.approx({k: np.mean(a == 0) for k, a in arrays.items()})
    assert set(got["layers"]) == set(prunable)  # biases and BN are not counted


def test_sparsity_ignores_non_prunable_and_handles_empty():
    state = {"w": torch.tensor([[0.0, 1.0], [2.0, 0.0]]), "b": torch.zeros(10)}
    got = sparsity(state, ["w"])
    assert got == {"zero": 0.5, "small": 0.5, "count": 4, "layers": {"w": 0.5}}
    assert sparsity(state, []) == {"zero": 0.0, "small": 0.0, "count": 0, "layers": {}}
    negzero = sparsity({"w": torch.tensor([-0.0, 0.0, 1e-9])}, ["w"])
    assert negzero["zero"] == pytest.approx(2 / 3) and negzero["small"] == 1.0
    edge = sparsity({"w": torch.tensor([1e-3, -1e-3, 9e-4, 0.0])}, ["w"], tol=1e-3)
    assert edge["small"] == 0.5  # strictly below tol


# ---------------------------------------------------------------- evaluate_model


def recalibrate_bn(model, params, x, *, batch_size=2048, subset=None):
    """landscape.evaluate.bn_statistics with the arguments the old recalibrate_bn took."""
    y = torch.zeros(len(x), dtype=torch.long)
    return bn_statistics(model, params, EvalData(x, y, x[:1], y[:1], subset, batch_size))


def evaluate(model, params, buffers, x, y, *, batch_size=2048) -> tuple[float, float]:
    """(loss, acc) of evaluate_model on a copy of ``model`` holding (params, buffers)."""
    net = copy.deepcopy(model)
    net.load_state_dict({**params, **buffers})
    got = evaluate_model(net, x, y, batch_size=batch_size)
    return got["loss"], got["acc"]


def _random_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    out = {}
    for n, b in model.named_buffers():
        if n.endswith("running_mean"):
            out[n] = torch.randn(b.shape, generator=gen) * 0.3
        elif n.endswith("running_var"):
            out[n] = torch.rand(b.shape, generator=gen) + 0.5
        else:
            out[n] = b.clone()
    return out


@pytest.mark.parametrize("net", ["cnn", "mlp"])
@pytest.mark.parametrize("training", [True, False])
def test_evaluate_against_plain_forward(net, training):
    torch.manual_seed(0)
    if net == "cnn":
        model, params, x = _setup("cnn")
    else:
        model = build_model("mlp", widths=(16,))
        params = {n: torch.randn_like(p) for n, p in model.named_parameters()}
        x = torch.randn(N, 1, 8, 8)
    buffers = _random_buffers(model)
    model.train(training)

    ref = copy.deepcopy(model)
    ref.load_state_dict({**params, **buffers})
    ref.eval()
    with torch.no_grad():
        logits = ref(x)
    # Half the labels agree with the prediction, so the accuracy is far from 0 and 1.
    y = torch.randint(0, 10, (N,), generator=torch.Generator().manual_seed(5))
    y[: N // 2] = logits[: N // 2].argmax(1)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).double().mean().item()
    assert 0.5 <= acc < 1

    own = {k: v.clone() for k, v in model.state_dict().items()}
    for bs in (2048, N, 7, 3):
        res_loss, res_acc = evaluate(model, params, buffers, x, y, batch_size=bs)
        assert res_loss == pytest.approx(loss, abs=1e-6, rel=1e-6)
        assert res_acc == pytest.approx(acc, abs=1e-12)
    net = copy.deepcopy(model)
    net.load_state_dict({**params, **buffers})
    net.train(training)
    evaluate_model(net, x, y)
    assert net.training is training  # evaluate_model restores the mode
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())


def test_evaluate_uses_running_stats_not_batch_stats():
    model, params, x = _setup("cnn")
    y = torch.zeros(N, dtype=torch.long)
    a = evaluate(model, params, _random_buffers(model), x, y)
    fresh = {n: b.clone() for n, b in model.named_buffers()}  # mean 0, var 1
    b = evaluate(model, params, fresh, x, y)
    assert a[0] != pytest.approx(b[0])


# ---------------------------------------------------------------- recalibrate_bn


@pytest.mark.parametrize("net", sorted(NETS))
def test_recalibrate_single_batch_equals_data_statistics(net):
    model, params, x = _setup(net)
    buffers = recalibrate_bn(model, params, x, batch_size=N)
    _assert_matches_reference(buffers, _reference_stats(model, params, [x]))
    assert set(buffers) == {n for n, _ in model.named_buffers()}


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("batch_size", [10, 16])  # equal batches; 16, 16, 8
def test_recalibrate_batches_give_cumulative_average(net, batch_size):
    model, params, x = _setup(net)
    buffers = recalibrate_bn(model, params, x, batch_size=batch_size)
    batches = list(x.split(batch_size))
    stats = _reference_stats(model, params, batches)
    _assert_matches_reference(buffers, stats)
    # And it is not simply the statistics of all data at once.
    full = _reference_stats(model, params, [x])
    assert any(not torch.allclose(stats[n][1], full[n][1], rtol=1e-3) for n in stats)


@pytest.mark.parametrize("bad", [1e6, float("nan")])
def test_recalibrate_ignores_endpoint_buffers(bad):
    model, params, x = _setup("cnn")
    clean = recalibrate_bn(model, params, x, batch_size=16)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.fill_(1000 if n.endswith("num_batches_tracked") else bad)
        for p in model.parameters():
            p.fill_(7.0)  # the model's own weights are not the weight point either
    dirty = recalibrate_bn(model, params, x, batch_size=16)
    assert clean.keys() == dirty.keys()
    for k in clean:
        assert torch.equal(clean[k], dirty[k]), k


@pytest.mark.parametrize("batch_size", [N, 5])
def test_recalibrate_subset_uses_first_samples(batch_size):
    model, params, x = _setup("cnn")
    sub = recalibrate_bn(model, params, x, batch_size=batch_size, subset=12)
    first = recalibrate_bn(model, params, x[:12].clone(), batch_size=batch_size)
    for k in sub:
        assert torch.equal(sub[k], first[k]), k
    _assert_matches_reference(sub, _reference_stats(model, params, list(x[:12].split(batch_size))))
    full = recalibrate_bn(model, params, x, batch_size=batch_size)
    assert not torch.allclose(sub["features.1.running_mean"], full["features.1.running_mean"])


@pytest.mark.parametrize("training", [True, False])
def test_recalibrate_leaves_model_untouched(training):
    model, params, x = _setup("resnet")
    bns = list(_bn_layers(model).values())
    momenta = [0.3, None] + [0.05] * (len(bns) - 2)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params_before = {k: v.clone() for k, v in params.items()}

    buffers = recalibrate_bn(model, params, x, batch_size=16)

    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert [m.momentum for m in bns] == momenta
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(params_before[k], params[k]) for k in params)
    # The result is fresh memory: changing it changes nothing in the model.
    for b in buffers.values():
        b.add_(1)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_recalibrate_without_batchnorm_returns_buffers_unchanged():
    torch.manual_seed(0)
    model = build_model("mlp", widths=(8,))
    params = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_bn(model, params, torch.randn(N, 1, 8, 8)) == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_recalibrated_point_evaluates_like_a_trained_model():
    """After recalibration, eval mode on a single batch reproduces train-mode outputs."""
    model, params, x = _setup("cnn")
    buffers = recalibrate_bn(model, params, x, batch_size=N)
    ref = copy.deepcopy(model)
    ref.load_state_dict(params, strict=False)
    with torch.no_grad():
        train_logits = ref.train()(x)
        ref.load_state_dict(buffers, strict=False)
        # Eval mode normalises with the unbiased running var, train mode with the biased batch
        # var: equal up to the factor (N'-1)/N' per channel, so compare loosely.
        eval_logits = ref.eval()(x)
    torch.testing.assert_close(eval_logits, train_logits, rtol=0.05, atol=0.05)
