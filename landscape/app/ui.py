"""Layout helpers shared by the pages: a chart with its downloads, and the compute panel."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from landscape import cost as costs
from landscape.app import jobs, sidebar
from landscape.app.jobs import Job, Jobs
from landscape.app.sidebar import Selection
from landscape.checkpoints import CheckpointError
from landscape.curves import CurveConfig
from landscape.data import DataError
from landscape.progress import Progress

_PROGRESS_EVERY_S = 0.1  # redraw the progress bar at most this often


@contextmanager
def progress_bar(title: str) -> Iterator[Progress]:
    """An ``st.progress`` bar with stage text, driven by the Progress callback protocol."""
    bar = st.progress(0.0, text=f"{title}: starting")
    last = 0.0

    def update(done: int, total: int, stage: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < _PROGRESS_EVERY_S and done < total:
            return
        last = now
        frac = min(max(done / total, 0.0), 1.0) if total else 0.0
        bar.progress(frac, text=f"{title}: {stage} ({done}/{total})")

    try:
        yield update
    finally:
        bar.empty()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def data_bytes(data: pd.DataFrame | Mapping[str, Any]) -> tuple[bytes, str, str]:
    """A chart's data as (bytes, file extension, MIME type): CSV for tables, else JSON."""
    if isinstance(data, pd.DataFrame):
        return data.to_csv(index=False).encode(), "csv", "text/csv"
    return json.dumps(_jsonable(data), indent=1).encode(), "json", "application/json"


def figure_html(fig: go.Figure) -> bytes:
    """A standalone HTML file of the figure (plotly.js embedded: opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()


def chart(fig: go.Figure, data: pd.DataFrame | Mapping[str, Any], name: str) -> None:
    """Draw a figure with two download buttons: its data (CSV or JSON) and the figure (HTML).

    Args:
        fig: the figure.
        data: the numbers drawn, as a table (CSV) or a dict of arrays (JSON).
        name: file stem of the downloads and widget-key prefix (unique on the page).
    """
    st.plotly_chart(fig, key=f"{name}_chart")
    blob, ext, mime = data_bytes(data)
    left, right, _ = st.columns([1, 1, 4])
    # Deferred figure HTML (several MB with plotly.js) is only built when clicked; "ignore"
    # keeps a download from rerunning the page.
    left.download_button(
        f"Data ({ext.upper()})",
        data=blob,
        file_name=f"{name}.{ext}",
        mime=mime,
        key=f"{name}_data",
        on_click="ignore",
        icon=":material/download:",
    )
    right.download_button(
        "Figure (HTML)",
        data=lambda: figure_html(fig),
        file_name=f"{name}.html",
        mime="text/html",
        key=f"{name}_html",
        on_click="ignore",
        icon=":material/download:",
    )


def compute_button(
    title: str, cost: str, run: Callable[[Progress], Any], *, key: str, label: str = ""
) -> Any | None:
    """Explain what a missing result costs and compute it when the button is pressed.

    The notice, button and progress bar share one ``st.empty`` placeholder that is cleared
    when the job finishes, so the fresh result replaces them in the same run (no stale
    "Not computed yet" above the charts); a caption then compares the estimate with the
    time it took.

    Args:
        title: what is computed ("the curve", "the plane").
        cost: the estimate shown to the user.
        run: ``run(progress)`` computes and stores the result, returning it.
        key: widget key of the button.
        label: the button's text (default "Compute <title>").

    Returns:
        The result of ``run`` once pressed (None before, or on bad input, which is shown as
        an error without a traceback).
    """
    box = st.empty()
    with box.container():
        st.info(f"Not computed yet: {title}. Cost: {cost}.", icon=":material/hourglass_empty:")
        pressed = st.button(label or f"Compute {title}", key=key, type="primary")
        if not pressed:
            return None
        start = time.perf_counter()
        try:
            with progress_bar(title) as progress:
                out = run(progress)
        except (CheckpointError, DataError, ValueError) as err:
            st.error(f"Could not compute {title}: {err}")
            return None
    box.empty()
    took = costs.seconds_text(time.perf_counter() - start).lstrip("~")
    st.caption(f"Computed {title} in {took}; estimated {cost}.", help=DONE_HELP)
    return out


DONE_HELP = (
    "Estimates are the probe's per-pass time on this machine and model, scaled by how long "
    "earlier jobs of the same kind took here against their estimates."
)


def result(job: Job | Jobs, sel: Selection, *, key: str, label: str = "") -> Any | None:
    """The job's stored result; if missing, its cost and a button that computes it.

    Args:
        job: the computation (several shown together: their results as ``{name: result}``).
        sel: the sidebar selection (unused by the estimate: each job names its checkpoint).
        key: widget key of the compute button.
        label: its text (default "Compute <title>").

    Returns:
        The stored (or just computed) typed result (``landscape.studies``), or None.
    """
    try:
        found = jobs.find(job)
        if found is not None:
            return found
        cost = jobs.cost_text(job)
    except (CheckpointError, DataError, ValueError) as err:
        st.error(f"Cannot compute {job.title} for this study: {err}", icon=":material/error:")
        return None
    return compute_button(job.title, cost, lambda p: jobs.compute(job, p), key=key, label=label)


CURVE_KEY = "curve_config"  # session state: the curve options, shared by Connectivity and Plane
IMPORTED_KEY = "curve_imported"  # session state: the imported curve chosen on Connectivity


def curve_config(sel: Selection) -> CurveConfig:
    """The curve options last chosen on the Connectivity page (defaults before that)."""
    saved = st.session_state.get(CURVE_KEY, CurveConfig())
    return replace(saved, device=sel.device, data_root=sidebar.data_root(sel.a))


def bn_subset(value: int) -> int | None:
    """The BN-subset widget's value as a config value: 0 means all training samples."""
    return int(value) or None


