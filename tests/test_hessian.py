"""Hessian-vector products and Lanczos against autograd's dense Hessian on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from landscape.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.data import load_dataset
from landscape.evaluate import EvalData
from landscape.hessian import hvp, top_eigen
from landscape.models import build_model, prunable_names
from landscape.params import flatten, unflatten
from landscape.pruning import magnitude_prune
from landscape.store import Store
from landscape.studies import find, hessian, run, slices
from landscape.studies.hessian import HessianConfig, HessianInputs, HessianResult
from landscape.studies.slices import SliceConfig, SliceInputs
from tests.reference import recalibrate_bn

DATA = {"name": "digits", "split_seed": 0}
TINY_MLP = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "widths": [2]}}


def tiny(kind: str, seed: int = 0):
    """A tiny model, its parameters, BN-recalibrated buffers and a small data set."""
    torch.manual_seed(seed)
    if kind == "mlp":
        model = build_model("mlp", in_shape=(1, 2, 2), num_classes=3, widths=(3,))
    else:  # conv + BatchNorm: the HVP must use the recalibrated statistics in eval mode
        model = build_model("cnn", in_shape=(1, 4, 4), num_classes=3, channels=(2,), hidden=3)
    x = torch.randn(30, *((1, 2, 2) if kind == "mlp" else (1, 4, 4)))
    y = torch.randint(0, 3, (30,))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = recalibrate_bn(model, params, x)
    return model, params, buffers, x, y


def dense_hessian(model, params, buffers, x, y) -> torch.Tensor:
    """autograd's full Hessian of the mean cross-entropy, BN in eval mode."""
    model.eval()

    def loss(flat):
        logits = functional_call(model, (unflatten(flat, params), buffers), (x,))
        return F.cross_entropy(logits, y)

    return torch.autograd.functional.hessian(loss, flatten(params))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("batch_size", [30, 7])
