"""Tests for landscape.studies.curve: paths on a curve and the line, the stored study, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import landscape.studies.curve as curve_mod
from landscape.checkpoints import load_checkpoint
from landscape.cli import main
from landscape.curves import (
    BezierCurve,
    CurveConfig,
    fit_curve,
    load_curve,
    save_curve,
)
from landscape.evaluate import METRICS, EvalData, evaluate_point
from landscape.models import build_model
from landscape.params import flatten
from landscape.store import Store
from landscape.studies import find, run, study_key
from landscape.studies.base import Context
from landscape.studies.curve import (
    KIND,
    PATH_COLUMNS,
    CurveInputs,
    CurveResult,
    PathResult,
)
from tests.curve_checkpoints import TINY_CNN, curve_study, model_and_params
from tests.reference import point_metrics

REPO = Path(__file__).resolve().parent.parent
SGD = REPO / "checkpoints" / "sgd" / "final.safetensors"
GRDA = REPO / "checkpoints" / "grda" / "final.safetensors"
PATH_METRICS = (*METRICS, *PATH_COLUMNS)  # every column of a path
EVALUATE_COORDS = curve_mod.evaluate_coords  # the real one, to restore after patching

# One torch thread, a store outside the repo and the `ends`, `digits` fixtures: conftest.py.


def evaluate_path(model, curve, t, data) -> PathResult:
    """:func:`landscape.studies.curve.evaluate_path` without a store key (nothing resumed)."""
    if isinstance(t, int):
        t = np.linspace(0.0, 1.0, t)
    context = Context(Store(), "curve", "", None, (0, 1))
    return curve_mod.evaluate_path(model, curve, np.asarray(t, dtype=float), data, context)


def barrier_by_hand(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """max_i v_i - chord_i and its t, a plain loop."""
    best = max(range(len(t)), key=lambda i: v[i] - ((1 - t[i]) * v[0] + t[i] * v[-1]))
    return float(v[best] - ((1 - t[best]) * v[0] + t[best] * v[-1])), float(t[best])


def test_curve_ends_evaluate_like_the_checkpoints(ends, digits):
    a, b = ends
    model, pa = model_and_params(a)
    pb = model_and_params(b)[1]
    data = EvalData.from_dataset(digits)
    curve = fit_curve(a, b, CurveConfig(epochs=1), digits)
    path = evaluate_path(model, curve, [0.0, 0.5, 1.0], data)
    for i, p in ((0, pa), (2, pb)):
        direct = evaluate_point(model, p, data)
        d = digits
        reference = point_metrics(model, p, d.x_train, d.y_train, d.x_test, d.y_test)
        for m in METRICS:
            assert path.columns[m][i] == direct[m]
            assert path.columns[m][i] == pytest.approx(reference[m], rel=1e-5, abs=1e-7)
    assert path.columns["weight_norm"][0] == pytest.approx(
        float(flatten(pa).double().norm()), rel=1e-9
    )


def test_bn_recalibration_ignores_endpoint_statistics(ends, digits):
    a, b = ends
    model = a.build_model()
    data = EvalData.from_dataset(digits)

    def corrupt(ck):
        state = {k: torch.full_like(v, 123.0) if "running" in k else v for k, v in ck.state.items()}
        return dataclasses.replace(ck, state=state)

    cfg = CurveConfig(epochs=1)
    clean = fit_curve(a, b, cfg, digits)
    dirty = fit_curve(corrupt(a), corrupt(b), cfg, digits)
    torch.testing.assert_close(dirty.inner, clean.inner, rtol=0, atol=0)
    r1 = evaluate_path(model, clean, 5, data)
    r2 = evaluate_path(model, dirty, 5, data)
    assert set(r1.columns) == set(PATH_METRICS)
    for m in PATH_METRICS:
        np.testing.assert_array_equal(r1.columns[m], r2.columns[m])


def test_unfitted_curve_equals_the_line(ends):
    a, b = ends
    stored = curve_study(a, b, CurveConfig(epochs=0, points=9))
    assert set(stored.curve) == set(stored.line) == set(PATH_METRICS)
    for m in PATH_METRICS:
        np.testing.assert_allclose(stored.curve[m], stored.line[m], rtol=1e-6, atol=1e-6)


def test_summary_against_direct_computation(ends, digits):
    a, b = ends
    model, pa = model_and_params(a)
    pb = model_and_params(b)[1]
    curve = fit_curve(a, b, CurveConfig(epochs=1, lr=0.5), digits)
    data = EvalData.from_dataset(digits)
    path = evaluate_path(model, curve, 11, data)
    t = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(path.t, t)
    loss = path.columns["train_loss"]
    naive_barrier = max(loss[i] - ((1 - t[i]) * loss[0] + t[i] * loss[-1]) for i in range(11))
    barrier = path.barrier("train_loss")
    assert barrier.height == pytest.approx(naive_barrier)
    assert barrier == path.barrier()  # train loss by default
    assert (barrier.height, barrier.t) == pytest.approx(barrier_by_hand(t, loss))
    flats = [flatten(curve.point(float(ti))).double() for ti in t]
    length = sum(float((flats[i + 1] - flats[i]).norm()) for i in range(10))
    assert path.length == pytest.approx(length, rel=1e-6)
    assert path.columns["segment"][0] == 0.0
    mid = path.nearest(0.5)
    assert path.t[mid] == 0.5 and mid == 5
    assert path.columns["test_acc"][mid] == path.columns["test_acc"][5]
    acc = path.columns["test_acc"]
    assert acc[path.argbest("test_acc", lowest=False)] == acc.max()
    assert path.argbest("test_acc", lowest=False) == int(np.argmax(acc))  # the first best t
    assert loss[path.argbest("train_loss", lowest=False)] == loss.max()
    assert path.t[path.argbest("train_loss", lowest=False)] == t[np.argmax(loss)]
    assert path.argbest("train_loss", lowest=True) == int(np.argmin(loss))
    assert path.columns["weight_norm"][0] == pytest.approx(float(flatten(pa).norm()))
    # The straight line: length |B - A|.
    line = evaluate_path(model, BezierCurve(pa, pb, order=1), 11, data)
    assert line.length == pytest.approx(float((flatten(pb) - flatten(pa)).norm()))


def test_sparsity_along_the_line(digits):
    """Planted zeros: exact zeros where both ends are zero, small entries below 1e-3."""
    torch.manual_seed(0)
    model = build_model("cnn", **TINY_CNN)
    pa = {n: torch.randn_like(p) + 3.0 for n, p in model.named_parameters()}
    pb = {n: torch.randn_like(p) + 3.0 for n, p in model.named_parameters()}
    w = "classifier.2.weight"
    pa[w][:4] = 0.0  # 64 zeros (4 rows of 16) in both ends
    pb[w][:4] = 0.0
    pb[w][4] = 0.0  # 16 more zeros only in B
    pa[w][5, :3] = 1e-4  # 3 small entries only in A
    data = EvalData.from_dataset(digits, bn_subset=64)
    path = evaluate_path(model, BezierCurve(pa, pb, order=1), [0.0, 0.5, 1.0], data)
    total = sum(pa[n].numel() for n in path.layers)
    sp, small = path.columns["sparsity"], path.columns["sparsity_small"]
    assert sp.tolist() == pytest.approx([64 / total, 64 / total, 80 / total])
    assert small.tolist() == pytest.approx([67 / total, 64 / total, 80 / total])
    col = path.layers.index(w)
    assert path.layer_sparsity[:, col].tolist() == pytest.approx([0.4, 0.4, 0.5])
    assert path.layer_sparsity.shape == (3, len(path.layers))


def test_study_is_stored_and_reused(ends, monkeypatch):
    a, b = ends
    stages = set()
    cfg = CurveConfig(epochs=1, points=7, bn_subset=500)
    inputs = CurveInputs(a, b)
    assert find(KIND, cfg, inputs) is None  # nothing stored yet; nothing computed
    stored = run(KIND, cfg, inputs, progress=lambda d, t, s: stages.add(s))
    assert stages == {"fitting curve", "evaluating curve", "evaluating line"}
    assert stored.bn_samples == 500 and stored.config["points"] == 7
    assert stored.endpoints["a"]["hash"] == a.hash and len(stored.fit_history) == 1
    assert Path(stored.curve_file).parent == Store().root / "curve"
    assert load_curve(stored.curve_file, a, b).order == 2
    np.testing.assert_array_equal(stored.t, np.linspace(0, 1, 7))
    for prefix in ("curve", "line"):
        path = stored.path(prefix)
        assert set(path.columns) == set(PATH_METRICS)
        for m in PATH_METRICS:
            assert path.columns[m].shape == (7,)
        assert path.layer_sparsity.shape == (7, len(stored.layers))
        # The barrier, by hand from the stored arrays.
        loss = getattr(stored, prefix)["train_loss"]
        assert (path.barrier().height, path.barrier().t) == pytest.approx(
            barrier_by_hand(stored.t, loss)
        )
    with pytest.raises(ValueError, match="'curve' or 'line'"):
        stored.path("bend")

    monkeypatch.setattr(curve_mod, "fit_curve", _fail)
    monkeypatch.setattr(curve_mod, "evaluate_coords", _fail)
    # Stored: found, and run again, with neither a fit nor an evaluation.
    for same in (find(KIND, cfg, inputs), run(KIND, cfg, inputs)):
        assert isinstance(same, CurveResult)
        _assert_same_result(same, stored)
        assert same.path("curve").barrier() == stored.path("curve").barrier()
    key = study_key(KIND, cfg, inputs)
    assert Store().find("curve", key) is not None
    # Another number of points: a new result, but the fit is reused from the store.
    monkeypatch.setattr(curve_mod, "evaluate_coords", EVALUATE_COORDS)
    more_cfg = dataclasses.replace(cfg, points=5)
    assert find(KIND, more_cfg, inputs) is None
    more = run(KIND, more_cfg, inputs)
    assert study_key(KIND, more_cfg, inputs) != key
    assert more.curve_file == stored.curve_file


def _fail(*args, **kwargs):
    raise AssertionError("recomputed")


def _assert_same_result(got: CurveResult, want: CurveResult) -> None:
    info_got, arrays_got = got.to_arrays()
    info_want, arrays_want = want.to_arrays()
    assert info_got == info_want
    assert set(arrays_got) == set(arrays_want)
    for k, v in arrays_want.items():
        np.testing.assert_array_equal(arrays_got[k], v, err_msg=k)


def test_study_with_given_curve(ends, digits, tmp_path):
    a, b = ends
    curve = fit_curve(a, b, CurveConfig(epochs=1, lr=0.2), digits)
    stored = curve_study(a, b, CurveConfig(points=5), curve=curve)
    assert load_curve(stored.curve_file, a, b).inner.equal(curve.inner)
    assert stored.fit_history == list(curve.history)
    with pytest.raises(ValueError, match="does not run between"):
        curve_study(b, a, CurveConfig(points=5), curve=curve)


@pytest.mark.slow
def test_fitting_lowers_train_loss_on_default_runs(digits):
    a, b = load_checkpoint(SGD), load_checkpoint(GRDA)
    model, pa = model_and_params(a)
    pb = model_and_params(b)[1]
    curve = fit_curve(a, b, CurveConfig(epochs=3), digits)
    data = EvalData.from_dataset(digits)
    fitted = evaluate_path(model, curve, 11, data).columns["train_loss"]
    line = evaluate_path(model, BezierCurve(pa, pb, order=1), 11, data).columns["train_loss"]
    assert fitted.mean() < 0.9 * line.mean()
    assert fitted[1:-1].max() < line[1:-1].max()


def test_cli_writes_files_and_summary(ends, tmp_path, capsys):
    a, b = ends
    out = tmp_path / "out"
    argv = ["curve", str(a.path), str(b.path), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--points", "5", "--store", str(tmp_path / "s")]) == 0
    text = capsys.readouterr().out
    assert "train barrier" in text and "\ncurve " in text and "\nline " in text
    assert "a (t=0) -> b (t=1)" in text
    doc = json.loads((out / "result.json").read_text())
    assert doc["bn_samples"] == 1347 and doc["layers"] and doc["config"]["points"] == 5
    stored = Store(tmp_path / "s").find("curve", doc["key"])
    assert stored is not None and Path(doc["curve_file"]).exists()
    rows = (out / "path.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 6 and header[:3] == ["t", "curve_train_loss", "curve_train_acc"]
    assert len(header) == 1 + 2 * len(PATH_METRICS)
    # The table's barriers are those of the CSV's columns, computed by hand.
    table = np.loadtxt(out / "path.csv", delimiter=",", skiprows=1)
    for name in ("curve", "line"):
        t, loss = table[:, 0], table[:, header.index(f"{name}_train_loss")]
        (row,) = [r for r in text.splitlines() if r.startswith(f"{name} ")]
        cells = row.split()
        assert float(cells[2]) == pytest.approx(barrier_by_hand(t, loss)[0], abs=1e-4)
        assert float(cells[1]) == pytest.approx(loss.max(), abs=1e-4)
    assert load_curve(out / "curve.safetensors", a, b).order == 2
    # Reuse the written curve: same numbers along it.
    again = tmp_path / "again"
    argv2 = ["curve", str(a.path), str(b.path), "--out", str(again), "--points", "5"]
    assert main([*argv2, "--curve", str(out / "curve.safetensors")]) == 0
    first = np.loadtxt(out / "path.csv", delimiter=",", skiprows=1)
    second = np.loadtxt(again / "path.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(second, first, rtol=1e-6)


def test_cli_errors_write_nothing(ends, tmp_path, capsys):
    a, b = ends
    out = tmp_path / "out"
    pa = model_and_params(a)[1]
    wrong = save_curve(tmp_path / "w.safetensors", BezierCurve(pa, pa), a, a, CurveConfig())
    base = ["curve", str(a.path), str(b.path), "--out", str(out)]
    for extra, msg in (
        (["--curve", str(wrong)], "was fitted between"),
        (["--order", "0"], "order must be in [1, 20]"),
        (["--points", "1"], "points must be in [2, 100001]"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and msg in err
        assert not out.exists()


def _cli(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "LANDSCAPE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "landscape", "curve", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_killed_run_resumes_to_the_clean_result(ends, tmp_path):
    """SIGKILL once a partial result is saved, re-run, compare with a clean run.

    Partials are saved every 2 s and when a path is done: the kill lands inside the curve's
    evaluation on a slow machine, inside the line's on a fast one.
    """
    a, b = ends
    args = [str(a.path), str(b.path), "--epochs", "1", "--points", "121"]
    run = _cli([*args, "--out", str(tmp_path / "killed")], tmp_path / "home")
    partials = tmp_path / "home" / "results" / "curve"
    deadline = time.monotonic() + 120
    while not list(partials.glob("*-curve-*.partial")):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no partial result appeared"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (tmp_path / "killed" / "result.json").exists()
    resumed = _cli([*args, "--out", str(tmp_path / "killed")], tmp_path / "home")
    clean = _cli([*args, "--out", str(tmp_path / "clean")], tmp_path / "home2")
    for proc in (resumed, clean):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    got = np.loadtxt(tmp_path / "killed" / "path.csv", delimiter=",", skiprows=1)
    want = np.loadtxt(tmp_path / "clean" / "path.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert not list(partials.glob("*.partial"))  # cleaned up once the result is stored


def test_study_on_device(ends, tmp_path, device):
    """``pytest --device cuda``: fit and evaluation on the device agree with the CPU run."""
    a, b = ends
    cfg = CurveConfig(epochs=2, points=5, device=device)
    cpu_cfg = dataclasses.replace(cfg, device="cpu")
    got = curve_study(a, b, cfg, store=Store(tmp_path / "dev"))
    want = curve_study(a, b, cpu_cfg, store=Store(tmp_path / "cpu"))
    inputs = CurveInputs(a, b)
    # The device is not part of the result's identity.
    assert study_key(KIND, cfg, inputs) == study_key(KIND, cpu_cfg, inputs)
    got_arrays, want_arrays = got.to_arrays()[1], want.to_arrays()[1]
    for k, v in want_arrays.items():
        np.testing.assert_allclose(got_arrays[k], v, rtol=1e-2, atol=1e-3, err_msg=k)


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_damaged_stored_fit_is_refitted_and_out_is_valid(damage, home, tmp_path, capsys):
    """The probe: a garbage fit file was copied to --out (exit 0); a deleted one gave Errno 2."""
    from landscape.checkpoints import load_checkpoint
    from landscape.cli import main
    from landscape.curves import load_curve
    from landscape.store import CorruptResultWarning

    a_path = REPO / "checkpoints" / "sgd" / "final.safetensors"
    b_path = REPO / "checkpoints" / "grda" / "final.safetensors"
    argv = [str(a_path), str(b_path), "--epochs", "1", "--points", "3"]
    assert main(["curve", *argv, "--out", str(tmp_path / "first")]) == 0
    (fit,) = (home / "results" / "curve").glob("fit-*.safetensors")
    good = fit.read_bytes()
    if damage == "garbage":
        fit.write_bytes(b"\x00garbage" * 64)
    else:
        fit.unlink()
    with pytest.warns(CorruptResultWarning) as caught:
        assert main(["curve", *argv, "--out", str(tmp_path / "again")]) == 0
    text = " ".join(str(w.message) for w in caught)
    assert "artefact curve/fit-" in text  # the result that named it is recomputed
    assert "stored artefact" in text  # and the fit itself redone
    out = tmp_path / "again" / "curve.safetensors"
    assert out.read_bytes() == fit.read_bytes() == good  # refitted: same seed, same bytes
    a, b = load_checkpoint(a_path), load_checkpoint(b_path)
    assert load_curve(out, a, b).order == 2
