"""Masked curves (a path of sparse models?) and B's zeros kept along a path, layer by layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import landscape.studies.curve as curve_mod
from landscape.checkpoints import load_checkpoint, save_checkpoint
from landscape.curves import BezierCurve, CurveConfig, load_curve
from landscape.models import prunable_names
from tests.curve_checkpoints import curve_study, model_and_params

EVALUATE_COORDS = curve_mod.evaluate_coords


@pytest.fixture
def sparse_ends(ends, tmp_path):
    """A dense A and a B with 70% of each prunable layer's weights exactly zero."""
    a, b = ends
    state = dict(b.state)
    model = b.build_model()
    for n in prunable_names(model):
        w = state[n].clone()
        cut = w.abs().flatten().kthvalue(int(0.7 * w.numel())).values
        w[w.abs() <= cut] = 0.0
        state[n] = w
    path = tmp_path / "sparse_b.safetensors"
    save_checkpoint(path, state, b.meta)
    return a, load_checkpoint(path)


def _zero_masks(b) -> dict[str, torch.Tensor]:
    model, pb = model_and_params(b)
    return {n: pb[n] == 0 for n in prunable_names(model)}


def _record_points(monkeypatch) -> list:
    """Every (basis, coords) the curve study hands the evaluator."""
    seen = []

    def recording(model, basis, coords, *args, **kw):
        seen.append((basis, np.asarray(coords)))
        return EVALUATE_COORDS(model, basis, coords, *args, **kw)

    monkeypatch.setattr(curve_mod, "evaluate_coords", recording)
    return seen


@pytest.mark.slow
def test_masked_curve_is_exactly_zero_at_every_evaluated_point(sparse_ends, digits, monkeypatch):
    a, b = sparse_ends
    zeros = _zero_masks(b)
    assert all(float(z.float().mean()) > 0.6 for z in zeros.values())
    seen = _record_points(monkeypatch)
    cfg = CurveConfig(masked=True, epochs=1, batch_size=256, points=61)
    res = curve_study(a, b, cfg)
    assert res.masked and len(res.t) == 61
    basis, coords = seen[0]  # the curve first, then the line
    assert coords.shape == (61, 3)
    for row in coords:  # all 61 points, as the evaluator builds them
        for n, z in zeros.items():
            point = sum(float(c) * w[n].cpu() for c, w in zip(row, basis, strict=True))
            assert torch.count_nonzero(point[z]) == 0, n
    curve = load_curve(res.curve_file, a, b)
    assert sorted(curve.masked) == sorted(zeros)
    flat = curve.flat_points(torch.linspace(0, 1, 61))  # (61, P)
    points = [dict(zip(curve.names, torch.split(f, [v.numel() for v in curve.start.values()]),
                       strict=True)) for f in flat]  # fmt: skip
    for p in points:
        for n, z in zeros.items():
            assert torch.count_nonzero(p[n].reshape(z.shape)[z]) == 0
    np.testing.assert_array_equal(res.curve_zeros_kept, np.ones((61, len(zeros))))
    # The line is the plain one: A's weights at B's zeros come back as t goes to 0.
    assert res.line_zeros_kept[0].max() < 0.2 and (res.line_zeros_kept[-1] == 1).all()


@pytest.mark.slow
def test_masked_and_plain_fits_are_stored_apart(sparse_ends, digits):
    a, b = sparse_ends
    plain = curve_study(a, b, CurveConfig(epochs=1, batch_size=256, points=5))
    masked = curve_study(a, b, CurveConfig(masked=True, epochs=1, batch_size=256, points=5))
    assert plain.curve_file != masked.curve_file and not plain.masked
    assert plain.curve_zeros_kept[2].mean() < 1.0  # the unmasked bend loses B's zeros
    given = load_curve(plain.curve_file, a, b)
    with pytest.raises(ValueError, match="masked applies to a fitted"):
        curve_study(a, b, CurveConfig(masked=True, points=5), curve=given)


def test_zeros_kept_by_hand_on_the_line(sparse_ends, digits):
    """Fraction of B's zeros with |(1 - t) A| < 1e-3 per layer (B is 0 there), NaN without."""
    from landscape.evaluate import EvalData
    from landscape.store import Store
    from landscape.studies.base import Context

    a, b = sparse_ends
    model, pa = model_and_params(a)
    _, pb = model_and_params(b)
    line = BezierCurve(pa, pb, order=1)
    ts = np.array([0.0, 0.5, 0.9995, 1.0])
    context = Context(Store(), "curve", "", None, (0, 1))
    data = EvalData.from_dataset(digits, bn_subset=64)
    res = curve_mod.evaluate_path(model, line, ts, data, context)
    for j, (n, z) in enumerate(_zero_masks(b).items()):
        for i, t in enumerate(ts):
            want = float(((1 - t) * pa[n][z].abs() < 1e-3).float().mean())
            assert res.zeros_kept[i, j] == pytest.approx(want), (n, t)
    dense = curve_mod.evaluate_path(model, BezierCurve(pb, pa, order=1), ts[:1], data, context)
    assert np.isnan(dense.zeros_kept).all()  # the end (A) has no zeros


def test_mask_projection_and_file_round_trip(sparse_ends, tmp_path):
    from landscape.curves import curve_hash, save_curve

    a, b = sparse_ends
    model, pa = model_and_params(a)
    _, pb = model_and_params(b)
    names = prunable_names(model)
    curve = BezierCurve(pa, pb, order=3).mask_to_end(names)
    with torch.no_grad():
        curve.inner += 1.0  # an optimizer step moves every weight
    curve.project()
    zeros = _zero_masks(b)
    for point in (curve.start, *curve.bends):
        for n, z in zeros.items():
            assert torch.count_nonzero(point[n][z]) == 0
    assert torch.equal(curve.start["classifier.0.bias"], pa["classifier.0.bias"])  # not prunable
    path = save_curve(tmp_path / "m.safetensors", curve, a, b, None)
    back = load_curve(path, a, b)
    assert sorted(back.masked) == sorted(names) and curve_hash(back) == curve_hash(curve)


def test_zeros_kept_heatmap_and_masked_overlay_charts():
    from landscape.app.charts import ROLE_COLORS
    from landscape.app.charts_curves import MASKED, masked_paths, zeros_kept_heatmap

    t = np.linspace(0, 1, 5)
    kept = np.array([[0.0, np.nan], [0.2, np.nan], [0.5, np.nan], [0.9, np.nan], [1.0, np.nan]])
    fig = zeros_kept_heatmap(t, ["conv.weight", "fc.weight"], kept)
    (heat,) = fig.data
    assert np.asarray(heat.z).shape == (2, 5) and list(heat.y) == ["conv.weight", "fc.weight"]
    assert heat.zmin == 0 and heat.zmax == 1 and heat.colorscale[-1][1] == ROLE_COLORS["sparse"]
    paths = {MASKED: t, "curve": t**2, "line": t**3}
    lines = {tr.name: tr for tr in masked_paths(t, paths, "train_loss").data}
    assert lines[MASKED].line.color == ROLE_COLORS["sparse"] and lines[MASKED].line.dash == "dash"
    assert lines["curve"].line.color == ROLE_COLORS["curve"]
    assert lines["line"].line.color == ROLE_COLORS["line"]
