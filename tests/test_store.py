"""Result store: keys, exact round trips, corruption detected and recomputed, partials, locking."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from landscape.store import (
    CorruptResultWarning,
    Store,
    Stored,
    atomic_write,
    home,
    result_key,
)

INPUTS = {"a": "0123456789abcdef", "b": "fedcba9876543210", "subset": None, "cfg": {"points": 5}}
DATA = {"t": [0.0, 0.5, 1.0], "loss": [0.1, 2.5, 0.2], "note": "ü", "nested": {"k": [1, None]}}


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "grid": rng.standard_normal((4, 5)).astype(np.float32),
        "loss": rng.standard_normal(7),  # float64
        "idx": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask": rng.random(5) > 0.5,
        "scalar": np.array(3.25),
    }


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _assert_arrays_equal(got, want):
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k])


# ---------------------------------------------------------------- keys


def test_result_key_stable_and_sensitive(monkeypatch):
    key = result_key("curve", 1, INPUTS)
    assert len(key) == 24 and int(key, 16) >= 0
    assert result_key("curve", 1, dict(reversed(list(INPUTS.items())))) == key  # order-free
    assert result_key("curve", 1, json.loads(json.dumps(INPUTS))) == key
    others = {
        result_key("plane", 1, INPUTS),
        result_key("curve", 1, {**INPUTS, "a": "0123456789abcdee"}),
        result_key("curve", 1, {**INPUTS, "subset": 256}),
        result_key("curve", 1, {**INPUTS, "cfg": {"points": 6}}),
        result_key("curve", 1, {**INPUTS, "cfg": {"points": 5.5}}),
        result_key("curve", 1, {k: v for k, v in INPUTS.items() if k != "subset"}),
        result_key("curve", 1, {**INPUTS, "extra": 0}),
    }
    assert key not in others and len(others) == 7
    assert result_key("curve", 2, INPUTS) != key  # a new version of the kind: old results stale


def test_home_and_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LANDSCAPE_HOME", str(tmp_path / "h"))
    assert home() == tmp_path / "h"
    assert Store().root == tmp_path / "h" / "results"
    assert Store(tmp_path / "r").root == tmp_path / "r"


# ---------------------------------------------------------------- save / load


def test_round_trip_with_arrays(tmp_path):
    store = Store(tmp_path)
    saved = store.save("curve", "k1", DATA, _arrays())
    assert isinstance(saved, Stored) and saved.data == DATA
    got = store.load("curve", "k1")
    assert got.kind == "curve" and got.key == "k1"
    assert got.data == DATA
    _assert_arrays_equal(got.arrays, _arrays())
    assert _files(tmp_path) == ["curve/k1.json", "curve/k1.npz"]  # no temp files left


def test_round_trip_without_arrays(tmp_path):
    store = Store(tmp_path)
    store.save("plane", "k2", {"x": 1.5, "nan": float("nan")})
    got = store.load("plane", "k2")
    assert got.arrays == {} and got.data["x"] == 1.5 and np.isnan(got.data["nan"])
    assert _files(tmp_path) == ["plane/k2.json"]


def test_overwrite_replaces_result(tmp_path):
    store = Store(tmp_path)
    store.save("curve", "k", {"v": 1}, {"a": np.zeros(3)})
    store.save("curve", "k", {"v": 2}, {"a": np.ones(3)})
    got = store.load("curve", "k")
    assert got.data == {"v": 2} and np.array_equal(got.arrays["a"], np.ones(3))


def test_load_missing_is_none(tmp_path):
    store = Store(tmp_path)
    assert store.load("curve", "nope") is None
    store.save("curve", "k", {"v": 1})
    assert store.load("plane", "k") is None  # kinds are separate


# ---------------------------------------------------------------- corruption


def _saved(tmp_path) -> tuple[Store, Path, Path]:
    store = Store(tmp_path)
    store.save("curve", "k", DATA, _arrays())
    return store, tmp_path / "curve" / "k.json", tmp_path / "curve" / "k.npz"


def _truncate_json(j: Path, n: Path) -> None:
    blob = j.read_bytes()
    j.write_bytes(blob[: len(blob) // 2])


def _empty_json(j: Path, n: Path) -> None:
    j.write_bytes(b"")


def _garbage_json(j: Path, n: Path) -> None:
    j.write_bytes(b"\xff\xfe\x00garbage")


def _wrong_structure_json(j: Path, n: Path) -> None:
    j.write_text('["body", "checksum"]')


def _edit_payload(j: Path, n: Path) -> None:
    doc = json.loads(j.read_bytes())
    data = doc["body"]["data"]
    if "loss" in data:
        data["loss"][1] = 0.0  # a plausible value, but not what was computed
    else:
        data["value"] = 0.0
    j.write_text(json.dumps(doc))


def _drop_npz_claim(j: Path, n: Path) -> None:
    doc = json.loads(j.read_bytes())
    doc["body"]["npz_sha256"] = None
    j.write_text(json.dumps(doc))


def _delete_npz(j: Path, n: Path) -> None:
    n.unlink()


def _modify_npz(j: Path, n: Path) -> None:
    blob = bytearray(n.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    n.write_bytes(bytes(blob))


def _swap_npz(j: Path, n: Path) -> None:
    Store(j.parent.parent).save("other", "x", {}, {"grid": np.zeros((4, 5), np.float32)})
    n.write_bytes((j.parent.parent / "other" / "x.npz").read_bytes())


CORRUPTIONS = {
    "truncated_json": (_truncate_json, "unreadable JSON"),
    "empty_json": (_empty_json, "unreadable JSON"),
    "garbage_json": (_garbage_json, "unreadable JSON"),
    "wrong_structure_json": (_wrong_structure_json, "unreadable JSON"),
    "edited_payload": (_edit_payload, "checksum mismatch"),
    "dropped_npz_claim": (_drop_npz_claim, "checksum mismatch"),
    "deleted_npz": (_delete_npz, "array file missing"),
    "modified_npz": (_modify_npz, "array file checksum mismatch"),
    "swapped_npz": (_swap_npz, "array file checksum mismatch"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corruption_warns_and_removes(tmp_path, corruption):
    damage, why = CORRUPTIONS[corruption]
    store, j, n = _saved(tmp_path)
    damage(j, n)
    with pytest.warns(CorruptResultWarning, match=f"curve/k is corrupt \\({why}"):
        assert store.load("curve", "k") is None
    assert not j.exists() and not n.exists()
    assert store.load("curve", "k") is None  # now simply absent, no second warning


def _count_calls(log: Path, result: float = 1.0, key: str = "k"):
    def compute():
        with open(log, "a") as f:
            f.write(key + "\n")
        return {"value": result}, {"grid": np.full((2, 2), result)}

    return compute


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_get_or_compute_once(tmp_path):
    store, log = Store(tmp_path / "s"), tmp_path / "log"
    key = result_key("curve", 1, INPUTS)
    first = store.get_or_compute("curve", key, _count_calls(log, key=key))
    assert _calls(log) == [key] and first.key == key
    assert first.data == {"value": 1.0}
    reordered = result_key("curve", 1, dict(reversed(list(INPUTS.items()))))
    second = store.get_or_compute("curve", reordered, _count_calls(log))
    assert _calls(log) == [key]  # served from the store
    assert second.data == first.data
    _assert_arrays_equal(second.arrays, first.arrays)
    store.get_or_compute(
        "curve", result_key("curve", 1, {**INPUTS, "subset": 64}), _count_calls(log)
    )
    assert len(_calls(log)) == 2  # different inputs, different result


@pytest.mark.parametrize("corruption", ["truncated_json", "edited_payload", "modified_npz"])
def test_get_or_compute_recomputes_after_corruption(tmp_path, corruption):
    store, log = Store(tmp_path / "s"), tmp_path / "log"
    store.get_or_compute("curve", result_key("curve", 1, INPUTS), _count_calls(log, 1.0))
    key = result_key("curve", 1, INPUTS)
    j, n = store._paths("curve", key)
    CORRUPTIONS[corruption][0](j, n)
    with pytest.warns(CorruptResultWarning):
        again = store.get_or_compute(
            "curve", result_key("curve", 1, INPUTS), _count_calls(log, 2.0)
        )
    assert len(_calls(log)) == 2
    assert again.data["value"] == 2.0  # the fresh result, never the damaged one
    reread = store.load("curve", key)
    assert reread.data["value"] == 2.0 and np.array_equal(
        reread.arrays["grid"], np.full((2, 2), 2.0)
    )


# ---------------------------------------------------------------- partial results


def _cols(index, offset=0.0) -> dict[str, np.ndarray]:
    index = np.asarray(index, dtype=float)
    return {"loss": index + offset, "acc": -index, "nan": np.full(len(index), np.nan)}


def _assert_partial(got, index, offset=0.0):
    got_index, got_cols = got
    order = np.argsort(got_index)
    np.testing.assert_array_equal(got_index[order], index)
    want = _cols(index, offset)
    assert set(got_cols) == set(want)
    for k in want:
        np.testing.assert_array_equal(got_cols[k][order], want[k])


def test_partial_round_trip_and_clear(tmp_path):
    store = Store(tmp_path)
    assert store.load_partial("plane", "k") is None
    store.append_partial("plane", "k", np.array([0, 1]), _cols([0, 1]))
    store.append_partial("plane", "k", np.array([5]), _cols([5]))  # later saves append
    _assert_partial(store.load_partial("plane", "k"), [0, 1, 5])
    assert _files(tmp_path) == ["plane/k.partial"]
    store.clear_partial("plane", "k")
    assert store.load_partial("plane", "k") is None
    store.clear_partial("plane", "k")  # clearing twice is fine


def test_save_clears_partial(tmp_path):
    store = Store(tmp_path)
    store.append_partial("plane", "k", np.array([0]), _cols([0]))
    store.save("plane", "k", {"done": True}, _arrays())
    assert store.load_partial("plane", "k") is None
    assert _files(tmp_path) == ["plane/k.json", "plane/k.npz"]


def test_partial_save_writes_only_the_new_records(tmp_path):
    """The file grows by a fixed size per new point: a save never rewrites earlier points."""
    store = Store(tmp_path)
    path = tmp_path / "plane" / "k.partial"
    store.append_partial("plane", "k", np.arange(10), _cols(range(10)))
    sizes = [path.stat().st_size]
    for start, count in ((10, 10), (20, 100), (120, 1)):
        before = path.read_bytes()
        store.append_partial(
            "plane", "k", np.arange(start, start + count), _cols(range(start, start + count))
        )
        sizes.append(path.stat().st_size)
        assert path.read_bytes().startswith(before)  # appended, earlier bytes untouched
    per_point = (sizes[1] - sizes[0]) / 10
    assert per_point == 5 * 8  # index, three values, 8 bytes of checksum
    assert sizes[2] - sizes[1] == 100 * per_point and sizes[3] - sizes[2] == per_point
    _assert_partial(store.load_partial("plane", "k"), list(range(121)))


def test_torn_last_record_is_ignored_and_overwritten(tmp_path):
    """A kill while appending leaves part of a record: resume ignores it, the next save fixes it."""
    store = Store(tmp_path)
    path = tmp_path / "plane" / "k.partial"
    store.append_partial("plane", "k", np.arange(3), _cols(range(3)))
    path.write_bytes(path.read_bytes()[:-5])  # the last record torn
    _assert_partial(store.load_partial("plane", "k"), [0, 1])
    store.append_partial("plane", "k", np.array([2, 3]), _cols([2, 3]))
    _assert_partial(store.load_partial("plane", "k"), [0, 1, 2, 3])


def test_damaged_record_is_skipped_with_a_warning(tmp_path):
    store = Store(tmp_path)
    path = tmp_path / "plane" / "k.partial"
    store.append_partial("plane", "k", np.arange(3), _cols(range(3)))
    blob = bytearray(path.read_bytes())
    blob[-40 - 10] ^= 0x01  # inside the second-to-last record (40 bytes each)
    path.write_bytes(bytes(blob))
    with pytest.warns(CorruptResultWarning, match="1 damaged records skipped"):
        _assert_partial(store.load_partial("plane", "k"), [0, 2])


def _flip_header(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[5] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[:10], _flip_header, lambda b: b"", lambda b: b"garbage\n" + b],
    ids=["truncated_header", "flipped_header", "empty", "garbage"],
)
def test_damaged_partial_is_discarded(tmp_path, damage):
    store = Store(tmp_path)
    store.append_partial("plane", "k", np.arange(3), _cols(range(3)))
    path = tmp_path / "plane" / "k.partial"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.warns(CorruptResultWarning, match="partial result plane/k is damaged"):
        assert store.load_partial("plane", "k") is None
    assert not path.exists()


def test_partial_with_other_columns_starts_over(tmp_path):
    store = Store(tmp_path)
    store.append_partial("plane", "k", np.arange(3), {"old": np.zeros(3)})
    store.append_partial("plane", "k", np.array([7]), _cols([7]))
    _assert_partial(store.load_partial("plane", "k"), [7])


# ---------------------------------------------------------------- stale temp files


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)  # reaped by run: no such process any more


def test_stale_temp_file_of_a_dead_writer_is_removed_on_the_next_run(tmp_path):
    """The probe: a killed writer's 633 MB ``.partial...tmp`` stayed; the next run removes it."""
    from landscape.studies import base

    store = Store(tmp_path)
    folder = tmp_path / "k"
    folder.mkdir()
    dead = folder / f".r.json.{_dead_pid()}.abcd1234.tmp"
    live = folder / f".r.json.{os.getpid()}.efgh5678.tmp"  # a writer still at work
    old = folder / ".r.json.zz9_x1y2.tmp"  # older code: no pid, a day old
    young = folder / ".r.json.aa1_b2c3.tmp"  # older code, just written: maybe in use
    for p in (dead, live, old, young):
        p.write_bytes(b"x" * 100)
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    kind = base.Kind("k", 1, dict, base.Result, lambda c, i: {}, lambda c, i, x: base.Result())
    base.run(kind, {}, None, store=store)
    assert not dead.exists() and not old.exists()
    assert live.exists() and young.exists()


