"""Plane, PCA, random-plane and slice study kinds against direct computation; find and run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import landscape.studies.plane as plane_mod
from landscape.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.curves import BezierCurve, CurveConfig, save_curve
from landscape.data import load_dataset
from landscape.evaluate import METRICS, EvalData, Evaluator, evaluate_point
from landscape.geometry import Plane, plane_through
from landscape.models import build_model
from landscape.params import flatten, param_names
from landscape.store import Store
from landscape.studies import find, pca, plane, random_plane, run, slices, study_key
from landscape.studies.pca import PCAConfig, PCAInputs
from landscape.studies.plane import PlaneConfig, PlaneInputs
from landscape.studies.random_plane import RandomPlaneConfig, RandomPlaneInputs
from landscape.studies.slices import SliceConfig, SliceInputs

REPO = Path(__file__).resolve().parent.parent


class _PlaneEv:
    """The one evaluator on a plane: basis [origin, u, v], coords [1, alpha, beta]."""

    def __init__(self, model, plane, data, **kw):
        self.ev = Evaluator(model, data, plane.basis(), **kw)
        self.layer = self.ev.layer

    def __call__(self, xy):
        return self.ev([1.0, *xy])

    def many(self, coords):
        return self.ev.many(np.concatenate([np.ones((len(coords), 1)), coords], 1))


DATA = {"name": "digits", "split_seed": 0}
MLP = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "widths": [8]}}
CNN = {
    "name": "cnn",
    "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "channels": [4, 6], "hidden": 8},
}


def make_ckpt(path: Path, arch: dict, seed: int) -> Checkpoint:
    """A randomly initialised checkpoint of ``arch`` on digits (BN stats perturbed too)."""
    torch.manual_seed(seed)
    model = build_model(arch["name"], **arch["kwargs"])
    for name, buf in model.named_buffers():
        if "running" in name:  # stored stats must never be used: make them wrong
            buf.uniform_(0.5, 2.0)
    save_checkpoint(path, model, {"arch": arch, "data": DATA})
    return load_checkpoint(path)


@pytest.fixture
def mlp3(tmp_path) -> list[Checkpoint]:
    return [make_ckpt(tmp_path / f"m{i}.safetensors", MLP, i) for i in range(3)]


@pytest.fixture
def cnn3(tmp_path) -> list[Checkpoint]:
    return [make_ckpt(tmp_path / f"c{i}.safetensors", CNN, 10 + i) for i in range(3)]


def digits_data(bn_subset: int | None = None) -> EvalData:
    return EvalData.from_dataset(load_dataset("digits"), bn_subset=bn_subset)


def flat_params(ckpt: Checkpoint) -> np.ndarray:
    model = ckpt.build_model()
    return flatten(ckpt.state, param_names(model)).double().numpy()


def params_at(ckpt: Checkpoint, w: np.ndarray) -> dict[str, torch.Tensor]:
    """Named float32 parameters of ckpt's model with flat values ``w``."""
    model = ckpt.build_model()
    out, i = {}, 0
    for n, p in model.named_parameters():
        out[n] = torch.from_numpy(w[i : i + p.numel()]).float().view_as(p)
        i += p.numel()
    return out


def assert_metrics_close(got: dict, want: dict, tol: float = 1e-5) -> None:
    for m in METRICS:
        assert abs(got[m] - want[m]) <= tol, (m, got[m], want[m])


def plane_run(a, b, third, cfg: PlaneConfig, store: Store, **kw) -> plane.PlaneResult:
    return run(plane.KIND, cfg, PlaneInputs(a, b, third), store=store, **kw)


def slice_run(a, b=None, *, store: Store, **cfg) -> slices.SliceResult:
    return run(slices.KIND, SliceConfig(**cfg), SliceInputs(a, b), store=store)


