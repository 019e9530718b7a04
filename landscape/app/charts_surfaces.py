"""Plotly figures of planes: contour maps, 3D surfaces and PCA trajectories.

Pure functions like :mod:`landscape.app.charts` (data in, ``go.Figure`` out). Grids are
indexed [beta, alpha], as ``PlaneResult.metrics`` and ``PCAResult.metrics`` hold them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from landscape.app.charts import (
    LAYOUT,
    POINT_SYMBOLS,
    ROLE_COLORS,
    label,
    member_colors,
    role_marker,
)

POINT_ROLES = {2: ("dense", "sparse"), 3: ("dense", "bend", "sparse")}  # A, (bend,) B


def point_roles(n: int) -> tuple[str, ...]:
    """Roles of a plane's marked points: A dense, the bend (or third point), B sparse."""
    return POINT_ROLES.get(n, ("dense", "bend", "sparse", *("bend",) * max(n - 3, 0)))[:n]


__all__ = ["pca_trajectories", "plane_contour", "plane_surface"]


def _overlay(
    fig: go.Figure,
    points_xy: np.ndarray | None,
    point_names: Sequence[str],
    curve_xy: np.ndarray | None,
) -> None:
    if curve_xy is not None and len(curve_xy):
        fig.add_scatter(
            x=curve_xy[:, 0],
            y=curve_xy[:, 1],
            mode="lines",
            name="curve",
            meta="curve",
            line={"color": ROLE_COLORS["curve"], "width": 3},
            hovertemplate="curve<br>(%{x:.3f}, %{y:.3f})<extra></extra>",
        )
    if points_xy is not None:
        roles = point_roles(len(points_xy))
        for xy, name, role in zip(points_xy, point_names, roles, strict=True):
            fig.add_scatter(**role_marker(xy[0], xy[1], name, role))


def _levels(z: np.ndarray, log_z: bool) -> np.ndarray:
    # Contours of a loss are read on a log scale: minima are orders of magnitude below the rim.
    return np.log10(np.maximum(z, 1e-12)) if log_z else z


def _hover(
    z: np.ndarray, metric: str, other: np.ndarray | None, other_metric: str
) -> tuple[np.ndarray, str]:
    """Hover data (H, G, 1 or 2) and template: coordinates, the metric and a second one."""
    hover = "alpha %{x:.3f}<br>beta %{y:.3f}<br>" + label(metric) + " %{customdata[0]:.4g}"
    custom = [z]
    if other is not None:
        hover += "<br>" + label(other_metric) + " %{customdata[1]:.4g}"
        custom.append(np.asarray(other, dtype=float))
    return np.stack(custom, axis=-1), hover + "<extra></extra>"


def _grid_trace(
    alpha: np.ndarray,
    beta: np.ndarray,
    z: np.ndarray,
    metric: str,
    other: np.ndarray | None,
    other_metric: str,
    log_z: bool,
) -> dict:
    """Arguments shared by the contour and the surface trace of a metric grid."""
    z = np.asarray(z, dtype=float)
    custom, hover = _hover(z, metric, other, other_metric)
    return {
        "x": alpha,
        "y": beta,
        "z": _levels(z, log_z),
        "customdata": custom,
        "colorscale": "Viridis",
        "colorbar": {"title": ("log10 " if log_z else "") + label(metric)},
        "hovertemplate": hover,
        "name": label(metric),
    }


def plane_contour(
    alpha: np.ndarray,
    beta: np.ndarray,
    z: np.ndarray,
    *,
    metric: str,
    other: np.ndarray | None = None,
    other_metric: str = "",
    points_xy: np.ndarray | None = None,
    point_names: Sequence[str] = (),
    curve_xy: np.ndarray | None = None,
    log_z: bool = False,
    title: str = "",
    xaxis_title: str = "alpha",
    yaxis_title: str = "beta",
    equal_axes: bool = True,
) -> go.Figure:
    """Contour map of a metric on a plane, with points and a curve drawn on it.

    By default both axes have the same scale (true geometry: a bend 0.5 off a line of
    length 8 looks that small); ``equal_axes=False`` stretches each axis to the frame.

    Args:
        alpha: (G,) x coordinates.
        beta: (H,) y coordinates.
        z: (H, G) metric grid indexed [beta, alpha].
        metric: metric key of ``z`` (colour bar title).
        other: (H, G) a second metric shown on hover (e.g. accuracy beside loss).
        other_metric: its key.
        points_xy: (P, 2) marked points (the minima, the bend).
        point_names: their names.
        curve_xy: (Q, 2) a path drawn as a line.
        log_z: colour by log10 of ``z``.
        title, xaxis_title, yaxis_title: texts.
        equal_axes: one unit is as long on both axes (``yaxis.scaleanchor="x"``).
    """
    trace = _grid_trace(alpha, beta, z, metric, other, other_metric, log_z)
    fig = go.Figure(
        go.Contour(**trace, contours={"coloring": "heatmap", "showlines": True}, ncontours=30)
    )
    _overlay(fig, points_xy, point_names, curve_xy)
    fig.update_layout(
        **LAYOUT,
        title=title or label(metric),
        xaxis={"title": xaxis_title, "constrain": "domain"},
        yaxis={
            "title": yaxis_title,
            **({"scaleanchor": "x", "scaleratio": 1} if equal_axes else {}),
        },
        height=600,
    )
    return fig


