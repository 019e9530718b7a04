"""Hostile inputs and runaway requests: ranges checked at the CLI, costly studies need --yes."""

from __future__ import annotations

from pathlib import Path

import pytest

from landscape.cli import main
from landscape.cost import CONFIRM_S, confirm_limit
from landscape.studies import base

REPO = Path(__file__).resolve().parent.parent
A = str(REPO / "checkpoints" / "sgd" / "final.safetensors")
B = str(REPO / "checkpoints" / "grda" / "final.safetensors")
C = str(REPO / "checkpoints" / "init.safetensors")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["plane", A, B, "--third", C, "--grid", "100000"], "grid (points per axis) must be in"),
        (["plane", A, B, "--third", C, "--points-on-curve", "1000000"], "points_on_curve"),
        (["random-plane", A, "--grid", "5000"], "grid (points per axis) must be in"),
        (["random-plane", A, "--span", "nan"], "span must be in"),
        (["pca", str(REPO / "checkpoints" / "sgd"), "--grid", "1"], "grid"),
        (["curve", A, B, "--points", "1000000"], "points must be in [2, 100001]"),
        (["curve", A, B, "--order", "1000"], "order must be in [1, 20]"),
        (["slice", A, "--to", B, "--points", "1000000000"], "points must be in [2, 100001]"),
        (["slice", A, "--to", B, "--bn-subset", "0"], "bn_subset must be >= 1"),
        (["hessian", A, "--k", "100000"], "k must be in [1, 200]"),
    ],
)
def test_out_of_range_is_one_error_line_and_writes_nothing(argv, msg, home, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")] if argv[0] == "curve" else []
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], err
    assert _files(home) == [] and not (tmp_path / "out").exists()


def _record_runs(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(base, "run", lambda kind, cfg, *a, **k: calls.append(cfg) or 1 / 0)
    return calls


def test_costly_grid_needs_yes(home, monkeypatch, capsys):
    """The probe: ``plane --grid 2000`` started 4e6 points (~27 h) silently."""
    calls = _record_runs(monkeypatch)
    argv = ["plane", A, B, "--third", C, "--grid", "2000"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("estimated ~")  # the estimate first, then one error line
    assert len(err) == 2 and err[1].startswith("error:")
    assert "--yes" in err[1] and "estimated at ~" in err[1] and "LANDSCAPE_CONFIRM_S" in err[1]
    assert calls == [] and _files(home) == []
    with pytest.raises(ZeroDivisionError):  # with --yes it starts (the recorded run)
        main([*argv, "--yes"])
    assert len(calls) == 1 and calls[0].grid == 2000


def test_confirm_limit_setting(home, monkeypatch, capsys):
    assert confirm_limit() == CONFIRM_S == 1800
    calls = _record_runs(monkeypatch)
    monkeypatch.setenv("LANDSCAPE_CONFIRM_S", "0")  # ask for everything
    assert main(["random-plane", A, "--grid", "3"]) == 2
    assert "--yes" in capsys.readouterr().err and calls == []
    monkeypatch.setenv("LANDSCAPE_CONFIRM_S", "inf")  # never ask
    with pytest.raises(ZeroDivisionError):
        main(["random-plane", A, "--grid", "1500"])
    assert len(calls) == 1
    monkeypatch.setenv("LANDSCAPE_CONFIRM_S", "soon")
    with pytest.raises(ValueError, match="LANDSCAPE_CONFIRM_S"):
        confirm_limit()


def test_costly_curve_needs_yes(home, tmp_path, monkeypatch, capsys):
    calls = _record_runs(monkeypatch)
    monkeypatch.setenv("LANDSCAPE_CONFIRM_S", "1")
    argv = ["curve", A, B, "--epochs", "500", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "--yes" in capsys.readouterr().err and calls == []
    assert not (tmp_path / "out").exists()