def test_plane_study_grid_matches_evaluate_point(mlp3, tmp_path):
    a, c, b = mlp3
    store = Store(tmp_path / "store")
    res = plane_run(a, b, c, PlaneConfig(grid=4, margin=0.25), store)
    wa, wc, wb = flat_params(a), flat_params(c), flat_params(b)
    u = (wb - wa) / np.linalg.norm(wb - wa)
    e = (wc - wa) - ((wc - wa) @ u) * u
    v = e / np.linalg.norm(e)
    pts = np.array([[0, 0], [(wc - wa) @ u, np.linalg.norm(e)], [np.linalg.norm(wb - wa), 0]])
    assert np.allclose(res.points_xy, pts, atol=1e-9)
    assert res.basis_norms == pytest.approx([np.linalg.norm(wb - wa), np.linalg.norm(e)])
    alpha, beta = res.alpha, res.beta
    ext = pts.max(0) - pts.min(0)
    assert alpha[0] == pytest.approx(pts[:, 0].min() - 0.25 * ext[0])
    assert beta[-1] == pytest.approx(pts[:, 1].max() + 0.25 * ext[1])
    assert set(res.metrics) == set(METRICS)
    assert res.metrics["train_loss"].shape == (4, 4)
    model, data = a.build_model(), digits_data()
    for bi, ai in [(0, 0), (1, 3), (3, 2)]:
        w = wa + alpha[ai] * u + beta[bi] * v
        want = evaluate_point(model, params_at(a, w), data)
        got = {m: res.metrics[m][bi, ai] for m in METRICS}
        assert_metrics_close(got, want)
    assert res.labels == [a.name, c.name, b.name]
    assert res.curve_xy is None and res.bn_samples == 1347


def test_plane_study_is_stored_and_reused(mlp3, tmp_path):
    a, c, b = mlp3
    store = Store(tmp_path / "store")
    cfg, inputs = PlaneConfig(grid=3), PlaneInputs(a, b, c)
    first = run(plane.KIND, cfg, inputs, store=store)
    calls = []
    again = run(plane.KIND, cfg, inputs, store=store, progress=lambda *x: calls.append(x))
    assert calls == []
    key = study_key(plane.KIND, cfg, inputs)
    assert store.find("plane", key) is not None  # stored under the pure key
    assert np.array_equal(again.metrics["test_loss"], first.metrics["test_loss"])


def _fail(*args, **kwargs):
    raise AssertionError("computed again")


def test_find_plane_is_none_before_and_the_result_after(mlp3, tmp_path, monkeypatch):
    a, c, b = mlp3
    store = Store(tmp_path / "store")
    cfg, inputs = PlaneConfig(grid=3, margin=0.1), PlaneInputs(a, b, c)
    assert find(plane.KIND, cfg, inputs, store=store) is None
    assert not list(store.root.glob("plane/*.json"))  # looking up wrote nothing
    res = run(plane.KIND, cfg, inputs, store=store)
    monkeypatch.setattr(plane_mod, "evaluate_grid", _fail)  # no evaluation from here on
    found = find(plane.KIND, cfg, inputs, store=store)
    assert isinstance(found, plane.PlaneResult)
    for m in METRICS:
        np.testing.assert_array_equal(found.metrics[m], res.metrics[m])
    for name in ("alpha", "beta", "points_xy"):
        np.testing.assert_array_equal(getattr(found, name), getattr(res, name))
    assert (found.labels, found.basis_norms, found.bn_samples) == (
        res.labels,
        res.basis_norms,
        res.bn_samples,
    )
    again = run(plane.KIND, cfg, inputs, store=store)  # stored: nothing evaluated
    np.testing.assert_array_equal(again.metrics["train_loss"], res.metrics["train_loss"])
    # Another grid is another result: not found.
    assert find(plane.KIND, PlaneConfig(grid=4, margin=0.1), inputs, store=store) is None


def test_speed_settings_do_not_change_the_key(mlp3):
    a, c, b = mlp3
    inputs = PlaneInputs(a, b, c)
    k = study_key(plane.KIND, PlaneConfig(), inputs)
    assert k == study_key(plane.KIND, PlaneConfig(points_per_pass=4, device="cuda"), inputs)
    assert k != study_key(plane.KIND, PlaneConfig(bn_subset=100), inputs)
    assert k != study_key(plane.KIND, PlaneConfig(), PlaneInputs(a, c, b))


def test_plane_key_tells_curve_kinds_apart(mlp3):
    """Same bends, another curve type: another projected curve, so another plane result."""
    a, c, b = mlp3
    names = param_names(a.build_model())
    pa, pb, pc = ({n: x.state[n] for n in names} for x in (a, b, c))
    bezier = study_key(plane.KIND, PlaneConfig(), PlaneInputs(a, b, BezierCurve(pa, pb, [pc])))
    chain = BezierCurve(pa, pb, [pc], kind="polychain")
    assert bezier != study_key(plane.KIND, PlaneConfig(), PlaneInputs(a, b, chain))
    again = study_key(plane.KIND, PlaneConfig(), PlaneInputs(a, b, BezierCurve(pa, pb, [pc])))
    assert again == bezier


