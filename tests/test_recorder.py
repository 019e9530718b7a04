"""Recorder: a user's own loop writes the run folder that ``landscape train`` writes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import landscape
from landscape.checkpoints import CheckpointError, load_checkpoint
from landscape.data import batches, load_dataset
from landscape.models import build_model
from landscape.optim import GRDA
from landscape.pruning import snapshot_files
from landscape.train import TrainConfig, train

CFG = TrainConfig(
    arch="mlp", arch_kwargs={"widths": [6]}, epochs=2, batch_size=256, snapshots=5, lr=0.5
)  # 2 x 6 steps; snapshots at 0, 3, 6, 9, 12


def _own_loop(out, optimizer: str = "sgd", **opt_kwargs) -> landscape.train.Run:
    """The loop of landscape.train written by hand, recorded every 3 steps."""
    data = load_dataset("digits")
    torch.manual_seed(CFG.seed)
    model = build_model("mlp", in_shape=[1, 8, 8], num_classes=10, widths=[6])
    opt = (
        torch.optim.SGD(model.parameters(), lr=CFG.lr)
        if optimizer == "sgd"
        else GRDA(model.parameters(), lr=CFG.lr, **opt_kwargs)
    )
    arch = {"name": "mlp", "kwargs": {"widths": [6]}}
    rec = landscape.Recorder(model, opt, out=out, every=3, data=data, arch=arch, seed=CFG.seed)
    gen = torch.Generator().manual_seed(CFG.seed)
    for _ in range(CFG.epochs):
        model.train()
        for xb, yb in batches(data.x_train, data.y_train, 256, shuffle=True, generator=gen):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rec.step(loss, logits, yb)
    return rec.close()


def test_recorder_writes_what_train_writes(tmp_path):
    ref = train(CFG, tmp_path / "train")
    own = _own_loop(tmp_path / "own")
    assert set(own.record) == set(ref.record)
    assert own.record["final_hash"] == ref.record["final_hash"]  # the same weights
    assert own.record["arch"] == ref.record["arch"] and own.record["data"] == ref.record["data"]
    assert own.record["metrics"] == pytest.approx(ref.record["metrics"])
    for mine, theirs in zip(own.record["history"], ref.record["history"], strict=True):
        assert mine == pytest.approx(theirs)
    steps = [s["step"] for s in own.record["snapshots"]]
    assert steps == [s["step"] for s in ref.record["snapshots"]] == [0, 3, 6, 9, 12]
    assert [s["hash"] for s in own.record["snapshots"]] == [
        s["hash"] for s in ref.record["snapshots"]
    ]
    assert [s for s, _ in snapshot_files(tmp_path / "own")] == steps
    final = load_checkpoint(tmp_path / "own" / "final.safetensors")
    theirs = load_checkpoint(tmp_path / "train" / "final.safetensors")
    for key in ("arch", "data", "step", "epoch", "seed"):
        assert final.meta[key] == theirs.meta[key], key
    assert final.meta["metrics"] == pytest.approx(theirs.meta["metrics"])
    assert final.meta["optimizer"]["name"] == "sgd"
    assert json.loads((tmp_path / "own" / "run.json").read_text()) == own.record


@pytest.mark.parametrize(("momentum", "name"), [(0.0, "grda"), (0.5, "grdam")])
def test_grda_hyperparameters_are_read_off_the_optimizer(tmp_path, momentum, name):
    run = _own_loop(tmp_path / "g", "grda", c=0.05, mu=0.6, momentum=momentum)
    opt = run.record["optimizer"]
    assert opt["name"] == name and opt["hparams"]["c"] == 0.05 and opt["hparams"]["mu"] == 0.6
    assert opt["epochs"] == 2 and opt["batch_size"] == 256
    snap = load_checkpoint(tmp_path / "g" / "trajectory" / "step_000003.safetensors")
    assert snap.meta["optimizer"]["hparams"]["c"] == 0.05 and snap.meta["epoch"] == 0.5


def test_last_step_is_snapshotted_and_a_partial_epoch_closes(tmp_path):
    data = load_dataset("digits")
    model = build_model("mlp", in_shape=[1, 8, 8], num_classes=10)  # a name sizes it so too
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with landscape.Recorder(
        model, opt, out=tmp_path / "r", every=4, data=data, arch="mlp", batch_size=100
    ) as rec:
        for xb, yb in batches(data.x_train, data.y_train, 100):
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            rec.step()  # no loss given: the epoch's train metrics are evaluated
            if rec.steps == 5:
                break
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert [s["step"] for s in record["snapshots"]] == [0, 4, 5]
    assert len(record["history"]) == 1 and record["history"][0]["train_acc"] >= 0


def test_bad_arch_and_data_are_refused_before_training(tmp_path):
    data = load_dataset("digits")
    model = build_model("mlp", in_shape=[1, 8, 8], num_classes=10, widths=[6])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError):
        landscape.Recorder(model, opt, out=tmp_path / "a", data=data, arch="cnn")
    with pytest.raises(ValueError, match="root"):
        landscape.Recorder(model, opt, out=tmp_path / "b", data=_npz_dataset(tmp_path), arch="mlp")
    arch = {"name": "mlp", "kwargs": {"widths": [6]}}
    rec = landscape.Recorder(model, opt, out=tmp_path / "c", data=data, arch=arch)
    with pytest.raises(ValueError, match="labels"):
        rec.step()


def test_an_error_in_the_loop_leaves_no_finished_run(tmp_path):
    data = load_dataset("digits")
    model = build_model("mlp", in_shape=[1, 8, 8], num_classes=10, widths=[6])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    arch = {"name": "mlp", "kwargs": {"widths": [6]}}
    with pytest.raises(RuntimeError):
        with landscape.Recorder(model, opt, out=tmp_path / "r", data=data, arch=arch, every=1):
            raise RuntimeError("the loop failed")
    assert not (tmp_path / "r" / "run.json").exists()
    assert (tmp_path / "r" / "trajectory" / "step_000000.safetensors").exists()


def _npz_dataset(tmp_path):
    import numpy as np

    d = load_dataset("digits")
    path = tmp_path / "d.npz"
    np.savez(path, **{k: getattr(d, k).numpy() for k in ("x_train", "y_train", "x_test", "y_test")})
    return load_dataset("npz", root=path)
