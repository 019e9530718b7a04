"""Model and curve files of the mode-connectivity research code, opened by landscape.research.

The files are synthetic but in exactly their layout: ``torch.save({"epoch", "model_state",
"optimizer_state"})``; curve files hold their CurveNet's keys (``net.<layer>.weight_<j>``, one
set of BN statistics, ``coeff_layer.binom/range/rev_range``), built here by renaming the keys of
our modules the way their curve classes name them.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoints import CheckpointError, load_checkpoint
from landscape.cli import main as cli
from landscape.curves import load_curve
from landscape.data import Dataset
from landscape.evaluate import EvalData
from landscape.models import build_model
from landscape.research import export_research, load_any, open_research, recognize
from landscape.store import Store
from landscape.studies.base import Context
from landscape.studies.curve import evaluate_path
from tests.research_files import (
    PRE,
    WRN,
    curve_file,
    grda_state,
    make_model,
    make_points,
    save,
    tiny_cifar10,
)


def test_model_file_with_grda_state_opens_with_recognised_arch(tmp_path):
    model = make_model(WRN)
    path = save(
        tmp_path / "checkpoint-7.pt", model.state_dict(), optimizer_state=grda_state(model, 390)
    )
    found = open_research(path)
    assert found.kind == "model" and found.recognized
    assert found.label == "WideResNet10x1"
    assert found.arch == {
        "name": "wideresnet",
        "kwargs": {"in_shape": [3, 32, 32], "depth": 10, "widen_factor": 1, "batch_norm": True,
                   "num_classes": 10},
    }  # fmt: skip
    assert found.epoch == 7
    assert found.optimizer == {"name": "grda", "lr": 0.1, "c": 0.001, "mu": 0.6, "steps": 390}
    ckpt = found.points[0]
    assert ckpt.meta["data"] == {"name": "cifar10", "split_seed": 0, "normalize": "resnet"}
    for name, value in model.state_dict().items():
        assert torch.equal(ckpt.state[name], value), name
    # The same weights as a plain state dict with the architecture given: same content hash.
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    assert load_checkpoint(plain, arch=found.arch).hash == ckpt.hash
    assert load_any(path).hash == ckpt.hash


def test_legacy_torch_format_opens(tmp_path):
    """Files written by torch < 1.6 (no zip container) load through weights_only too."""
    model = make_model(PRE)
    path = tmp_path / "old.pt"
    torch.save(
        {"epoch": 1, "model_state": model.state_dict()}, path, _use_new_zipfile_serialization=False
    )
    found = open_research(path)
    assert found.label == "PreResNet8" and found.arch["kwargs"]["num_classes"] == 100
    assert found.points[0].meta["data"]["name"] == "cifar100"


@pytest.mark.parametrize(
    ("arch", "label", "normalize"),
    [
        ({"name": "vgg", "kwargs": {"depth": 16, "batch_norm": False}}, "VGG16", "vgg"),
        ({"name": "vgg", "kwargs": {"depth": 16, "batch_norm": True}}, "VGG16BN", "vgg"),
        ({"name": "preresnet", "kwargs": {"depth": 47}}, "PreResNet47", "resnet"),
        (
            {"name": "wideresnet", "kwargs": {"depth": 16, "widen_factor": 2, "batch_norm": False}},
            "WideResNet16x2_nobn",
            "resnet",
        ),
    ],
)
def test_recognize_families(arch, label, normalize):
    rec = recognize(build_model(arch["name"], **arch["kwargs"]).state_dict())
    assert rec.label == label
    assert rec.data["normalize"] == normalize
    for key, value in arch["kwargs"].items():
        assert rec.arch["kwargs"][key] == value


def test_unrecognised_layout_and_mismatch_errors(tmp_path):
    odd = save(tmp_path / "odd.pt", {"head.weight": torch.zeros(3, 4)})
    with pytest.raises(CheckpointError, match="not recognised"):
        open_research(odd)
    # landscape's own mlp is recognised from its keys (and sized to digits).
    path = save(tmp_path / "mlp.pt", build_model("mlp").state_dict())
    assert open_research(path).arch == {
        "name": "mlp",
        "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10},  # defaults left out, as in a run
    }
    # With the architecture given, an unrecognised layout opens.
    found = open_research(path, arch={"name": "mlp", "kwargs": {}})
    assert found.arch["name"] == "mlp" and not found.recognized
    # A WideResNet file given as the wrong family fails on its keys, naming them.
    wrn = save(tmp_path / "wrn.pt", make_model(WRN).state_dict())
    with pytest.raises(CheckpointError, match="missing keys for preresnet"):
        open_research(wrn, arch={"name": "PreResNet110"})
    # A research name given by the user is resolved and completed from the file.
    found = open_research(
        wrn, arch={"name": "WideResNet28x10", "kwargs": {"depth": 10, "widen_factor": 1}}
    )
    assert found.arch["kwargs"]["num_classes"] == 10 and not found.recognized


def test_hostile_and_broken_files_change_nothing(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"epoch": 1, "model_state": Boom()}, f)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        open_research(evil)
    assert not (tmp_path / "pwned").exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="refused to unpickle|not a readable") as err:
        open_research(garbage)
    assert "weights_only" not in str(err.value)  # never torch's advice to switch it off
    nan = make_model(WRN).state_dict()
    nan["linear.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        open_research(save(tmp_path / "nan.pt", nan))
    with pytest.raises(CheckpointError, match="size limit"):
        open_research(save(tmp_path / "big.pt", make_model(WRN).state_dict()), max_bytes=1000)


def _tiny_cifar(n: int = 24) -> Dataset:
    g = torch.Generator().manual_seed(3)
    return Dataset(
        name="cifar10",
        x_train=torch.randn(n, 3, 32, 32, generator=g),
        y_train=torch.randint(0, 10, (n,), generator=g),
        x_test=torch.randn(n, 3, 32, 32, generator=g),
        y_test=torch.randint(0, 10, (n,), generator=g),
        num_classes=10,
        split_seed=0,
    )


def _naive_metrics(model: nn.Module, point: dict, data: Dataset) -> tuple[float, float]:
    """Train loss and test accuracy at ``point`` the plain way: load, recompute BN, evaluate."""
    net = make_model(WRN, seed=5)  # other weights: everything used must come from ``point``
    net.load_state_dict({**dict(model.named_buffers()), **point}, strict=True)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(data.x_train)
        net.eval()
        loss = F.cross_entropy(net(data.x_train), data.y_train).item()
        acc = (net(data.x_test).argmax(1) == data.y_test).float().mean().item()
    return loss, acc


def test_curve_file_converts_and_evaluates_like_its_stored_bends(tmp_path):
    model = make_model(WRN)
    k = 4  # their --num_bends 4: endpoints and 2 bends
    points = make_points(model, k)
    path = curve_file(tmp_path / "curve-50.pt", model, points)
    found = open_research(path)
    assert found.kind == "curve" and found.label == "WideResNet10x1"
    assert found.curve.order == k - 1
    # Endpoints: control points 0 and k-1 with the file's BN statistics.
    for ckpt, point in zip(found.points, (points[0], points[-1]), strict=True):
        for name, value in point.items():
            assert torch.equal(ckpt.state[name], value)
        assert torch.equal(ckpt.state["bn1.running_var"], model.bn1.running_var)
    # phi(t) = sum_j C(3, j) t^j (1 - t)^(3 - j) w_j, by hand from the stored control points.
    for t in (0.0, 0.5, 1.0):
        got = found.curve.point(t)
        for name in points[0]:
            want = sum(
                math.comb(k - 1, j) * t**j * (1 - t) ** (k - 1 - j) * points[j][name]
                for j in range(k)
            )
            torch.testing.assert_close(got[name], want, rtol=1e-6, atol=1e-6)
    data = _tiny_cifar()
    context = Context(Store(tmp_path / "store"), "curve", "", None, (0, 1))
    ts = np.array([0.0, 0.5, 1.0])
    res = evaluate_path(model, found.curve, ts, EvalData.from_dataset(data), context)
    for i, t in enumerate((0.0, 0.5, 1.0)):
        point = {
            name: sum(
                math.comb(k - 1, j) * t**j * (1 - t) ** (k - 1 - j) * points[j][name]
                for j in range(k)
            )
            for name in points[0]
        }
        loss, acc = _naive_metrics(model, point, data)
        assert res.columns["train_loss"][i] == pytest.approx(loss, rel=1e-4)
        assert res.columns["test_acc"][i] == pytest.approx(acc)


def test_vgg_curve_names_and_export_round_trip(tmp_path):
    """VGG's fc1..fc3 map to classifier.1/4/6; exported files reload as landscape's curve."""
    arch = {"name": "vgg", "kwargs": {"depth": 16}}
    torch.manual_seed(0)
    model = build_model(arch["name"], **arch["kwargs"])
    points = make_points(model, 3)
    found = open_research(curve_file(tmp_path / "vgg-curve.pt", model, points))
    assert found.label == "VGG16"
    files = export_research(found, tmp_path / "out")
    a, b = load_checkpoint(files["start"]), load_checkpoint(files["end"])
    assert (a.hash, b.hash) == (found.points[0].hash, found.points[1].hash)
    assert a.meta["source"]["point"] == 0 and b.meta["source"]["point"] == 2
    curve = load_curve(files["curve"], a, b)
    assert torch.equal(curve.bends[0]["classifier.4.weight"], points[1]["classifier.4.weight"])
    assert torch.equal(curve.bends[0]["layer_blocks.4.2.bias"], points[1]["layer_blocks.4.2.bias"])


def test_inconsistent_curves_are_refused(tmp_path):
    model = make_model(WRN)
    path = curve_file(tmp_path / "c.pt", model, make_points(model, 3))
    state = torch.load(path, weights_only=True)["model_state"]
    missing = dict(state)
    del missing["net.linear.weight_1"]
    with pytest.raises(CheckpointError, match="control point 1 differs"):
        open_research(save(tmp_path / "missing.pt", missing))
    short = {k: v for k, v in state.items() if not k.endswith("_2")}
    with pytest.raises(CheckpointError, match="3 control points in coeff_layer"):
        open_research(save(tmp_path / "short.pt", short))
    with pytest.raises(CheckpointError, match="pass it with --curve"):
        load_any(path)


def test_cli_info_import_and_curve_on_research_files(tmp_path, capsys):
    model = make_model(WRN)
    model_file = save(
        tmp_path / "grda.pt", model.state_dict(), optimizer_state=grda_state(model, 12)
    )
    assert cli(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "WideResNet10x1" in out and "recognised from its keys" in out and '"steps": 12' in out
    curve = curve_file(tmp_path / "curve.pt", model, make_points(model, 3))
    assert cli(["import", str(curve), "--out", str(tmp_path / "imp")]) == 0
    assert {p.name for p in (tmp_path / "imp").iterdir()} == {
        "start.safetensors",
        "end.safetensors",
        "curve.safetensors",
    }
    assert cli(["curve", str(model_file), "--out", str(tmp_path / "x")]) == 2
    assert "give checkpoints A and B" in capsys.readouterr().err
    np.testing.assert_equal(
        load_checkpoint(tmp_path / "imp" / "start.safetensors").meta["data"]["normalize"],
        "resnet",
    )


def test_cli_curve_and_plane_take_a_research_curve_and_its_endpoints(tmp_path, capsys):
    """`--curve file.pt` alone: A and B are the curve's own endpoints; the data folder is given."""
    root = tiny_cifar10(tmp_path / "cifar")
    model = make_model(WRN)
    pts = make_points(model, 3)
    curve = curve_file(tmp_path / "curve.pt", model, pts)
    store = str(tmp_path / "store")
    common = ["--curve", str(curve), "--data-root", str(root), "--store", store]
    assert cli(["curve", *common, "--points", "3", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "curve:t=0 (t=0) -> curve:t=1 (t=1), order 2" in out
    rows = (tmp_path / "c" / "path.csv").read_text().splitlines()
    assert rows[0].startswith("t,curve_train_loss") and len(rows) == 4
    # The endpoints given as their own model files: the same curve, the same numbers.
    a = save(tmp_path / "a.pt", {**model.state_dict(), **pts[0]})
    b = save(tmp_path / "b.pt", {**model.state_dict(), **pts[2]})
    args = [str(a), str(b), *common, "--points", "3", "--out", str(tmp_path / "d")]
    assert cli(["curve", *args]) == 0
    want = (tmp_path / "c" / "path.csv").read_text().splitlines()[1].split(",")[:5]
    got = (tmp_path / "d" / "path.csv").read_text().splitlines()[1].split(",")[:5]
    assert got == want
    assert cli(["plane", *common, "--grid", "2", "--points-on-curve", "3"]) == 0
