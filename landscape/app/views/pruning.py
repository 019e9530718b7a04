"""Pruning: gRDA sweeps, the sparsity-accuracy frontier, magnitude pruning, mask stability."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import streamlit as st

from landscape.app import charts, charts_pruning, jobs, sidebar, ui
from landscape.checkpoints import CheckpointError
from landscape.cost import sweep_cost
from landscape.curves import CurveConfig
from landscape.data import DataError
from landscape.store import home
from landscape.studies import masks, run, threeway
from landscape.studies import sweep as sweep_kind
from landscape.studies.plane import PlaneConfig, PlaneResult
from landscape.studies.sweep import SweepConfig, SweepInputs, SweepResult
from landscape.sweep import load_sweep
from landscape.train import TrainConfig
from landscape.workspace import (
    Member,
    create_study,
    default_checkpoints,
    default_study,
    list_studies,
)


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


@st.cache_data(show_spinner=False, max_entries=8)
def _sweep(folder: str, mtime_ns: int) -> SweepResult:
    return load_sweep(folder)


@st.cache_data(show_spinner=False, max_entries=64)
def _stability(run_dir: str, mtime_ns: int) -> dict:
    """The masks study of a run folder (stored; recomputed when the snapshots change)."""
    return asdict(run(masks.KIND, masks.MasksConfig(), masks.MasksInputs(Path(run_dir))))


def _row_label(r: dict) -> str:
    kind = "gRDA" if r["kind"] == "grda" else "magnitude"
    return (
        f"{kind} c={r['c']:g} mu={r['mu']:g} seed={r['seed']}: "
        f"sparsity {r['sparsity']:.3f}, test acc {r['test_acc']:.4f}"
    )


def _member(folder: Path, r: dict) -> Member:
    """The study member of a sweep row: a gRDA run (with its folder) or a pruned checkpoint."""
    path = folder / r["path"]
    name = f"{r['kind']} c{r['c']:g} mu{r['mu']:g} s{r['seed']}"
    if r["kind"] == "grda":
        return Member(label=name, path=str(path / "final.safetensors"), run_dir=str(path))
    return Member(label=name, path=str(path))


def _sgd_member(result: SweepResult) -> Member:
    """The sweep's SGD model (its magnitude baseline's source), else the default study's A."""
    sgd = result.config.get("sgd")
    if sgd is None:
        return default_study().members[0]
    path = Path(sgd)
    if path.is_dir():
        return Member(label="sgd", path=str(path / "final.safetensors"), run_dir=str(path))
    return Member(label="sgd", path=str(path))


def _pair_study(a: Member, b: Member, folder: Path) -> str:
    """Name of a study of (A, B), created unless one of these two files exists."""
    existing = {s.name: [m.path for m in s.members] for s in list_studies()}
    name = f"{folder.name}: {a.label} vs {b.label}"
    if existing.get(name, [a.path, b.path]) != [a.path, b.path]:  # same name, other files
        name += " #" + hashlib.sha256(f"{a.path}|{b.path}".encode()).hexdigest()[:6]
    if name not in existing:
        create_study(name, [a, b])
    return name


def _frontier_section(folder: Path, result: SweepResult) -> int:
    rows = result.rows
    idx = st.selectbox(
        "Model",
        range(len(rows)),
        format_func=lambda i: _row_label(rows[i]),
        key="pruning_model",
        help="Highlighted on the chart; used by the layer chart and the connectivity button.",
    )
    ui.chart(charts.pruning_frontier(rows, selected=idx), pd.DataFrame(rows), "pruning_frontier")
    n_front = len(result.frontier)
    st.caption(
        f"{len(rows)} models, {n_front} on the Pareto frontier (no other model is both at "
        "least as sparse and at least as accurate, one of them strictly)."
    )
    return idx


def _layers_section(folder: Path, result: SweepResult, idx: int) -> None:
    r = result.rows[idx]
    twins = [s for s in result.rows if (s["c"], s["mu"], s["seed"]) == (r["c"], r["mu"], r["seed"])]
    layers = {}
    for s in twins:
        kind = charts.PRUNING_KINDS[s["kind"]][0]
        layers[kind] = sidebar.summary(_member(folder, s)).layer_sparsity
    title = f"Per layer at overall sparsity {r['sparsity']:.3f} (c={r['c']:g}, mu={r['mu']:g})"
    ui.chart(
        charts.layer_sparsity_bars(layers, title=title),
        pd.DataFrame(layers).rename_axis("layer").reset_index(),
        "pruning_layers",
    )
    if len(twins) == 1:
        st.caption("No magnitude-pruned twin: run the sweep with `--magnitude --sgd RUN`.")


