"""Directions: the pruning direction B - A against the top Hessian eigenvectors at A."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state, ui
from landscape.hessian import HessianConfig
from landscape.store import Stored
from landscape.surfaces import PlaneConfig

SLICE_NAMES = {"delta": "delta = B - A", "eigen": "top eigenvector", "random": "random"}


def _options(sel: state.Selection) -> tuple[HessianConfig, PlaneConfig, int]:
    d = HessianConfig()
    with st.expander("Options", expanded=False):
        c = st.columns(3)
        k = c[0].number_input("Eigenpairs k", 1, 100, d.k, key="hessian_k")
        subset = c[1].number_input(
            "Hessian samples (0: all)", 0, None, 0, key="hessian_subset",
            help="the Hessian averages over the first N training samples",
        )  # fmt: skip
        points = c[2].number_input("Points per slice", 2, 401, 41, key="slice_points")
    root = state.data_root(sel.a)
    hcfg = HessianConfig(k=int(k), subset=int(subset) or None, device=sel.device, data_root=root)
    return hcfg, PlaneConfig(device=sel.device, data_root=root), int(points)


def _hessian(res: Stored) -> None:
    arr, d = res.arrays, res.data
    cols = st.columns(3)
    cols[0].metric("|V^T d| / |d|: pruning direction", f"{d['projection_ratio']:.4f}")
    cols[1].metric("random direction, same norm", f"{d['random_projection_ratio']:.4f}")
    cols[2].metric("magnitude-pruning direction", f"{d['magnitude_projection_ratio']:.4f}")
    st.caption(
        f"|delta| = {d['delta_norm']:.3f}, B's sparsity {d['sparsity_b']:.2%}; "
        f"{d['n_hvp']} Hessian-vector products on {d['samples']} training samples."
    )
    k = np.arange(1, len(arr["eigenvalues"]) + 1)
    ui.chart(
        charts.eigenvalues(arr["eigenvalues"]),
        pd.DataFrame({"i": k, "eigenvalue": arr["eigenvalues"]}),
        "eigenvalues",
    )
    series = {
        "pruning direction (B - A)": arr["overlap"],
        "random": arr["random_overlap"],
        "magnitude pruning": arr["magnitude_overlap"],
    }
    ui.chart(
        charts.overlaps(series),
        pd.DataFrame({"i": k, **series}),
        "overlaps",
    )


def _slices(results: dict[str, Stored]) -> None:
    metric = st.selectbox(
        "Slice metric", ["train_loss", "test_loss", "train_acc", "test_acc"],
        format_func=charts.label, key="slice_metric",
    )  # fmt: skip
    log = st.toggle("Log scale", value=True, key="slice_log", disabled=not charts.is_loss(metric))
    curves = {SLICE_NAMES[d]: (r.arrays["s"], r.arrays[metric]) for d, r in results.items()}
    frame = pd.concat(
        pd.DataFrame({"direction": d, "s": r.arrays["s"], metric: r.arrays[metric]})
        for d, r in results.items()
    )
    st.caption(
        "w = A + s d; every direction has the length of B - A, so s = 1 along delta is B. "
        f"|d| = {results['delta'].data['direction_norm']:.3f}."
    )
    ui.chart(charts.slices(curves, metric, log_y=log and charts.is_loss(metric)), frame, "slices")


def main() -> None:
    sel = state.selection()
    st.title(f"Directions: {sel.a.label} to {sel.b.label}")
    st.caption(
        "Top-k eigenvectors V of the training-loss Hessian at A (Lanczos on Hessian-vector "
        "products); how much of delta = B - A lies in their span, beside a random direction "
        "and the magnitude-pruning direction (Chao et al. 2020)."
    )
    hcfg, pcfg, points = _options(sel)
    res = ui.result(state.hessian_job(sel, hcfg), sel, key="hessian_compute")
    if res is not None:
        _hessian(res)
    st.subheader("1D slices")
    slices = ui.result(state.slices_job(sel, points, pcfg, hcfg), sel, key="slices_compute")
    if slices is not None:
        _slices(slices)


main()
