"""Grid evaluation sharded over processes (gloo) gives the single-process numbers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.checkpoints import load_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.distributed import barrier, launch, process_group
from landscape.evaluate import METRICS
from landscape.models import build_model
from landscape.store import Store
from landscape.studies import plane, run, study_key
from landscape.studies.plane import PlaneConfig, PlaneInputs
from tests.processes import alive

REPO = Path(__file__).resolve().parent.parent
CNN = {
    "name": "cnn",
    "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "channels": [4, 6], "hidden": 8},
}


@pytest.fixture
def ckpts(tmp_path) -> list[Path]:
    paths = []
    for i in range(3):
        torch.manual_seed(i)
        model = build_model(CNN["name"], **CNN["kwargs"])
        path = tmp_path / f"c{i}.safetensors"
        save_checkpoint(path, model, {"arch": CNN, "data": {"name": "digits", "split_seed": 0}})
        paths.append(path)
    return paths


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("starter", ["launcher", "torchrun"])
def test_two_gloo_processes_give_the_single_process_result(ckpts, tmp_path, starter):
    store = Store(tmp_path / "dist")
    args = ["plane", str(ckpts[0]), str(ckpts[2]), "--third", str(ckpts[1]), "--grid", "5"]
    args += ["--bn-subset", "128", "--store", str(store.root)]
    if starter == "launcher":
        cmd = [sys.executable, "-m", "landscape", *args, "--launcher", "2"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", "2", "-m", "landscape", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("train_loss") == 1  # rank 0 alone prints
    a, c, b = (load_checkpoint(p) for p in ckpts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, inputs = PlaneConfig(grid=5, bn_subset=128), PlaneInputs(a, b, c)
        single = run(plane.KIND, cfg, inputs, store=Store(tmp_path / "single"))
    finally:
        torch.set_num_threads(threads)
    stored = store.load("plane", study_key(plane.KIND, cfg, inputs))
    assert stored is not None, "rank 0 did not write the result under the same key"
    sharded = plane.PlaneResult.from_arrays(stored.data, stored.arrays)
    for m in METRICS:
        assert not np.isnan(sharded.metrics[m]).any()
        assert np.allclose(sharded.metrics[m], single.metrics[m], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sharded.alpha, single.alpha)
    assert sharded.labels == single.labels
    assert not list(store.root.glob("plane/*.partial"))  # every rank cleaned up


@pytest.mark.slow
def test_launch_reports_a_failing_rank():
    assert launch(2, ["info", "/no/such/file.safetensors"]) == 2


def test_launcher_is_refused_from_python(ckpts, capsys):
    argv = ["plane", str(ckpts[0]), str(ckpts[2]), "--third", str(ckpts[1]), "--launcher", "2"]
    assert main(argv) == 2
    assert "command line" in capsys.readouterr().err


def test_launch_rejects_zero_processes():
    with pytest.raises(ValueError, match="at least 1"):
        launch(0, ["info"])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killing_the_launcher_kills_its_ranks(tmp_path):
    """The probe: SIGKILL of a ``--launcher 2`` parent left its ranks running."""
    a = REPO / "checkpoints" / "sgd" / "final.safetensors"
    cmd = [sys.executable, "-m", "landscape", "random-plane", str(a), "--grid", "200"]
    cmd += ["--launcher", "2", "--yes", "--store", str(tmp_path / "s")]
    parent = subprocess.Popen(cmd, cwd=REPO, env=_env(), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(ranks := _children(parent.pid)) < 2:
            assert parent.poll() is None, "the launcher ended before starting its ranks"
            assert time.monotonic() < deadline, "no ranks started"
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while any(alive(r) for r in ranks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(r) for r in ranks), "ranks outlived their launcher"
    finally:
        parent.kill()
        parent.wait()


def test_barrier_and_process_group_without_torchrun_are_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    barrier()  # no group: returns at once
    with process_group("cpu", timeout_s=60.0) as group:
        assert (group.rank, group.world) == (0, 1)
