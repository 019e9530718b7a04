"""Dashboard benchmark: computing the default study, first page drawn, page switches.

1. Compute the whole default study from nothing (curve, plane, PCA plane, Hessian with 1D
   slices) through the jobs the pages run when "Compute" is pressed (``landscape.app.jobs``),
   with the pages' default options, after a round of smaller jobs that calibrates the
   estimates (``landscape.cost.calibration``); each job's time beside the app's calibrated
   estimate (target: within 1.5x either way). Baseline
   measured in the same run: one forward pass over the training data (from timing
   ``evaluate_points``), so the figures can be read as multiples of it on a machine shared
   with others.
2. First visit: start the dashboard as ``landscape app`` does (``landscape.app.server``) and,
   in headless Chromium launched beforehand, time from the server answering its health check
   until the Overview's charts are drawn; a fresh server each time (``--first-visits``), beside
   the time the server took to answer. Baseline: a minimal two-page Streamlit app with small
   Plotly charts, started and visited the same way, interleaved; medians.
3. With the study's results stored: fresh browser contexts on the warm server (first page),
   and page switches (click in the sidebar until the page's charts are drawn), beside the
   minimal app; interleaved repeats, medians.

Targets: default study <= 120 s on 2 cores; first visit <= 2 s after the server answers
(issue 15); first page on a warm server <= 3 s; page switch <= 1 s.

Usage: ``.venv/bin/python bench/bench_app.py [--repeats 5] [--home DIR] [--first-only]``
(``--first-only``: only part 2, which needs no computed study).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

PAGES = {  # page name in the sidebar -> charts drawn when its results are stored
    "Connectivity": 6,
    "Plane": 1,
    "Trajectories": 1,
    "Directions": 3,
    "Overview": 2,
}


def _work(sel, *, size: int) -> dict:
    """The pages' default jobs (size 0), or the calibration round's smaller ones (1, 2)."""
    from landscape.app import jobs as app_jobs
    from landscape.curves import CurveConfig
    from landscape.studies.hessian import HessianConfig
    from landscape.studies.pca import PCAConfig
    from landscape.studies.plane import PlaneConfig
    from landscape.studies.slices import SliceConfig

    small = size > 0
    curve = CurveConfig(epochs=2 + 4 * size, points=10 * size + 1) if small else CurveConfig()
    grid = {"grid": 4 * size + 3} if small else {}
    # Other start vectors (and fewer samples) than the page's: earlier Hessian jobs of this kind.
    hcfg = HessianConfig(seed=size, subset=(None, 400, None)[size]) if small else HessianConfig()
    return {
        "curve": app_jobs.curve_job(sel, curve),
        "plane": app_jobs.plane_job(sel, curve, PlaneConfig(**grid)),
        "pca": app_jobs.pca_job(list(sel.study.members), PCAConfig(**grid)),
        "hessian": app_jobs.hessian_job(sel, hcfg),
        "slices": app_jobs.slices_job(sel, SliceConfig(points=(41, 9, 21)[size], hessian=hcfg)),
    }


def compute_default_study(home: Path) -> dict[str, float]:
    """Run every default job of the pages into ``home``; seconds per job and in total.

    First a calibration round of smaller jobs (what a user's earlier jobs leave in the store),
    then the defaults, each with the app's calibrated estimate beside its actual time.
    """
    import os

    import torch

    os.environ["LANDSCAPE_HOME"] = str(home)
    # One intra-op thread, as the tests run: on a shared 2-core machine a second thread made
    # the same job 2-15x slower from one run to the next, which no estimate can follow.
    torch.set_num_threads(1)
    from landscape.app import jobs as app_jobs
    from landscape.app import sidebar
    from landscape.workspace import default_study

    study = default_study()
    sel = sidebar.Selection(study, study.members[0], study.members[1], "cpu")
    rates = app_jobs.rates(sel.a, "cpu")
    per_pass = rates.per_pass
    print(
        f"baseline: one forward pass over the training data = {1000 * per_pass:.1f} ms; "
        f"one evaluated point (BN, train, test) = {1000 * rates.per_point:.1f} ms"
    )
    start = time.perf_counter()
    for size in (1, 2):
        for job in _work(sel, size=size).values():
            app_jobs.compute(job, None)
    print(f"calibration round (smaller jobs of each kind): {time.perf_counter() - start:.1f} s")
    times = {}
    for name, job in _work(sel, size=0).items():
        app_jobs.reprobe()  # the app probes again after a while: the load here changes
        est = app_jobs.job_estimate(job)  # prerequisites ran first
        start = time.perf_counter()
        app_jobs.compute(job, None)
        times[name] = time.perf_counter() - start
        ratio = times[name] / est.seconds
        ok = "ok" if 1 / 1.5 <= ratio <= 1.5 else "OFF"
        print(
            f"  {name:<8} actual {times[name]:6.1f} s  estimate {est.seconds:6.1f} s "
            f"({costs_range(est)})  actual/estimate {ratio:4.2f} {ok}  "
            f"({times[name] / per_pass:5.0f} passes)"
        )
    total = sum(times.values())
    print(
        f"default study from nothing: {total:.1f} s (target <= 120 s), "
        f"{total / per_pass:.0f} x one pass"
    )
    return times


def costs_range(est) -> str:
    from landscape.cost import range_text

    return range_text(est.low, est.high)


BASELINE_APP = """
import plotly.graph_objects as go
import streamlit as st


def overview():
    st.title("Overview")
    st.plotly_chart(go.Figure(go.Bar(x=[1, 2, 3], y=[3, 1, 2])))
    st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 3, 2])))