def _stability_table(runs: dict[str, dict]) -> pd.DataFrame:
    keys = ("steps", "epochs", "sparsity", "jaccard_final", "jaccard_prev", "flipped")
    return pd.DataFrame(
        [
            {"run": name, **{k: ms[k][i] for k in keys}}
            for name, ms in runs.items()
            for i in range(len(ms["steps"]))
        ]
    )


def _stability_section(folder: Path, result: SweepResult) -> None:
    grda = [r for r in result.rows if r["kind"] == "grda"]
    labels = [_row_label(r).split(":")[0] for r in grda]
    chosen = st.multiselect("Runs", labels, default=labels[:3], key="pruning_stability_runs")
    if not chosen:
        return
    runs = {}
    for r, lab in zip(grda, labels, strict=True):
        if lab in chosen:
            run_dir = folder / r["path"]
            runs[lab] = _stability(str(run_dir), _mtime(run_dir / "run.json"))
    ui.chart(charts.mask_stability_curves(runs), _stability_table(runs), "mask_stability")
    settled = {
        k: "never" if v["settled_step"] is None else f"after step {v['settled_step']}"
        for k, v in runs.items()
    }
    tol = masks.MasksConfig().tol
    st.caption(
        f"Mask settled (every later snapshot flips < {tol:.0%} of prunable weights): "
        + "; ".join(f"{k}: {v}" for k, v in settled.items())
    )


def _connectivity_button(folder: Path, result: SweepResult, idx: int) -> None:
    sgd = _sgd_member(result)
    pruned = _member(folder, result.rows[idx])
    if not st.button(
        f"Study connectivity: {sgd.label} (A) vs {pruned.label} (B)",
        key="pruning_connect",
        icon=":material/timeline:",
    ):
        return
    try:
        name = _pair_study(sgd, pruned, folder)
    except (CheckpointError, ValueError) as err:
        st.error(f"Could not make the study: {err}")
        return
    sidebar.select_study_next_run(name)
    st.switch_page("views/connectivity.py")


def _curve_options(prefix: str, sel: sidebar.Selection) -> CurveConfig:
    """Small curve settings for the many curves of a frontier or a three-way study."""
    cols = st.columns(2)
    epochs = cols[0].number_input("Curve epochs", 1, 200, 5, key=f"{prefix}_epochs")
    points = cols[1].number_input("Points on each path", 3, 101, 11, key=f"{prefix}_points")
    return CurveConfig(epochs=int(epochs), points=int(points), device=sel.device)


def _frontier_rows(res) -> pd.DataFrame:
    cols = ("sparsity", "curve_train", "line_train", "curve_test", "line_test", "c", "mu")
    table = pd.DataFrame({"method": res.method, **{k: getattr(res, k) for k in cols}})
    return table.assign(seed=res.seed, path=res.paths)


def _connect_section(folder: Path, result: SweepResult) -> None:
    st.subheader("Connectivity frontier")
    sgd = _sgd_member(result)
    st.caption(
        f"A curve from {sgd.label} (t = 0) to every model of the sweep (t = 1): the barrier "
        "against sparsity, curve solid and straight line dashed. Each pair is stored on its "
        "own, so an interrupted frontier resumes. CLI: `landscape frontier FOLDER --sgd RUN`."
    )
    sel = sidebar.selection()
    cfg = _curve_options("frontier", sel)
    job = jobs.frontier_job(folder, sgd, cfg, len(result.rows))
    found = ui.result(job, sel, key="pruning_frontier_run", label="Connect")
    if found is None:
        return
    ui.verdicts("frontier", found)
    ui.chart(charts_pruning.frontier_barriers(found), _frontier_rows(found), "frontier_barriers")


def _threeway_rows(res) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pair": res.pairs,
            "curve barrier (train loss)": res.curve_barrier,
            "line barrier (train loss)": res.line_barrier,
            "test accuracy dip": res.acc_dip,
            "test accuracy at t = 0": res.end_acc[:, 0],
            "test accuracy at t = 1": res.end_acc[:, 1],
        }
    )


