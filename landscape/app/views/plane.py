"""Plane: the loss surface on the plane through A, the curve's bend and B.

The curve (Bezier or polygonal chain, as chosen on the Connectivity page) is drawn projected
into the plane: a polychain's straight segments through its bends, a Bezier curve's arc.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from landscape.app import charts_surfaces, jobs, sidebar, ui
from landscape.studies.plane import PlaneConfig, PlaneResult
from landscape.workspace import curve_label

QUANTITIES = {  # "Show" choice -> (metric of the grid, its name in the colour bar)
    "loss": ("loss", "loss"),
    "error": ("acc", "err"),
    "calibration (ECE)": ("ece", "ece"),
}


def _options(sel: sidebar.Selection) -> PlaneConfig:
    d = PlaneConfig()
    with st.expander("Plane options", expanded=False):
        c = st.columns(3)
        grid = c[0].number_input("Grid points per axis", 2, 201, d.grid, key="plane_grid")
        margin = c[1].number_input(
            "Margin", 0.0, 2.0, d.margin, step=0.05, key="plane_margin",
            help="fraction of the points' extent added on each side",
        )  # fmt: skip
        bn = c[2].number_input("BN subset (0: all)", 0, None, 0, key="plane_bn")
    return PlaneConfig(**ui.grid_options(sel, grid=grid, margin=margin, bn=bn))


def _grid_frame(res: PlaneResult) -> pd.DataFrame:
    aa, bb = np.meshgrid(res.alpha, res.beta)  # (beta, alpha), like the grids
    cols = {"alpha": aa.ravel(), "beta": bb.ravel()}
    cols |= {m: v.ravel() for m, v in res.metrics.items()}
    return pd.DataFrame(cols)


def _figure(
    res: PlaneResult, split: str, quantity: str, *, log: bool, three_d: bool, stretch: bool
):
    """The chosen grid (error is 1 - accuracy) with the other of loss/accuracy on hover."""
    name, shown = QUANTITIES[quantity]
    z = res.metrics[f"{split}_{name}"]
    z = 1 - z if name == "acc" else z
    other_name = "acc" if name == "loss" else "loss"
    if three_d:
        draw = charts_surfaces.plane_surface
    else:
        draw = partial(charts_surfaces.plane_contour, equal_axes=not stretch)
    return draw(
        res.alpha,
        res.beta,
        z,
        metric=f"{split}_{shown}",
        other=res.metrics[f"{split}_{other_name}"],
        other_metric=f"{split}_{other_name}",
        points_xy=res.points_xy,
        point_names=[str(n) for n in res.labels],
        curve_xy=res.curve_xy,
        log_z=log,
    )


def main() -> None:
    sel = sidebar.selection()
    st.title(f"Plane: {sel.a.label}, bend, {sel.b.label}")
    curve_cfg = ui.curve_config(sel)
    imported = ui.imported_curve(sel)
    which = (
        f"the imported curve {curve_label(imported)}"
        if imported is not None
        else f"{curve_cfg.curve_type} of order {curve_cfg.order}"
        f"{', masked to B zeros' if curve_cfg.masked else ''}, {curve_cfg.epochs} fit epochs"
    )
    st.caption(
        "w = A + alpha u + beta v with u along B - A and v the orthogonal part of the bend - A "
        f"(unit vectors). Curve: {which} (chosen on the Connectivity page)."
    )
    cfg = _options(sel)
    res = ui.result(jobs.plane_job(sel, curve_cfg, cfg, imported), sel, key="plane_compute")
    if res is None:
        return
    ui.verdicts("plane", res)
    ui.from_url("plane_split", "split", ["train", "test"])
    ui.from_url("plane_quantity", "show", list(QUANTITIES))
    c = st.columns(5)
    split = c[0].radio("Data", ["train", "test"], horizontal=True, key="plane_split")
    quantity = c[1].radio("Show", list(QUANTITIES), horizontal=True, key="plane_quantity")
    ui.to_url(split=split, show=quantity)
    log = c[2].toggle("Log colour scale", value=True, key="plane_log")
    three_d = c[3].toggle("3D surface", value=False, key="plane_3d")
    stretch = c[4].toggle(
        "Stretch axes", value=False, key="plane_stretch", disabled=three_d,
        help="off: one unit is as long on both axes (the true shape of the bend)",
    )  # fmt: skip
    fig = _figure(res, split, quantity, log=log, three_d=three_d, stretch=stretch)
    ui.chart(fig, _grid_frame(res), "plane")
    norms = res.basis_norms
    st.caption(
        f"|B - A| = {norms[0]:.3f}; the bend lies {norms[1]:.3f} off the straight line. "
        f"{len(res.alpha)} x {len(res.beta)} grid, BN recalibrated on "
        f"{res.bn_samples} samples at every point."
    )


main()
