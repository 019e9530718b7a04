"""The three-way study on the bundled defaults against its parts run one kind at a time."""

import numpy as np
import pytest

from landscape import verdicts
from landscape.checkpoints import load_checkpoint
from landscape.curves import CurveConfig
from landscape.store import Store
from landscape.studies import curve, find, plane, prune, run, threeway
from landscape.studies.plane import PlaneConfig, PlaneInputs
from landscape.workspace import default_checkpoints

CFG = threeway.ThreewayConfig(
    curve=CurveConfig(epochs=1, points=3, batch_size=256), plane=PlaneConfig(grid=3)
)


@pytest.fixture(scope="module")
def ends():
    folder = default_checkpoints()
    return (
        load_checkpoint(folder / "sgd" / "final.safetensors"),
        load_checkpoint(folder / "grda" / "final.safetensors"),
    )


def _parts(sgd, grda, store):
    """The twin, the three curves and the plane, each run on its own."""
    target = threeway.twin_sparsity(grda)
    twin = prune.prune(prune.PruneConfig(sparsity=target), prune.PruneInputs(sgd), store=store)
    mag = prune.pruned_checkpoint(twin)
    points = {"SGD": sgd, "gRDA": grda, "magnitude": mag}
    curves = [
        run(curve.KIND, CFG.curve, curve.CurveInputs(points[a], points[b]), store=store)
        for a, b in threeway.PAIRS
    ]
    return (
        target,
        twin,
        curves,
        run(plane.KIND, CFG.plane, PlaneInputs(sgd, grda, mag), store=store),
    )


@pytest.mark.slow
def test_threeway_table_matches_the_individual_kinds(ends, tmp_path):
    sgd, grda = ends
    store = Store(tmp_path / "a")
    res = run(threeway.KIND, CFG, threeway.ThreewayInputs(sgd, grda), store=store)
    target, twin, curves, plane_res = _parts(sgd, grda, Store(tmp_path / "b"))
    assert res.pairs == ["SGD-gRDA", "SGD-magnitude", "gRDA-magnitude"]
    assert res.sparsity == pytest.approx(target) and target > 0.1
    assert res.twin_sparsity == pytest.approx(twin.metrics["sparsity"])
    assert abs(res.twin_sparsity - target) < 1e-3 and res.pruned_hash == twin.hash
    for j, one in enumerate(curves):
        acc = np.asarray(one.curve["test_acc"])
        assert res.curve_barrier[j] == pytest.approx(one.path("curve").barrier().height, abs=1e-6)
        assert res.line_barrier[j] == pytest.approx(one.path("line").barrier().height, abs=1e-6)
        np.testing.assert_allclose(res.end_acc[j], [acc[0], acc[-1]], atol=1e-9)
        dip = max(min(acc[0], acc[-1]) - acc.min(), 0.0)
        assert res.acc_dip[j] == pytest.approx(dip, abs=1e-9)
    # Shared ends: SGD's accuracy in rows 0 and 1, gRDA's in 0 and 2, the twin's in 1 and 2.
    assert res.end_acc[0, 0] == res.end_acc[1, 0] and res.end_acc[0, 1] == res.end_acc[2, 0]
    assert res.end_acc[1, 1] == res.end_acc[2, 1]
    # The plane is the plane kind's own result: found under the key the table names.
    stored = store.find("plane", res.plane_key)
    assert stored is not None
    found = plane.KIND.result.from_arrays(stored.data, stored.arrays)
    np.testing.assert_allclose(
        found.metrics["train_loss"], plane_res.metrics["train_loss"], atol=1e-6
    )
    assert len(found.labels) == 3 and found.points_xy.shape == (3, 2)
    again = find(threeway.KIND, CFG, threeway.ThreewayInputs(sgd, grda), store=store)
    assert again is not None and again.plane_key == res.plane_key
    np.testing.assert_array_equal(again.curve_barrier, res.curve_barrier)
    out = verdicts.threeway(res)
    assert [v.title.split(":")[0] for v in out] == res.pairs
    for v, j in zip(out, range(3), strict=True):
        connected = res.curve_barrier[j] <= verdicts.CONNECTED_BARRIER * res.end_loss[j].mean()
        assert v.status == ("yes" if connected else "no")
