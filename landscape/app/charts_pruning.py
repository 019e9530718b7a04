"""Plotly figures of the pruning studies: the connectivity frontier and the three-way plane.

Pure functions like :mod:`landscape.app.charts` (typed results in, ``go.Figure`` out).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape.app.charts import LAYOUT, PRUNING_KINDS, role_marker
from landscape.app.charts_surfaces import plane_contour
from landscape.studies.frontier import FrontierResult
from landscape.studies.plane import PlaneResult

__all__ = ["THREEWAY_ROLES", "frontier_barriers", "threeway_plane"]

THREEWAY_ROLES = {"SGD": "dense", "gRDA": "sparse", "magnitude": "magnitude"}  # point colours


def frontier_barriers(res: FrontierResult) -> go.Figure:
    """Train- and test-loss barrier against sparsity, one colour per method.

    Two panels (train, test); per method the fitted curve's barrier (solid, markers) and the
    straight line's (dashed, same colour), each sorted by sparsity. Hover gives c, mu, seed and
    the barrier as a fraction of the endpoints' mean loss.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("train loss", "test loss"))
    for method in dict.fromkeys(res.method):
        name, color, symbol = PRUNING_KINDS.get(method, (method, "gray", "circle"))
        idx = sorted((i for i, m in enumerate(res.method) if m == method),
                     key=lambda i: res.sparsity[i])  # fmt: skip
        for col, split in enumerate(("train", "test"), start=1):
            ends = getattr(res, f"end_{split}")[idx].mean(axis=1)
            for path, dash in (("curve", "solid"), ("line", "dash")):
                y = getattr(res, f"{path}_{split}")[idx]
                rel = np.divide(y, ends, out=np.full_like(y, np.nan), where=ends > 0)
                fig.add_scatter(
                    x=res.sparsity[idx],
                    y=y,
                    mode="lines+markers",
                    name=f"{name}: {path}",
                    legendgroup=f"{method}-{path}",
                    showlegend=col == 1,
                    meta=method,
                    line={"color": color, "dash": dash},
                    marker={"color": color, "symbol": symbol, "size": 9 if path == "curve" else 6},
                    customdata=np.column_stack([res.c[idx], res.mu[idx], res.seed[idx], rel]),
                    hovertemplate=(
                        "c = %{customdata[0]:g}, mu = %{customdata[1]:g}, seed %{customdata[2]}"
                        "<br>sparsity %{x:.4f}<br>barrier %{y:.4f} "
                        "(%{customdata[3]:.0%} of the ends' mean loss)"
                        f"<extra>{name}: {path}</extra>"
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="sparsity of the model (t = 1)")
    fig.update_yaxes(title_text="barrier (excess over the chord)", col=1)
    fig.update_layout(**LAYOUT, title="Barrier from the SGD minimum to each model", height=460)
    return fig


def threeway_plane(res: PlaneResult, metric: str = "train_loss") -> go.Figure:
    """The plane through SGD, the magnitude-pruned twin and gRDA, its three points labelled
    and coloured by role (dense blue, magnitude green, sparse red)."""
    z = np.asarray(res.metrics[metric])
    other = "test_acc" if metric != "test_acc" else "train_loss"
    fig = plane_contour(
        res.alpha, res.beta, z, metric=metric, other=res.metrics.get(other), other_metric=other,
        log_z=metric.endswith("loss"), title=f"Plane through the three minima: {metric}",
    )  # fmt: skip
    for (x, y), name in zip(res.points_xy, res.labels, strict=True):
        role = THREEWAY_ROLES.get(name, "bend")
        fig.add_scatter(**role_marker(float(x), float(y), name, role))
    return fig
