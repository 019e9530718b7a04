import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from landscape.checkpoints import load_checkpoint
from landscape.cli import main
from landscape.sweep import COLUMNS, SweepConfig, load_sweep, pareto_front, run_sweep
from landscape.train import TrainConfig, make_initial, train
from tests.processes import alive
from tests.sweep_files import run_files

REPO = Path(__file__).resolve().parent.parent
TINY = {"arch": "mlp", "arch_kwargs": {"widths": [8]}, "epochs": 1, "snapshots": 2}


def _brute_force_front(points: list[tuple[float, float]]) -> list[int]:
    def dominates(p, q):
        return p[0] >= q[0] and p[1] >= q[1] and (p[0] > q[0] or p[1] > q[1])

    return [i for i, q in enumerate(points) if not any(dominates(p, q) for p in points)]


@pytest.mark.parametrize("seed", range(12))
def test_pareto_front_is_the_non_dominated_set(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 40))
    # Few distinct values: many ties in one or both coordinates, and exact duplicates.
    pts = [(float(x), float(y)) for x, y in rng.integers(0, 6, size=(n, 2)) / 5]
    assert pareto_front(pts) == _brute_force_front(pts)


def test_pareto_front_keeps_duplicates_and_rejects_nan():
    assert pareto_front([(0.5, 0.9), (0.5, 0.9), (0.4, 0.95), (0.4, 0.9)]) == [0, 1, 2]
    assert pareto_front([]) == []
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(0.1, float("nan"))])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"c": []}, "at least one"),
        ({"mu": [0.5, 1.5]}, "mu"),
        ({"seeds": [0, 0]}, "duplicate"),
        ({"magnitude": True}, "SGD"),
        ({"scope": "row"}, "scope"),
        ({"train": TrainConfig(**TINY, optimizer="sgd")}, "gRDA"),
    ],
)
def test_bad_sweep_config_writes_nothing(tmp_path, change, message):
    cfg = SweepConfig(
        **{"c": [0.01], "mu": [0.6], "train": TrainConfig(**TINY, optimizer="grda"), **change}
    )
    with pytest.raises(ValueError, match=message):
        run_sweep(cfg, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_sweep_cli_rejects_sgd_without_magnitude(tmp_path, capsys):
    args = ["sweep", "--c", "0.01", "--mu", "0.6", "--sgd", "x", "--out", str(tmp_path / "s")]
    assert main(args) == 2
    assert "--magnitude" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--c", "0.01,abc", "--mu", "0.6", "--out", str(tmp_path / "s")])


def _digest(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _check_table(res, out: Path, sgd: Path) -> None:
    """Two gRDA runs, their magnitude-pruned SGD twins, the frontier and the CSV of a sweep."""
    assert [r["kind"] for r in res.rows] == ["grda", "grda", "magnitude", "magnitude"]
    grda, mag = res.rows[:2], res.rows[2:]
    assert [(r["c"], r["mu"], r["seed"]) for r in grda] == [(0.02, 0.6, 1), (0.2, 0.6, 1)]
    for g, m in zip(grda, mag, strict=True):
        record = json.loads((out / g["path"] / "run.json").read_text())
        assert record["config"]["c"] == g["c"] and record["config"]["seed"] == 1
        assert record["init_hash"] == load_checkpoint(out / "init.safetensors").hash
        assert g["sparsity"] == record["metrics"]["sparsity"] > 0
        pruned = load_checkpoint(out / m["path"])
        assert (
            pruned.meta["optimizer"]["source_hash"]
            == load_checkpoint(sgd / "final.safetensors").hash
        )
        assert m["sparsity"] == pytest.approx(g["sparsity"], abs=1e-12)  # same count of zeros
        assert (m["c"], m["mu"], m["seed"]) == (g["c"], g["mu"], g["seed"])
    pts = [(r["sparsity"], r["test_acc"]) for r in res.rows]
    assert res.frontier == _brute_force_front(pts)
    assert [r["pareto"] for r in res.rows] == [i in res.frontier for i in range(4)]
    with open(out / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(COLUMNS) and len(table) == 4
    for row, r in zip(table, res.rows, strict=True):
        assert float(row["test_acc"]) == r["test_acc"] and row["path"] == r["path"]
    assert load_sweep(out).rows == res.rows


@pytest.mark.slow
def test_sweep_table_frontier_magnitude_and_resume(tmp_path, device):
    sgd = train(TrainConfig(**{**TINY, "epochs": 2}), tmp_path / "sgd")
    base = TrainConfig(**TINY, optimizer="grda", lr=0.1, device=device)
    cfg = SweepConfig(c=[0.02, 0.2], mu=[0.6], seeds=[1], train=base, magnitude=True)
    cfg.sgd = str(sgd.path)
    out = tmp_path / "sweep"
    calls = []
    res = run_sweep(cfg, out, progress=lambda done, total, stage: calls.append((done, total)))
    assert (res.trained, res.reused) == (2, 0)
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]  # 2 runs, then 2 magnitude models
    _check_table(res, out, sgd.path)
    grda, mag = res.rows[:2], res.rows[2:]

    # Second call: nothing retrained, files untouched.
    files = [out / g["path"] / "run.json" for g in grda] + [out / m["path"] for m in mag]
    before = [_digest(f) for f in files]
    again = run_sweep(cfg, out)
    assert (again.trained, again.reused) == (0, 2) and again.rows == res.rows
    assert [_digest(f) for f in files] == before

    # Through the study kind: the same table, everything reused, found again without computing.
    from landscape.store import Store
    from landscape.studies import KINDS, find, run
    from landscape.studies.sweep import SweepInputs

    store = Store(tmp_path / "store")
    via = run(KINDS["sweep"], cfg, SweepInputs(out), store=store)
    assert via.rows == res.rows and (via.trained, via.reused) == (0, 2)
    assert find(KINDS["sweep"], cfg, SweepInputs(out), store=store) == via
    assert [_digest(f) for f in files] == before

    # A run whose record names another config, and one with a torn final checkpoint, are redone.
    rec_path = out / grda[0]["path"] / "run.json"
    record = json.loads(rec_path.read_text())
    record["config"]["lr"] = 0.5
    rec_path.write_text(json.dumps(record))
    final = out / grda[1]["path"] / "final.safetensors"
    final.write_bytes(final.read_bytes()[:100])
    third = run_sweep(cfg, out)
    assert (third.trained, third.reused) == (2, 0)
    assert json.loads(rec_path.read_text())["config"]["lr"] == 0.1
    load_checkpoint(final)


@pytest.mark.slow
def test_killed_sweep_resumes_without_retraining_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "landscape", "sweep", "--c", "0.005,0.05", "--mu", "0.51,0.7"]
    cmd += ["--seeds", "0", "--arch", "mlp", "--arch-kwargs", '{"widths": [16]}', "--epochs", "3"]
    cmd += ["--batch-size", "8", "--snapshots", "2", "--workers", "2", "--out", str(out)]
    env = {**os.environ, "LANDSCAPE_HOME": str(tmp_path / "home")}
    # Own session: the kill reaches the spawned workers too, as a real Ctrl-C / OOM kill would.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def finished() -> list[Path]:
        return sorted(p for p in out.glob("runs/*/run.json") if not p.parent.name.startswith("."))

    deadline = time.monotonic() + 240
    try:
        while not finished() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = finished()
    assert 1 <= len(done) < 4, f"the kill should land mid-sweep; {len(done)} runs were done"
    before = {p: _digest(p) for p in done}
    before |= {
        p.parent / "final.safetensors": _digest(p.parent / "final.safetensors") for p in done
    }

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"trained {4 - len(done)} runs, reused {len(done)}" in rerun.stdout
    assert {p: _digest(p) for p in before} == before  # finished runs untouched
    assert len(finished()) == 4 and not list(out.glob("runs/.*"))  # no partial folders left
    rows = load_sweep(out).rows
    assert sorted((r["c"], r["mu"]) for r in rows) == [
        (0.005, 0.51),
        (0.005, 0.7),
        (0.05, 0.51),
        (0.05, 0.7),
    ]
    with open(out / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


def _table_without_times(out: Path) -> dict:
    body = json.loads((out / "sweep.json").read_text())
    for row in body["rows"]:
        del row["wall_time_s"]
    return body


@pytest.mark.slow
def test_workers_launcher_and_torchrun_give_the_sequentialrun_files(tmp_path):
    init = tmp_path / "init.safetensors"
    make_initial(TrainConfig(**TINY, seed=3), init)
    base = TrainConfig(**{**TINY, "epochs": 2}, optimizer="grda", lr=0.1, init=str(init))
    cfg = SweepConfig(c=[0.02, 0.2], mu=[0.6], seeds=[1], train=base)
    seq = run_sweep(cfg, tmp_path / "seq")
    par = run_sweep(replace(cfg, workers=2), tmp_path / "workers")
    assert (seq.trained, par.trained) == (2, 2)
    args = ["sweep", "--c", "0.02,0.2", "--mu", "0.6", "--seeds", "1", "--arch", "mlp"]
    args += ["--arch-kwargs", '{"widths": [8]}', "--epochs", "2", "--snapshots", "2"]
    args += ["--lr", "0.1", "--init", str(init)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    starters = {
        "launcher": [sys.executable, "-m", "landscape", *args, "--launcher", "2"],
        "torchrun": [*torchrun, "--nproc_per_node", "2", "-m", "landscape", *args],
    }
    env = {**os.environ, "LANDSCAPE_HOME": str(tmp_path / "home")}
    for name, cmd in starters.items():
        cmd = [*cmd, "--out", str(tmp_path / name)]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("trained 2 runs, reused 0") == 1  # rank 0 alone prints
    reference = run_files(tmp_path / "seq")
    assert len(reference) == 2 * 4  # final, 2 snapshots, run.json per run
    for name in ("workers", "launcher", "torchrun"):
        assert run_files(tmp_path / name) == reference, name
        assert _table_without_times(tmp_path / name) == _table_without_times(tmp_path / "seq")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _workers(pid: int) -> list[int]:
    """The sweep's training processes: the leaves below it, bar the resource tracker."""
    below = _descendants(pid)
    leaves = [p for p in below if not _descendants(p)]
    out = []
    for p in leaves:
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            out.append(p)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_worker_stops_the_sweep_and_its_run_is_redone_on_resume(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "landscape", "sweep", "--c", "0.005,0.02,0.05", "--mu", "0.51,0.7"]
    cmd += ["--seeds", "0", "--arch", "mlp", "--arch-kwargs", '{"widths": [16]}', "--epochs", "15"]
    cmd += ["--batch-size", "8", "--snapshots", "2", "--workers", "2", "--out", str(out)]
    env = {**os.environ, "LANDSCAPE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        # Both training: this process and the worker forked from the fork server (a leaf);
        # runs long enough that the worker, which starts seconds later, gets some.
        while len(list(out.glob("runs/.*.partial"))) < 2 and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        victims = _workers(proc.pid)
        assert victims, "no worker process found"
        os.kill(victims[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "a sweep worker died" in err
    time.sleep(0.5)
    assert not [p for p in victims if alive(p)]  # reaped, not left a zombie or orphan
    done = [p for p in out.glob("runs/*/run.json") if not p.parent.name.startswith(".")]
    assert len(done) < 6
    before = {p: _digest(p) for p in done}
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"trained {6 - len(done)} runs, reused {len(done)}" in rerun.stdout
    assert {p: _digest(p) for p in before} == before
    assert len(list(out.glob("runs/*/run.json"))) == 6 and not list(out.glob("runs/.*"))
