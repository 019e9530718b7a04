"""Figure builders of landscape/app/charts.py and charts_surfaces.py: traces, axes, markers."""

import numpy as np
import pytest

from landscape.app import charts, charts_surfaces


def _grid(g: int = 7, h: int = 5):
    alpha = np.linspace(-1, 2, g)
    beta = np.linspace(-0.5, 1.5, h)
    aa, bb = np.meshgrid(alpha, beta)  # (h, g), indexed [beta, alpha]
    return alpha, beta, 0.1 + (aa - 0.5) ** 2 + bb**2


def test_layer_sparsity_bars_one_trace_per_checkpoint():
    layers = {"sgd": {"l1": 0.0, "l2": 0.1}, "grda": {"l1": 0.8, "l2": 0.9}}
    fig = charts.layer_sparsity_bars(layers)
    assert [t.name for t in fig.data] == ["sgd", "grda"]
    assert list(fig.data[1].x) == ["l1", "l2"] and list(fig.data[1].y) == [0.8, 0.9]
    assert fig.layout.barmode == "group" and tuple(fig.layout.yaxis.range) == (0, 1)


def test_training_curves_three_panels_with_every_series():
    hist = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "train_acc": 0.5,
            "test_loss": 2 / e,
            "test_acc": 0.4,
            "sparsity": 0.1 * e,
        }
        for e in (1, 2, 3)
    ]
    fig = charts.training_curves({"sgd": hist, "grda": hist})
    assert len(fig.data) == 2 * 5  # per run: train/test loss, train/test acc, sparsity
    sparsity = [t for t in fig.data if t.name == "grda sparsity"][0]
    assert list(sparsity.y) == pytest.approx([0.1, 0.2, 0.3])
    assert fig.layout.yaxis.type == "log"  # loss panel
    assert fig.layout.xaxis.title.text == "epoch"


@pytest.mark.parametrize("log_y", [False, True])
def test_path_metric_log_toggle_and_marker(log_y):
    t = np.linspace(0, 1, 11)
    fig = charts.path_metric(
        t, {"curve": t**2 + 0.1, "line": 1 - t + 0.1}, "train_loss", log_y=log_y, at=0.3
    )
    assert [tr.name for tr in fig.data] == ["curve", "line"]
    assert fig.layout.yaxis.type == ("log" if log_y else "linear")
    assert fig.layout.yaxis.title.text == "train loss"
    assert np.allclose(fig.data[0].y, t**2 + 0.1)
    (vline,) = fig.layout.shapes
    assert vline.x0 == vline.x1 == 0.3


def test_path_metric_without_marker_has_no_shapes():
    t = np.linspace(0, 1, 3)
    assert not charts.path_metric(t, {"curve": t}, "test_acc").layout.shapes