@pytest.mark.parametrize("bn_subset", [None, 100])
def test_bn_plane_matches_evaluate_point(cnn3, tmp_path, bn_subset):
    a, c, b = cnn3
    cfg = PlaneConfig(grid=2 if bn_subset is None else 3, margin=0.1, bn_subset=bn_subset)
    res = plane_run(a, b, c, cfg, Store(tmp_path / "s"))
    assert res.bn_samples == (bn_subset or 1347)
    wa, wc, wb = flat_params(a), flat_params(c), flat_params(b)
    u = (wb - wa) / np.linalg.norm(wb - wa)
    e = (wc - wa) - ((wc - wa) @ u) * u
    v = e / np.linalg.norm(e)
    model, data = a.build_model(), digits_data(bn_subset)
    for bi, ai in [(0, 1), (1, 0)]:
        w = wa + res.alpha[ai] * u + res.beta[bi] * v
        want = evaluate_point(model, params_at(a, w), data)
        assert_metrics_close({m: res.metrics[m][bi, ai] for m in METRICS}, want)


@pytest.mark.parametrize("first_layer", ["plain", "reuse"])
@pytest.mark.parametrize("bn_subset", [None, 100])
def test_bn_plane_evaluator_matches_evaluate_point(cnn3, first_layer, bn_subset):
    a, c, b = cnn3
    model = a.build_model()
    flats = (torch.from_numpy(flat_params(x)) for x in (a, c, b))
    plane = plane_through(*flats, dict(model.named_parameters()))
    data = digits_data(bn_subset)
    ev = _PlaneEv(model, plane, data, first_layer=first_layer)
    assert ev.layer == ("features.0" if first_layer == "reuse" else None)
    for xy in [(0.3, -0.2), (1.5, 0.8)]:
        assert_metrics_close(ev(xy), evaluate_point(model, plane.point(*xy), data))


def test_first_layer_reuse_equals_plain_evaluation(mlp3):
    a, c, b = mlp3
    model = a.build_model()
    plane = plane_through(
        *(torch.from_numpy(flat_params(x)) for x in (a, c, b)), dict(model.named_parameters())
    )
    data = digits_data()
    reuse = _PlaneEv(model, plane, data, first_layer="reuse")
    plain = _PlaneEv(model, plane, data, first_layer="plain")
    assert reuse.layer == "net.1" and plain.layer is None
    for xy in [(0.0, 0.0), (2.0, -1.0), (-0.7, 3.1)]:
        assert_metrics_close(reuse(xy), plain(xy))


