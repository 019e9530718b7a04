"""Planes, PCA planes, random filter-normalised planes and slices against direct computation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from landscape.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.curves import BezierCurve, CurveConfig, save_curve
from landscape.data import load_dataset
from landscape.evaluate import METRICS, EvalData, evaluate_point
from landscape.models import build_model
from landscape.params import flatten, param_names
from landscape.store import Store
from landscape.surfaces import (
    PCAConfig,
    Plane,
    PlaneConfig,
    PlaneEvaluator,
    filter_normalize,
    pca_study,
    plane_study,
    plane_through,
    random_direction,
    random_plane_study,
    slice_study,
)
from landscape.train import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
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


def test_plane_basis_is_orthonormal_and_reconstructs_the_points():
    gen = torch.Generator().manual_seed(0)
    w0, w1, w2 = (torch.randn(50, generator=gen) for _ in range(3))
    plane = plane_through(w0, w1, w2, {"w": torch.zeros(50)})
    gram = torch.stack([plane.u, plane.v]) @ torch.stack([plane.u, plane.v]).T
    assert torch.allclose(gram, torch.eye(2, dtype=torch.float64), atol=1e-12)
    # Independent reference: Gram-Schmidt in numpy.
    a, b, c = (t.double().numpy() for t in (w0, w1, w2))
    u = (c - a) / np.linalg.norm(c - a)
    e = (b - a) - ((b - a) @ u) * u
    expected = {0: (0.0, 0.0), 1: ((b - a) @ u, np.linalg.norm(e)), 2: (np.linalg.norm(c - a), 0)}
    for i, w in enumerate((w0, w1, w2)):
        xy = plane.coords(w)
        assert np.allclose(xy, expected[i], atol=1e-10)
        assert torch.allclose(plane.flat(*xy), w.double(), atol=1e-10)


def test_plane_through_rejects_degenerate_points():
    w0, w2 = torch.zeros(4), torch.ones(4)
    with pytest.raises(ValueError, match="line through"):
        plane_through(w0, 0.3 * w2, w2, {"w": w0})
    with pytest.raises(ValueError, match="same weights"):
        plane_through(w0, w2, w0, {"w": w0})


def test_plane_study_grid_matches_evaluate_point(mlp3, tmp_path):
    a, c, b = mlp3
    store = Store(tmp_path / "store")
    res = plane_study(a, b, c, PlaneConfig(grid=4, margin=0.25), store=store)
    wa, wc, wb = flat_params(a), flat_params(c), flat_params(b)
    u = (wb - wa) / np.linalg.norm(wb - wa)
    e = (wc - wa) - ((wc - wa) @ u) * u
    v = e / np.linalg.norm(e)
    pts = np.array([[0, 0], [(wc - wa) @ u, np.linalg.norm(e)], [np.linalg.norm(wb - wa), 0]])
    assert np.allclose(res.arrays["points_xy"], pts, atol=1e-9)
    assert res.data["basis_norms"] == pytest.approx([np.linalg.norm(wb - wa), np.linalg.norm(e)])
    alpha, beta = res.arrays["alpha"], res.arrays["beta"]
    ext = pts.max(0) - pts.min(0)
    assert alpha[0] == pytest.approx(pts[:, 0].min() - 0.25 * ext[0])
    assert beta[-1] == pytest.approx(pts[:, 1].max() + 0.25 * ext[1])
    assert res.arrays["train_loss"].shape == (4, 4)
    model, data = a.build_model(), digits_data()
    for bi, ai in [(0, 0), (1, 3), (3, 2)]:
        w = wa + alpha[ai] * u + beta[bi] * v
        want = evaluate_point(model, params_at(a, w), data)
        got = {m: res.arrays[m][bi, ai] for m in METRICS}
        assert_metrics_close(got, want)
    assert res.data["labels"] == [a.name, c.name, b.name]


def test_plane_study_is_stored_and_reused(mlp3, tmp_path):
    a, c, b = mlp3
    store = Store(tmp_path / "store")
    first = plane_study(a, b, c, PlaneConfig(grid=3), store=store)
    calls = []
    again = plane_study(
        a, b, c, PlaneConfig(grid=3), store=store, progress=lambda *x: calls.append(x)
    )
    assert calls == [] and again.key == first.key
    assert np.array_equal(again.arrays["test_loss"], first.arrays["test_loss"])


@pytest.mark.parametrize("bn_subset", [None, 100])
def test_bn_plane_matches_evaluate_point(cnn3, tmp_path, bn_subset):
    a, c, b = cnn3
    cfg = PlaneConfig(grid=2 if bn_subset is None else 3, margin=0.1, bn_subset=bn_subset)
    res = plane_study(a, b, c, cfg, store=Store(tmp_path / "s"))
    assert res.data["bn_samples"] == (bn_subset or 1347)
    wa, wc, wb = flat_params(a), flat_params(c), flat_params(b)
    u = (wb - wa) / np.linalg.norm(wb - wa)
    e = (wc - wa) - ((wc - wa) @ u) * u
    v = e / np.linalg.norm(e)
    model, data = a.build_model(), digits_data(bn_subset)
    for bi, ai in [(0, 1), (1, 0)]:
        w = wa + res.arrays["alpha"][ai] * u + res.arrays["beta"][bi] * v
        want = evaluate_point(model, params_at(a, w), data)
        assert_metrics_close({m: res.arrays[m][bi, ai] for m in METRICS}, want)


@pytest.mark.parametrize("first_layer", ["plain", "reuse"])
@pytest.mark.parametrize("bn_subset", [None, 100])
def test_bn_plane_evaluator_matches_evaluate_point(cnn3, first_layer, bn_subset):
    a, c, b = cnn3
    model = a.build_model()
    flats = (torch.from_numpy(flat_params(x)) for x in (a, c, b))
    plane = plane_through(*flats, dict(model.named_parameters()))
    data = digits_data(bn_subset)
    ev = PlaneEvaluator(model, plane, data, first_layer=first_layer)
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
    reuse = PlaneEvaluator(model, plane, data, first_layer="reuse")
    plain = PlaneEvaluator(model, plane, data, first_layer="plain")
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
    assert PlaneEvaluator(model, plane, data).layer is None
    with pytest.raises(ValueError, match="reusable"):
        PlaneEvaluator(model, plane, data, first_layer="reuse")


def test_plane_study_with_a_curve_projects_it_exactly(mlp3, tmp_path):
    a, c, b = mlp3
    model = a.build_model()
    pa, pc, pb = ({n: x.state[n] for n in param_names(model)} for x in (a, c, b))
    cfg = PlaneConfig(grid=2, points_on_curve=5)
    res = plane_study(a, b, BezierCurve(pa, pb, [pc]), cfg, store=Store(tmp_path / "s"))
    p = res.arrays["points_xy"]
    assert np.allclose(
        p[1], plane_study(a, b, c, cfg, store=Store(tmp_path / "t")).arrays["points_xy"][1]
    )
    t = np.linspace(0, 1, 5)[:, None]
    # The plane's coordinates are affine, so the curve's are the Bezier of the points' ones.
    expected = (1 - t) ** 2 * p[0] + 2 * t * (1 - t) * p[1] + t**2 * p[2]
    assert np.allclose(res.arrays["curve_xy"], expected, atol=1e-5)
    assert res.data["labels"][1] == "bend"


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


def test_filter_normalize_matches_filter_norms():
    gen = torch.Generator().manual_seed(0)
    weights = {
        "conv": torch.randn(5, 3, 3, 3, generator=gen),
        "fc": torch.randn(4, 7, generator=gen),
        "bias": torch.randn(4, generator=gen),
    }
    d = filter_normalize(random_direction(weights, gen), weights)
    for n in ("conv", "fc"):
        for i in range(weights[n].shape[0]):
            assert float(d[n][i].norm()) == pytest.approx(float(weights[n][i].norm()), rel=1e-6)
    assert torch.count_nonzero(d["bias"]) == 0


def test_random_plane_directions_are_filter_normalised(mlp3, tmp_path):
    a = mlp3[0]
    res = random_plane_study(a, PlaneConfig(grid=3), seed=3, span=0.5, store=Store(tmp_path / "s"))
    model = a.build_model()
    # Every filter of a direction has its weight filter's norm: the total is the weights' norm.
    weights = [p.detach() for p in model.parameters() if p.ndim > 1]
    weights_norm = np.sqrt(sum(float(w.norm()) ** 2 for w in weights))
    assert res.data["direction_norms"] == pytest.approx([weights_norm] * 2, rel=1e-6)
    assert np.allclose(res.arrays["alpha"], np.linspace(-0.5, 0.5, 3))
    # The centre of the grid is the checkpoint itself.
    want = evaluate_point(model, dict(model.named_parameters()), digits_data())
    assert_metrics_close({m: res.arrays[m][1, 1] for m in METRICS}, want)


def _tiny_run(out: Path, seed: int) -> Path:
    cfg = TrainConfig(
        arch="mlp",
        arch_kwargs={"widths": [6]},
        epochs=2,
        batch_size=256,
        snapshots=5,
        seed=seed,
        lr=0.5,
    )
    train(cfg, out)
    return out


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [_tiny_run(tmp_path / "run0", 0), _tiny_run(tmp_path / "run1", 1)]


def _snapshot_matrix(runs: list[Path]) -> np.ndarray:
    rows = []
    for r in runs:
        for f in sorted((r / "trajectory").glob("step_*.safetensors")):
            rows.append(flat_params(load_checkpoint(f)))
    return np.stack(rows)


def test_pca_study_with_mean_centre_matches_sklearn(runs, tmp_path):
    cfg = PCAConfig(grid=2, centre="mean")
    res = pca_study(runs, cfg, store=Store(tmp_path / "s"))
    x = _snapshot_matrix(runs)
    pca = PCA(n_components=2).fit(x)
    assert res.data["explained_variance_ratio"] == pytest.approx(
        pca.explained_variance_ratio_, rel=1e-6
    )
    ref = pca.transform(x)
    xy = res.arrays["xy"]
    for k in range(2):  # components are defined up to sign
        assert np.allclose(np.abs(xy[:, k]), np.abs(ref[:, k]), atol=1e-6)
    back = pca.inverse_transform(ref)
    assert np.allclose(res.arrays["residual"], np.linalg.norm(x - back, axis=1), atol=1e-6)
    assert list(res.arrays["run_index"]) == [0] * 5 + [1] * 5
    assert len(res.data["snapshots"]) == 10


def test_pca_study_with_final_centre_matches_gram_eigendecomposition(runs, tmp_path):
    res = pca_study(runs[:1], PCAConfig(grid=2), store=Store(tmp_path / "s"))
    x = _snapshot_matrix(runs[:1])
    m = x - flat_params(load_checkpoint(runs[0] / "final.safetensors"))
    # Independent route: eigenvectors of the (S, S) Gram matrix give the principal axes.
    lam, vec = np.linalg.eigh(m @ m.T)
    lam, vec = lam[::-1], vec[:, ::-1]
    assert res.data["explained_variance_ratio"] == pytest.approx(lam[:2] / lam.sum(), rel=1e-6)
    axes = (m.T @ vec[:, :2]) / np.sqrt(lam[:2])  # (P, 2) unit principal axes
    xy = m @ axes
    assert np.allclose(np.abs(res.arrays["xy"]), np.abs(xy), atol=1e-6)
    resid = np.linalg.norm(m - xy @ axes.T, axis=1)
    assert np.allclose(res.arrays["residual"], resid, atol=1e-6)
    assert np.allclose(res.arrays["xy"][-1], 0, atol=1e-9)  # the final snapshot is the centre
    assert res.arrays["epoch"][-1] == pytest.approx(2.0)


def test_pca_study_rejects_mixed_architectures(runs, tmp_path):
    other = tmp_path / "other"
    train(TrainConfig(arch="mlp", arch_kwargs={"widths": [5]}, epochs=1, snapshots=3), other)
    store = Store(tmp_path / "s")
    with pytest.raises(ValueError, match="widths"):
        pca_study([runs[0], other], PCAConfig(grid=2), store=store)
    assert not store.root.exists()


def test_slice_delta_hits_both_end_points(mlp3, tmp_path):
    a, _, b = mlp3
    res = slice_study(a, "delta", b=b, points=3, span=0.0, store=Store(tmp_path / "s"))
    assert np.allclose(res.arrays["s"], [0.0, 0.5, 1.0])
    model, data = a.build_model(), digits_data()
    for i, ck in ((0, a), (2, b)):
        want = evaluate_point(model, params_at(a, flat_params(ck)), data)
        assert_metrics_close({m: res.arrays[m][i] for m in METRICS}, want)
    assert res.data["direction_norm"] == pytest.approx(
        np.linalg.norm(flat_params(b) - flat_params(a))
    )


def test_slice_random_direction_has_the_length_of_delta(mlp3, tmp_path):
    a, _, b = mlp3
    res = slice_study(a, "random", b=b, points=3, store=Store(tmp_path / "s"))
    assert res.data["direction_norm"] == pytest.approx(
        np.linalg.norm(flat_params(b) - flat_params(a))
    )
    assert np.allclose(res.arrays["s"], [-1.0, 0.0, 1.0])


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
        slice_study(mlp3[0], store=store, **kwargs)
    assert not store.root.exists()


def test_plane_study_bad_input_writes_nothing(mlp3, cnn3, tmp_path):
    store = Store(tmp_path / "s")
    with pytest.raises(ValueError, match="grid"):
        plane_study(*mlp3, PlaneConfig(grid=1), store=store)
    with pytest.raises(ValueError, match="cnn"):
        plane_study(mlp3[0], mlp3[1], cnn3[0], store=store)
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


def test_cli_pca(runs, tmp_path, capsys):
    argv = ["pca", str(runs[0]), str(runs[1]), "--grid", "2", "--store", str(tmp_path / "s")]
    assert main(argv) == 0
    assert "explained" in capsys.readouterr().out


def test_cli_reports_bad_input(mlp3, tmp_path, capsys):
    argv = ["plane", str(mlp3[0].path), str(mlp3[1].path), "--third", str(tmp_path / "nope.pt")]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.slow
def test_killed_plane_run_resumes_from_saved_points(tmp_path):
    """Kill the CLI once a partial result is saved; a re-run computes only the rest."""
    ckpts = [make_ckpt(tmp_path / f"r{i}.safetensors", CNN, 20 + i) for i in range(3)]
    store = Store(tmp_path / "s")
    grid = 25
    argv = [str(c.path) for c in (ckpts[0], ckpts[2])] + ["--third", str(ckpts[1].path)]
    cmd = [sys.executable, "-m", "landscape", "plane", *argv, "--grid", str(grid)]
    cmd += ["--store", str(store.root), "--bn-subset", "256"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(store.root.glob("plane/*.partial.npz")):
            assert proc.poll() is None, "the run finished before a partial result was saved"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait()
    (partial,) = store.root.glob("plane/*.partial.npz")
    saved = int(
        store.load_partial("plane", partial.name.removesuffix(".partial.npz"))["done"].sum()
    )
    calls: list[int] = []
    cfg = PlaneConfig(grid=grid, bn_subset=256)
    resumed = plane_study(
        ckpts[0], ckpts[2], ckpts[1], cfg, store=store, progress=lambda d, t, s: calls.append(d)
    )
    assert 0 < saved < grid * grid
    assert min(calls) >= saved  # counting went on from the saved points
    assert len({d for d in calls if d > saved}) == grid * grid - saved  # only the rest computed
    clean = plane_study(ckpts[0], ckpts[2], ckpts[1], cfg, store=Store(tmp_path / "clean"))
    for m in METRICS:
        assert np.allclose(resumed.arrays[m], clean.arrays[m], atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_studies_on_the_device_match_cpu(mlp3, cnn3, runs, tmp_path, arch, device):
    """``pytest --device cuda``: every study gives the CPU's numbers (and the same key)."""
    if device == "cpu":
        pytest.skip("compares another device with the CPU: run with --device cuda")
    a, c, b = mlp3 if arch == "mlp" else cnn3
    results = {}
    for dev in ("cpu", device):
        store = Store(tmp_path / dev.replace(":", "_"))
        cfg = PlaneConfig(grid=3, bn_subset=200, device=dev)
        results[dev] = [
            plane_study(a, b, c, cfg, store=store),
            random_plane_study(a, cfg, store=store),
            slice_study(a, "delta", b=b, points=3, cfg=cfg, store=store),
            pca_study(runs, PCAConfig(grid=2, device=dev), store=store),
        ]
    for cpu, gpu in zip(results["cpu"], results[device], strict=True):
        assert cpu.key == gpu.key  # the device is not part of what a result means
        for m in METRICS:
            assert np.allclose(cpu.arrays[m], gpu.arrays[m], rtol=1e-4, atol=1e-4), m


