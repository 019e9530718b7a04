"""End to end: `streamlit run landscape/app/main.py` driven in headless Chromium through Playwright."""

import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

from landscape.app.serve import CHROMIUM, CHROMIUM_ARGS, drawn, idle, running_app  # noqa: E402

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)",
    ),
]
GRDA = REPO / "checkpoints" / "grda" / "final.safetensors"
TITLES = {
    "Connectivity": "Connectivity: sgd to grda",
    "Plane": "Plane: sgd, bend, grda",
    "Trajectories": "Trajectories",
    "Directions": "Directions: sgd to grda",
    "Upload": "Upload",
}


def _go(page, name: str) -> None:
    page.locator("[data-testid=stSidebarNav] a", has_text=name).click()
    drawn(page, TITLES[name], 0)
    assert page.locator("[data-testid=stException]").count() == 0, f"{name} raised"


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")  # commits the value: the app reruns


def _upload(page, file, name: str) -> None:
    """Choose a file in the uploader and click "Add checkpoint" once it is registered."""
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(file)
    page.locator("[data-testid=stFileChipName]", has_text=name).wait_for()
    page.wait_for_timeout(300)  # the rerun the upload triggers starts...
    idle(page)  # ...and ends: a click during it can be lost
    page.get_by_role("button", name="Add checkpoint").click()


def test_pages_upload_and_curve_in_the_browser(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    start = time.monotonic()
    with running_app(tmp_path / "home") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(url)
        drawn(page, "Overview: default", 2)  # sparsity bars and training curves
        for name in ("Connectivity", "Plane", "Trajectories", "Directions"):
            _go(page, name)
            page.get_by_text("Not computed yet").first.wait_for()  # a fresh home: nothing stored

        _go(page, "Upload")
        junk = {"name": "junk.safetensors", "mimeType": "application/octet-stream",
                "buffer": b"\x00junk" * 20}  # fmt: skip
        _upload(page, junk, "junk.safetensors")
        error = page.get_by_text(
            "junk.safetensors: not a valid safetensors file: header of"
        )  # absurd length
        error.wait_for()
        _upload(page, str(GRDA), "final.safetensors")
        page.get_by_text("Stored: final.safetensors").wait_for()
        assert error.count() == 0
        assert len(list((tmp_path / "home" / "uploads").glob("*.safetensors"))) == 1

        _go(page, "Connectivity")
        page.get_by_text("Curve options").click()
        _set_number(page, "Fit epochs", 1)
        _set_number(page, "Points per path", 5)
        # 3 passes to fit 1 epoch, 2 paths x 5 points x (BN + train + test = 2 + 450/1347).
        page.get_by_text("about 26 forward passes").wait_for()
        page.get_by_role("button", name="Fit curve").click()
        drawn(page, TITLES["Connectivity"], 5, timeout_ms=60_000)
        page.get_by_text("Barriers").wait_for()
        assert page.locator("[data-testid=stException]").count() == 0
        browser.close()
    assert len(list((tmp_path / "home" / "results" / "curve").glob("*.json"))) == 1
    assert time.monotonic() - start < 90
