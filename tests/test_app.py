"""The dashboard through streamlit's AppTest."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from landscape.app import MAIN as APP_MAIN
from landscape.app import server_options
from landscape.checkpoints import load_checkpoint
from landscape.curves import CurveConfig
from landscape.studies.hessian import HessianConfig
from landscape.studies.pca import PCAConfig
from landscape.studies.plane import PlaneConfig
from landscape.studies.slices import SliceConfig
from landscape.workspace import (
    Member,
    create_study,
    default_checkpoints,
    default_study,
    list_studies,
    save_upload,
)

MAIN = str(APP_MAIN)
DEFAULTS = default_checkpoints()
SGD = DEFAULTS / "sgd" / "final.safetensors"
GRDA = DEFAULTS / "grda" / "final.safetensors"
PAGES = ["overview", "connectivity", "plane", "trajectories", "directions", "upload"]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _app() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_is_the_first_page_on_the_default_study(home):
    at = _app()
    assert at.selectbox(key="study").value == "default"
    assert at.title[0].value == "Overview: default"
    table = at.table[0].value
    assert list(table.columns) == ["sgd", "grda"]
    grda = load_checkpoint(GRDA)
    assert table.loc["content hash", "grda"] == grda.hash
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    n_params = sum(v.numel() for k, v in grda.state.items() if not k.endswith(buffers))
    assert table.loc["parameters", "sgd"] == f"{n_params:,}"
    assert table.loc["test accuracy", "grda"] == f"{grda.meta['metrics']['test_acc']:.4f}"
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # per-layer sparsity, training curves
    assert len(at.get("download_button")) >= 5  # table + (data, figure) per chart


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_default_study(home, page):
    at = _page(_app(), page)
    assert at.title, f"{page} drew no title"


def test_bad_upload_in_the_page_shows_the_specific_error(home):
    from streamlit import config

    limit = int(server_options()["server.maxUploadSize"])  # `landscape app` passes it as a flag
    before = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", limit)
    try:
        at = _page(_app(), "upload")
    finally:
        config.set_option("server.maxUploadSize", before)
    assert f"{limit} MB" in " ".join(c.value for c in at.caption)
    at.file_uploader(key="upload_file").upload("broken.safetensors", b"\x00garbage" * 10)
    at.run()
    at.button(key="upload_add").click().run()
    assert not at.exception
    (err,) = at.error
    # Its first 8 bytes read as an absurd header length: refused before reading further.
    assert "broken.safetensors: not a valid safetensors file: header of" in err.value
    assert not _files(home / "uploads") and not (home / "studies.json").exists()


def test_upload_then_create_study_selects_it(home, tmp_path):
    at = _page(_app(), "upload")
    at.file_uploader(key="upload_file").upload("copy.safetensors", GRDA.read_bytes())
    at.run()
    at.button(key="upload_add").click().run()
    assert not at.exception and not at.error
    assert "copy.safetensors" in at.success[0].value
    at.text_input(key="study_name").input("mine").run()
    # Options: the default study's sgd, grda, then the upload.
    at.multiselect(key="study_members").set_value([0, 2]).run()
    at.button(key="study_create").click().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="study").value == "mine"
    assert [s.name for s in list_studies()] == ["default", "mine"]
    _page(at, "overview")
    assert list(at.table[0].value.columns) == ["sgd", "copy.safetensors"]


def test_widget_changes_rerender(home):
    at = _page(_app(), "upload")
    at.text_input(key="study_name").input("dup").run()
    at.multiselect(key="study_members").set_value([0]).run()
    at.button(key="study_create").click().run()
    assert "at least two" in at.error[0].value
    assert [s.name for s in list_studies()] == ["default"]


# --- compute pages: costs and buttons on a fresh store, charts once results exist ---

COMPUTE_PAGES = {  # page -> (button key, widget values that make its job tiny)
    "connectivity": ("curve_compute", {"curve_epochs": 1, "curve_points": 3}),
    "plane": ("plane_compute", {"plane_grid": 3}),
    "trajectories": ("pca_compute", {"pca_grid": 3}),
    "directions": ("hessian_compute", {"hessian_subset": 64, "slice_points": 3}),
}


def _tiny(at: AppTest, values: dict) -> AppTest:
    for key, value in values.items():
        at.number_input(key=key).set_value(value)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("page", list(COMPUTE_PAGES))
def test_missing_result_shows_cost_and_compute_button(home, page):
    button, values = COMPUTE_PAGES[page]
    at = _tiny(_page(_app(), page), values)
    info = " ".join(i.value for i in at.info)
    assert "Not computed yet" in info and "forward passes over the training data" in info
    assert "s on this machine" in info
    assert at.button(key=button).label in (
        "Fit curve",
        "Compute the plane",
        "Compute the PCA plane",
        "Compute the Hessian eigenvectors",
    )
    assert not at.get("plotly_chart")
    assert not (home / "results").exists()  # looking up computed nothing


def test_compute_button_runs_the_curve_and_shows_charts(home):
    at = _tiny(_page(_app(), "connectivity"), {"curve_epochs": 1, "curve_points": 3})
    at.button(key="curve_compute").click().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 6  # four metrics along t, zeros kept, sparsity at t
    assert len(list((home / "results" / "curve").glob("*.json"))) == 1
    summary = at.table[0].value
    assert list(summary.index) == ["curve", "line"]
    assert (summary["train loss barrier"] >= 0).all()
    # The table reads the stored result's paths: the same barriers the CLI reports.
    from landscape.app import jobs, sidebar

    study = default_study()
    sel = sidebar.Selection(study, study.members[0], study.members[1], "cpu")
    res = jobs.find(jobs.curve_job(sel, CurveConfig(epochs=1, points=3)))
    for name in ("curve", "line"):
        path = res.path(name)
        assert summary.loc[name, "train loss barrier"] == path.barrier("train_loss").height
        assert summary.loc[name, "at t "] == path.barrier("test_loss").t
        assert summary.loc[name, "length"] == pytest.approx(path.length)
        assert summary.loc[name, "max test ECE"] == path.columns["test_ece"].max()


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """A store with tiny results of every compute page, made by the jobs the pages run."""
    from landscape.app import jobs, sidebar

    root = tmp_path_factory.mktemp("computed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCAPE_HOME", str(root))
        study = default_study()
        sel = sidebar.Selection(study, study.members[0], study.members[1], "cpu")
        curve = CurveConfig(epochs=1, points=3)
        hcfg = HessianConfig(subset=64)  # k = 10 converges in fewer products than k = 2
        for job in (
            jobs.plane_job(sel, curve, PlaneConfig(grid=3)),  # fits the curve first
            jobs.pca_job(list(study.members), PCAConfig(grid=3)),
            jobs.hessian_job(sel, hcfg),
            jobs.slices_job(sel, SliceConfig(points=3, hessian=hcfg)),
        ):
            jobs.compute(job, None)
            assert jobs.find(job) is not None
    return root


@pytest.mark.slow
@pytest.mark.parametrize("page", list(COMPUTE_PAGES))
def test_stored_results_are_drawn_and_widgets_rerender(computed, monkeypatch, page):
    monkeypatch.setenv("LANDSCAPE_HOME", str(computed))
    before = sorted(p.name for p in (computed / "results").rglob("*.json"))
    at = _app()
    at.session_state["curve_config"] = CurveConfig(epochs=1, points=3)  # the plane's curve
    button, values = COMPUTE_PAGES[page]
    at = _tiny(_page(at, page), values)
    assert not _notices(at), _notices(at)  # nothing is missing
    n = len(at.get("plotly_chart"))
    assert n == {"connectivity": 6, "plane": 1, "trajectories": 1, "directions": 3}[page]
    assert len(at.get("download_button")) >= 2 * n  # data and figure per chart
    toggles = {
        "connectivity": [("toggle", "curve_log", False), ("select_slider", "curve_t", 1.0)],
        "plane": [
            ("toggle", "plane_3d", True),
            ("radio", "plane_quantity", "error"),
            ("radio", "plane_quantity", "calibration (ECE)"),
        ],
        "trajectories": [
            ("selectbox", "pca_metric", "test_acc"),
            ("selectbox", "pca_metric", "test_ece"),
        ],
        "directions": [
            ("selectbox", "slice_metric", "test_acc"),
            ("selectbox", "slice_metric", "train_ece"),
        ],
    }[page]
    for kind, key, value in toggles:
        getattr(at, kind)(key=key).set_value(value).run()
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.get("plotly_chart")) == n
    assert sorted(p.name for p in (computed / "results").rglob("*.json")) == before


def test_study_with_a_missing_file_falls_back_to_default(home):
    up = save_upload(GRDA.read_bytes(), "copy.safetensors")
    create_study("gone", [Member("sgd", str(SGD)), up.member])
    Path(up.member.path).unlink()
    at = _app()
    at.selectbox(key="study").set_value("gone").run()
    assert not at.exception
    assert "names missing files" in at.sidebar.error[0].value
    assert at.title[0].value == "Overview: default"


# --- compute flow, verdicts, links ---


def _notices(at: AppTest) -> list[str]:
    return [i.value for i in at.info if "Not computed yet" in i.value]


@pytest.mark.slow
@pytest.mark.parametrize("page", list(COMPUTE_PAGES))
def test_computed_result_replaces_its_notice_in_the_same_run(home, page):
    at = _app()
    at.session_state["curve_config"] = CurveConfig(epochs=1, points=3)  # the plane's curve
    button, values = COMPUTE_PAGES[page]
    at = _tiny(_page(at, page), values)
    buttons = [button, "slices_compute"] if page == "directions" else [button]
    for i, key in enumerate(buttons):
        assert len(_notices(at)) == len(buttons) - i
        at.button(key=key).click().run()
        assert not at.exception and not at.error, [e.value for e in at.exception]
        # No stale notice or button above the fresh charts: only the boxes still missing.
        assert len(_notices(at)) == len(buttons) - i - 1, _notices(at)
        assert not [b for b in at.button if b.key == key]
        done = [c.value for c in at.caption if c.value.startswith("Computed ")]
        assert done and "estimated about" in done[-1] and "on this machine" in done[-1]
    assert at.get("plotly_chart")
    # The job's wall time is stored next to its inputs; the calibration learnt it.
    stored = [json.loads(p.read_text()) for p in (home / "results").rglob("*.json")]
    data = [s["body"]["data"] for s in stored if "data" in s.get("body", {})]
    assert data and all(d["wall_s"] > 0 and "inputs" in d for d in data)
    assert (home / "results" / "calibration.json").exists()  # in the store's root


def test_second_estimate_is_calibrated_on_the_first_job(home):
    at = _tiny(_page(_app(), "connectivity"), {"curve_epochs": 1, "curve_points": 3})
    assert "from a quick probe" in _notices(at)[0]
    at.button(key="curve_compute").click().run()
    at = _tiny(at, {"curve_points": 4})  # another curve: not stored yet
    (notice,) = _notices(at)
    assert "calibrated on 1 earlier jobs" in notice and " s on this machine" in notice


def _verdict_texts(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.success, *at.info, *at.warning])


def test_connectivity_verdicts_match_the_library(home):
    verdicts = pytest.importorskip("landscape.verdicts")
    from landscape.app import jobs, sidebar

    at = _tiny(_page(_app(), "connectivity"), {"curve_epochs": 1, "curve_points": 3})
    at.button(key="curve_compute").click().run()
    assert not at.exception
    study = default_study()
    sel = sidebar.Selection(study, study.members[0], study.members[1], "cpu")
    res = jobs.find(jobs.curve_job(sel, CurveConfig(epochs=1, points=3)))
    shown = _verdict_texts(at)
    for name in ("connectivity", "sparsity_along"):
        out = getattr(verdicts, name)(res)
        for v in out if isinstance(out, list) else [out]:
            assert v.title in shown and v.sentence in shown


def test_overview_says_how_test_accuracy_swings(home):
    from landscape.app.ui import swings_text

    hist = [
        {"epoch": e, "lr": lr, "test_acc": a}
        for e, lr, a in [(1, 0.1, 0.5), (2, 0.1, 0.1), (3, 0.05, 0.9), (4, 0.01, 0.95)]
    ]
    text = swings_text("grda", hist)
    assert "dips to 0.100 (epoch 2, lr 0.1 of peak 0.1" in text and "final 0.950" in text
    assert "no swings" in swings_text("sgd", [{"epoch": 1, "test_acc": 0.9}])
    at = _app()  # the page's own text, from the default runs' run.json
    swing = [m.value for m in at.markdown if "Test-accuracy swings" in m.value]
    assert swing and "sgd:" in swing[0] and "grda:" in swing[0]
    try:
        import landscape.app.report  # noqa: F401
    except ImportError:
        return
    assert at.get("download_button") and any(
        b.proto.label == "Download report" for b in at.get("download_button")
    )


def test_link_opens_the_study_and_page_it_names(home):
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["page"] = "plane"
    at.query_params["study"] = "default"
    at.run()
    assert not at.exception
    assert at.title[0].value.startswith("Plane:")
    assert at.query_params["page"] == "plane" and at.query_params["study"] == "default"
    _page(at, "connectivity")
    assert at.query_params["page"] == "connectivity"  # written on change


@pytest.mark.slow
def test_link_sets_the_controls(computed, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_HOME", str(computed))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update({"page": "trajectories", "metric": "test_acc"})
    at.run()
    _tiny(at, COMPUTE_PAGES["trajectories"][1])
    assert at.selectbox(key="pca_metric").value == "test_acc"
    at.selectbox(key="pca_metric").set_value("test_ece").run()
    assert at.query_params["metric"] == "test_ece"

    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update({"page": "connectivity", "t": "1"})
    at.session_state["curve_config"] = CurveConfig(epochs=1, points=3)
    at.run()
    _tiny(at, COMPUTE_PAGES["connectivity"][1])
    assert at.select_slider(key="curve_t").value == 1.0

    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update({"page": "plane", "split": "test", "show": "error"})
    at.session_state["curve_config"] = CurveConfig(epochs=1, points=3)
    at.run()
    _tiny(at, COMPUTE_PAGES["plane"][1])
    assert at.radio(key="plane_split").value == "test"
    assert at.radio(key="plane_quantity").value == "error"
