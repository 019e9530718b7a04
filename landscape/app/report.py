"""A study's report: one self-contained HTML file with every computed chart, verdict and table.

Only results already in the store are included (looked up with ``landscape.studies.find`` under
the configs the dashboard uses by default, or the ones given); the report says which are
missing. plotly.js is inlined once, so the file opens offline. Never imports Streamlit.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from landscape import verdicts
from landscape.app import charts
from landscape.app.charts_surfaces import pca_trajectories, plane_contour
from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.curves import CurveConfig, load_curve
from landscape.store import Store
from landscape.studies import curve, find, hessian, pca, plane, slices, study_key
from landscape.studies.hessian import HessianConfig
from landscape.studies.pca import PCAConfig
from landscape.studies.plane import PlaneConfig
from landscape.studies.slices import SliceConfig
from landscape.workspace import Member, Study, get_study, summarize

__all__ = ["ReportConfigs", "build_report"]

SLICE_NAMES = {"delta": "delta = B - A", "eigen": "top eigenvector", "random": "random"}


@dataclass(frozen=True)
class ReportConfigs:
    """The configs whose results the report looks up (the dashboard's defaults)."""

    curve: CurveConfig = field(default_factory=CurveConfig)
    plane: PlaneConfig = field(default_factory=PlaneConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    hessian: HessianConfig = field(default_factory=HessianConfig)
    slices: SliceConfig = field(default_factory=SliceConfig)


class _Page:
    """The report's body, built section by section; the first figure carries plotly.js."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.missing: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, text: str) -> None:
        self.add(f"<h2>{html.escape(text)}</h2>")

    def para(self, text: str, cls: str = "") -> None:
        self.add(f'<p class="{cls}">{html.escape(text)}</p>')

    def figure(self, fig: go.Figure) -> None:
        inline = self.figures == 0
        self.figures += 1
        self.add(fig.to_html(full_html=False, include_plotlyjs=inline, config={"responsive": True}))

    def verdicts(self, found: list[verdicts.Verdict]) -> None:
        for v in found:
            title = html.escape(v.title)
            self.add(f'<p class="verdict {v.status}"><b>{title}.</b> {html.escape(v.sentence)}</p>')

    def table(self, rows: dict[str, dict[str, Any]]) -> None:
        """Columns are the dict's keys, rows the inner dicts' keys."""
        cols = list(rows)
        keys = list(dict.fromkeys(k for r in rows.values() for k in r))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *cols])
        body = "".join(
            "<tr><th>" + html.escape(k) + "</th>"
            + "".join(f"<td>{html.escape(str(rows[c].get(k, '')))}</td>" for c in cols)
            + "</tr>"
            for k in keys
        )  # fmt: skip
        self.add(f"<table><tr>{head}</tr>{body}</table>")


def _load(member: Member) -> Checkpoint:
    return replace(load_checkpoint(member.path), name=member.label)


def _with_root(cfg: Any, ckpt: Checkpoint) -> Any:
    """The config with the data folder recorded in the checkpoint (as the dashboard does)."""
    root = (ckpt.meta.get("data") or {}).get("root")
    return replace(cfg, data_root=root) if hasattr(cfg, "data_root") else cfg


def _lookup(page: _Page, title: str, kind: Any, cfg: Any, inputs: Any, store: Store) -> Any:
    """The stored result, or None with ``title`` noted as missing (never computes)."""
    try:
        res = find(kind, cfg, inputs, store=store)
    except (ValueError, OSError) as err:  # e.g. checkpoints that do not fit together
        page.missing.append(f"{title} (cannot be looked up: {err})")
        return None
    if res is None:
        page.missing.append(title)
        return None
    page.para(f"result {kind.name}/{study_key(kind, cfg, inputs)}", "key")
    return res


def _member_column(member: Member, ckpt: Checkpoint) -> dict[str, Any]:
    s = summarize(ckpt)
    col: dict[str, Any] = {
        "file": member.path,
        "content hash": s.hash,
        "architecture": json.dumps(s.arch),
        "data": json.dumps(s.data),
        "optimizer": json.dumps(s.optimizer),
        "parameters": s.n_params,
        "sparsity": f"{s.sparsity:.4f}",
    }
    return col | {k: f"{v:.4f}" for k, v in s.metrics.items() if isinstance(v, float)}


def _overview(page: _Page, study: Study, ckpts: list[Checkpoint]) -> None:
    page.heading("Overview: the checkpoints")
    page.table({m.label: _member_column(m, c) for m, c in zip(study.members, ckpts, strict=True)})
    layers = {
        m.label: summarize(c).layer_sparsity for m, c in zip(study.members, ckpts, strict=True)
    }
    page.figure(charts.layer_sparsity_bars(layers))
    histories = {}
    for m in study.members:
        record = Path(m.run_dir or "", "run.json")
        if m.run_dir and record.exists():
            histories[m.label] = json.loads(record.read_text()).get("history") or []
    if any(histories.values()):
        page.figure(charts.training_curves({k: v for k, v in histories.items() if v}))


def _connectivity(page: _Page, a: Checkpoint, b: Checkpoint, cfg: CurveConfig, store: Store):
    page.heading(f"Connectivity: {a.name} (t = 0) to {b.name} (t = 1)")
    res = _lookup(page, "the curve", curve.KIND, cfg, curve.CurveInputs(a, b), store)
    if res is None:
        return None
    page.verdicts([verdicts.connectivity(res), verdicts.sparsity_along(res)])
    summary = {}
    for name in ("curve", "line"):
        p = res.path(name)
        summary[name] = {
            "train-loss barrier": f"{p.barrier('train_loss').height:.4f}",
            "test-loss barrier": f"{p.barrier('test_loss').height:.4f}",
            "min test accuracy": f"{min(p.columns['test_acc']):.4f}",
            "length": f"{p.length:.4f}",
        }
    page.table(summary)
    for metric in ("train_loss", "test_acc", "sparsity"):
        paths = {"curve": res.curve[metric], "line": res.line[metric]}
        page.figure(charts.path_metric(res.t, paths, metric, log_y=charts.is_loss(metric)))
    return res


def _plane(page: _Page, a: Checkpoint, b: Checkpoint, fitted: Any, cfg: Any, store: Store):
    page.heading("Plane through A, the bend and B")
    if fitted is None:
        page.missing.append("the plane (needs the curve)")
        page.para("Not computed: needs the curve.")
        return
    inputs = plane.PlaneInputs(a, b, load_curve(fitted.curve_file, a, b))
    res = _lookup(page, "the plane", plane.KIND, cfg, inputs, store)
    if res is None:
        return
    page.verdicts([verdicts.plane(res)])
    for metric in ("train_loss", "test_acc"):
        fig = plane_contour(
            res.alpha, res.beta, res.metrics[metric], metric=metric,
            points_xy=res.points_xy, point_names=res.labels, curve_xy=res.curve_xy,
            log_z=charts.is_loss(metric), title=charts.label(metric),
        )  # fmt: skip
        page.figure(fig)


def _trajectories(page: _Page, study: Study, ckpt: Checkpoint, cfg: Any, store: Store) -> None:
    page.heading("Trajectories: the PCA plane of the training runs")
    runs = tuple(Path(m.run_dir) for m in study.members[:2] if m.run_dir is not None)
    if not runs:
        page.para("A and B are lone checkpoints: no trajectories.")
        return
    res = _lookup(
        page, "the PCA plane", pca.KIND, _with_root(cfg, ckpt), pca.PCAInputs(runs), store
    )
    if res is None:
        return
    page.verdicts([verdicts.trajectories(res)])
    fig = pca_trajectories(
        res.alpha, res.beta, res.metrics["train_loss"], res.xy, res.run_index, res.epoch,
        res.residual, runs=res.runs, explained=res.explained_variance_ratio,
    )  # fmt: skip
    page.figure(fig)


def _directions(page: _Page, a: Checkpoint, b: Checkpoint, cfgs: ReportConfigs, store: Store):
    page.heading("Directions: the Hessian at A and the pruning direction")
    hcfg = _with_root(cfgs.hessian, a)
    res = _lookup(page, "the Hessian", hessian.KIND, hcfg, hessian.HessianInputs(a, b), store)
    if res is not None:
        if res.projection_ratio is not None:
            page.verdicts([verdicts.directions(res)])
        page.figure(charts.eigenvalues(res.eigenvalues))
        if res.overlap is not None:
            series = {
                "pruning direction (B - A)": res.overlap,
                "random": res.random_overlap,
                "magnitude pruning": res.magnitude_overlap,
            }
            page.figure(charts.overlaps(series))
    scfg = replace(_with_root(cfgs.slices, a), hessian=hcfg)
    curves = {}
    for d in slices.DIRECTIONS:
        dcfg = replace(scfg, direction=d, span=None)
        found = _lookup(page, f"the {d} slice", slices.KIND, dcfg, slices.SliceInputs(a, b), store)
        if found is not None:
            curves[SLICE_NAMES.get(d, d)] = (found.s, found.metrics["train_loss"])
    if curves:
        page.figure(charts.slices(curves, "train_loss", log_y=True))


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top;max-width:28em;overflow-wrap:anywhere}
.verdict{padding:.5em .8em;border-left:4px solid #888;background:#f6f6f6}
.verdict.yes{border-color:#2ca02c}.verdict.no{border-color:#d62728}
.verdict.unclear{border-color:#ff7f0e}.key{color:#777;font-size:.8em}"""


def build_report(
    study: Study | str = "default",
    *,
    configs: ReportConfigs | None = None,
    store: Store | None = None,
) -> str:
    """The HTML report of a study (a :class:`landscape.workspace.Study` or its name).

    Args:
        study: the study; its first two members are A and B.
        configs: the configs to look results up with (default: the dashboard's defaults).
        store: the result store (default: ``$LANDSCAPE_HOME``).

    Returns:
        One self-contained HTML document (plotly.js inlined once; no network access needed).
    """
    study = get_study(study) if isinstance(study, str) else study
    cfgs, store = configs or ReportConfigs(), store or Store()
    ckpts = [_load(m) for m in study.members]
    a, b = ckpts[0], ckpts[1]
    page = _Page()
    _overview(page, study, ckpts)
    fitted = _connectivity(page, a, b, _with_root(cfgs.curve, a), store)
    _plane(page, a, b, fitted, _with_root(cfgs.plane, a), store)
    _trajectories(page, study, a, cfgs.pca, store)
    _directions(page, a, b, cfgs, store)
    missing = "Not computed yet (compute them in the dashboard or the CLI): " + (
        "; ".join(page.missing) if page.missing else "nothing: every study is included."
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        f"<h1>landscape report: {html.escape(study.name)}</h1>"
        f"<p>A = {html.escape(a.name)}, B = {html.escape(b.name)}; written {when}.</p>"
        f'<p class="missing">{html.escape(missing)}</p>'
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>landscape: {html.escape(study.name)}</title><style>{STYLE}</style></head>"
        f"<body>{head}{''.join(page.parts)}</body></html>"
    )