def _threeway_section() -> None:
    st.subheader("Three-way study")
    sel = sidebar.selection()
    st.caption(
        f"{sel.a.label} (SGD), {sel.b.label} (gRDA) and {sel.a.label} magnitude-pruned to "
        f"{sel.b.label}'s sparsity: three curves and the plane through the three minima "
        "(the study's A and B in the sidebar). CLI: `landscape threeway SGD GRDA`."
    )
    curve_cfg = _curve_options("threeway", sel)
    grid = st.number_input("Plane grid points per axis", 3, 61, 11, key="threeway_grid")
    plane_cfg = PlaneConfig(grid=int(grid), device=sel.device)
    cfg = threeway.ThreewayConfig(curve=curve_cfg, plane=plane_cfg)
    found = ui.result(jobs.threeway_job(sel.a, sel.b, cfg), sel, key="pruning_threeway_run")
    if found is None:
        return
    st.caption(
        f"gRDA sparsity {found.sparsity:.4f}; the magnitude-pruned twin's {found.twin_sparsity:.4f}."
    )
    st.dataframe(_threeway_rows(found), hide_index=True)
    ui.verdicts("threeway", found)
    stored = jobs.store().find("plane", found.plane_key)
    if stored is None:
        st.info("The plane's result is gone from the store: compute the study again.")
        return
    plane_res = PlaneResult.from_arrays(stored.data, stored.arrays)
    data = {k: v.tolist() for k, v in plane_res.metrics.items()}
    ui.chart(charts_pruning.threeway_plane(plane_res), data, "threeway_plane")


def _run_section(folder: Path) -> None:
    st.caption(
        "gRDA runs of the default cnn on digits from the default study's initial weights "
        "(lr 0.1, paper schedule), with the default SGD run magnitude-pruned to each run's "
        "sparsity. Finished runs in the folder are reused."
    )
    sgd = default_study().members[0]  # the magnitude baseline; its rates time the runs
    cols = st.columns(4)
    c = cols[0].text_input("c values", "0.01,0.03", key="pruning_c")
    mu = cols[1].text_input("mu values", "0.6,0.7", key="pruning_mu")
    seeds = cols[2].text_input("seeds", "0", key="pruning_seeds")
    epochs = cols[3].number_input("epochs", 1, 200, 20, key="pruning_epochs")
    try:
        grid = [[float(v) for v in c.split(",")], [float(v) for v in mu.split(",")]]
        seed_list = [int(v) for v in seeds.split(",")]
    except ValueError:
        st.error("c, mu and seeds must be comma-separated numbers")
        return
    n = len(grid[0]) * len(grid[1]) * len(seed_list)
    device = sidebar.selection().device
    cost = jobs.estimate_text(sweep_cost(n, int(epochs), magnitude=True), sgd, device)
    st.caption(f"{n} runs of {epochs} epochs: {cost}.")
    if not st.button("Run sweep", key="pruning_run", type="primary"):
        return
    train = TrainConfig(
        optimizer="grda",
        lr=0.1,
        lr_schedule="paper",
        epochs=int(epochs),
        snapshots=6,
        init=str(default_checkpoints() / "init.safetensors"),
        device=device,
    )
    cfg = SweepConfig(
        c=grid[0], mu=grid[1], seeds=seed_list, train=train, magnitude=True, sgd=sgd.run_dir
    )
    try:
        with ui.progress_bar("sweep") as progress:
            run(sweep_kind.KIND, cfg, SweepInputs(folder), progress=progress)
    except (CheckpointError, DataError, ValueError) as err:
        st.error(f"Could not run the sweep: {err}")
        return
    st.rerun()


def main() -> None:
    st.title("Pruning")
    st.caption(
        "gRDA runs over a (c, mu) grid against magnitude pruning of the SGD model at the same "
        "sparsity. Sweeps come from `landscape sweep --out FOLDER`."
    )
    default = str(home() / "sweeps" / "default")
    folder = Path(st.text_input("Sweep folder", default, key="pruning_folder"))
    try:
        result = _sweep(str(folder), _mtime(folder / "sweep.json"))
    except ValueError as err:
        result = None
        st.info(f"{err}. Run one below, or `landscape sweep ... --out {folder}`.")
    with st.expander("Run a small sweep here", expanded=result is None):
        _run_section(folder)
    if result is None:
        _threeway_section()
        return
    ui.verdicts("pruning", result)
    idx = _frontier_section(folder, result)
    _connectivity_button(folder, result, idx)
    _layers_section(folder, result, idx)
    _connect_section(folder, result)
    st.subheader("Mask stability")
    _stability_section(folder, result)
    _threeway_section()


main()