def grid_options(sel: Selection, *, grid: int, margin: float, bn: int) -> dict[str, Any]:
    """Config arguments shared by the grid studies (plane, PCA) from their widgets' values."""
    return {
        "grid": int(grid),
        "margin": float(margin),
        "bn_subset": bn_subset(bn),
        "device": sel.device,
        "data_root": sidebar.data_root(sel.a),
    }


def pair_page(name: str, caption: str) -> Selection:
    """The sidebar's selection, under a page title naming its A and B and a caption."""
    sel = sidebar.selection()
    st.title(f"{name}: {sel.a.label} to {sel.b.label}")
    st.caption(caption)
    return sel


def imported_curve(sel: Selection) -> Path | None:
    """The imported curve last chosen on the Connectivity page, if it joins this study's A, B."""
    chosen = st.session_state.get(IMPORTED_KEY)
    return chosen if chosen is not None and chosen in sidebar.imported_curves(sel) else None


_CARDS = {  # Verdict.status -> how its card is drawn ("unclear", "note": st.info)
    "yes": st.success,
    "no": st.warning,
}


def _number(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


def verdict_card(v: Any) -> None:
    """One verdict (``landscape.verdicts.Verdict``) as a card: its sentence, value, baseline and
    noise; green for "yes", yellow for "no", blue when unclear within noise or a plain note."""
    draw = _CARDS.get(str(getattr(v, "status", "")).lower(), st.info)
    parts = [] if getattr(v, "value", None) is None else [f"value {_number(v.value)}"]
    if getattr(v, "baseline", None) is not None:
        parts.append(f"baseline {_number(v.baseline)}")
    if getattr(v, "noise", None) is not None:
        parts.append(f"noise {_number(v.noise)}")
    numbers = f"  \n{'; '.join(parts)}" if parts else ""
    draw(f"**{v.title}**: {v.sentence}{numbers}", icon=":material/gavel:")


def verdicts(name: str, result: Any) -> list[Any]:
    """Draw the library's verdicts on a result (``landscape.verdicts.<name>(result)``) as cards.

    Returns the verdicts drawn; none when ``landscape.verdicts`` (or that function) is missing
    or cannot judge this result, which is then said in a caption, never as a traceback.
    """
    try:
        from landscape import verdicts as library

        judge = getattr(library, name)
    except (ImportError, AttributeError):
        return []
    try:
        out = judge(result)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        st.caption(f"No verdict on this result: {err}")
        return []
    found = [v for v in (out if isinstance(out, list | tuple) else [out]) if v is not None]
    for v in found:
        verdict_card(v)
    return found


def from_url(key: str, param: str, options: list | None = None, cast: Callable = str) -> None:
    """Before a widget is drawn: take its value from the URL's ``?param=`` when the session has
    none yet (a shared link), so a colleague sees the same view. Bad values are ignored."""
    raw = st.query_params.get(param)
    if raw is None or key in st.session_state:
        return
    try:
        value = cast(raw)
    except (TypeError, ValueError):
        return
    if options is not None:
        close = [o for o in options if o == value or str(o) == str(raw)]
        if not close:
            return
        value = close[0]
    st.session_state[key] = value


def to_url(**params: Any) -> None:
    """Write the view's controls into the URL's query parameters (the link to this view)."""
    for name, value in params.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if st.query_params.get(name) != text:
            st.query_params[name] = text


def swings_text(name: str, history: list[dict]) -> str:
    """One sentence on a run's test-accuracy swings, read from its run.json history.

    A dip is an epoch whose test accuracy lies more than 0.2 below the final value; the
    sentence names the deepest, the learning rate then against its peak, and how steady the
    last tenth of training is.
    """
    acc = [float(h["test_acc"]) for h in history]
    final, tail = acc[-1], acc[-max(1, len(acc) // 10) :]
    steady = f"the last {len(tail)} epochs stay within {min(tail):.3f}-{max(tail):.3f}"
    dips = [i for i, a in enumerate(acc) if a < final - 0.2]
    if not dips:
        return f"{name}: no swings in test accuracy; {steady} (final {final:.3f})."
    worst = min(dips, key=acc.__getitem__)
    lrs = [h.get("lr") for h in history]
    when = f"epoch {history[worst]['epoch']}"
    if all(lr is not None for lr in lrs):
        peak = max(lrs)
        share = sum(lrs[i] >= 0.5 * peak for i in dips)
        when += (
            f", lr {lrs[worst]:.3g} of peak {peak:.3g}; {share} of its {len(dips)} dips "
            "come while lr is at least half its peak"
        )
    return f"{name}: test accuracy dips to {acc[worst]:.3f} ({when}); {steady} (final {final:.3f})."
