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


# --- one visual language: a colour per role, readable log axes, true plane geometry ---

ROLE = charts.ROLE_COLORS


def _color(trace) -> str | None:
    """The colour a trace is drawn in: its bar/marker colour, else its line colour."""
    if trace.type == "bar":
        return trace.marker.color
    line = getattr(trace, "line", None)
    if line is not None and line.color is not None and "lines" in (trace.mode or ""):
        return line.color
    return trace.marker.color


def _roles(fig) -> list[tuple[str, object]]:
    return [(t.meta, _color(t)) for t in fig.data if t.meta]


def _history():
    keys = ("train_loss", "test_loss", "train_acc", "test_acc", "sparsity")
    return [{"epoch": e, **dict.fromkeys(keys, 0.5 / e)} for e in (1, 2, 3)]


def test_role_colours_are_distinct():
    assert len(set(ROLE.values())) == len(ROLE)
    assert {"dense", "sparse", "curve", "line", "bend", "random", "magnitude"} <= set(ROLE)


def test_members_coloured_by_role_whatever_their_labels():
    # A is dense (blue) and B sparse (red) even when named the other way round.
    colors = charts.member_colors(["grda-run", "sgd-run", "third"], a="grda-run", b="sgd-run")
    assert colors["grda-run"] == ROLE["dense"] and colors["sgd-run"] == ROLE["sparse"]
    assert colors["third"] not in ROLE.values()
    layers = {"grda-run": {"l1": 0.1}, "sgd-run": {"l1": 0.9}}
    bars = charts.layer_sparsity_bars(layers, colors=colors)
    assert [t.marker.color for t in bars.data] == [ROLE["dense"], ROLE["sparse"]]
    curves = charts.training_curves({"x": _history(), "y": _history()})  # first A, second B
    for t in curves.data:
        assert t.line.color == (ROLE["dense"] if t.name.startswith("x ") else ROLE["sparse"])


def test_every_trace_of_a_role_has_the_role_colour():
    t = np.linspace(0, 1, 5)
    figs = [
        charts.path_metric(t, {"curve": t + 1, "line": 2 - t}, "train_loss", ends=("a", "b")),
        charts.layer_values({"curve": [0.1], "line": [0.2]}, ["l1"], title="x"),
        charts.eigenvalues(np.array([3.0, 1.0])),
        charts.overlaps(
            {
                "pruning direction (B - A)": np.ones(2),
                "random": np.ones(2),
                "magnitude pruning": np.ones(2),
            }
        ),
        charts.slices({"delta = B - A": (t, t), "top eigenvector": (t, t), "random": (t, t)}, "x"),
        charts.pruning_frontier(
            [
                {"kind": k, "c": 0.1, "mu": 0.5, "seed": 0, "sparsity": 0.5, "test_acc": 0.9}
                | {"pareto": False}
                for k in ("grda", "magnitude")
            ]
        ),
    ]
    alpha, beta, z = _grid()
    pts = np.array([[0.0, 0.0], [0.5, 1.0], [1.0, 0.0]])
    figs.append(
        charts_surfaces.plane_contour(
            alpha, beta, z, metric="train_loss", points_xy=pts,
            point_names=["sgd", "bend", "grda"], curve_xy=pts,
        )
    )  # fmt: skip
    seen = set()
    for fig in figs:
        for role, color in _roles(fig):
            assert color == ROLE[role], (fig.layout.title.text, role)
            seen.add(role)
    assert seen == {"dense", "sparse", "curve", "line", "bend", "random", "magnitude", "eigen"}
    # Layer bars at t have no meta: their names carry the role.
    layer = figs[1]
    assert [b.marker.color for b in layer.data] == [ROLE["curve"], ROLE["line"]]


def test_path_metric_marks_the_endpoints_in_role_colours():
    t = np.linspace(0, 1, 5)
    fig = charts.path_metric(t, {"curve": t + 1, "line": 2 - t}, "train_loss", ends=("a", "b"))
    a, b = fig.data[-2:]
    assert (a.name, a.x[0], a.y[0], a.marker.color) == ("a", 0.0, 1.0, ROLE["dense"])
    assert (b.name, b.x[0], b.y[0], b.marker.color) == ("b", 1.0, 2.0, ROLE["sparse"])
    assert a.marker.size >= 14 and "text" in a.mode


@pytest.mark.parametrize(("lo", "hi"), [(0.01, 2.5), (0.15, 0.18), (1e-5, 3.0), (0.3, 40.0)])
def test_log_axes_label_only_1_2_5_steps(lo, hi):
    t = np.linspace(0, 1, 20)
    fig = charts.path_metric(t, {"curve": lo + (hi - lo) * t}, "train_loss", log_y=True)
    axis = fig.layout.yaxis
    assert axis.type == "log" and axis.tickvals and len(axis.tickvals) >= 2
    assert list(axis.ticktext) == [f"{v:g}" for v in axis.tickvals]  # each tick says its value
    assert list(axis.tickvals) == sorted(axis.tickvals)
    assert all(lo / 1.01 <= v <= hi * 1.01 for v in axis.tickvals)
    mantissas = {round(v / 10 ** np.floor(np.log10(v)), 6) for v in axis.tickvals}
    if hi / lo > 1e4:  # wide: decades only
        assert mantissas == {1.0}
    elif hi / lo > 5:
        assert mantissas <= {1.0, 2.0, 5.0}
    curves = charts.training_curves({"sgd": _history()})
    assert curves.layout.yaxis.type == "log" and curves.layout.yaxis.tickvals


def test_plane_has_true_geometry_by_default_and_a_stretch_option():
    alpha, beta, z = _grid()
    fig = charts_surfaces.plane_contour(alpha, beta, z, metric="train_loss")
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    stretched = charts_surfaces.plane_contour(alpha, beta, z, metric="train_loss", equal_axes=False)
    assert stretched.layout.yaxis.scaleanchor is None


def test_legends_sit_below_the_plot_clear_of_colour_bars():
    alpha, beta, z = _grid()
    pts = np.array([[0.0, 0.0], [1.0, 0.0]])
    for fig in (
        charts_surfaces.plane_contour(alpha, beta, z, metric="train_loss", points_xy=pts,
                                      point_names=["a", "b"]),
        charts_surfaces.plane_surface(alpha, beta, z, metric="train_loss", points_xy=pts,
                                      point_names=["a", "b"]),
        charts.path_metric(np.linspace(0, 1, 3), {"curve": np.ones(3)}, "train_loss"),
    ):  # fmt: skip
        assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    surface = charts_surfaces.plane_surface(
        alpha, beta, z, metric="train_loss", points_xy=pts, point_names=["a", "b"]
    )
    assert list(surface.data[-1].marker.color) == [ROLE["dense"], ROLE["sparse"]]
