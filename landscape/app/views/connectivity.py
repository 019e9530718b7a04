"""Connectivity: metrics along the fitted Bezier curve and the straight line from A to B."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from landscape.app import charts, jobs, sidebar, ui
from landscape.curves import CurveConfig
from landscape.studies.curve import CurveResult, PathResult
from landscape.workspace import curve_label

PATHS = ("curve", "line")
CHARTS = ("train_loss", "test_acc", "test_loss", "sparsity")
AT_T = ("train_loss", "train_acc", "test_loss", "test_acc", "test_ece", "sparsity", "weight_norm")
BARRIERS = ("train_loss", "test_loss")  # metrics whose barrier the summary reports
EXTREMES = ("train_loss", "test_loss", "test_acc", "test_ece", "sparsity")  # their max and min


def _options(sel: sidebar.Selection) -> CurveConfig:
    saved = ui.curve_config(sel)
    with st.expander("Curve options", expanded=False):
        c = st.columns(4)
        order = c[0].number_input("Bezier order", 1, 6, saved.order, key="curve_order")
        epochs = c[1].number_input("Fit epochs", 0, 1000, saved.epochs, key="curve_epochs")
        points = c[2].number_input("Points per path", 2, 401, saved.points, key="curve_points")
        bn = c[3].number_input(
            "BN subset (0: all)", 0, None, saved.bn_subset or 0, key="curve_bn",
            help="recalibrate BatchNorm at each point on the first N training samples",
        )  # fmt: skip
    cfg = CurveConfig(
        order=int(order),
        epochs=int(epochs),
        points=int(points),
        bn_subset=ui.bn_subset(bn),
        device=sel.device,
        data_root=saved.data_root,
    )
    st.session_state[ui.CURVE_KEY] = cfg
    return cfg


def _source(imported: list[Path]) -> Path | None:
    """The curve to show: fitted here (None), or one of ``imported`` (the research code's)."""
    if not imported:
        return None
    names = ["fitted here", *(f"imported: {curve_label(p)}" for p in imported)]
    choice = st.radio("Curve", names, horizontal=True, key="curve_source")
    chosen = None if choice == names[0] else imported[names.index(choice) - 1]
    st.session_state[ui.IMPORTED_KEY] = chosen  # the Plane page takes the same curve's bend
    return chosen


def _compare(
    sel: sidebar.Selection,
    cfg: CurveConfig,
    imported: Path | None,
    first: Path,
    res: CurveResult,
    log: bool,
) -> None:
    """The imported curve beside the one fitted here, once both are computed.

    ``imported``: the curve shown (None: the one fitted here); ``first``: the first imported.
    """
    other_file = None if imported is not None else first
    other = jobs.find(jobs.curve_job(sel, cfg, other_file))
    st.subheader("Imported curve and curve fitted here")
    if other is None:
        which = "fitted here" if imported is not None else "imported"
        st.caption(f"Compute the curve {which} (choose it above) to compare the two.")
        return
    mine, theirs = (other, res) if imported is not None else (res, other)
    if len(mine.t) != len(theirs.t):
        st.caption("The two were evaluated at different t; use the same number of points.")
        return
    for m in ("train_loss", "test_acc"):
        paths = {
            "imported curve": theirs.curve[m],
            "fitted here": mine.curve[m],
            "line": mine.line[m],
        }
        fig = charts.path_metric(mine.t, paths, m, log_y=log and charts.is_loss(m))
        ui.chart(fig, pd.DataFrame({"t": mine.t, **paths}), f"compare_{m}")


def summary(path: PathResult) -> dict:
    """A path's barriers, length, best test accuracy and extremes (the JSON download)."""
    best = path.argbest("test_acc", lowest=False)
    return {
        "barrier": {m: asdict(path.barrier(m)) for m in BARRIERS},
        "length": path.length,
        "best_test_acc": {"value": float(path.columns["test_acc"][best]), "t": float(path.t[best])},
        "max": {m: float(np.nanmax(path.columns[m])) for m in EXTREMES},
        "min": {m: float(np.nanmin(path.columns[m])) for m in EXTREMES},
    }


def _table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per path: barriers, length, best test accuracy, extremes."""
    rows = []
    for name, s in summaries.items():
        rows.append(
            {
                "path": name,
                "train loss barrier": s["barrier"]["train_loss"]["height"],
                "at t": s["barrier"]["train_loss"]["t"],
                "test loss barrier": s["barrier"]["test_loss"]["height"],
                "at t ": s["barrier"]["test_loss"]["t"],
                "max train loss": s["max"]["train_loss"],
                "min test acc": s["min"]["test_acc"],
                "best test acc": s["best_test_acc"]["value"],
                "max test ECE": s["max"]["test_ece"],
                "length": s["length"],
                "max sparsity": s["max"]["sparsity"],
            }
        )
    return pd.DataFrame(rows)


def _frame(paths: dict[str, PathResult]) -> pd.DataFrame:
    """Every column of both paths along t (``<path>_<column>``)."""
    cols = {"t": paths["curve"].t}
    for name, path in paths.items():
        cols |= {f"{name}_{c}": v for c, v in path.columns.items()}
    return pd.DataFrame(cols)


def _at_t(paths: dict[str, PathResult], t: float) -> None:
    curve, line = paths["curve"], paths["line"]
    i = curve.nearest(t)
    for col, m in zip(st.columns(len(AT_T)), AT_T, strict=True):
        col.metric(
            f"{charts.label(m)} (curve)",
            f"{curve.columns[m][i]:.4g}",
            delta=f"{curve.columns[m][i] - line.columns[m][i]:+.3g} vs line",
            delta_color="off",
        )
    values = {name: p.layer_sparsity[i] for name, p in paths.items()}
    fig = charts.layer_values(
        values, curve.layers, title=f"Sparsity per layer at t = {curve.t[i]:.3f}"
    )
    table = pd.DataFrame({"layer": curve.layers, **values})
    ui.chart(fig, table, "layer_sparsity_at_t")


def _t_slider(res: CurveResult) -> float:
    """The t slider, linked to the URL's ``?t=`` (the nearest evaluated t)."""
    t_values = [float(v) for v in res.t]
    linked = st.query_params.get("t")
    if "curve_t" not in st.session_state and linked is not None:
        try:
            st.session_state["curve_t"] = t_values[res.path("curve").nearest(float(linked))]
        except ValueError:
            pass
    default = {} if "curve_t" in st.session_state else {"value": t_values[len(t_values) // 2]}
    t = st.select_slider(
        "t", options=t_values, format_func="{:.3f}".format, key="curve_t", **default
    )
    ui.to_url(t=round(t, 4))
    return t


def main() -> None:
    sel = ui.pair_page(
        "Connectivity",
        "Bezier curve fitted between the two minima (Garipov et al. 2018) beside the straight "
        "line; BatchNorm statistics recomputed at every point. t = 0 is A, t = 1 is B.",
    )
    cfg = _options(sel)
    available = sidebar.imported_curves(sel)
    imported = _source(available)
    label = "Evaluate the imported curve" if imported else "Fit curve"
    res = ui.result(jobs.curve_job(sel, cfg, imported), sel, key="curve_compute", label=label)
    if res is None:
        return
    ui.verdicts("connectivity", res)
    ui.verdicts("sparsity_along", res)
    paths = {name: res.path(name) for name in PATHS}
    summaries = {name: summary(p) for name, p in paths.items()}
    st.subheader("Barriers")
    st.caption(
        "Barrier: the largest excess of the loss over the chord between the path's ends "
        f"(0: never above it). BN recalibrated on {res.bn_samples} samples."
    )
    st.table(_table(summaries).set_index("path").style.format("{:.4g}"))  # static: no grid
    log = st.toggle("Log scale for losses", value=True, key="curve_log")
    t = _t_slider(res)
    frame = _frame(paths)
    ends = (sel.a.label, sel.b.label)
    for m in CHARTS:
        ys = {name: p.columns[m] for name, p in paths.items()}
        fig = charts.path_metric(res.t, ys, m, log_y=log and charts.is_loss(m), at=t, ends=ends)
        ui.chart(fig, frame[["t", "curve_" + m, "line_" + m]], f"path_{m}")
    if available:
        _compare(sel, cfg, imported, available[0], res, log)
    st.subheader(f"At t = {t:.3f}")
    _at_t(paths, t)
    st.download_button(
        "Summary (JSON)",
        data=ui.data_bytes(summaries)[0],
        file_name="curve_summary.json",
        mime="application/json",
        key="curve_summary_json",
        on_click="ignore",
        icon=":material/download:",
    )


main()
