"""The paper's scale: data subsets, one cache key per curve, imported endpoints matched by
parameters, class counts, given curves' settings and torch <= 0.4 BN files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import workspace
from landscape.checkpoints import Checkpoint, _outputs, checkpoint_dataset, load_checkpoint
from landscape.curves import BezierCurve, CurveConfig, curve_hash, load_curve, runs_between
from landscape.data import DataError, Dataset
from landscape.research import export_research, open_research
from landscape.studies import curve as curve_kind
from landscape.studies.base import study_key
from landscape.studies.common import _stratified, data_subset
from landscape.studies.plane import PlaneConfig
from tests.curve_checkpoints import curve_study
from tests.research_files import WRN, curve_file, make_model, make_points, save, tiny_cifar10

CIFAR = {"name": "cifar10", "split_seed": 0, "normalize": "resnet"}


def test_stratified_subset_takes_equal_shares_seeded():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    idx = _stratified(y, 9, seed=0)
    assert torch.bincount(y[idx]).tolist() == [4, 4, 1]  # class 2 gives its share away
    assert bool((idx[1:] > idx[:-1]).all())  # ascending, no repeats
    assert torch.equal(idx, _stratified(y, 9, seed=0))
    assert not torch.equal(_stratified(y, 9, seed=1), idx)
    assert torch.bincount(y[_stratified(y, 2, seed=0)]).tolist() == [1, 1]  # fullest first


def test_data_subset_is_stated_and_whole_splits_stay(digits):
    small = data_subset(digits, 100, 50, seed=3)
    assert (len(small.y_train), len(small.y_test)) == (100, 50)
    desc = small.describe()
    assert (desc["n_train"], desc["n_test"]) == (100, 50)
    assert desc["subset"] == {"train": 100, "test": 50, "seed": 3}
    assert torch.bincount(small.y_train).tolist() == [10] * 10
    assert data_subset(digits, None, 10**6) is digits  # nothing cut: same data, same key
    with pytest.raises(ValueError, match="train_subset must be >= 1"):
        PlaneConfig(train_subset=0)
    with pytest.raises(ValueError, match="test_subset must be >= 1"):
        CurveConfig(test_subset=0).check()


def test_curve_subsets_change_the_key_and_are_in_the_result(ends):
    a, b = ends
    inputs = curve_kind.CurveInputs(a, b)
    base = CurveConfig(epochs=0, points=3)
    sub = CurveConfig(epochs=0, points=3, train_subset=60, test_subset=30)
    keys = {
        study_key(curve_kind.KIND, c, inputs)
        for c in (base, sub, CurveConfig(epochs=0, points=3, train_subset=60, test_subset=30,
                                         subset_seed=1))
    }  # fmt: skip
    assert len(keys) == 3
    result = curve_study(a, b, sub)
    assert (result.n_train, result.n_test) == (60, 30)


def test_curve_hash_ignores_parameter_order(ends):
    a, b = ends
    model = a.build_model()
    names = [n for n, _ in model.named_parameters()]
    pa = {n: a.state[n] for n in names}
    pb = {n: b.state[n] for n in names}
    mid = {n: (pa[n] + pb[n]) / 2 + 0.01 for n in names}
    flip = list(reversed(names))
    one = BezierCurve(pa, pb, [mid])
    other = BezierCurve(*({n: d[n] for n in flip} for d in (pa, pb)), [{n: mid[n] for n in flip}])
    assert one.names != other.names and curve_hash(one) == curve_hash(other)
    assert curve_hash(one) != curve_hash(BezierCurve(pa, pb, order=2))


@pytest.fixture
def wrn_files(tmp_path):
    """Two WRN model files and the research curve file fitted between them (its own BN
    statistics: the endpoints it imports differ from the model files in buffers only)."""
    model = make_model(WRN, seed=0)
    points = make_points(model, 3)
    files = []
    for j in (0, 2):
        m = make_model(WRN, seed=10 + j)
        m.load_state_dict({**m.state_dict(), **points[j]})
        files.append(save(tmp_path / f"model{j}.pt", m.state_dict()))
    return files, curve_file(tmp_path / "curve.pt", model, points)


def test_imported_endpoints_match_model_files_by_parameters(wrn_files, tmp_path):
    (fa, fb), fc = wrn_files
    a, b = (open_research(f).points[0] for f in (fa, fb))
    found = open_research(fc)
    ia, ib = found.points
    assert (ia.hash, ib.hash) != (a.hash, b.hash)
    assert (ia.param_hash, ib.param_hash) == (a.param_hash, b.param_hash)
    # One key per curve: the .pt route and the imported .safetensors route agree.
    files = export_research(found, tmp_path / "out")
    sa, sb = (load_checkpoint(files[r]) for r in ("start", "end"))
    stored = load_curve(files["curve"], sa, sb)
    assert stored.names != found.curve.names  # sorted by safetensors, model order in the .pt
    assert curve_hash(stored) == curve_hash(found.curve)
    cfg = CurveConfig(points=3, data_root=str(tiny_cifar10(tmp_path / "cifar10", n=4)))
    key = study_key(curve_kind.KIND, cfg, curve_kind.CurveInputs(ia, ib, found.curve))
    assert key == study_key(curve_kind.KIND, cfg, curve_kind.CurveInputs(sa, sb, stored))
    assert key == study_key(curve_kind.KIND, cfg, curve_kind.CurveInputs(a, b, stored))
    # The curve file is found for (and loads with) the model files.
    assert runs_between(files["curve"], a, b) and not runs_between(files["curve"], b, a)
    load_curve(files["curve"], a, b)
    upload = workspace.save_upload(fc, "curve.pt")
    assert [str(p) for p in workspace.imported_curves(a, b)] == [upload.curve]
    assert workspace.imported_curves(b, a) == []


def test_given_curve_records_no_fitting_settings(wrn_files, tmp_path):
    _, fc = wrn_files
    found = open_research(fc)
    root = tiny_cifar10(tmp_path / "cifar10", n=4)
    a, b = found.points
    cfg = CurveConfig(points=2, data_root=str(root))
    result = curve_study(a, b, cfg, curve=found.curve)
    assert "epochs" not in result.config and "lr" not in result.config
    assert result.config["order"] == 2 and result.config["points"] == 2
    assert result.fit_history == []
    files = export_research(found, tmp_path / "out")
    from landscape.curves import curve_meta

    assert curve_meta(files["curve"])["config"] == {"order": 2}


def test_class_count_must_match_the_data(tmp_path, ends):
    wide = {**WRN, "kwargs": {**WRN["kwargs"], "num_classes": 101}}
    path = save(tmp_path / "wrn101.pt", make_model(wide).state_dict())
    ck = open_research(path).points[0]
    assert ck.meta["data"]["name"] == "cifar10"
    root = tiny_cifar10(tmp_path / "cifar10", n=4)
    with pytest.raises(DataError, match="outputs 101 classes but the data set cifar10 has 10"):
        checkpoint_dataset(ck, data_root=str(root))
    # No num_classes argument: the last Linear layer's out_features.
    a = ends[0]
    kwargs = {k: v for k, v in a.arch["kwargs"].items() if k != "num_classes"}
    bare = Checkpoint(a.state, {**a.meta, "arch": {"name": "cnn", "kwargs": kwargs}}, a.hash)
    assert _outputs(bare) == 10
    assert isinstance(checkpoint_dataset(bare), Dataset)


def test_bn_file_without_num_batches_tracked_loads_with_zeros(tmp_path):
    state = make_model(WRN).state_dict()
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(state)
    found = open_research(save(tmp_path / "old.pt", old))
    ck = found.points[0]
    assert set(ck.state) == set(state)
    counters = [v for k, v in ck.state.items() if k.endswith("num_batches_tracked")]
    assert all(int(v) == 0 for v in counters)
    assert "num_batches_tracked = 0" in ck.meta["filled"]
    plain = load_checkpoint(save(tmp_path / "plain.pt", old), arch=WRN)
    assert "torch <= 0.4" in plain.meta["filled"]
    assert "filled" not in open_research(save(tmp_path / "new.pt", state)).points[0].meta
    # A file missing anything else is still refused.
    broken = {k: v for k, v in old.items() if not k.endswith("running_mean")}
    with pytest.raises(ValueError, match="missing keys"):
        open_research(save(tmp_path / "broken.pt", broken))
    assert np.isfinite(float(ck.state[next(iter(ck.state))].sum()))
