"""Pruning page: its figure builders for given data, and the page itself through AppTest."""

import pytest

from landscape.app import MAIN, charts


def _rows():
    def row(kind, c, mu, sparsity, acc, pareto):
        keys = ("kind", "c", "mu", "sparsity", "test_acc", "pareto")
        return dict(zip(keys, (kind, c, mu, sparsity, acc, pareto), strict=True)) | {"seed": 0}

    return [
        row("grda", 0.01, 0.6, 0.5, 0.95, False),
        row("grda", 0.03, 0.7, 0.9, 0.93, True),
        row("magnitude", 0.01, 0.6, 0.5, 0.96, True),
        row("magnitude", 0.03, 0.7, 0.9, 0.80, False),
    ]


def test_pruning_frontier_one_trace_per_kind_with_hover_and_frontier():
    rows = _rows()
    fig = charts.pruning_frontier(rows, selected=3)
    names = [t.name for t in fig.data]
    assert names == ["gRDA", "magnitude-pruned SGD", "Pareto frontier", "selected"]
    grda, mag, front, sel = fig.data
    assert list(grda.x) == [0.5, 0.9] and list(grda.y) == [0.95, 0.93]
    assert list(mag.x) == [0.5, 0.9] and list(mag.y) == [0.96, 0.80]
    assert [list(c[:3]) for c in grda.customdata] == [[0.01, 0.6, 0], [0.03, 0.7, 0]]
    assert "c = %{customdata[0]" in grda.hovertemplate and "mu = " in grda.hovertemplate
    assert list(front.x) == [0.5, 0.9] and list(front.y) == [0.96, 0.93]  # pareto rows, by x
    assert list(sel.x) == [0.9] and list(sel.y) == [0.80]


def test_pruning_frontier_without_magnitude_rows_or_selection():
    rows = [r for r in _rows() if r["kind"] == "grda"]
    fig = charts.pruning_frontier(rows)
    assert [t.name for t in fig.data] == ["gRDA", "Pareto frontier"]
    assert list(fig.data[1].x) == [0.9]


def _frontier():
    import numpy as np

    from landscape.studies.frontier import FrontierResult

    n = 4
    return FrontierResult(
        method=["grda", "magnitude", "grda", "magnitude"],
        c=np.array([0.01, 0.01, 0.03, 0.03]), mu=np.full(n, 0.6), seed=np.zeros(n, dtype=int),
        sparsity=np.array([0.9, 0.9, 0.5, 0.5]),
        curve_train=np.array([0.2, 0.4, 0.1, 0.3]), curve_test=np.array([0.3, 0.5, 0.2, 0.4]),
        line_train=np.array([1.0, 2.0, 0.5, 1.5]), line_test=np.array([1.1, 2.1, 0.6, 1.6]),
        end_train=np.ones((n, 2)), end_test=np.ones((n, 2)), end_acc=np.ones((n, 2)),
        curve_acc_min=np.ones(n), paths=[""] * n, curve_keys=[""] * n, sgd={},
    )  # fmt: skip


def test_frontier_barriers_one_colour_per_method_line_dashed_sorted_by_sparsity():
    from landscape.app import charts_pruning

    fig = charts_pruning.frontier_barriers(_frontier())
    names = [t.name for t in fig.data]
    assert names == [
        "gRDA: curve", "gRDA: line", "gRDA: curve", "gRDA: line",
        "magnitude-pruned SGD: curve", "magnitude-pruned SGD: line",
        "magnitude-pruned SGD: curve", "magnitude-pruned SGD: line",
    ]  # fmt: skip
    g_train, g_line, g_test, _, m_train = fig.data[:5]
    assert list(g_train.x) == [0.5, 0.9] and list(g_train.y) == [0.1, 0.2]  # sorted
    assert list(g_line.y) == [0.5, 1.0] and g_line.line.dash == "dash"
    assert list(g_test.y) == [0.2, 0.3] and g_test.xaxis == "x2" and not g_test.showlegend
    assert list(m_train.y) == [0.3, 0.4]
    assert g_train.line.color == charts.ROLE_COLORS["sparse"]
    assert m_train.line.color == charts.ROLE_COLORS["magnitude"]


