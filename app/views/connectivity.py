"""Connectivity: metrics along the fitted Bezier curve and the straight line from A to B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state, ui
from landscape.curves import PATH_METRICS, CurveConfig
from landscape.store import Stored

PATHS = ("curve", "line")
CHARTS = ("train_loss", "test_acc", "test_loss", "sparsity")
AT_T = ("train_loss", "train_acc", "test_loss", "test_acc", "sparsity", "weight_norm")


def _options(sel: state.Selection) -> CurveConfig:
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
    names = ["fitted here", *(f"imported: {p.stem.split('-', 2)[2]}" for p in imported)]
    choice = st.radio("Curve", names, horizontal=True, key="curve_source")
    chosen = None if choice == names[0] else imported[names.index(choice) - 1]
    st.session_state[ui.IMPORTED_KEY] = chosen  # the Plane page takes the same curve's bend
    return chosen


def _compare(
    sel: state.Selection, cfg: CurveConfig, imported: Path | None, first: Path, res, log
) -> None:
    """The imported curve beside the one fitted here, once both are computed.

    ``imported``: the curve shown (None: the one fitted here); ``first``: the first imported.
    """
    other_file = None if imported is not None else first
    other = state.find(state.curve_job(sel, cfg, other_file))
    st.subheader("Imported curve and curve fitted here")
    if other is None:
        which = "fitted here" if imported is not None else "imported"
        st.caption(f"Compute the curve {which} (choose it above) to compare the two.")
        return
    mine, theirs = (other, res) if imported is not None else (res, other)
    if len(mine.arrays["t"]) != len(theirs.arrays["t"]):
        st.caption("The two were evaluated at different t; use the same number of points.")
        return
    for m in ("train_loss", "test_acc"):
        paths = {
            "imported curve": theirs.arrays[f"curve_{m}"],
            "fitted here": mine.arrays[f"curve_{m}"],
            "line": mine.arrays[f"line_{m}"],
        }
        fig = charts.path_metric(mine.arrays["t"], paths, m, log_y=log and charts.is_loss(m))
        table = pd.DataFrame({"t": mine.arrays["t"], **paths})
        ui.chart(fig, table, f"compare_{m}")


def _table(res: Stored) -> pd.DataFrame:
    """One row per path: barriers, length, best test accuracy, metrics at the middle."""
    rows = []
    for name in PATHS:
        s = res.data["summary"][name]
        rows.append(
            {
                "path": name,
                "train loss barrier": s["barrier"]["train_loss"]["height"],
                "at t": s["barrier"]["train_loss"]["t"],
                "test loss barrier": s["barrier"]["test_loss"]["height"],
                "at t ": s["barrier"]["test_loss"]["t"],
                "max train loss": s["metrics"]["train_loss"]["max"],
                "min test acc": s["metrics"]["test_acc"]["min"],
                "best test acc": s["best_test_acc"]["value"],
                "length": s["length"],
                "max sparsity": s["metrics"]["sparsity"]["max"],
            }
        )
    return pd.DataFrame(rows)


def _frame(res: Stored) -> pd.DataFrame:
    arr = res.arrays
    cols = {"t": arr["t"]}
    for name in PATHS:
        cols |= {f"{name}_{m}": arr[f"{name}_{m}"] for m in PATH_METRICS}
    return pd.DataFrame(cols)


def _at_t(res: Stored, t: float) -> None:
    arr, layers = res.arrays, res.data["layers"]
    i = int(np.argmin(np.abs(arr["t"] - t)))
    for col, m in zip(st.columns(len(AT_T)), AT_T, strict=True):
        col.metric(
            f"{charts.label(m)} (curve)",
            f"{arr[f'curve_{m}'][i]:.4g}",
            delta=f"{arr[f'curve_{m}'][i] - arr[f'line_{m}'][i]:+.3g} vs line",
            delta_color="off",
        )
    values = {name: arr[f"{name}_layer_sparsity"][i] for name in PATHS}
    fig = charts.layer_values(values, layers, title=f"Sparsity per layer at t = {arr['t'][i]:.3f}")
    table = pd.DataFrame({"layer": layers, **values})
    ui.chart(fig, table, "layer_sparsity_at_t")


def main() -> None:
    sel = state.selection()
    st.title(f"Connectivity: {sel.a.label} to {sel.b.label}")
    st.caption(
        "Bezier curve fitted between the two minima (Garipov et al. 2018) beside the straight "
        "line; BatchNorm statistics recomputed at every point. t = 0 is A, t = 1 is B."
    )
    cfg = _options(sel)
    available = state.imported_curves(sel)
    imported = _source(available)
    label = "Evaluate the imported curve" if imported else "Fit curve"
    res = ui.result(state.curve_job(sel, cfg, imported), sel, key="curve_compute", label=label)
    if res is None:
        return
    st.subheader("Barriers")
    st.caption(
        "Barrier: the largest excess of the loss over the chord between the path's ends "
        f"(0: never above it). BN recalibrated on {res.data['bn_samples']} samples."
    )
    table = _table(res)
    st.table(table.set_index("path").style.format("{:.4g}"))  # static: no grid to load
    log = st.toggle("Log scale for losses", value=True, key="curve_log")
    t_values = [float(v) for v in res.arrays["t"]]
    t = st.select_slider(
        "t", options=t_values, value=t_values[len(t_values) // 2], format_func="{:.3f}".format,
        key="curve_t",
    )  # fmt: skip
    frame = _frame(res)
    for m in CHARTS:
        paths = {name: res.arrays[f"{name}_{m}"] for name in PATHS}
        fig = charts.path_metric(res.arrays["t"], paths, m, log_y=log and charts.is_loss(m), at=t)
        ui.chart(fig, frame[["t", "curve_" + m, "line_" + m]], f"path_{m}")
    if available:
        _compare(sel, cfg, imported, available[0], res, log)
    st.subheader(f"At t = {t:.3f}")
    _at_t(res, t)
    st.download_button(
        "Summary (JSON)",
        data=ui.data_bytes(res.data["summary"])[0],
        file_name="curve_summary.json",
        mime="application/json",
        key="curve_summary_json",
        on_click="ignore",
        icon=":material/download:",
    )


main()