class _InputTwice(nn.Module):
    """Uses its input after the first layer too: the first layer's output alone is not enough."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(64, 8)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x):
        z = self.flat(x)
        return self.fc2(torch.relu(self.fc1(z))) + z[:, :10]


def test_reuse_is_refused_when_the_network_reads_its_input_again():
    model = _InputTwice()
    like = dict(model.named_parameters())
    w = flatten(like).detach()
    gen = torch.Generator().manual_seed(0)
    plane = Plane(
        w.double(),
        torch.randn(w.numel(), generator=gen).double(),
        torch.randn(w.numel(), generator=gen).double(),
        like,
    )
    data = digits_data()
    assert _PlaneEv(model, plane, data).layer is None
    with pytest.raises(ValueError, match="reusable"):
        _PlaneEv(model, plane, data, first_layer="reuse")


def test_plane_study_with_a_curve_projects_it_exactly(mlp3, tmp_path):
    a, c, b = mlp3
    model = a.build_model()
    pa, pc, pb = ({n: x.state[n] for n in param_names(model)} for x in (a, c, b))
    cfg = PlaneConfig(grid=2, points_on_curve=5)
    res = plane_run(a, b, BezierCurve(pa, pb, [pc]), cfg, Store(tmp_path / "s"))
    p = res.points_xy
    assert np.allclose(p[1], plane_run(a, b, c, cfg, Store(tmp_path / "t")).points_xy[1])
    t = np.linspace(0, 1, 5)[:, None]
    # The plane's coordinates are affine, so the curve's are the Bezier of the points' ones.
    expected = (1 - t) ** 2 * p[0] + 2 * t * (1 - t) * p[1] + t**2 * p[2]
    assert np.allclose(res.curve_xy, expected, atol=1e-5)
    assert res.labels[1] == "bend"


def test_cli_plane_with_a_curve_file(mlp3, tmp_path, capsys):
    a, c, b = mlp3
    model = a.build_model()
    pa, pc, pb = ({n: x.state[n] for n in param_names(model)} for x in (a, c, b))
    curve = save_curve(
        tmp_path / "curve.safetensors", BezierCurve(pa, pb, [pc]), a, b, CurveConfig()
    )
    argv = ["plane", str(a.path), str(b.path), "--curve", str(curve), "--grid", "2"]
    assert main([*argv, "--points-on-curve", "3", "--store", str(tmp_path / "s")]) == 0
    assert "bend" in capsys.readouterr().out
    # A curve fitted between other end points is refused with one error line.
    argv = ["plane", str(a.path), str(c.path), "--curve", str(curve)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_random_plane_directions_are_filter_normalised(mlp3, tmp_path):
    a = mlp3[0]
    cfg = RandomPlaneConfig(grid=3, seed=3, span=0.5)
    res = run(random_plane.KIND, cfg, RandomPlaneInputs(a), store=Store(tmp_path / "s"))
    model = a.build_model()
    # Every filter of a direction has its weight filter's norm: the total is the weights' norm.
    weights = [p.detach() for p in model.parameters() if p.ndim > 1]
    weights_norm = np.sqrt(sum(float(w.norm()) ** 2 for w in weights))
    assert res.direction_norms == pytest.approx([weights_norm] * 2, rel=1e-6)
    assert np.allclose(res.alpha, np.linspace(-0.5, 0.5, 3))
    assert (res.seed, res.span) == (3, 0.5) and abs(res.cosine) < 0.5
    # The centre of the grid is the checkpoint itself.
    want = evaluate_point(model, dict(model.named_parameters()), digits_data())
    assert_metrics_close({m: res.metrics[m][1, 1] for m in METRICS}, want)


def test_slice_delta_hits_both_end_points(mlp3, tmp_path):
    a, _, b = mlp3
    res = slice_run(a, b, direction="delta", points=3, span=0.0, store=Store(tmp_path / "s"))
    assert np.allclose(res.s, [0.0, 0.5, 1.0])
    model, data = a.build_model(), digits_data()
    for i, ck in ((0, a), (2, b)):
        want = evaluate_point(model, params_at(a, flat_params(ck)), data)
        assert_metrics_close({m: res.metrics[m][i] for m in METRICS}, want)
    assert res.direction_norm == pytest.approx(np.linalg.norm(flat_params(b) - flat_params(a)))
    assert res.labels == [a.name, b.name] and res.eigenvalue is None


def test_slice_random_direction_has_the_length_of_delta(mlp3, tmp_path):
    a, _, b = mlp3
    res = slice_run(a, b, direction="random", points=3, store=Store(tmp_path / "s"))
    assert res.direction_norm == pytest.approx(np.linalg.norm(flat_params(b) - flat_params(a)))
    assert np.allclose(res.s, [-1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "delta"}, "second checkpoint"),
        ({"direction": "sideways"}, "direction must be"),
        ({"direction": "random", "points": 1}, "points"),
    ],
)
def test_slice_bad_input(mlp3, tmp_path, kwargs, match):
    store = Store(tmp_path / "s")
    with pytest.raises(ValueError, match=match):
        slice_run(mlp3[0], store=store, **kwargs)
    assert not store.root.exists()


def test_plane_study_bad_input_writes_nothing(mlp3, cnn3, tmp_path):
    store = Store(tmp_path / "s")
    with pytest.raises(ValueError, match="grid"):
        plane_run(*mlp3, PlaneConfig(grid=1), store)
    with pytest.raises(ValueError, match="cnn"):
        plane_run(mlp3[0], mlp3[1], cnn3[0], PlaneConfig(), store)
    with pytest.raises(ValueError, match="grid"):
        find(plane.KIND, PlaneConfig(grid=1), PlaneInputs(*mlp3), store=store)
    assert not store.root.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["plane", "{a}", "{b}", "--third", "{c}", "--grid", "3"],
        ["random-plane", "{a}", "--grid", "3", "--span", "0.2"],
        ["slice", "{a}", "--direction", "delta", "--to", "{b}", "--points", "3"],
    ],
)
def test_cli_grid_commands(mlp3, tmp_path, capsys, argv):
    paths = {k: str(c.path) for k, c in zip("acb", mlp3, strict=True)}
    argv = [x.format(**paths) for x in argv] + ["--store", str(tmp_path / "s")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train_loss" in out and str(tmp_path / "s") in out


def test_cli_reports_bad_input(mlp3, tmp_path, capsys):
    argv = ["plane", str(mlp3[0].path), str(mlp3[1].path), "--third", str(tmp_path / "nope.pt")]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.slow
@pytest.mark.slow
def test_killed_plane_run_resumes_from_saved_points(tmp_path):
    """Kill the CLI once a partial result is saved; a re-run computes only the rest."""
    ckpts = [make_ckpt(tmp_path / f"r{i}.safetensors", CNN, 20 + i) for i in range(3)]
    store = Store(tmp_path / "s")
    grid = 45  # enough points that the run outlasts the first partial save (every 2 s)
    argv = [str(c.path) for c in (ckpts[0], ckpts[2])] + ["--third", str(ckpts[1].path)]
    cmd = [sys.executable, "-m", "landscape", "plane", *argv, "--grid", str(grid)]
    cmd += ["--store", str(store.root), "--bn-subset", "256"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(store.root.glob("plane/*.partial")):
            assert proc.poll() is None, "the run finished before a partial result was saved"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the first save is complete (the next one comes 2 s later)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.kill()
    finally:
        proc.wait()
    (partial,) = store.root.glob("plane/*.partial")
    saved = len(store.load_partial("plane", partial.name.removesuffix(".partial"))[0])
    calls: list[int] = []
    cfg = PlaneConfig(grid=grid, bn_subset=256)
    resumed = plane_run(
        ckpts[0], ckpts[2], ckpts[1], cfg, store, progress=lambda d, t, s: calls.append(d)
    )
    assert 0 < saved < grid * grid
    assert min(calls) >= saved  # counting went on from the saved points
    assert len({d for d in calls if d > saved}) == grid * grid - saved  # only the rest computed
    clean = plane_run(ckpts[0], ckpts[2], ckpts[1], cfg, Store(tmp_path / "clean"))
    for m in METRICS:
        assert np.allclose(resumed.metrics[m], clean.metrics[m], atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_studies_on_the_device_match_cpu(mlp3, cnn3, runs, tmp_path, arch, device):
    """``pytest --device cuda``: every study gives the CPU's numbers (and the same key)."""
    if device == "cpu":
        pytest.skip("compares another device with the CPU: run with --device cuda")
    a, c, b = mlp3 if arch == "mlp" else cnn3
    results = {}
    for dev in ("cpu", device):
        store = Store(tmp_path / dev.replace(":", "_"))
        studies = [
            (plane.KIND, PlaneConfig(grid=3, bn_subset=200, device=dev), PlaneInputs(a, b, c)),
            (
                random_plane.KIND,
                RandomPlaneConfig(grid=3, bn_subset=200, device=dev),
                RandomPlaneInputs(a),
            ),
            (
                slices.KIND,
                SliceConfig(points=3, bn_subset=200, device=dev),
                SliceInputs(a, b),
            ),
            (pca.KIND, PCAConfig(grid=2, device=dev), PCAInputs(tuple(runs))),
        ]
        results[dev] = [
            (study_key(k, cfg, inp), run(k, cfg, inp, store=store)) for k, cfg, inp in studies
        ]
    for (cpu_key, cpu), (gpu_key, gpu) in zip(results["cpu"], results[device], strict=True):
        assert cpu_key == gpu_key  # the device is not part of what a result means
        for m in METRICS:
            assert np.allclose(cpu.metrics[m], gpu.metrics[m], rtol=1e-4, atol=1e-4), m


