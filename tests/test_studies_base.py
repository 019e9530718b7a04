"""The study-kind framework: typed results round-trip, keys are pure, find never computes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from landscape.store import Store
from landscape.studies.base import Context, Kind, Result, config_identity, find, run, study_key


@dataclass
class ToyConfig:
    n: int = 3  # points
    device: str = "cpu"  # never part of a key


@dataclass
class ToyResult(Result):
    x: np.ndarray
    metrics: dict[str, np.ndarray]
    label: str
    norms: list[float]
    extra: np.ndarray | None = None


CALLS: list[int] = []


def _compute(cfg: ToyConfig, inputs: float, context: Context) -> ToyResult:
    CALLS.append(cfg.n)
    x = np.arange(cfg.n) * inputs
    return ToyResult(x, {"loss": x**2, "acc": -x}, f"toy{cfg.n}", [1.0, 2.5])


def _identity(cfg: ToyConfig, inputs: float) -> dict:
    return {"inputs": inputs, **config_identity(cfg)}


TOY = Kind("toy", 1, ToyConfig, ToyResult, _identity, _compute)


def test_result_round_trip_splits_arrays_from_json():
    r = ToyResult(np.arange(3.0), {"loss": np.ones(2), "acc": np.zeros(2)}, "a", [0.5], None)
    info, arrays = r.to_arrays()
    assert set(arrays) == {"x", "metrics.loss", "metrics.acc"}
    assert info == {"label": "a", "norms": [0.5], "extra": None}
    back = ToyResult.from_arrays(info, arrays)
    np.testing.assert_array_equal(back.x, r.x)
    assert set(back.metrics) == {"loss", "acc"} and back.extra is None and back.label == "a"
    with_extra = replace(r, extra=np.eye(2))
    info, arrays = with_extra.to_arrays()
    np.testing.assert_array_equal(ToyResult.from_arrays(info, arrays).extra, np.eye(2))


def test_find_never_computes_and_run_computes_once(tmp_path):
    CALLS.clear()
    store = Store(tmp_path)
    cfg = ToyConfig()
    assert find(TOY, cfg, 2.0, store=store) is None and CALLS == []
    first = run(TOY, cfg, 2.0, store=store)
    again = run(TOY, cfg, 2.0, store=store)
    found = find(TOY, cfg, 2.0, store=store)
    assert CALLS == [3]
    for r in (again, found):
        np.testing.assert_array_equal(r.metrics["loss"], first.metrics["loss"])
        assert r.label == "toy3" and r.norms == [1.0, 2.5]
    # the device never changes a key; a setting that changes the numbers does
    assert study_key(TOY, replace(cfg, device="cuda"), 2.0) == study_key(TOY, cfg, 2.0)
    assert study_key(TOY, replace(cfg, n=4), 2.0) != study_key(TOY, cfg, 2.0)
    stored = store.load("toy", study_key(TOY, cfg, 2.0))
    assert stored.data["inputs"] == {"inputs": 2.0, "n": 3}


def test_new_kind_version_makes_results_stale(tmp_path):
    CALLS.clear()
    store = Store(tmp_path)
    run(TOY, ToyConfig(), 1.0, store=store)
    newer = replace(TOY, version=2)
    assert find(newer, ToyConfig(), 1.0, store=store) is None
    run(newer, ToyConfig(), 1.0, store=store)
    assert CALLS == [3, 3]


def test_identity_errors_raise_before_anything_is_stored(tmp_path):
    def strict(cfg: ToyConfig, inputs: float) -> dict:
        if cfg.n < 1:
            raise ValueError(f"n must be >= 1, got {cfg.n}")
        return {"n": cfg.n}

    kind = replace(TOY, identity=strict)
    with pytest.raises(ValueError, match="n must be >= 1"):
        run(kind, ToyConfig(n=0), 1.0, store=Store(tmp_path))
    assert not (tmp_path / "toy").exists()