def other():
    st.title("Other")
    st.plotly_chart(go.Figure(go.Contour(z=[[1, 2], [3, 4]])))


st.navigation([st.Page(overview, title="Overview"), st.Page(other, title="Other")]).run()
"""


def _visit(browser, url: str, switches: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Open ``url`` in a fresh context (empty cache); time the first page, then switches."""
    from landscape.app.serve import drawn

    start = time.perf_counter()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    drawn(page, "Overview", 2)
    first = time.perf_counter() - start
    times = {}
    for name, charts in switches.items():
        start = time.perf_counter()
        page.locator("[data-testid=stSidebarNav] a", has_text=name).click()
        drawn(page, name, charts)
        times[name] = time.perf_counter() - start
    context.close()
    return first, times


def _baseline_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench_app_baseline_"))
    (folder / "baseline.py").write_text(BASELINE_APP)
    return folder


def first_visits(home: Path, visits: int) -> None:
    """The Overview drawn on the first visit after a fresh server answered, beside the
    minimal app started and visited the same way (a new server for every visit)."""
    from playwright.sync_api import sync_playwright

    from landscape.app.serve import CHROMIUM, CHROMIUM_ARGS, running_app

    base_dir = _baseline_dir()
    servers = {"app": (home, {}), "minimal": (base_dir, {"script": base_dir / "baseline.py"})}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(visits):  # interleaved: load on the machine hits both alike
            for name, (folder, kwargs) in servers.items():
                start = time.perf_counter()
                with running_app(folder, **kwargs) as url:  # returns as the health check answers
                    answered = time.perf_counter() - start
                    times[name].append((answered, _visit(browser, url, {})[0]))
        browser.close()
    print(f"first visit after a fresh start, median of {visits} (load average "
          f"{os.getloadavg()[0]:.2f}):")  # fmt: skip
    for name, pairs in times.items():
        start_s = statistics.median(a for a, _ in pairs)
        drawn = [v for _, v in pairs]
        print(
            f"  {name:<8} Overview drawn {statistics.median(drawn):5.2f} s after the server "
            f"answered (min {min(drawn):.2f}, max {max(drawn):.2f}; target <= 2 s); the server "
            f"answered {start_s:5.2f} s after start"
        )


def browser_timings(home: Path, repeats: int) -> None:
    """First page drawn and page switches in Chromium, beside a minimal Streamlit app.

    The baseline is a two-page app of titles and small Plotly charts started the same way:
    what Streamlit and Plotly cost on this machine before any of this app's work.
    """
    from playwright.sync_api import sync_playwright

    from landscape.app.serve import CHROMIUM, CHROMIUM_ARGS, running_app

    base_dir = _baseline_dir()
    app_first: list[float] = []
    base_first: list[float] = []
    app_switch: dict[str, list[float]] = {name: [] for name in PAGES}
    base_switch: list[float] = []
    with (
        running_app(home) as url,
        running_app(base_dir, script=base_dir / "baseline.py") as base_url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        _visit(browser, url, {})  # the first visits (part 2), not counted here
        _visit(browser, base_url, {})
        for _ in range(repeats):  # interleaved: load on the machine hits both alike
            first, times = _visit(browser, url, PAGES)
            app_first.append(first)
            for name, t in times.items():
                app_switch[name].append(t)
            first, times = _visit(browser, base_url, {"Other": 1, "Overview": 2})
            base_first.append(first)
            base_switch += times.values()
        browser.close()
    med, base = statistics.median(app_first), statistics.median(base_first)
    print(
        f"first page drawn (fresh browser context, warm server): median {med:.2f} s over "
        f"{repeats} (min {min(app_first):.2f}, max {max(app_first):.2f}; target <= 3 s)"
    )
    print(
        f"  minimal Streamlit + Plotly app, same run: median {base:.2f} s; ratio {med / base:.2f}"
    )
    base_sw = statistics.median(base_switch)
    print(f"page switch, minimal app: median {base_sw:.2f} s")
    for name, values in app_switch.items():
        m = statistics.median(values)
        print(
            f"  switch to {name:<13} median {m:.2f} s (min {min(values):.2f}, "
            f"max {max(values):.2f}; target <= 1 s); ratio to minimal {m / base_sw:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--first-visits", type=int, default=3, help="fresh servers visited")
    parser.add_argument("--home", help="LANDSCAPE_HOME to use (default: a new temporary one)")
    parser.add_argument("--first-only", action="store_true", help="only the first visits")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="bench_app_"))
    if not args.first_only:
        compute_default_study(home)
    first_visits(home, args.first_visits)
    if not args.first_only:
        browser_timings(home, args.repeats)


if __name__ == "__main__":
    main()
