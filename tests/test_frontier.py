"""The connectivity frontier of a sweep against curves fitted one pair at a time."""

import numpy as np
import pytest

from landscape import verdicts
from landscape.checkpoints import load_checkpoint
from landscape.curves import CurveConfig
from landscape.store import Store
from landscape.studies import Context, curve, find, frontier, run, study_key
from landscape.sweep import SweepConfig, run_sweep
from landscape.train import TrainConfig, train

TINY = {"arch": "mlp", "arch_kwargs": {"widths": [8]}, "epochs": 1, "snapshots": 2}
CFG = CurveConfig(epochs=1, points=3, batch_size=256)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2 x 2 (c, mu) sweep with its magnitude-pruned twins (8 models) and its SGD run."""
    root = tmp_path_factory.mktemp("frontier")
    sgd = train(TrainConfig(**TINY), root / "sgd")
    base = TrainConfig(**TINY, optimizer="grda", lr=0.1)
    cfg = SweepConfig(c=[0.02, 0.2], mu=[0.6, 0.7], train=base, magnitude=True, sgd=str(sgd.path))
    run_sweep(cfg, root / "sweep")
    return root / "sweep", load_checkpoint(sgd.path / "final.safetensors")


def _one_by_one(folder, sgd, store):
    """Each row's curve study on its own, as `landscape curve SGD MODEL` runs it."""
    from landscape.sweep import load_sweep

    rows = load_sweep(folder).rows
    return rows, [
        run(
            curve.KIND, CFG, curve.CurveInputs(sgd, frontier.row_checkpoint(folder, r)), store=store
        )
        for r in rows
    ]


@pytest.mark.slow
def test_frontier_matches_curves_fitted_one_by_one(sweep, tmp_path):
    folder, sgd = sweep
    inputs = frontier.FrontierInputs(folder, sgd)
    res = run(frontier.KIND, CFG, inputs, store=Store(tmp_path / "a"))
    rows, singles = _one_by_one(folder, sgd, Store(tmp_path / "b"))
    assert len(rows) == 8 and res.method == [r["kind"] for r in rows]
    assert res.method.count("grda") == res.method.count("magnitude") == 4
    np.testing.assert_array_equal(res.sparsity, [r["sparsity"] for r in rows])
    for i, one in enumerate(singles):
        c, line = one.path("curve"), one.path("line")
        assert res.curve_train[i] == pytest.approx(c.barrier("train_loss").height, abs=1e-6)
        assert res.curve_test[i] == pytest.approx(c.barrier("test_loss").height, abs=1e-6)
        assert res.line_train[i] == pytest.approx(line.barrier("train_loss").height, abs=1e-6)
        assert res.line_test[i] == pytest.approx(line.barrier("test_loss").height, abs=1e-6)
        ends = [one.curve["train_loss"][0], one.curve["train_loss"][-1]]
        np.testing.assert_allclose(res.end_train[i], ends, atol=1e-6)
        assert res.end_train[i][0] == pytest.approx(res.end_train[0][0], abs=1e-6)  # SGD end
    assert res.n_test == singles[0].n_test
    # Each pair is the curve kind's own stored result: found, not recomputed.
    for key, r in zip(res.curve_keys, rows, strict=True):
        ci = curve.CurveInputs(sgd, frontier.row_checkpoint(folder, r))
        assert key == study_key(curve.KIND, CFG, ci)
        assert find(curve.KIND, CFG, ci, store=Store(tmp_path / "a")) is not None
    # Verdicts: one per method, each naming where (or whether) it stops being connected.
    found = verdicts.frontier(res)
    assert [v.title.split(":")[0] for v in found] == ["gRDA", "magnitude-pruned SGD"]
    for v, method in zip(found, ("grda", "magnitude"), strict=True):
        idx = [i for i, m in enumerate(res.method) if m == method]
        rel = [res.curve_train[i] / np.mean(res.end_train[i]) for i in idx]
        assert (v.status == "yes") == all(r <= verdicts.CONNECTED_BARRIER for r in rel)


@pytest.mark.slow
def test_frontier_resumes_per_pair_and_shards_rows(sweep, tmp_path, monkeypatch):
    folder, sgd = sweep
    store = Store(tmp_path / "s")
    inputs = frontier.FrontierInputs(folder, sgd)
    # Two pairs studied before (an interrupted frontier): reused, not refitted.
    pairs = frontier.row_pairs(inputs)
    early = [run(curve.KIND, CFG, ci, store=store) for _, ci in pairs[:2]]
    fits = []
    monkeypatch.setattr(curve, "fit_curve", _counting(curve.fit_curve, fits))
    res = run(frontier.KIND, CFG, inputs, store=store)
    assert len(fits) == 6  # the other six pairs
    assert res.curve_train[1] == early[1].path("curve").barrier("train_loss").height
    # Rank 1 of 2 fits rows 1, 3, 5, 7 only; the others come from the gather.
    full = {i: frontier._summary(run(curve.KIND, CFG, ci, store=store))
            for i, (_, ci) in enumerate(pairs)}  # fmt: skip
    seen = []

    def gather(mine, world):
        seen.append((sorted(mine), world))
        return full

    monkeypatch.setattr(frontier, "_gather", gather)
    key = study_key(frontier.KIND, CFG, inputs)
    other = Store(tmp_path / "rank1")
    sharded = frontier.KIND.compute(CFG, inputs, Context(other, "frontier", key, shard=(1, 2)))
    assert seen == [([1, 3, 5, 7], 2)]
    assert len(list((other.root / "curve").glob("*.json"))) == 4
    np.testing.assert_array_equal(sharded.curve_train, res.curve_train)


def _counting(fn, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapped


def test_frontier_verdict_names_the_breaking_sparsity():
    n = 4
    res = frontier.FrontierResult(
        method=["grda", "grda", "magnitude", "magnitude"],
        c=np.zeros(n), mu=np.zeros(n), seed=np.zeros(n, dtype=int),
        sparsity=np.array([0.5, 0.9, 0.5, 0.9]),
        curve_train=np.array([0.01, 0.02, 0.01, 0.5]),
        curve_test=np.zeros(n), line_train=np.array([0.3, 0.4, 0.2, 1.0]), line_test=np.zeros(n),
        end_train=np.ones((n, 2)), end_test=np.ones((n, 2)), end_acc=np.ones((n, 2)),
        curve_acc_min=np.ones(n), paths=[""] * n, curve_keys=[""] * n, sgd={},
    )  # fmt: skip
    g, m = verdicts.frontier(res)
    assert g.status == "yes" and "up to sparsity 0.900" in g.sentence
    assert m.status == "no" and m.value == 0.9
    assert "stops being connected at sparsity 0.900" in m.sentence
    assert "connected up to sparsity 0.500" in m.sentence and "50%" in m.sentence


def test_each_model_is_read_once_per_frontier(sweep, tmp_path, monkeypatch):
    """The key and the computation share the row checkpoints: one read of each per run."""
    folder, sgd = sweep
    reads = []
    monkeypatch.setattr(frontier, "load_checkpoint", _counting(load_checkpoint, reads))
    res = run(frontier.KIND, CFG, frontier.FrontierInputs(folder, sgd), store=Store(tmp_path))
    assert len(res.paths) == 8 and len(reads) == 8
