"""End to end: every page of the default study, computed in the browser with small configs.

Each page is screenshot (under a temp folder, times printed) once its results are drawn; the
role colours are checked on the pixels of two charts (Overview's per-layer sparsity bars and
Connectivity's path chart: A = SGD blue, B = gRDA red, as ``charts.ROLE_COLORS`` says).
"""

import io
import re
import time
from pathlib import Path

import pytest

from landscape.app.charts import ROLE_COLORS
from landscape.app.serve import CHROMIUM, CHROMIUM_ARGS, drawn, idle, running_app

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)",
    ),
]
TOLERANCE = 40  # per channel: anti-aliasing and the bars' opacity blend with the background
MIN_PIXELS = 30  # of each role colour in a chart


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))


def _count(png: bytes, hex_color: str) -> int:
    """Pixels of the image within TOLERANCE of the colour, channel by channel."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)  # (h, w, 3)
    close = np.abs(img - np.array(_rgb(hex_color))) <= TOLERANCE
    return int(close.all(axis=-1).sum())


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)
    idle(page)


def _go(page, name: str, title: str) -> None:
    page.locator("[data-testid=stSidebarNav] a", has_text=name).click()
    drawn(page, title, 0)
    idle(page)


def _compute(
    page, options: str, numbers: dict[str, int], button: str, title: str, charts: int, left=0
):
    """Make the job tiny, press its button and wait for its charts; no stale notice remains
    (``left``: other boxes of the page still missing)."""
    page.get_by_text(options, exact=True).click()
    for label, value in numbers.items():
        _set_number(page, label, value)
    page.get_by_role("button", name=button).click()
    drawn(page, title, charts, timeout_ms=120_000)
    idle(page)
    page.get_by_text(re.compile("^Computed ")).first.wait_for()
    assert page.get_by_text("Not computed yet").count() == left, title


class Shots:
    """Screenshots of whole pages under a folder, with the time each page took."""

    def __init__(self, folder: Path):
        self.folder, self.start, self.times = folder, time.monotonic(), {}

    def take(self, page, name: str) -> bytes:
        blob = page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)
        now = time.monotonic()
        self.times[name] = now - self.start
        self.start = now
        return blob


def _plot_png(page, index: int) -> bytes:
    plot = page.locator("[data-testid=stMain] .js-plotly-plot").nth(index)
    plot.scroll_into_view_if_needed()
    return plot.screenshot()


def _role_pixels(png: bytes) -> dict[str, int]:
    return {role: _count(png, ROLE_COLORS[role]) for role in ("dense", "sparse")}


def test_every_page_after_its_computations(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    shots = Shots(tmp_path)
    pixels = {}
    with running_app(tmp_path / "home") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        drawn(page, "Overview: default", 2)
        idle(page)
        pixels["overview bars"] = _role_pixels(_plot_png(page, 0))
        shots.take(page, "overview")

        _go(page, "Connectivity", "Connectivity")
        _compute(page, "Curve options", {"Fit epochs": 1, "Points per path": 5}, "Fit curve",
                 "Connectivity", 5)  # fmt: skip
        pixels["connectivity path"] = _role_pixels(_plot_png(page, 0))
        assert "t=" in page.url  # the view's link names its t
        shots.take(page, "connectivity")

        _go(page, "Plane", "Plane")
        _compute(page, "Plane options", {"Grid points per axis": 5}, "Compute the plane",
                 "Plane", 1)  # fmt: skip
        shots.take(page, "plane")

        _go(page, "Trajectories", "Trajectories")
        _compute(page, "PCA options", {"Grid points per axis": 5}, "Compute the PCA plane",
                 "Trajectories", 1)  # fmt: skip
        shots.take(page, "trajectories")

        _go(page, "Directions", "Directions")
        _compute(page, "Options", {"Hessian samples (0: all)": 64, "Points per slice": 5},
                 "Compute the Hessian eigenvectors", "Directions", 2, left=1)  # fmt: skip
        page.get_by_role("button", name="Compute the 1D slices").click()
        drawn(page, "Directions", 3, timeout_ms=120_000)
        idle(page)
        assert page.get_by_text("Not computed yet").count() == 0
        shots.take(page, "directions")

        _go(page, "Pruning", "Pruning")
        shots.take(page, "pruning")
        assert page.locator("[data-testid=stException]").count() == 0
        _go(page, "Connectivity", "Connectivity")  # its options live on: still computed
        drawn(page, "Connectivity", 5)
        assert page.get_by_text("Not computed yet").count() == 0
        browser.close()
    print(f"\nscreenshots in {tmp_path}:")
    for name, seconds in shots.times.items():
        print(f"  {name:<13} {seconds:6.1f} s")
    for chart, counts in pixels.items():
        print(f"  {chart}: pixels of the role colours {counts}")
        assert all(n >= MIN_PIXELS for n in counts.values()), (chart, counts)