def test_plane_contour_draws_points_curve_and_hover_data():
    alpha, beta, z = _grid()
    acc = 1 - z / z.max()
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    curve = np.array([[0.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
    fig = charts_surfaces.plane_contour(
        alpha,
        beta,
        z,
        metric="train_loss",
        other=acc,
        other_metric="train_acc",
        points_xy=pts,
        point_names=["A", "B", "bend"],
        curve_xy=curve,
    )
    contour = fig.data[0]
    assert contour.type == "contour"
    assert np.allclose(np.asarray(contour.z), z)
    custom = np.asarray(contour.customdata)
    assert custom.shape == (5, 7, 2)
    assert np.allclose(custom[..., 0], z) and np.allclose(custom[..., 1], acc)
    assert "train accuracy" in contour.hovertemplate and "alpha" in contour.hovertemplate
    names = [t.name for t in fig.data[1:]]
    assert names == ["curve", "A", "B", "bend"]
    assert list(fig.data[1].x) == [0.0, 0.5, 1.0]
    bend = fig.data[4]
    assert (bend.x[0], bend.y[0]) == (0.5, 1.0) and "markers" in bend.mode
    assert fig.layout.xaxis.title.text == "alpha" and fig.layout.yaxis.title.text == "beta"


def test_plane_contour_log_colours_by_log10():
    alpha, beta, z = _grid()
    fig = charts_surfaces.plane_contour(alpha, beta, z, metric="test_loss", log_z=True)
    assert np.allclose(np.asarray(fig.data[0].z), np.log10(z))
    assert np.allclose(np.asarray(fig.data[0].customdata)[..., 0], z)  # hover keeps raw values
    assert fig.data[0].colorbar.title.text == "log10 test loss"


def test_plane_surface_places_overlays_on_the_surface():
    alpha, beta, z = _grid()
    pts = np.array([[alpha[2], beta[1]], [alpha[4], beta[3]]])  # on grid nodes
    curve = np.array([[alpha[1], beta[0]], [alpha[3], beta[2]]])
    fig = charts_surfaces.plane_surface(
        alpha,
        beta,
        z,
        metric="train_loss",
        points_xy=pts,
        point_names=["A", "B"],
        curve_xy=curve,
    )
    assert [t.type for t in fig.data] == ["surface", "scatter3d", "scatter3d"]
    assert np.allclose(np.asarray(fig.data[0].customdata)[..., 0], z)  # raw values on hover
    assert np.allclose(fig.data[1].z, [z[0, 1], z[2, 3]])
    assert np.allclose(fig.data[2].z, [z[1, 2], z[3, 4]])
    assert list(fig.data[2].text) == ["A", "B"]
    assert fig.layout.scene.zaxis.title.text == "train loss"


def test_plane_surface_interpolates_between_nodes():
    alpha, beta = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    z = np.array([[0.0, 1.0], [2.0, 3.0]])  # z = alpha + 2 beta is bilinear: exact
    fig = charts_surfaces.plane_surface(
        alpha, beta, z, metric="train_loss", points_xy=np.array([[0.25, 0.5]]), point_names=["p"]
    )
    assert fig.data[1].z[0] == pytest.approx(0.25 + 2 * 0.5)


def test_pca_trajectories_axes_runs_and_hover():
    alpha, beta, z = _grid()
    xy = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1]], dtype=float)
    run_index = np.array([0, 0, 0, 1, 1])
    epoch = np.array([0.0, 5.0, 10.0, 0.0, 10.0])
    residual = np.array([0.5, 0.2, 0.0, 0.4, 0.1])
    fig = charts_surfaces.pca_trajectories(
        alpha,
        beta,
        z,
        xy,
        run_index,
        epoch,
        residual,
        runs=["sgd", "grda"],
        explained=[0.6234, 0.2],
    )
    assert fig.layout.xaxis.title.text == "PC1 (62.3% of variance)"
    assert fig.layout.yaxis.title.text == "PC2 (20.0% of variance)"
    sgd, grda = fig.data[1], fig.data[2]
    assert sgd.name == "sgd" and list(sgd.x) == [0, 1, 2]
    assert np.allclose(np.asarray(grda.customdata), [[0.0, 0.4], [10.0, 0.1]])
    assert "epoch" in sgd.hovertemplate and "residual" in sgd.hovertemplate
    assert "markers" in sgd.mode


def test_eigenvalues_and_overlaps():
    fig = charts.eigenvalues(np.array([5.0, 2.0, 1.0]))
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.data[0].y) == [5.0, 2.0, 1.0]
    series = {"pruning": np.array([0.1, 0.2]), "random": np.array([0.01, 0.02])}
    fig = charts.overlaps(series)
    assert [t.name for t in fig.data] == ["pruning", "random"]
    assert fig.layout.yaxis.title.text == "|<v_i, d>| / |d|"


@pytest.mark.parametrize("log_y", [False, True])
def test_slices(log_y):
    s = np.linspace(-1, 1, 5)
    fig = charts.slices(
        {"delta": (s, s**2 + 1), "v1": (s, 2 * s**2 + 1)}, "train_loss", log_y=log_y
    )
    assert [t.name for t in fig.data] == ["delta", "v1"]
    assert np.allclose(fig.data[1].y, 2 * s**2 + 1)
    assert fig.layout.yaxis.type == ("log" if log_y else "linear")


def test_plane_surface_hover_shows_the_second_metric():
    alpha, beta, z = _grid()
    acc = 1 - z / z.max()
    fig = charts_surfaces.plane_surface(
        alpha, beta, z, metric="test_loss", other=acc, other_metric="test_acc", log_z=True
    )
    surface = fig.data[0]
    assert np.allclose(np.asarray(surface.z), np.log10(z))
    assert np.allclose(np.asarray(surface.customdata)[..., 1], acc)
    assert "test accuracy" in surface.hovertemplate and "beta" in surface.hovertemplate
