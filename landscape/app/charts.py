"""Plotly figure builders: data in, ``go.Figure`` out.

Pure functions with no Streamlit and no computation beyond arranging the data, so tests check
them without a browser. Metric names follow ``landscape.evaluate.METRICS`` (train/test loss,
accuracy and ECE) plus the columns of path results. Figures of planes (contours, surfaces,
PCA trajectories) are in :mod:`landscape.app.charts_surfaces`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LABELS = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
    "train_err": "train error (1 - accuracy)",
    "test_err": "test error (1 - accuracy)",
    "train_ece": "train calibration error (ECE, 15 bins)",
    "test_ece": "test calibration error (ECE, 15 bins)",
    "sparsity": "sparsity (exact zeros)",
    "sparsity_small": "sparsity (|w| < 1e-3)",
    "weight_norm": "weight norm",
}
ROLE_COLORS = {  # one colour per role on every page and in every exported figure
    "dense": "#1f77b4",  # A, the dense (SGD) minimum: blue
    "sparse": "#d62728",  # B, the sparse (gRDA) minimum and the pruning direction: red
    "curve": "#9467bd",  # the Bezier curve: purple
    "line": "#ff7f0e",  # the straight line: orange
    "bend": "#e7ba52",  # the curve's bend: gold
    "random": "#7f7f7f",  # a random direction of equal norm (the baseline): grey
    "magnitude": "#2ca02c",  # magnitude pruning: green
    "eigen": "#8c564b",  # the top Hessian eigenvector: brown
    "imported": "#17becf",  # a curve imported from the research code: cyan
}
OTHER_COLORS = ("#e377c2", "#bcbd22", "#393b79", "#637939")  # members beyond A and B
_ROLE_NAMES = {  # role -> the series names the pages give it
    "curve": ("curve", "fitted here"),
    "line": ("line",),
    "imported": ("imported curve",),
    "bend": ("bend",),
    "random": ("random",),
    "sparse": ("pruning direction (B - A)", "delta = B - A", "gRDA"),
    "eigen": ("top eigenvector",),
    "magnitude": ("magnitude pruning", "magnitude-pruned SGD"),
    "dense": ("SGD",),
}
NAME_ROLES = {name: role for role, names in _ROLE_NAMES.items() for name in names}
PATH_COLORS = {name: ROLE_COLORS[role] for name, role in NAME_ROLES.items()}
POINT_SYMBOLS = ("circle", "diamond", "square", "cross", "x", "star")
LEGEND = {"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0}  # below: never on a colour bar
LAYOUT = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 90},
    "legend": LEGEND,
}


def member_roles(labels: Sequence[str], a: str, b: str) -> dict[str, str]:
    """``{label: role}`` of a study's members: A is dense, B sparse, whatever their labels."""
    return {name: "dense" if name == a else "sparse" if name == b else "" for name in labels}