def test_threeway_plane_marks_the_three_minima_by_role():
    import numpy as np

    from landscape.app import charts_pruning
    from landscape.studies.plane import PlaneResult

    axis = np.linspace(-1, 1, 3)
    res = PlaneResult(
        alpha=axis, beta=axis, metrics={"train_loss": np.ones((3, 3)), "test_acc": np.ones((3, 3))},
        points_xy=np.array([[0, 0], [0.5, 0.5], [1, 0]]), labels=["SGD", "magnitude", "gRDA"],
        basis_norms=[1.0, 1.0], bn_samples=10,
    )  # fmt: skip
    fig = charts_pruning.threeway_plane(res)
    marks = {t.name: t.marker.color for t in fig.data[1:]}
    assert marks == {
        "SGD": charts.ROLE_COLORS["dense"],
        "magnitude": charts.ROLE_COLORS["magnitude"],
        "gRDA": charts.ROLE_COLORS["sparse"],
    }


def _stability(settled_step, flipped):
    return {
        "steps": [0, 10, 20, 30],
        "epochs": [0.0, 1.0, 2.0, 3.0],
        "sparsity": [0.0, 0.5, 0.6, 0.6],
        "jaccard_final": [0.0, 0.8, 0.99, 1.0],
        "jaccard_prev": [None, 0.0, 0.8, 0.99],
        "flipped": flipped,
        "settled_step": settled_step,
        "tol": 0.01,
    }


def test_mask_stability_curves_panels_settled_marker_and_threshold():
    runs = {
        "a": _stability(10, [None, 0.5, 0.005, 0.0]),
        "b": _stability(None, [None, 0.5, 0.2, 0.1]),
    }
    fig = charts.mask_stability_curves(runs)
    a = [t for t in fig.data if t.legendgroup == "a"]
    b = [t for t in fig.data if t.legendgroup == "b"]
    assert len(a) == 4 and len(b) == 3  # sparsity, Jaccard, flips (+ the settled star for a)
    sparsity, jac, flips, star = a
    assert list(sparsity.y) == [0.0, 0.5, 0.6, 0.6] and sparsity.showlegend
    assert list(jac.y) == [0.0, 0.8, 0.99, 1.0] and not jac.showlegend
    assert list(flips.x) == [1.0, 2.0, 3.0] and list(flips.y) == [0.5, 0.005, 0.0]
    assert list(star.x) == [1.0] and list(star.y) == [0.8] and star.marker.symbol == "star"
    assert star.xaxis == jac.xaxis == "x2" and flips.xaxis == "x3"
    assert [s.y0 for s in fig.layout.shapes] == [0.01]  # the threshold line on the flips panel
    assert fig.layout.yaxis3.type == "log"


@pytest.mark.slow
def test_pruning_page_shows_a_sweep_and_opens_connectivity(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from landscape.sweep import SweepConfig, run_sweep
    from landscape.train import TrainConfig, train
    from landscape.workspace import list_studies

    monkeypatch.setenv("LANDSCAPE_HOME", str(tmp_path / "home"))
    tiny = {"arch": "mlp", "arch_kwargs": {"widths": [8]}, "epochs": 1, "snapshots": 3}
    sgd = train(TrainConfig(**tiny), tmp_path / "sgd")
    cfg = SweepConfig(c=[0.02, 0.2], mu=[0.6], train=TrainConfig(**tiny, optimizer="grda"))
    cfg.magnitude, cfg.sgd = True, str(sgd.path)
    result = run_sweep(cfg, tmp_path / "sweep")

    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.run()
    at.switch_page("views/pruning.py").run()
    assert not at.exception
    assert any("no sweep here" in i.value for i in at.info)  # default folder is empty
    at.text_input(key="pruning_folder").set_value(str(tmp_path / "sweep")).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 3  # frontier, layers, mask stability (not connected)
    at.number_input(key="frontier_epochs").set_value(1).run()
    at.number_input(key="frontier_points").set_value(3).run()
    at.button(key="pruning_frontier_run").click().run()  # the connectivity frontier
    assert not at.exception
    assert "frontier_barriers_chart" in [c.key for c in at.get("plotly_chart")]
    shown = " ".join(e.value for e in [*at.success, *at.info, *at.warning, *at.error])
    assert "stays connected to SGD" in shown or "stops being connected" in shown
    at.selectbox(key="pruning_model").set_value(3).run()  # magnitude twin of the second run
    at.button(key="pruning_connect").click().run()
    assert not at.exception and at.title[0].value.lower().startswith("connectivity")
    study = next(s for s in list_studies() if s.name == at.session_state["study"])
    assert [m.path for m in study.members] == [
        str(sgd.path / "final.safetensors"),
        str(tmp_path / "sweep" / result.rows[3]["path"]),
    ]
