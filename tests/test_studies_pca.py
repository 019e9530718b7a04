"""The PCA study: trajectory snapshots against scikit-learn and a Gram eigendecomposition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from landscape.checkpoints import load_checkpoint
from landscape.cli import main
from landscape.params import flatten, param_names
from landscape.store import Store
from landscape.studies import pca, run
from landscape.studies.pca import PCAConfig, PCAInputs
from landscape.train import TrainConfig, train


def _flat(path: Path) -> np.ndarray:
    """A checkpoint file's parameters as one float64 vector, in the model's order."""
    ckpt = load_checkpoint(path)
    return flatten(ckpt.state, param_names(ckpt.build_model())).double().numpy()


def _snapshot_matrix(runs: list[Path]) -> np.ndarray:
    rows = []
    for r in runs:
        for f in sorted((r / "trajectory").glob("step_*.safetensors")):
            rows.append(_flat(f))
    return np.stack(rows)


def test_pca_study_with_mean_centre_matches_sklearn(runs, tmp_path):
    cfg = PCAConfig(grid=2, centre="mean")
    res = run(pca.KIND, cfg, PCAInputs(tuple(runs)), store=Store(tmp_path / "s"))
    x = _snapshot_matrix(runs)
    ref_pca = PCA(n_components=2).fit(x)
    assert res.explained_variance_ratio == pytest.approx(
        ref_pca.explained_variance_ratio_, rel=1e-6
    )
    ref = ref_pca.transform(x)
    for k in range(2):  # components are defined up to sign
        assert np.allclose(np.abs(res.xy[:, k]), np.abs(ref[:, k]), atol=1e-6)
    back = ref_pca.inverse_transform(ref)
    assert np.allclose(res.residual, np.linalg.norm(x - back, axis=1), atol=1e-6)
    assert list(res.run_index) == [0] * 5 + [1] * 5
    assert len(res.snapshots) == 10 and res.runs == ["run0", "run1"] and res.centre == "mean"


def test_pca_study_with_final_centre_matches_gram_eigendecomposition(runs, tmp_path):
    res = run(pca.KIND, PCAConfig(grid=2), PCAInputs(tuple(runs[:1])), store=Store(tmp_path / "s"))
    x = _snapshot_matrix(runs[:1])
    m = x - _flat(runs[0] / "final.safetensors")
    # Independent route: eigenvectors of the (S, S) Gram matrix give the principal axes.
    lam, vec = np.linalg.eigh(m @ m.T)
    lam, vec = lam[::-1], vec[:, ::-1]
    assert res.explained_variance_ratio == pytest.approx(lam[:2] / lam.sum(), rel=1e-6)
    axes = (m.T @ vec[:, :2]) / np.sqrt(lam[:2])  # (P, 2) unit principal axes
    xy = m @ axes
    assert np.allclose(np.abs(res.xy), np.abs(xy), atol=1e-6)
    resid = np.linalg.norm(m - xy @ axes.T, axis=1)
    assert np.allclose(res.residual, resid, atol=1e-6)
    assert np.allclose(res.xy[-1], 0, atol=1e-9)  # the final snapshot is the centre
    assert res.epoch[-1] == pytest.approx(2.0)


def test_pca_study_rejects_mixed_architectures(runs, tmp_path):
    other = tmp_path / "other"
    train(TrainConfig(arch="mlp", arch_kwargs={"widths": [5]}, epochs=1, snapshots=3), other)
    store = Store(tmp_path / "s")
    with pytest.raises(ValueError, match="widths"):
        run(pca.KIND, PCAConfig(grid=2), PCAInputs((runs[0], other)), store=store)
    # The architectures are checked once the snapshots are read: no result, partial or array
    # is written (only the result's lock file, taken before computing).
    assert not [p for p in store.root.rglob("*") if p.suffix in (".json", ".npz")]


def test_cli_pca(runs, tmp_path, capsys):
    argv = ["pca", str(runs[0]), str(runs[1]), "--grid", "2", "--store", str(tmp_path / "s")]
    assert main(argv) == 0
    assert "explained" in capsys.readouterr().out
