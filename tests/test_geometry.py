"""landscape/geometry.py: planes, filter normalisation and PCA bases against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from landscape.geometry import (
    axis,
    filter_normalize,
    filter_normalized_random,
    pca_basis,
    plane_through,
    random_direction,
)
from landscape.params import flatten


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
    # The evaluator's view of the plane: basis [origin, u, v] with coordinates [1, alpha, beta].
    xy = plane.coords(w1)
    assert torch.allclose(
        torch.tensor([1.0, *xy], dtype=torch.float64) @ plane.basis(), plane.flat(*xy)
    )
    assert plane.point(*xy)["w"].dtype == torch.float32


def test_plane_through_rejects_degenerate_points():
    w0, w2 = torch.zeros(4), torch.ones(4)
    with pytest.raises(ValueError, match="line through"):
        plane_through(w0, 0.3 * w2, w2, {"w": w0})
    with pytest.raises(ValueError, match="same weights"):
        plane_through(w0, w2, w0, {"w": w0})


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
    # The flat version: same seed, same direction, in the order of ``weights``.
    flat = filter_normalized_random(weights, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    want = flatten(filter_normalize(random_direction(weights, g), weights))
    assert torch.equal(flat, want) and flat.dtype == torch.float64


def test_pca_basis_matches_sklearn():
    m = np.random.default_rng(0).standard_normal((7, 30))
    m -= m.mean(0)
    comps, s = pca_basis(m)
    ref = PCA(n_components=2).fit(m)
    for k in range(2):  # sign fixed like sklearn's svd_flip: compare up to sign anyway
        assert abs(comps[k] @ ref.components_[k]) == pytest.approx(1.0, abs=1e-10)
        assert comps[k][np.abs(comps[k]).argmax()] > 0
    assert (s[:2] ** 2 / (s**2).sum()) == pytest.approx(ref.explained_variance_ratio_, rel=1e-9)
    with pytest.raises(ValueError, match="fewer than two"):
        pca_basis(np.outer(np.arange(4.0), np.ones(5)))


def test_axis_covers_the_range_with_margins():
    got = axis(1.0, 3.0, 0.25, 5)
    assert np.allclose(got, np.linspace(0.5, 3.5, 5))