@pytest.mark.parametrize("first_layer", ["plain", "reuse"])
def test_several_points_per_pass_equal_one_at_a_time(mlp3, first_layer):
    a, c, b = mlp3
    model = a.build_model()
    flats = (torch.from_numpy(flat_params(x)) for x in (a, c, b))
    plane = plane_through(*flats, dict(model.named_parameters()))
    data = digits_data()
    ev = PlaneEvaluator(model, plane, data, first_layer=first_layer, points_per_pass=3)
    coords = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.5], [-1.0, 3.0], [2.0, 1.0]])
    for got, xy in zip(ev.many(coords), coords, strict=True):
        assert_metrics_close(got, ev(xy))


def test_several_points_per_pass_need_a_network_without_bn(cnn3):
    model = cnn3[0].build_model()
    like = dict(model.named_parameters())
    w = flatten(like).detach().double()
    with pytest.raises(ValueError, match="BatchNorm"):
        PlaneEvaluator(model, Plane(w, w, w, like), digits_data(), points_per_pass=2)


def test_plane_study_with_several_points_per_pass(mlp3, tmp_path):
    a, c, b = mlp3
    one = plane_study(a, b, c, PlaneConfig(grid=4), store=Store(tmp_path / "1"))
    many = plane_study(a, b, c, PlaneConfig(grid=4, points_per_pass=5), store=Store(tmp_path / "5"))
    assert many.key == one.key
    for m in METRICS:
        assert np.allclose(many.arrays[m], one.arrays[m], rtol=0, atol=1e-5)
