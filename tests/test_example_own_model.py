"""examples/own_model: a user's model and loop recorded with Recorder, then the CLI and the app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from landscape.app import MAIN
from landscape.workspace import create_study, member

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own_model"


def _run(*args: str | Path, cwd: Path = ROOT) -> str:
    """Run a command to the end (a fresh process: nothing trusted in this one leaks)."""
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def _landscape(*args: str | Path) -> str:
    return _run(sys.executable, "-m", "landscape", *args, "--model-path", EXAMPLE, "--yes")


@pytest.mark.slow
def test_own_model_example_then_cli_and_dashboard(tmp_path, monkeypatch):
    out = tmp_path / "own"
    printed = _run(sys.executable, EXAMPLE / "train.py", out, "2", cwd=tmp_path)
    assert printed.startswith("sgd") and "grda" in printed
    sgd, grda = out / "sgd", out / "grda"
    record = json.loads((grda / "run.json").read_text())
    assert record["arch"]["name"] == f"file:{EXAMPLE / 'model.py'}:SmallNet"
    assert record["optimizer"]["name"] == "grda" and record["metrics"]["sparsity"] > 0
    assert record["data"]["name"] == "npz" and len(record["snapshots"]) >= 3

    text = _landscape(
        "curve", sgd / "final.safetensors", grda / "final.safetensors",
        "--epochs", "1", "--points", "5", "--out", tmp_path / "curve",
    )  # fmt: skip
    assert "curve" in text and (tmp_path / "curve" / "curve.safetensors").exists()
    _landscape(
        "plane", sgd / "final.safetensors", grda / "final.safetensors",
        "--curve", tmp_path / "curve" / "curve.safetensors", "--grid", "5",
    )  # fmt: skip
    assert "explains" in _landscape("pca", sgd, grda, "--grid", "5")

    monkeypatch.setenv("LANDSCAPE_MODEL_PATHS", str(EXAMPLE))
    create_study("own model", [member(sgd), member(grda)])
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    at.selectbox(key="study").set_value("own model").run()
    assert not at.exception, [e.value for e in at.exception]
    for page in ("overview", "trajectories"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.selectbox(key="study").value == "own model"