def test_atomic_write_names_its_temp_file_with_its_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: seen.append(Path(a).name) or real(a, b))
    atomic_write(tmp_path / "f.json", b"{}")
    assert seen[0].startswith(f".f.json.{os.getpid()}.") and seen[0].endswith(".tmp")


# ---------------------------------------------------------------- artefacts


def test_artifact_round_trip_and_checks(tmp_path):
    store = Store(tmp_path)
    assert store.load_artifact("curve", "a.bin") is None  # never written: silently None
    path = store.save_artifact("curve", "a.bin", b"payload")
    assert store.load_artifact("curve", "a.bin") == b"payload"
    path.write_bytes(b"garbage")
    with pytest.warns(CorruptResultWarning, match="checksum mismatch"):
        assert store.load_artifact("curve", "a.bin") is None
    assert not path.exists()
    store.save_artifact("curve", "a.bin", b"payload")
    path.unlink()
    with pytest.warns(CorruptResultWarning, match="missing"):
        assert store.load_artifact("curve", "a.bin") is None


@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_result_with_a_damaged_artifact_is_corrupt(tmp_path, damage):
    store = Store(tmp_path)
    path = store.save_artifact("curve", "fit.bin", b"payload")
    store.save("curve", "k", DATA, _arrays(), artifacts=[path])
    assert store.load("curve", "k") is not None
    if damage == "garbage":
        path.write_bytes(b"garbage")
    else:
        path.unlink()
    with pytest.warns(CorruptResultWarning, match="artefact curve/fit.bin"):
        assert store.load("curve", "k") is None
    assert not (tmp_path / "curve" / "k.json").exists()


