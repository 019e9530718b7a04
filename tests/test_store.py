"""Result store: keys, exact round trips, corruption detected and recomputed, partials, locking."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

from landscape.store import CorruptResultWarning, Store, Stored, home, result_key

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


def test_partial_round_trip_and_clear(tmp_path):
    store = Store(tmp_path)
    assert store.load_partial("plane", "k") is None
    store.save_partial("plane", "k", {"done": np.array([1, 1, 0]), "loss": np.arange(3.0)})
    store.save_partial("plane", "k", _arrays())  # a later checkpoint replaces the earlier
    _assert_arrays_equal(store.load_partial("plane", "k"), _arrays())
    assert _files(tmp_path) == ["plane/k.partial.npz"]
    store.clear_partial("plane", "k")
    assert store.load_partial("plane", "k") is None
    store.clear_partial("plane", "k")  # clearing twice is fine


def test_save_clears_partial(tmp_path):
    store = Store(tmp_path)
    store.save_partial("plane", "k", _arrays())
    store.save("plane", "k", {"done": True}, _arrays())
    assert store.load_partial("plane", "k") is None
    assert _files(tmp_path) == ["plane/k.json", "plane/k.npz"]


def _cut(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def _flip(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[-10] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize(
    "damage",
    [_cut, _flip, lambda b: b"", lambda b: b.split(b"\n", 1)[1]],
    ids=["truncated", "flipped", "empty", "no_checksum"],
)
def test_damaged_partial_is_discarded(tmp_path, damage):
    store = Store(tmp_path)
    store.save_partial("plane", "k", _arrays())
    path = tmp_path / "plane" / "k.partial.npz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.warns(CorruptResultWarning, match="partial result plane/k is damaged"):
        assert store.load_partial("plane", "k") is None
    assert not path.exists()


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