def test_hvp_matches_dense_hessian(kind, batch_size):
    model, params, buffers, x, y = tiny(kind)
    h = dense_hessian(model, params, buffers, x, y)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(h.shape[0], generator=gen)
        got = hvp(model, params, buffers, x, y, v, batch_size=batch_size)
        assert torch.allclose(got, h @ v, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_top_eigen_matches_numpy_eigh(kind):
    model, params, buffers, x, y = tiny(kind)
    h = dense_hessian(model, params, buffers, x, y).double().numpy()
    lam, vec = np.linalg.eigh((h + h.T) / 2)
    lam, vec = lam[::-1], vec[:, ::-1]
    data = EvalData(x, y, x[:1], y[:1])
    vals, vecs, n_hvp = top_eigen(model, params, buffers, data, k=3, tol=1e-8)
    assert np.allclose(vals, lam[:3], rtol=1e-4, atol=1e-6)
    assert vecs.shape == (3, h.shape[0]) and n_hvp > 0
    for i in range(3):  # eigenvectors up to sign (the top three are distinct here)
        assert abs(vecs[i] @ vec[:, i]) == pytest.approx(1.0, abs=1e-4)


def test_top_eigen_subset_uses_the_first_samples():
    model, params, buffers, x, y = tiny("mlp")
    h = dense_hessian(model, params, buffers, x[:10], y[:10]).double().numpy()
    data = EvalData(x, y, x[:1], y[:1])
    vals, _, _ = top_eigen(model, params, buffers, data, k=2, subset=10, tol=1e-8)
    assert np.allclose(vals, np.linalg.eigvalsh(h)[::-1][:2], rtol=1e-4)


def test_top_eigen_rejects_bad_k():
    model, params, buffers, x, y = tiny("mlp")
    data = EvalData(x, y, x[:1], y[:1])
    n = flatten(params).numel()
    for k in (0, n):
        with pytest.raises(ValueError, match="k must be"):
            top_eigen(model, params, buffers, data, k=k)


def hessian_study(a, b, cfg: HessianConfig, *, store: Store) -> HessianResult:
    """The hessian study kind, as the CLI and the app run it."""
    return run(hessian.KIND, cfg, HessianInputs(a, b), store=store)


def eigen_slice(a, b, hcfg: HessianConfig, *, store: Store) -> slices.SliceResult:
    cfg = SliceConfig(direction="eigen", points=3, hessian=hcfg)
    return run(slices.KIND, cfg, SliceInputs(a, b), store=store)


def _pair(tmp_path) -> tuple[Checkpoint, Checkpoint]:
    """A (dense) and B: A half magnitude-pruned and perturbed, like a sparse minimum nearby."""
    torch.manual_seed(0)
    model = build_model(TINY_MLP["name"], **TINY_MLP["kwargs"])
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    a_path = tmp_path / "a.safetensors"
    save_checkpoint(a_path, state, {"arch": TINY_MLP, "data": DATA})
    pruned, masks = magnitude_prune(state, prunable_names(model), 0.5)
    gen = torch.Generator().manual_seed(5)
    b_state = {
        k: v + 0.05 * torch.randn(v.shape, generator=gen) * masks.get(k, 1)
        for k, v in pruned.items()
    }
    b_path = tmp_path / "b.safetensors"
    save_checkpoint(b_path, b_state, {"arch": TINY_MLP, "data": DATA})
    return load_checkpoint(a_path), load_checkpoint(b_path)


def test_hessian_study_overlaps_match_direct_computation(tmp_path):
    a, b = _pair(tmp_path)
    cfg = HessianConfig(k=3, subset=64, seed=2, tol=1e-8)
    res = hessian_study(a, b, cfg, store=Store(tmp_path / "s"))
    model = a.build_model()
    names = [n for n, _ in model.named_parameters()]
    params = {n: a.state[n] for n in names}
    ds = load_dataset("digits")
    x, y = ds.x_train[:64], ds.y_train[:64]
    h = dense_hessian(model, params, {}, x, y).double().numpy()
    lam, vec = np.linalg.eigh((h + h.T) / 2)
    top = vec[:, ::-1][:, :3]  # (P, 3)
    assert np.allclose(res.eigenvalues, lam[::-1][:3], rtol=1e-4)
    wa = flatten(a.state, names).double().numpy()
    delta = flatten(b.state, names).double().numpy() - wa
    overlap = np.abs(top.T @ delta) / np.linalg.norm(delta)
    assert np.allclose(res.overlap, overlap, atol=1e-5)
    assert res.projection_ratio == pytest.approx(np.linalg.norm(overlap), abs=1e-5)
    assert res.delta_norm == pytest.approx(np.linalg.norm(delta))
    # Magnitude direction, naively: zero the smallest half of |w_A| over the prunable weights.
    prunable = prunable_names(model)
    assert res.sparsity_b == pytest.approx(0.5, abs=1e-3)
    mag = np.abs(np.concatenate([a.state[n].reshape(-1).numpy() for n in prunable]))
    cut = np.sort(mag)[round(res.sparsity_b * mag.size) - 1]
    m = np.concatenate(
        [
            np.where(np.abs(a.state[n].numpy()) <= cut, -a.state[n].numpy(), 0).reshape(-1)
            if n in prunable
            else np.zeros(a.state[n].numel())
            for n in names
        ]
    )
    mag_overlap = np.abs(top.T @ m) / np.linalg.norm(m)
    assert np.allclose(res.magnitude_overlap, mag_overlap, atol=1e-5)
    assert res.magnitude_projection_ratio == pytest.approx(np.linalg.norm(mag_overlap), abs=1e-5)
    # A random direction of equal norm: its overlaps are those of a unit random vector.
    assert res.random_overlap.shape == (3,)
    assert res.random_projection_ratio == pytest.approx(np.linalg.norm(res.random_overlap))
    assert res.eigenvectors.shape == (3, wa.size)
    assert res.samples == 64 and res.bn_samples == 1347 and res.n_hvp > 0


def test_hessian_study_without_b_reports_eigenvalues_only(tmp_path):
    a, _ = _pair(tmp_path)
    res = hessian_study(a, None, HessianConfig(k=2, subset=32), store=Store(tmp_path / "s"))
    assert res.eigenvalues.shape == (2,)
    assert res.eigenvalues[0] >= res.eigenvalues[1]
    assert res.projection_ratio is None and res.overlap is None and res.samples == 32


def test_cli_hessian(tmp_path, capsys):
    a, b = _pair(tmp_path)
    argv = ["hessian", str(a.path), "--direction-to", str(b.path), "--k", "2", "--subset", "32"]
    assert main([*argv, "--store", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "top eigenvalues" in out and "pruning" in out


def test_slice_along_the_top_eigenvector(tmp_path):
    a, b = _pair(tmp_path)
    hcfg = HessianConfig(k=1, subset=32)
    res = eigen_slice(a, b, hcfg, store=Store(tmp_path / "s"))
    eig = hessian_study(a, None, hcfg, store=Store(tmp_path / "s"))
    assert res.eigenvalue == pytest.approx(float(eig.eigenvalues[0]))
    names = [n for n, _ in a.build_model().named_parameters()]
    delta = flatten(b.state, names) - flatten(a.state, names)
    assert res.direction_norm == pytest.approx(float(delta.norm()), rel=1e-6)
    # The top eigenvalue is positive: along its eigenvector the loss is convex (to 2nd order).
    loss = res.metrics["train_loss"]
    assert res.eigenvalue > 0 and (loss[0] + loss[2]) / 2 > loss[1]


def test_hessian_on_the_device_matches_cpu(tmp_path, device):
    """``pytest --device cuda``: HVPs and the Hessian study give the CPU's numbers."""
    if device == "cpu":
        pytest.skip("compares another device with the CPU: run with --device cuda")
    model, params, buffers, x, y = tiny("cnn")
    v = torch.randn(flatten(params).numel(), generator=torch.Generator().manual_seed(0))
    on = {n: t.to(device) for n, t in params.items()}
    bufs = {n: t.to(device) for n, t in buffers.items()}
    got = hvp(model.to(device), on, bufs, x.to(device), y.to(device), v.to(device)).cpu()
    want = hvp(model.cpu(), params, buffers, x, y, v)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
    a, b = _pair(tmp_path)
    runs = {}
    for i, d in enumerate(("cpu", device)):
        cfg = HessianConfig(k=2, subset=64, device=d)
        runs[d] = hessian_study(a, b, cfg, store=Store(tmp_path / str(i)))
    cpu, dev = runs["cpu"], runs[device]
    assert np.allclose(cpu.eigenvalues, dev.eigenvalues, rtol=1e-3)
    assert cpu.projection_ratio == pytest.approx(dev.projection_ratio, rel=1e-3, abs=1e-4)


def test_eigen_slice_reuses_the_pruning_direction_study(tmp_path, monkeypatch):
    """The slice's eigenvector comes from the stored hessian study (A, B), computed once."""
    import landscape.studies.hessian as hessian_mod

    a, b = _pair(tmp_path)
    hcfg = HessianConfig(k=1, subset=32)
    store = Store(tmp_path / "s")
    assert find(hessian.KIND, hcfg, HessianInputs(a, b), store=store) is None
    first = hessian_study(a, b, hcfg, store=store)

    def no_lanczos(*args, **kwargs):
        raise AssertionError("eigenpairs were computed again")

    monkeypatch.setattr(hessian_mod, "top_eigen", no_lanczos)
    found = find(hessian.KIND, hcfg, HessianInputs(a, b), store=store)
    np.testing.assert_array_equal(found.eigenvalues, first.eigenvalues)
    np.testing.assert_array_equal(found.overlap, first.overlap)
    res = eigen_slice(a, b, hcfg, store=store)
    assert res.eigenvalue == pytest.approx(float(first.eigenvalues[0]))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_hessian_buffers_equal_reference_recalibration(kind):
    """The study's BN statistics (landscape.evaluate.bn_statistics) are the reference's."""
    from landscape.evaluate import bn_statistics

    model, params, want, x, y = tiny(kind)
    got = bn_statistics(model, params, EvalData(x, y, x[:5], y[:5]))
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-6)
