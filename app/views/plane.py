"""Plane: the loss surface on the plane through A, the curve's bend and B."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state, ui
from landscape.store import Stored
from landscape.surfaces import PlaneConfig


def _options(sel: state.Selection) -> PlaneConfig:
    d = PlaneConfig()
    with st.expander("Plane options", expanded=False):
        c = st.columns(3)
        grid = c[0].number_input("Grid points per axis", 2, 201, d.grid, key="plane_grid")
        margin = c[1].number_input(
            "Margin", 0.0, 2.0, d.margin, step=0.05, key="plane_margin",
            help="fraction of the points' extent added on each side",
        )  # fmt: skip
        bn = c[2].number_input("BN subset (0: all)", 0, None, 0, key="plane_bn")
    return PlaneConfig(
        grid=int(grid),
        margin=float(margin),
        bn_subset=ui.bn_subset(bn),
        device=sel.device,
        data_root=state.data_root(sel.a),
    )


def _grid_frame(res: Stored) -> pd.DataFrame:
    arr = res.arrays
    aa, bb = np.meshgrid(arr["alpha"], arr["beta"])  # (beta, alpha), like the grids
    cols = {"alpha": aa.ravel(), "beta": bb.ravel()}
    cols |= {m: arr[m].ravel() for m in ("train_loss", "train_acc", "test_loss", "test_acc")}
    return pd.DataFrame(cols)


def main() -> None:
    sel = state.selection()
    st.title(f"Plane: {sel.a.label}, bend, {sel.b.label}")
    curve_cfg = ui.curve_config(sel)
    imported = ui.imported_curve(sel)
    which = (
        f"the imported curve {imported.stem.split('-', 2)[2]}"
        if imported is not None
        else f"order {curve_cfg.order}, {curve_cfg.epochs} fit epochs"
    )
    st.caption(
        "w = A + alpha u + beta v with u along B - A and v the orthogonal part of the bend - A "
        f"(unit vectors). Curve: {which} (chosen on the Connectivity page)."
    )
    cfg = _options(sel)
    res = ui.result(state.plane_job(sel, curve_cfg, cfg, imported), sel, key="plane_compute")
    if res is None:
        return
    c = st.columns(4)
    split = c[0].radio("Data", ["train", "test"], horizontal=True, key="plane_split")
    quantity = c[1].radio("Show", ["loss", "error"], horizontal=True, key="plane_quantity")
    log = c[2].toggle("Log colour scale", value=True, key="plane_log")
    three_d = c[3].toggle("3D surface", value=False, key="plane_3d")
    arr = res.arrays
    loss, acc = arr[f"{split}_loss"], arr[f"{split}_acc"]
    z, metric = (loss, f"{split}_loss") if quantity == "loss" else (1 - acc, f"{split}_err")
    names = [str(n) for n in res.data["labels"]]
    common = {
        "metric": metric,
        "points_xy": arr["points_xy"],
        "point_names": names,
        "curve_xy": arr.get("curve_xy"),
        "log_z": log,
    }
    other, other_metric = (acc, f"{split}_acc") if quantity == "loss" else (loss, f"{split}_loss")
    draw = charts.plane_surface if three_d else charts.plane_contour
    fig = draw(arr["alpha"], arr["beta"], z, other=other, other_metric=other_metric, **common)
    ui.chart(fig, _grid_frame(res), "plane")
    norms = res.data["basis_norms"]
    st.caption(
        f"|B - A| = {norms[0]:.3f}; the bend lies {norms[1]:.3f} off the straight line. "
        f"{len(arr['alpha'])} x {len(arr['beta'])} grid, BN recalibrated on "
        f"{res.data['bn_samples']} samples at every point."
    )


main()
