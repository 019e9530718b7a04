"""Overview: the study's checkpoints side by side, with their training curves."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from landscape.app import charts, sidebar, ui
from landscape.workspace import CheckpointSummary, Member

METRIC_ROWS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _optimizer_text(opt: dict | None) -> str:
    if not opt:
        return "unknown"
    hp = ", ".join(f"{k}={v}" for k, v in (opt.get("hparams") or {}).items())
    return f"{opt.get('name', '?')} ({hp})" if hp else str(opt.get("name", "?"))


def _column(member: Member, s: CheckpointSummary) -> dict[str, str]:
    data = s.data or {}
    opt = s.optimizer or {}
    col = {
        "file": member.path,
        "content hash": s.hash,
        "architecture": f"{s.arch['name']} {json.dumps(s.arch.get('kwargs', {}))}",
        "data": f"{data.get('name', '?')} (split seed {data.get('split_seed', '?')})",
        "optimizer": _optimizer_text(opt),
        "epochs / batch size": f"{opt.get('epochs', '?')} / {opt.get('batch_size', '?')}",
        "parameters": f"{s.n_params:,}",
        "sparsity (exact zeros)": f"{s.sparsity:.2%}",
        "sparsity (|w| < 1e-3)": f"{s.sparsity_small:.2%}",
    }
    for m in METRIC_ROWS:
        value = s.metrics.get(m)
        col[charts.label(m)] = "not recorded" if value is None else f"{value:.4f}"
    return col


def _swings(histories: dict[str, list[dict]]) -> None:
    lines = [ui.swings_text(name, h) for name, h in histories.items()]
    st.markdown(
        "**Test-accuracy swings.** "
        + " ".join(lines)
        + " Large swings while the learning rate is high are expected (large steps; gRDA's "
        "threshold also grows fastest early); what counts is the final plateau."
    )


def _report(study: str) -> None:
    """A "Download report" button (``landscape.app.report``), when that module exists."""
    try:
        from landscape.app.report import build_report
    except ImportError:
        return
    st.download_button(
        "Download report",
        data=lambda: build_report(study).encode(),
        file_name=f"landscape-report-{study}.html",
        mime="text/html",
        key="overview_report",
        on_click="ignore",
        icon=":material/summarize:",
        help="One HTML page: the study's verdicts and figures, from the stored results.",
    )


def main() -> None:
    sel = sidebar.selection()
    st.title(f"Overview: {sel.study.name}")
    st.caption(
        f"A = {sel.a.label} (t = 0), B = {sel.b.label} (t = 1). Metrics as recorded at the "
        "end of training, with the checkpoint's own BatchNorm statistics."
    )
    summaries = {m.label: sidebar.summary(m) for m in sel.study.members}
    table = pd.DataFrame({m.label: _column(m, summaries[m.label]) for m in sel.study.members})
    st.table(table)
    _report(sel.study.name)
    st.download_button(
        "Table (CSV)",
        data=table.to_csv().encode(),
        file_name="overview.csv",
        mime="text/csv",
        key="overview_table_csv",
        on_click="ignore",
        icon=":material/download:",
    )
    layers = {name: s.layer_sparsity for name, s in summaries.items()}
    colors = charts.member_colors(list(summaries), sel.a.label, sel.b.label)
    ui.chart(
        charts.layer_sparsity_bars(layers, colors=colors),
        pd.DataFrame(layers).rename_axis("layer").reset_index(),
        "layer_sparsity",
    )
    records = {m.label: sidebar.run_record(m) for m in sel.study.members}
    histories = {name: r["history"] for name, r in records.items() if r and r.get("history")}
    if histories:
        rows = [{"run": name, **h} for name, hist in histories.items() for h in hist]
        fig = charts.training_curves(histories, colors=colors)
        ui.chart(fig, pd.DataFrame(rows), "training_curves")
        _swings(histories)
    else:
        st.info("No run folder (run.json) for these checkpoints: no training curves to show.")


main()