def _on_surface(alpha: np.ndarray, beta: np.ndarray, z: np.ndarray, xy: np.ndarray) -> np.ndarray:
    # Bilinear interpolation of the grid at off-grid points, so overlays sit on the surface.
    from scipy.interpolate import RegularGridInterpolator

    interp = RegularGridInterpolator((beta, alpha), z, bounds_error=False, fill_value=None)
    return interp(np.stack([xy[:, 1], xy[:, 0]], axis=1))


def plane_surface(
    alpha: np.ndarray,
    beta: np.ndarray,
    z: np.ndarray,
    *,
    metric: str,
    other: np.ndarray | None = None,
    other_metric: str = "",
    points_xy: np.ndarray | None = None,
    point_names: Sequence[str] = (),
    curve_xy: np.ndarray | None = None,
    log_z: bool = False,
    title: str = "",
) -> go.Figure:
    """3D surface of a metric on a plane, with points and a curve lying on it.

    Arguments as :func:`plane_contour`.
    """
    trace = _grid_trace(alpha, beta, z, metric, other, other_metric, log_z)
    zz, ztitle = trace["z"], trace["colorbar"]["title"]
    fig = go.Figure(go.Surface(**trace))
    if curve_xy is not None and len(curve_xy):
        fig.add_scatter3d(
            x=curve_xy[:, 0],
            y=curve_xy[:, 1],
            z=_on_surface(alpha, beta, zz, curve_xy),
            mode="lines",
            name="curve",
            meta="curve",
            line={"color": ROLE_COLORS["curve"], "width": 6},
        )
    if points_xy is not None:
        roles = point_roles(len(points_xy))
        colors = [ROLE_COLORS[r] for r in roles]
        fig.add_scatter3d(
            x=points_xy[:, 0],
            y=points_xy[:, 1],
            z=_on_surface(alpha, beta, zz, points_xy),
            mode="markers+text",
            text=list(point_names),
            textfont={"size": 15, "color": colors},
            name="A, bend, B",
            marker={"size": 8, "color": colors, "line": {"color": "white", "width": 2}},
        )
    fig.update_layout(
        **LAYOUT,
        title=title or label(metric),
        scene={"xaxis_title": "alpha", "yaxis_title": "beta", "zaxis_title": ztitle},
        height=640,
    )
    return fig


def _trajectories(
    fig: go.Figure,
    xy: np.ndarray,
    run_index: np.ndarray,
    epoch: np.ndarray,
    residual: np.ndarray,
    runs: Sequence[str],
) -> None:
    """One line of projected snapshots per run (A blue, B red), epoch and residual on hover."""
    colors = member_colors(list(runs))
    for r, name in enumerate(runs):
        sel = np.asarray(run_index) == r
        fig.add_scatter(
            x=xy[sel, 0],
            y=xy[sel, 1],
            mode="lines+markers",
            name=name,
            customdata=np.stack([epoch[sel], residual[sel]], axis=1),  # (snapshots, 2)
            marker={"size": 9, "symbol": POINT_SYMBOLS[r % len(POINT_SYMBOLS)]},
            line={"width": 3, "color": colors[name]},
            meta=("dense", "sparse")[r] if r < 2 else None,
            hovertemplate=(
                name
                + "<br>epoch %{customdata[0]:.1f}<br>(%{x:.3f}, %{y:.3f})"
                + "<br>off-plane residual %{customdata[1]:.4g}<extra></extra>"
            ),
        )


def pca_trajectories(
    alpha: np.ndarray,
    beta: np.ndarray,
    z: np.ndarray,
    xy: np.ndarray,
    run_index: np.ndarray,
    epoch: np.ndarray,
    residual: np.ndarray,
    *,
    runs: Sequence[str],
    explained: Sequence[float],
    metric: str = "train_loss",
    log_z: bool = True,
) -> go.Figure:
    """Training trajectories projected on their PCA plane, over the metric's contours.

    Args:
        alpha, beta, z: the contour grid, z (H, G) indexed [beta, alpha].
        xy: (S, 2) projected snapshots.
        run_index: (S,) which run each snapshot belongs to (index into ``runs``).
        epoch: (S,) epoch of each snapshot.
        residual: (S,) off-plane residual norm of each snapshot.
        runs: run labels.
        explained: explained variance ratio of the two components (axis titles).
        metric: metric key of ``z``.
        log_z: colour by log10 of ``z``.
    """
    fig = go.Figure(
        go.Contour(
            x=alpha,
            y=beta,
            z=_levels(np.asarray(z, dtype=float), log_z),
            colorscale="Viridis",
            contours={"coloring": "heatmap", "showlines": True},
            ncontours=30,
            colorbar={"title": ("log10 " if log_z else "") + label(metric)},
            hovertemplate="PC1 %{x:.3f}<br>PC2 %{y:.3f}<br>%{z:.4g}<extra>contour</extra>",
            name=label(metric),
        )
    )
    _trajectories(fig, xy, run_index, epoch, residual, runs)
    ev = list(explained) + [0.0, 0.0]
    fig.update_layout(
        **LAYOUT,
        title="Training trajectories on their PCA plane",
        xaxis={"title": f"PC1 ({100 * ev[0]:.1f}% of variance)"},
        yaxis={"title": f"PC2 ({100 * ev[1]:.1f}% of variance)"},
        height=600,
    )
    return fig