# ---------------------------------------------------------------- locking across processes


def _worker(root: str, log: str, barrier, results, no_lock: bool) -> None:
    if no_lock:  # control: the same race with the lock disabled

        @contextlib.contextmanager
        def no_op(*_args):
            yield

        Store.lock = no_op

    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        if no_lock:
            # Wait until the other process is also computing: proves the race happened.
            with contextlib.suppress(Exception):
                barrier.wait(timeout=10)
        else:
            time.sleep(0.2)
        return {"pid": mp.current_process().pid}, {"a": np.arange(3)}

    barrier.wait(timeout=10)
    got = Store(root).get_or_compute("plane", result_key("plane", 1, INPUTS), compute)
    results.put(got.data["pid"])


def _race(tmp_path: Path, *, no_lock: bool) -> tuple[list[str], list[int]]:
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    log = tmp_path / "log"
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path / "s"), str(log), barrier, results, no_lock))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    pids = [results.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(timeout=20)
        assert p.exitcode == 0
    return _calls(log), pids


def test_lock_computes_once_across_processes(tmp_path):
    calls, pids = _race(tmp_path, no_lock=False)
    assert len(calls) == 1
    assert pids[0] == pids[1]  # both got the one computed result


def test_race_without_lock_computes_twice(tmp_path):
    """Control for the test above: without the lock the same race does compute twice."""
    calls, pids = _race(tmp_path, no_lock=True)
    assert len(calls) == 2 and pids[0] != pids[1]
