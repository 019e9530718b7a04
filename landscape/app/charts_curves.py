"""Plotly figures of a curve's sparsity: B's zeros kept along t, masked and plain curves.

Pure functions like :mod:`landscape.app.charts` (data in, ``go.Figure`` out), in the role
colours of :data:`~landscape.app.charts.ROLE_COLORS`: B's zeros are the sparse end's red; the
masked curve is drawn dashed in it beside the fitted curve (purple) and the line (orange).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from landscape.app.charts import LAYOUT, ROLE_COLORS, path_metric

MASKED = "masked curve"  # the series name of the curve kept on B's zero mask


def zeros_kept_heatmap(
    t: np.ndarray, layers: Sequence[str], kept: np.ndarray, *, title: str | None = None
) -> go.Figure:
    """Heat map t x layer of the fraction of B's zero weights still below 1e-3.

    Args:
        t: (points,) path parameter (0 = A, 1 = B).
        layers: the prunable layers (rows of the map).
        kept: (points, layers) fractions in [0, 1]; NaN for a layer without zeros in B.
        title: figure title.
    """
    z = np.asarray(kept, dtype=float).T  # (layers, points)
    fig = go.Figure(
        go.Heatmap(
            x=np.asarray(t, dtype=float),
            y=list(layers),
            z=z,
            zmin=0.0,
            zmax=1.0,
            colorscale=[[0.0, "#ffffff"], [1.0, ROLE_COLORS["sparse"]]],
            colorbar={"title": "zeros kept"},
            hoverongaps=False,
            hovertemplate="t = %{x:.3f}<br>%{y}<br>%{z:.3f} of B's zeros below 1e-3<extra></extra>",
        )
    )
    fig.update_layout(
        **LAYOUT,
        title=title or "B's zero weights still (near) zero along the path",
        xaxis_title="t (0 = A, 1 = B)",
        yaxis={"title": "layer", "autorange": "reversed", "type": "category"},
        height=max(260, 60 + 28 * len(layers)),
    )
    return fig


def masked_paths(
    t: np.ndarray,
    paths: Mapping[str, np.ndarray],
    metric: str,
    *,
    log_y: bool = False,
    ends: tuple[str, str] | None = None,
) -> go.Figure:
    """:func:`~landscape.app.charts.path_metric` with the :data:`MASKED` series (if any) drawn
    dashed in the sparse end's colour."""
    fig = path_metric(t, paths, metric, log_y=log_y, ends=ends)
    fig.update_traces(
        selector={"name": MASKED},
        line={"color": ROLE_COLORS["sparse"], "dash": "dash"},
        marker={"color": ROLE_COLORS["sparse"]},
        meta="sparse",
    )
    return fig
