"""Tests for landscape.curves: Bernstein weights, Bezier points, the fit, curve files."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from landscape.checkpoints import CheckpointError
from landscape.curves import (
    BezierCurve,
    CurveConfig,
    bernstein,
    fit_curve,
    load_curve,
    save_curve,
)
from landscape.models import build_model
from tests.curve_checkpoints import TINY_CNN, curve_study, model_and_params, tiny_checkpoint

# One torch thread, a store outside the repo and the `ends`, `digits` fixtures: conftest.py.


def _random_named(like, seed):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(v.shape, generator=g) for n, v in like.items()}


@pytest.mark.parametrize(
    ("k", "closed"),
    [
        (2, lambda t: [(1 - t) ** 2, 2 * t * (1 - t), t**2]),
        (3, lambda t: [(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3]),
    ],
)
def test_bernstein_closed_forms(k, closed):
    t = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.8, 1.0], dtype=torch.float64)
    got = bernstein(k, t.tolist()).double()
    want = torch.stack(closed(t), dim=1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_bernstein_rows_sum_to_one_and_endpoints_exact(k):
    t = torch.rand(50, generator=torch.Generator().manual_seed(k))
    b = bernstein(k, t)
    assert b.shape == (50, k + 1)
    torch.testing.assert_close(b.sum(1), torch.ones(50), rtol=0, atol=1e-6)
    ends = bernstein(k, [0.0, 1.0])
    assert ends[0].tolist() == [1.0] + [0.0] * k
    assert ends[1].tolist() == [0.0] * k + [1.0]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_curve_points_exact_ends_and_match_naive_sum(order):
    model = build_model("cnn", **TINY_CNN)
    like = dict(model.named_parameters())
    a, b = _random_named(like, 0), _random_named(like, 1)
    bends = [_random_named(like, 10 + i) for i in range(order - 1)]
    curve = BezierCurve(a, b, bends)
    assert curve.order == order
    for n in a:
        assert torch.equal(curve.point(0.0)[n], a[n])
        assert torch.equal(curve.point(1.0)[n], b[n])
    controls = [a, *bends, b]
    for t in (0.13, 0.5, 0.92):
        got = curve.point(t)
        for n in a:
            naive = sum(
                math.comb(order, i) * t**i * (1 - t) ** (order - i) * controls[i][n].double()
                for i in range(order + 1)
            )
            torch.testing.assert_close(got[n].double(), naive, rtol=1e-5, atol=1e-5)


def test_bends_start_on_the_line():
    model = build_model("mlp", widths=(7,))
    like = dict(model.named_parameters())
    a, b = _random_named(like, 0), _random_named(like, 1)
    for order in (2, 3):
        curve = BezierCurve(a, b, order=order)
        for t in (0.0, 0.3, 0.77, 1.0):
            p = curve.point(t)
            for n in a:
                torch.testing.assert_close(p[n], (1 - t) * a[n] + t * b[n], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("t", [-0.1, 1.0001, float("nan")])
def test_point_outside_unit_interval_is_an_error(t):
    model = build_model("mlp", widths=(7,))
    like = dict(model.named_parameters())
    curve = BezierCurve(_random_named(like, 0), _random_named(like, 1))
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        curve.point(t)


def test_order_below_one_is_an_error(ends, digits):
    a, b = ends
    like = model_and_params(a)[1]
    with pytest.raises(ValueError, match="order must be >= 1"):
        BezierCurve(like, like, order=0)
    with pytest.raises(ValueError, match=r"order must be in \[1, 20\]"):
        fit_curve(a, b, CurveConfig(order=0), digits)
    with pytest.raises(ValueError, match=r"order must be in \[1, 20\]"):
        curve_study(a, b, CurveConfig(order=0))


def test_endpoints_of_different_architectures_are_an_error(tmp_path, ends, digits):
    a, _ = ends
    mlp = tiny_checkpoint(tmp_path / "mlp.safetensors", 3, arch="mlp", kwargs={"widths": [8]})
    with pytest.raises(ValueError, match="different architectures"):
        fit_curve(a, mlp, CurveConfig(epochs=0), digits)
    wider = tiny_checkpoint(tmp_path / "w.safetensors", 3, kwargs={"channels": [4, 8], "hidden": 9})
    with pytest.raises(ValueError, match="different architectures"):
        curve_study(a, wider, CurveConfig(epochs=0))
    # Same architecture record, different tensor shapes (a hand-made state).
    state = dict(a.state)
    state["classifier.2.weight"] = torch.zeros(10, 9)
    odd = dataclasses.replace(a, state=state, hash="odd")
    with pytest.raises(ValueError, match="different shapes for classifier.2.weight"):
        fit_curve(a, odd, CurveConfig(epochs=0), digits)


def test_fit_step_follows_the_chain_rule(ends, digits):
    """One full-batch SGD step moves the bend by -lr * 2t(1-t) * dL/dw at phi(t)."""
    a, b = ends
    cfg = CurveConfig(
        epochs=1, lr=0.3, momentum=0.0, weight_decay=0.0, batch_size=5000, lr_schedule="const"
    )
    curve = fit_curve(a, b, cfg, digits)
    # Replay the random stream: batches() draws the permutation first, then t is drawn.
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.randperm(len(digits.y_train), generator=gen)
    t = float(torch.rand((), generator=gen))
    model, pa = model_and_params(a)
    pb = model_and_params(b)[1]
    model.train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_((1 - t) * pa[n] + t * pb[n])  # phi(t) with the bend on the line
    loss = F.cross_entropy(model(digits.x_train), digits.y_train)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (n, _), g in zip(model.named_parameters(), grads, strict=True):
        start = (pa[n] + pb[n]) / 2
        want = start - cfg.lr * 2 * t * (1 - t) * g
        torch.testing.assert_close(curve.bends[0][n], want, rtol=1e-4, atol=1e-6)
    assert len(curve.history) == 1 and curve.history[0] == pytest.approx(loss.item(), rel=1e-4)


def test_save_load_round_trip_and_hash_checks(tmp_path, ends, digits):
    a, b = ends
    curve = fit_curve(a, b, CurveConfig(epochs=1, order=3), digits)
    path = save_curve(tmp_path / "c.safetensors", curve, a, b, CurveConfig(order=3))
    back = load_curve(path, a, b)
    assert back.order == 3 and back.history == curve.history
    for got, want in zip(back.bends, curve.bends, strict=True):
        for n in want:
            assert torch.equal(got[n], want[n])
    with pytest.raises(CheckpointError, match="swapped"):
        load_curve(path, b, a)
    other = tiny_checkpoint(tmp_path / "o.safetensors", 7)
    with pytest.raises(CheckpointError, match="was fitted between"):
        load_curve(path, a, other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a curve")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_curve(tmp_path / "junk.safetensors", a, b)
    with pytest.raises(CheckpointError, match="not a curve file"):
        load_curve(a.path, a, b)
