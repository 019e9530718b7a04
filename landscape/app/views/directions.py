"""Directions: the pruning direction B - A against the top Hessian eigenvectors at A."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from landscape.app import charts, jobs, sidebar, ui
from landscape.evaluate import METRICS
from landscape.studies.hessian import HessianConfig, HessianResult
from landscape.studies.slices import SliceConfig, SliceResult

SLICE_NAMES = {"delta": "delta = B - A", "eigen": "top eigenvector", "random": "random"}


def _options(sel: sidebar.Selection) -> tuple[HessianConfig, SliceConfig]:
    d, ds = HessianConfig(), SliceConfig()
    with st.expander("Options", expanded=False):
        c = st.columns(4)
        k = c[0].number_input("Eigenpairs k", 1, 100, d.k, key="hessian_k")
        subset = c[1].number_input(
            "Hessian samples (0: all)", 0, None, 0, key="hessian_subset",
            help="the Hessian averages over the first N training samples",
        )  # fmt: skip
        points = c[2].number_input("Points per slice", 2, 401, ds.points, key="slice_points")
        bn = c[3].number_input(
            "Slice BN subset (0: all)", 0, None, 0, key="slice_bn",
            help="recalibrate BatchNorm at each slice point on the first N training samples",
        )  # fmt: skip
    root = sidebar.data_root(sel.a)
    hcfg = HessianConfig(k=int(k), subset=int(subset) or None, device=sel.device, data_root=root)
    scfg = SliceConfig(
        points=int(points),
        bn_subset=ui.bn_subset(bn),
        device=sel.device,
        data_root=root,
        hessian=hcfg,  # the eigen slice follows this page's Hessian result
    )
    return hcfg, scfg


def _hessian(res: HessianResult) -> None:
    ui.verdicts("directions", res)
    if res.overlap is not None:
        cols = st.columns(3)
        cols[0].metric("|V^T d| / |d|: pruning direction", f"{res.projection_ratio:.4f}")
        cols[1].metric("random direction, same norm", f"{res.random_projection_ratio:.4f}")
        cols[2].metric("magnitude-pruning direction", f"{res.magnitude_projection_ratio:.4f}")
        st.caption(f"|delta| = {res.delta_norm:.3f}, B's sparsity {res.sparsity_b:.2%}.")
    st.caption(
        f"{res.n_hvp} Hessian-vector products on {res.samples} training samples "
        f"(BN statistics from {res.bn_samples})."
    )
    k = np.arange(1, len(res.eigenvalues) + 1)
    ui.chart(
        charts.eigenvalues(res.eigenvalues),
        pd.DataFrame({"i": k, "eigenvalue": res.eigenvalues}),
        "eigenvalues",
    )
    if res.overlap is None:
        return
    series = {
        "pruning direction (B - A)": res.overlap,
        "random": res.random_overlap,
        "magnitude pruning": res.magnitude_overlap,
    }
    ui.chart(charts.overlaps(series), pd.DataFrame({"i": k, **series}), "overlaps")


def _slices(results: dict[str, SliceResult]) -> None:
    ui.from_url("slice_metric", "metric", list(METRICS))
    metric = st.selectbox("Slice metric", METRICS, format_func=charts.label, key="slice_metric")
    ui.to_url(metric=metric)
    log = st.toggle("Log scale", value=True, key="slice_log", disabled=not charts.is_loss(metric))
    curves = {SLICE_NAMES[d]: (r.s, r.metrics[metric]) for d, r in results.items()}
    frame = pd.concat(
        pd.DataFrame({"direction": d, "s": r.s, metric: r.metrics[metric]})
        for d, r in results.items()
    )
    eigen = results["eigen"].eigenvalue
    st.caption(
        "w = A + s d; every direction has the length of B - A, so s = 1 along delta is B. "
        f"|d| = {results['delta'].direction_norm:.3f}"
        + (f"; top eigenvalue {eigen:.4g}." if eigen is not None else ".")
    )
    ui.chart(charts.slices(curves, metric, log_y=log and charts.is_loss(metric)), frame, "slices")


def main() -> None:
    sel = ui.pair_page(
        "Directions",
        "Top-k eigenvectors V of the training-loss Hessian at A (Lanczos on Hessian-vector "
        "products); how much of delta = B - A lies in their span, beside a random direction "
        "and the magnitude-pruning direction (Chao et al. 2020).",
    )
    hcfg, scfg = _options(sel)
    res = ui.result(jobs.hessian_job(sel, hcfg), sel, key="hessian_compute")
    if res is not None:
        _hessian(res)
    st.subheader("1D slices")
    slices = ui.result(jobs.slices_job(sel, scfg), sel, key="slices_compute")
    if slices is not None:
        _slices(slices)


main()