@pytest.mark.parametrize("first_layer", ["plain", "reuse"])
def test_several_points_per_pass_equal_one_at_a_time(mlp3, first_layer):
    a, c, b = mlp3
    model = a.build_model()
    flats = (torch.from_numpy(flat_params(x)) for x in (a, c, b))
    plane = plane_through(*flats, dict(model.named_parameters()))
    data = digits_data()
    ev = _PlaneEv(model, plane, data, first_layer=first_layer, points_per_pass=3)
    coords = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.5], [-1.0, 3.0], [2.0, 1.0]])
    for got, xy in zip(ev.many(coords), coords, strict=True):
        assert_metrics_close(got, ev(xy))


def test_several_points_per_pass_need_a_network_without_bn(cnn3):
    model = cnn3[0].build_model()
    like = dict(model.named_parameters())
    w = flatten(like).detach().double()
    with pytest.raises(ValueError, match="BatchNorm"):
        _PlaneEv(model, Plane(w, w, w, like), digits_data(), points_per_pass=2)


def test_plane_study_with_several_points_per_pass(mlp3, tmp_path):
    a, c, b = mlp3
    one_cfg, many_cfg = PlaneConfig(grid=4), PlaneConfig(grid=4, points_per_pass=5)
    one = plane_run(a, b, c, one_cfg, Store(tmp_path / "1"))
    many = plane_run(a, b, c, many_cfg, Store(tmp_path / "5"))
    inputs = PlaneInputs(a, b, c)
    assert study_key(plane.KIND, many_cfg, inputs) == study_key(plane.KIND, one_cfg, inputs)
    for m in METRICS:
        assert np.allclose(many.metrics[m], one.metrics[m], rtol=0, atol=1e-5)
