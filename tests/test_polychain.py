"""Polygonal chains (the research code's PolyChain): points, research files, fits, studies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.checkpoints import CheckpointError
from landscape.curvepoints import hat_weights
from landscape.curves import (
    BezierCurve,
    CurveConfig,
    curve_hash,
    curve_meta,
    curve_weights,
    fit_curve,
    load_curve,
    save_curve,
)
from landscape.research import export_research, open_research
from tests.curve_checkpoints import curve_study, model_and_params
from tests.research_files import WRN, curve_file, make_model, make_points


def _named(seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in shapes.items()}


SHAPES = {"w": (3, 4), "b": (3,)}


@pytest.mark.parametrize("t", [0.0, 0.1, 0.25, 0.4999, 0.5, 0.6, 0.75, 0.9, 1.0])
def test_one_bend_is_the_hand_computed_path(t):
    """phi(t) = 2 (t w1 + (0.5 - t) w0) for t < 0.5, 2 ((t - 0.5) w2 + (1 - t) w1) else."""
    w0, w1, w2 = (_named(s, SHAPES) for s in (0, 1, 2))
    curve = BezierCurve(w0, w2, [w1], kind="polychain")
    got = curve.point(t)
    for n in SHAPES:
        if t < 0.5:
            want = 2 * (t * w1[n] + (0.5 - t) * w0[n])
        else:
            want = 2 * ((t - 0.5) * w2[n] + (1 - t) * w1[n])
        torch.testing.assert_close(got[n], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_k_segments_against_numpy_interp(k):
    """Each coordinate of the chain is np.interp through the control points at t = j / k."""
    controls = [_named(s, SHAPES) for s in range(k + 1)]
    curve = BezierCurve(controls[0], controls[-1], controls[1:-1], kind="polychain")
    ts = np.linspace(0, 1, 61)
    got = curve.flat_points(torch.as_tensor(ts)).numpy()  # (61, P)
    knots = np.stack([torch.cat([c[n].reshape(-1) for n in curve.names]).numpy() for c in controls])
    want = np.stack([np.interp(ts, np.arange(k + 1) / k, knots[:, p]) for p in range(got.shape[1])])
    np.testing.assert_allclose(got, want.T, rtol=1e-12, atol=1e-12)


def test_hat_weights_at_knots_and_rows():
    w = hat_weights(4, torch.linspace(0, 1, 41, dtype=torch.float64))
    torch.testing.assert_close(w.sum(1), torch.ones(41, dtype=torch.float64))
    assert int((w > 0).sum(1).max()) <= 2  # only the ends of t's segment
    for j in range(5):
        assert torch.equal(hat_weights(4, [j / 4]), torch.eye(5)[j : j + 1])
    with pytest.raises(ValueError, match="curve type"):
        curve_weights("spline", 2, 0.5)


def test_curve_hash_and_file_record_the_type(tmp_path, ends):
    a, b = ends
    _, pa = model_and_params(a)
    _, pb = model_and_params(b)
    bezier, poly = (BezierCurve(pa, pb, order=3, kind=kind) for kind in ("bezier", "polychain"))
    assert curve_hash(bezier) != curve_hash(poly)
    path = save_curve(tmp_path / "poly.safetensors", poly, a, b, None)
    assert curve_meta(path)["curve_type"] == "polychain"
    back = load_curve(path, a, b)
    assert back.kind == "polychain" and curve_hash(back) == curve_hash(poly)
    assert load_curve(save_curve(tmp_path / "bz.safetensors", bezier, a, b, None), a, b).kind == (
        "bezier"
    )


def _hand_chain(points: list[dict], t: float) -> dict[str, torch.Tensor]:
    k = len(points) - 1
    j = min(int(t * k), k - 1)  # t's segment
    s = t * k - j
    return {n: (1 - s) * points[j][n] + s * points[j + 1][n] for n in points[0]}


@pytest.mark.parametrize("k", [3, 4])  # their --num_bends: one and two bends
def test_research_polychain_file_opens(tmp_path, k):
    """Their PolyChain's layout: coeff_layer.range only (no binom, no rev_range)."""
    model = make_model(WRN)
    points = make_points(model, k)
    path = curve_file(tmp_path / "poly.pt", model, points, curve_type="polychain")
    state = torch.load(path, weights_only=True)["model_state"]
    assert [key for key in state if key.startswith("coeff_layer.")] == ["coeff_layer.range"]
    found = open_research(path)
    assert found.kind == "curve" and found.curve_type_from == "file"
    assert found.curve.kind == "polychain" and found.curve.order == k - 1
    for t in (0.0, 0.2, 0.5, 0.7, 1.0):
        got, want = found.curve.point(t), _hand_chain(points, t)
        for n in points[0]:
            torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-6)
    files = export_research(found, tmp_path / "imported")
    a, b = (open_research(path).points[i] for i in (0, 1))
    back = load_curve(files["curve"], a, b)
    assert back.kind == "polychain" and curve_hash(back) == curve_hash(found.curve)


def test_curve_file_without_coeff_layer_needs_the_type(tmp_path):
    model = make_model(WRN)
    path = curve_file(tmp_path / "bare.pt", model, make_points(model, 3), curve_type=None)
    with pytest.raises(CheckpointError, match="--curve-type"):
        open_research(path)
    for kind in ("polychain", "bezier"):
        found = open_research(path, curve_type=kind)
        assert found.curve.kind == kind and found.curve_type_from == "caller"
    # A file that says what it is decides, whatever the caller guessed.
    said = curve_file(tmp_path / "said.pt", model, make_points(model, 3), curve_type="polychain")
    assert open_research(said, curve_type="bezier").curve.kind == "polychain"


@pytest.mark.slow
def test_polychain_fit_and_study(ends, digits):
    a, b = ends
    cfg = CurveConfig(curve_type="polychain", epochs=1, batch_size=512, points=5)
    curve = fit_curve(a, b, cfg, digits)
    assert curve.kind == "polychain" and len(curve.history) == 1
    assert not torch.equal(curve.inner, BezierCurve(curve.start, curve.end).inner)
    res = curve_study(a, b, cfg)
    assert res.curve_type == "polychain" and res.config["curve_type"] == "polychain"
    stored = load_curve(res.curve_file, a, b)
    assert stored.kind == "polychain"
    bezier = curve_study(a, b, CurveConfig(epochs=1, batch_size=512, points=5))
    assert bezier.curve_type == "bezier" and bezier.curve_file != res.curve_file
    with pytest.raises(ValueError, match="curve_type"):
        CurveConfig(curve_type="spline").check()


def test_cli_passes_the_curve_type_of_a_bare_research_file(tmp_path):
    """`plane --curve bare.pt --curve-type polychain` (and `curve`'s own --curve-type) reach
    the reader; without it the plane command says to give it."""
    import argparse

    from landscape.cli import build_parser
    from landscape.cli.studies import endpoints

    model = make_model(WRN)
    path = curve_file(tmp_path / "bare.pt", model, make_points(model, 3), curve_type=None)
    args = build_parser(["plane"]).parse_args(["plane", "--curve", str(path)])
    assert args.curve_type is None
    with pytest.raises(CheckpointError, match="--curve-type"):
        endpoints(args, args.curve_type)
    args = build_parser(["plane"]).parse_args(
        ["plane", "--curve", str(path), "--curve-type", "polychain"]
    )
    assert endpoints(args, args.curve_type)[2].kind == "polychain"
    bare = argparse.Namespace(curve=str(path), a=None, b=None)
    assert endpoints(bare, "bezier")[2].kind == "bezier"
