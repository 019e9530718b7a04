"""Connectivity: metrics along the fitted curve and the straight line from A to B.

The curve is a Bezier curve or a polygonal chain, optionally masked to B's zeros (a path of
sparse models); the masked and the plain curve are overlaid once both are computed, and a heat
map shows where along t each layer's zeros of B disappear.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from landscape.app import charts, charts_curves, jobs, sidebar, ui
from landscape.curves import CURVE_TYPES, CurveConfig
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
        curve_type = c[0].selectbox(
            "Curve type", CURVE_TYPES, index=CURVE_TYPES.index(saved.curve_type), key="curve_type",
            help="bezier: Bernstein weights (Garipov et al.); polychain: straight segments "
            "through the bends, equal t per segment (the research code's PolyChain)",
        )  # fmt: skip
        masked = c[1].checkbox(
            "Masked to B's zeros", value=saved.masked, key="curve_masked",
            help="keep the curve at exactly zero where B's weights are: A and the bends are "
            "projected onto B's zero mask (is there a path of sparse models?)",
        )  # fmt: skip
        c = st.columns(4)
        order = c[0].number_input("Order (bends + 1)", 1, 6, saved.order, key="curve_order")
        epochs = c[1].number_input("Fit epochs", 0, 1000, saved.epochs, key="curve_epochs")
        points = c[2].number_input("Points per path", 2, 401, saved.points, key="curve_points")
        bn = c[3].number_input(
            "BN subset (0: all)", 0, None, saved.bn_subset or 0, key="curve_bn",
            help="recalibrate BatchNorm at each point on the first N training samples",
        )  # fmt: skip
    cfg = CurveConfig(
        order=int(order),
        curve_type=str(curve_type),
        masked=bool(masked),
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


def _masked_compare(
    sel: sidebar.Selection, cfg: CurveConfig, res: CurveResult, log: bool, ends: tuple[str, str]
) -> None:
    """The masked curve over the plain one and the line, once both curves are computed."""
    other = jobs.find(jobs.curve_job(sel, replace(cfg, masked=not cfg.masked)))
    st.subheader("Masked curve, plain curve and line")
    if other is None:
        which = "plain" if cfg.masked else "masked"
        st.caption(f"Compute the {which} curve (the checkbox above) to overlay the two.")
        return
    masked, plain = (res, other) if cfg.masked else (other, res)
    if len(masked.t) != len(plain.t):
        st.caption("The two were evaluated at different t; use the same number of points.")
        return
    st.caption(
        "The masked curve runs from A projected onto B's zero mask (A's weights where B is "
        "zero set to zero) to B, every point exactly zero there."
    )
    for m in ("train_loss", "test_acc"):
        paths = {
            charts_curves.MASKED: masked.curve[m],
            "curve": plain.curve[m],
            "line": plain.line[m],
        }
        fig = charts_curves.masked_paths(
            plain.t, paths, m, log_y=log and charts.is_loss(m), ends=ends
        )
        ui.chart(fig, pd.DataFrame({"t": plain.t, **paths}), f"masked_{m}")


def _zeros_kept(res: CurveResult) -> None:
    """Heat map t x layer: the fraction of B's zero weights still below 1e-3 along a path."""
    if res.curve_zeros_kept is None:
        return
    st.subheader("Where the path leaves the sparse end")
    which = st.radio("Path", ["curve", "line"], horizontal=True, key="curve_zeros_path")
    kept = res.curve_zeros_kept if which == "curve" else res.line_zeros_kept
    fig = charts_curves.zeros_kept_heatmap(res.t, res.layers, kept)
    table = pd.DataFrame(kept, columns=res.layers).assign(t=res.t).set_index("t").reset_index()
    ui.chart(fig, table, f"zeros_kept_{which}")
    st.caption(
        "Per layer, the fraction of B's exactly-zero weights with |w| < 1e-3 at each t "
        "(1: all of B's zeros kept; blank: the layer has no zeros in B)."
    )


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
        "Bezier curve or polygonal chain fitted between the two minima (Garipov et al. 2018) "
        "beside the straight line; BatchNorm statistics recomputed at every point. t = 0 is A, "
        "t = 1 is B.",
    )
    cfg = _options(sel)
    available = sidebar.imported_curves(sel)
    imported = _source(available)
    label = "Evaluate the imported curve" if imported else "Fit curve"
    res = ui.result(jobs.curve_job(sel, cfg, imported), sel, key="curve_compute", label=label)
    if res is None:
        return
    ui.verdicts("connectivity", res)
    if res.masked:
        st.caption(
            f"Masked curve: it starts at A projected onto B's zero mask (train loss "
            f"{res.curve['train_loss'][0]:.4g}; A itself {res.line['train_loss'][0]:.4g}), so "
            "its barrier is measured from there; the line is the plain one from A."
        )
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
    if imported is None:
        _masked_compare(sel, cfg, res, log, ends)
    _zeros_kept(res)
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
