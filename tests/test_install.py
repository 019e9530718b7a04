"""The distribution: the library imports no streamlit, and an installed wheel works anywhere.

The slow test builds the wheel from a copy of the source tree, installs it offline into a fresh
virtual environment (the dependencies come from this environment through a ``.pth`` file), and
from a folder outside the repository runs ``landscape curve`` on the bundled default runs and
the dashboard's entry script under AppTest.
"""

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

LIBRARY_IMPORTS = """
import importlib, json, pkgutil, sys
import landscape
names = [m.name for m in pkgutil.walk_packages(landscape.__path__, "landscape.")
         if not m.name.startswith(("landscape.app.", "landscape.__main__"))]
for name in names:
    importlib.import_module(name)
import landscape.app  # the package itself (MAIN, flags) is light: the pages import streamlit
print(json.dumps({"modules": names,
                  "loaded": sorted(m for m in ("streamlit", "plotly") if m in sys.modules)}))
"""


def test_the_library_imports_no_streamlit_or_plotly():
    run = subprocess.run(
        [sys.executable, "-c", LIBRARY_IMPORTS], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert {"landscape.cli", "landscape.cost", "landscape.workspace"} <= set(out["modules"])
    assert out["loaded"] == []


def test_landscape_does_not_import_the_app():
    code = "import sys, landscape; print(sorted(m for m in sys.modules if 'landscape.app' in m))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


APP_CHECK = """
import sys
from pathlib import Path
from streamlit.testing.v1 import AppTest
import landscape.app
from landscape.workspace import default_checkpoints
main = landscape.app.MAIN
print(main)
print(default_checkpoints())
at = AppTest.from_file(str(main), default_timeout=60)
at.run()
assert not at.exception, [e.value for e in at.exception]
assert at.title[0].value == "Overview: default", at.title
"""


def _venv(folder: Path) -> Path:
    """A fresh venv whose dependencies are this environment's (no network, no copies)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A .pth line appends this environment's site-packages after the venv's own: the wheel
    # installed into the venv wins, the dependencies are found here.
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.slow
def test_wheel_installed_elsewhere_runs_the_cli_and_the_app(tmp_path):
    start = time.monotonic()
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", ".landscape", "__pycache__", ".*_cache"
        ),
    )
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
        check=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("landscape-*.whl")
    python = _venv(tmp_path / "venv")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=120,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANDSCAPE_HOME": str(tmp_path / "h")}

    def run(*cmd: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    site = Path(run(str(python), "-c", "import landscape; print(landscape.__file__)").stdout)
    site = Path(site.as_posix().strip()).resolve().parent.parent
    assert site.is_relative_to(tmp_path / "venv"), site

    app = run(str(python), "-c", textwrap.dedent(APP_CHECK)).stdout.split()
    assert Path(app[0]).is_relative_to(site) and Path(app[1]) == site / "landscape/_checkpoints"

    bundled = site / "landscape" / "_checkpoints"
    a, b = bundled / "sgd" / "final.safetensors", bundled / "grda" / "final.safetensors"
    landscape = str(tmp_path / "venv" / "bin" / "landscape")
    curve = run(landscape, "curve", str(a), str(b), "--epochs", "1", "--points", "5", "--out", "o")
    assert "estimated ~" in curve.stderr
    assert (elsewhere / "o" / "path.csv").is_file()
    assert time.monotonic() - start < 120
