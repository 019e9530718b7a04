"""The shareable report: computed charts, verdicts and inputs in one HTML file that opens offline."""

from pathlib import Path

import pytest

from landscape.app.report import ReportConfigs, build_report
from landscape.app.serve import CHROMIUM, CHROMIUM_ARGS
from landscape.cli import main
from landscape.curves import CurveConfig
from landscape.studies import curve, hessian, run
from landscape.studies.hessian import HessianConfig
from landscape.workspace import default_study


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, Path]:
    """The default study's report after computing the curve (1 epoch, 5 points) and k=2."""
    home = tmp_path_factory.mktemp("report_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("LANDSCAPE_HOME", str(home))
    try:
        from landscape.checkpoints import load_checkpoint

        study = default_study()
        a, b = (load_checkpoint(m.path) for m in study.members[:2])
        cfgs = ReportConfigs(curve=CurveConfig(epochs=1, points=5), hessian=HessianConfig(k=2))
        run(curve.KIND, cfgs.curve, curve.CurveInputs(a, b))
        run(hessian.KIND, cfgs.hessian, hessian.HessianInputs(a, b))
        text = build_report(study, configs=cfgs)
    finally:
        mp.undo()
    out = home / "report.html"
    out.write_text(text)
    return text, out


def test_report_has_verdicts_charts_and_inputs(report):
    text, _ = report
    assert "onnected: the curve&#x27;s train-loss barrier is" in text  # connectivity verdict
    assert "sparsity 0.85 at t = 1" in text  # where the curve leaves the sparse end
    assert "Hessian space" in text and "sqrt(k/n)" in text  # directions verdict
    assert text.count('class="plotly-graph-div"') >= 6  # bars, curves x3, 2 path charts...
    assert text.count("plotly.js v") >= 1  # the library inlined
    assert "<script src=" not in text  # nothing fetched
    assert "the plane" in text and "the PCA plane" in text  # said to be missing
    assert "07aa178f13a6c42c" in text  # B's content hash among the inputs


def test_report_command_writes_the_file(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Not computed yet" in text and "the curve" in text  # nothing stored here
    assert "written to" in capsys.readouterr().out


def test_report_of_unknown_study_is_one_error(tmp_path, capsys):
    assert main(["report", "nope", "--out", str(tmp_path / "r.html")]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")
def test_report_renders_offline_in_chromium(report):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    text, path = report
    figures = text.count('class="plotly-graph-div"')
    requests: list[str] = []

    def route(r):
        requests.append(r.request.url)
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", route)
            page.goto(path.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.plotly .main-svg').length >= {figures}",
                timeout=30_000,
            )
            drawn = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        finally:
            browser.close()
    assert drawn == figures
    assert requests == [path.as_uri()]