def member_colors(labels: Sequence[str], a: str | None = None, b: str | None = None) -> dict:
    """``{label: colour}``: A (default: the first) blue, B (the second) red, others apart."""
    a = labels[0] if a is None and labels else a
    b = labels[1] if b is None and len(labels) > 1 else b
    roles = member_roles(labels, a, b)
    others = iter(OTHER_COLORS * (1 + len(labels) // len(OTHER_COLORS)))
    return {n: ROLE_COLORS[r] if r else next(others) for n, r in roles.items()}


def color_of(name: str, colors: Mapping[str, str] | None = None) -> str | None:
    """A series' colour: given in ``colors``, else its role's by :data:`NAME_ROLES`."""
    if colors and name in colors:
        return colors[name]
    role = NAME_ROLES.get(name)
    return ROLE_COLORS[role] if role else None


def role_marker(x: float, y: float, name: str, role: str, *, size: int = 16) -> dict:
    """Arguments of a large labelled marker in a role's colour (an endpoint, the bend)."""
    color = ROLE_COLORS[role]
    return {
        "x": [x], "y": [y], "mode": "markers+text", "name": name, "text": [name], "meta": role,
        "textposition": "top center", "textfont": {"size": 15, "color": color},
        "marker": {"size": size, "color": color, "line": {"color": "white", "width": 2}},
        "hovertemplate": name + "<br>(%{x:.3f}, %{y:.3g})<extra></extra>",
    }  # fmt: skip


def log_ticks(values: Sequence[float] | np.ndarray) -> dict:
    """Log-axis properties with labels at 1-2-5 steps (decades beyond three), no minor labels."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    lo, hi = (v.min(), v.max()) if v.size else (0.1, 1.0)
    d0, d1 = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    steps = (1,) if d1 - d0 > 3 else (1, 2, 5)
    ticks = [m * 10.0**d for d in range(d0, d1 + 1) for m in steps]
    ticks = [t for t in ticks if lo / 1.001 <= t <= hi * 1.001]
    if len(ticks) < 2:  # less than a 1-2-5 step: label both ends
        ticks = sorted({*ticks, float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    return {"type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def label(metric: str) -> str:
    """Human name of a metric key."""
    return LABELS.get(metric, metric.replace("_", " "))


def is_loss(metric: str) -> bool:
    return metric.endswith("_loss")


def layer_sparsity_bars(
    layers: Mapping[str, Mapping[str, float]],
    *,
    title: str = "",
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Grouped bars of per-layer sparsity, one group of bars per checkpoint.

    Args:
        layers: ``{checkpoint label: {layer name: fraction of zeros}}``.
        title: figure title.
        colors: ``{label: colour}`` (default: by :data:`NAME_ROLES`, else
            :func:`member_colors`: the first is A, the second B).
    """
    given, default = colors or {}, member_colors(list(layers))
    fig = go.Figure()
    for name, per_layer in layers.items():
        fig.add_bar(
            name=name,
            x=list(per_layer),
            y=list(per_layer.values()),
            marker_color=given.get(name) or color_of(name) or default[name],
            hovertemplate="%{x}<br>sparsity %{y:.3f}<extra>" + name + "</extra>",
        )
    fig.update_layout(
        **LAYOUT,
        title=title or "Sparsity per layer",
        barmode="group",
        xaxis_title="layer",
        yaxis={"title": "fraction of exactly-zero weights", "range": [0, 1]},
    )
    return fig


def training_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Per-epoch loss, accuracy and sparsity of training runs, in three panels.

    Args:
        histories: ``{run label: run.json history}``, each entry with epoch, train_loss,
            train_acc, test_loss, test_acc, sparsity.
        colors: ``{run label: colour}`` (default :func:`member_colors`: A blue, B red).
    """
    colors = {**member_colors(list(histories)), **(colors or {})}
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=("loss", "accuracy", "sparsity"), horizontal_spacing=0.08
    )
    for name, history in histories.items():
        epoch = [h["epoch"] for h in history]
        color = colors[name]
        for col, keys in ((1, ("train_loss", "test_loss")), (2, ("train_acc", "test_acc"))):
            for key in keys:
                fig.add_scatter(
                    x=epoch,
                    y=[h[key] for h in history],
                    name=f"{name} {label(key)}",
                    line={"color": color, "dash": "solid" if key.startswith("train") else "dot"},
                    legendgroup=name,
                    row=1,
                    col=col,
                )
        fig.add_scatter(
            x=epoch,
            y=[h["sparsity"] for h in history],
            name=f"{name} sparsity",
            line={"color": color},
            legendgroup=name,
            row=1,
            col=3,
        )
    losses = [
        h[k] for hist in histories.values() for h in hist for k in ("train_loss", "test_loss")
    ]
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="cross-entropy", **log_ticks(losses), row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)
    fig.update_yaxes(title_text="fraction of zeros", range=[0, 1], row=1, col=3)
    fig.update_layout(**LAYOUT, title="Training curves", height=420)
    return fig


def path_metric(
    t: np.ndarray,
    paths: Mapping[str, np.ndarray],
    metric: str,
    *,
    log_y: bool = False,
    at: float | None = None,
    ends: tuple[str, str] | None = None,
) -> go.Figure:
    """One metric along paths between the two checkpoints (t = 0 is A, t = 1 is B).

    Args:
        t: (points,) path parameter.
        paths: ``{"curve": values, "line": values}`` (any names), each (points,).
        metric: metric key, for titles.
        log_y: logarithmic y axis (for losses).
        at: draw a vertical marker at this t.
        ends: labels of A and B: large markers at t = 0 (dense) and t = 1 (sparse).
    """
    series = {name: (t, values) for name, values in paths.items()}
    fig = _metric_lines(
        series,
        metric,
        var="t",
        title=f"{label(metric)} along the paths",
        xaxis_title="t (0 = A, 1 = B)",
        log_y=log_y,
        colors=PATH_COLORS,
    )
    if ends is not None:
        first = np.asarray(next(iter(paths.values())), dtype=float)
        for name, role, i in ((ends[0], "dense", 0), (ends[1], "sparse", -1)):
            fig.add_scatter(**role_marker(t[i], first[i], name, role))
    if at is not None:
        fig.add_vline(x=at, line={"dash": "dash", "color": "gray"})
    return fig


def _metric_lines(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    metric: str,
    *,
    var: str,
    title: str,
    xaxis_title: str,
    log_y: bool,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """One line per ``{name: (x, values)}`` of a metric, hovering ``var = x`` and the value."""
    fig = go.Figure()
    for name, (x, values) in series.items():
        fig.add_scatter(
            x=x,
            y=values,
            name=name,
            mode="lines+markers",
            marker={"size": 4},
            line={"color": color_of(name, colors)},
            meta=NAME_ROLES.get(name),
            hovertemplate=f"{var} = %{{x:.3f}}<br>"
            + label(metric)
            + " %{y:.4g}<extra>"
            + name
            + "</extra>",
        )
    fig.update_layout(
        **LAYOUT,
        title=title,
        xaxis_title=xaxis_title,
        yaxis={"title": label(metric), **(_log_y(series) if log_y else {"type": "linear"})},
        height=400,
    )
    return fig


def _log_y(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    return log_ticks(np.concatenate([np.ravel(v) for _, v in series.values()]))


def layer_values(
    values: Mapping[str, Sequence[float]], layers: Sequence[str], *, title: str
) -> go.Figure:
    """Grouped bars of per-layer values, e.g. sparsity at one point of each path.

    Args:
        values: ``{series name: (layers,) values}``.
        layers: layer names (the x axis).
        title: figure title.
    """
    fig = go.Figure()
    for name, vals in values.items():
        fig.add_bar(name=name, x=list(layers), y=list(vals), marker_color=color_of(name))
    fig.update_layout(
        **LAYOUT,
        title=title,
        barmode="group",
        xaxis_title="layer",
        yaxis={"title": "fraction of exactly-zero weights", "range": [0, 1]},
        height=320,
    )
    return fig


def eigenvalues(values: np.ndarray) -> go.Figure:
    """Top-k Hessian eigenvalues, largest first."""
    values = np.asarray(values, dtype=float)
    fig = go.Figure(
        go.Bar(
            x=np.arange(1, len(values) + 1),
            y=values,
            hovertemplate="lambda_%{x} = %{y:.4g}<extra></extra>",
            name="eigenvalue",
            marker_color=ROLE_COLORS["dense"],  # the Hessian at A
            meta="dense",
        )
    )
    fig.update_layout(
        **LAYOUT,
        title="Top Hessian eigenvalues at A",
        xaxis={"title": "i", "dtick": 1},
        yaxis_title="eigenvalue",
        height=340,
    )
    return fig


def overlaps(series: Mapping[str, np.ndarray]) -> go.Figure:
    """|<v_i, d>| / |d| per eigenvector, grouped bars of ``{direction name: (k,) overlaps}``."""
    fig = go.Figure()
    for name, vals in series.items():
        vals = np.asarray(vals, dtype=float)
        fig.add_bar(
            x=np.arange(1, len(vals) + 1),
            y=vals,
            name=name,
            marker_color=color_of(name),
            meta=NAME_ROLES.get(name),
            hovertemplate="v_%{x}: %{y:.4g}<extra>" + name + "</extra>",
        )
    fig.update_layout(
        **LAYOUT,
        title="Overlap with the top Hessian eigenvectors",
        barmode="group",
        xaxis={"title": "eigenvector i", "dtick": 1},
        yaxis_title="|<v_i, d>| / |d|",
        height=360,
    )
    return fig


def slices(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], metric: str, *, log_y: bool = False
) -> go.Figure:
    """1D slices: a metric along straight lines w + s d from a point.

    Args:
        curves: ``{direction name: (s, values)}``.
        metric: metric key, for titles.
        log_y: logarithmic y axis.
    """
    return _metric_lines(
        curves,
        metric,
        var="s",
        title=f"{label(metric)} along 1D slices",
        xaxis_title="s (step along the direction)",
        log_y=log_y,
    )


PRUNING_KINDS = {  # sweep table kind -> (legend name, colour, marker)
    "grda": ("gRDA", ROLE_COLORS["sparse"], "circle"),
    "magnitude": ("magnitude-pruned SGD", ROLE_COLORS["magnitude"], "diamond"),
}


def pruning_frontier(rows: Sequence[Mapping], *, selected: int | None = None) -> go.Figure:
    """Test accuracy against sparsity of a sweep's models, with its Pareto frontier.

    Args:
        rows: sweep table rows (``landscape.sweep``): kind, c, mu, seed, sparsity, test_acc,
            pareto (on the frontier of all rows).
        selected: index of a row to ring.
    """
    fig = go.Figure()
    for kind, (name, color, symbol) in PRUNING_KINDS.items():
        idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
        if not idx:
            continue
        fig.add_scatter(
            x=[rows[i]["sparsity"] for i in idx],
            y=[rows[i]["test_acc"] for i in idx],
            mode="markers",
            name=name,
            marker={"color": color, "symbol": symbol, "size": 10},
            meta=NAME_ROLES[name],
            customdata=[[rows[i]["c"], rows[i]["mu"], rows[i]["seed"], i] for i in idx],
            hovertemplate="c = %{customdata[0]:g}, mu = %{customdata[1]:g}, "
            "seed %{customdata[2]}<br>sparsity %{x:.4f}<br>test accuracy %{y:.4f}"
            "<extra>" + name + "</extra>",
        )
    front = sorted((r["sparsity"], r["test_acc"]) for r in rows if r["pareto"])
    if front:
        fig.add_scatter(
            x=[p[0] for p in front],
            y=[p[1] for p in front],
            mode="lines",
            name="Pareto frontier",
            line={"color": "gray", "dash": "dash", "shape": "vh"},
            hoverinfo="skip",
        )
    if selected is not None:
        fig.add_scatter(
            x=[rows[selected]["sparsity"]],
            y=[rows[selected]["test_acc"]],
            mode="markers",
            name="selected",
            marker={"size": 20, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}},
            hoverinfo="skip",
        )
    fig.update_layout(
        **LAYOUT,
        title="Sparsity against test accuracy",
        xaxis={"title": label("sparsity")},
        yaxis={"title": label("test_acc")},
        height=440,
    )
    return fig


def mask_stability_curves(runs: Mapping[str, Mapping]) -> go.Figure:
    """Zero-mask stability over training: sparsity, overlap with the final mask, flips.

    ``runs``: ``{run label: asdict(landscape.pruning.mask_stability(...))}``.
    """
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("sparsity", "Jaccard with the final mask", "flipped since last snapshot"),
        horizontal_spacing=0.08,
    )
    tol = None
    for i, (name, ms) in enumerate(runs.items()):
        _add_mask_run(fig, name, ms, color=f"hsl({(i * 137) % 360}, 60%, 45%)")
        tol = ms["tol"]
    if tol is not None:
        fig.add_hline(y=tol, line={"dash": "dash", "color": "gray"}, row=1, col=3)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="fraction of zeros", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="|Z ∩ Z_final| / |Z ∪ Z_final|", range=[0, 1.02], row=1, col=2)
    flips = [f for ms in runs.values() for f in list(ms["flipped"])[1:] if f]
    fig.update_yaxes(title_text="fraction of weights", **log_ticks(flips), row=1, col=3)
    fig.update_layout(**LAYOUT, title="Mask stability (Z: zero weights)", height=380)
    return fig


def _add_mask_run(fig: go.Figure, name: str, ms: Mapping, *, color: str) -> None:
    """One run's sparsity, Jaccard and flip lines (and its settled star) on the three panels."""
    epochs = list(ms["epochs"])
    for col, key in ((1, "sparsity"), (2, "jaccard_final")):
        fig.add_scatter(
            x=epochs,
            y=list(ms[key]),
            name=name,
            legendgroup=name,
            showlegend=col == 1,
            mode="lines+markers",
            line={"color": color},
            row=1,
            col=col,
        )
    fig.add_scatter(  # the first snapshot has no previous one: its None leaves no point
        x=epochs[1:],
        y=list(ms["flipped"])[1:],
        name=name,
        legendgroup=name,
        showlegend=False,
        mode="lines+markers",
        line={"color": color},
        row=1,
        col=3,
    )
    if ms["settled_step"] is not None:
        k = list(ms["steps"]).index(ms["settled_step"])
        fig.add_scatter(
            x=[epochs[k]],
            y=[ms["jaccard_final"][k]],
            name=f"{name} settled",
            legendgroup=name,
            showlegend=False,
            mode="markers",
            marker={"symbol": "star", "size": 14, "color": color},
            hovertemplate="mask settled after epoch %{x:.2f}<extra>" + name + "</extra>",
            row=1,
            col=2,
        )
