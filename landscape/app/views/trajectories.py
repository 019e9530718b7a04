"""Trajectories: both training runs on the PCA plane of their snapshots, over loss contours."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from landscape.app import charts, charts_surfaces, jobs, sidebar, ui
from landscape.evaluate import METRICS
from landscape.studies.pca import PCAConfig, PCAResult


def _options(sel: sidebar.Selection) -> PCAConfig:
    d = PCAConfig()
    with st.expander("PCA options", expanded=False):
        c = st.columns(4)
        grid = c[0].number_input("Grid points per axis", 2, 201, d.grid, key="pca_grid")
        margin = c[1].number_input("Margin", 0.0, 2.0, d.margin, step=0.05, key="pca_margin")
        centre = c[2].selectbox(
            "Centre", ["final", "mean"], key="pca_centre",
            help="final: the first run's final weights; mean: the snapshots' mean",
        )  # fmt: skip
        bn = c[3].number_input("BN subset (0: all)", 0, None, 0, key="pca_bn")
    return PCAConfig(centre=centre, **ui.grid_options(sel, grid=grid, margin=margin, bn=bn))


def _snapshots(res: PCAResult) -> pd.DataFrame:
    rows = [
        {**snap, "pc1": xy[0], "pc2": xy[1], "residual": r}
        for snap, xy, r in zip(res.snapshots, res.xy, res.residual, strict=True)
    ]
    return pd.DataFrame(rows)


def main() -> None:
    sel = sidebar.selection()
    runs = [m for m in (sel.a, sel.b) if m.run_dir is not None]
    st.title("Trajectories")
    st.caption(
        "PCA (2 components) of the trajectory snapshots minus a centre; each snapshot also "
        "shows its off-plane residual: the contours are the loss on the plane, not at the "
        "snapshots themselves."
    )
    if not runs:
        st.info(
            "A and B are lone checkpoints: trajectories need run folders (run.json, trajectory/)."
        )
        return
    cfg = _options(sel)
    res = ui.result(jobs.pca_job(runs, cfg), sel, key="pca_compute")
    if res is None:
        return
    ui.verdicts("trajectories", res)
    ui.from_url("pca_metric", "metric", list(METRICS))
    c = st.columns(2)
    metric = c[0].selectbox("Contours of", METRICS, format_func=charts.label, key="pca_metric")
    ui.to_url(metric=metric)
    log = c[1].toggle("Log colour scale", value=True, key="pca_log")
    fig = charts_surfaces.pca_trajectories(
        res.alpha, res.beta, res.metrics[metric], res.xy, res.run_index, res.epoch,
        res.residual, runs=[m.label for m in runs],
        explained=res.explained_variance_ratio, metric=metric,
        log_z=log and charts.is_loss(metric),
    )  # fmt: skip
    snapshots = _snapshots(res)
    grid = {"alpha": res.alpha, "beta": res.beta, metric: res.metrics[metric]}
    ui.chart(fig, {**grid, "snapshots": snapshots.to_dict("records")}, "trajectories")
    st.dataframe(snapshots, key="pca_snapshots", hide_index=True)
    st.caption(f"Centre: {res.centre}; BN recalibrated on {res.bn_samples} samples at every point.")


main()
