import json
from pathlib import Path

import pytest
import torch

from landscape.checkpoints import load_checkpoint
from landscape.data import load_dataset
from landscape.evaluate import EvalData
from landscape.models import prunable_names
from landscape.params import sparsity
from landscape.train import Loop, TrainConfig, lr_factor, make_initial, train
from tests.reference import evaluate

REPO = Path(__file__).resolve().parent.parent
TINY = {"arch": "mlp", "arch_kwargs": {"widths": [16]}, "epochs": 2, "batch_size": 128}


@pytest.mark.parametrize(
    "progress, expected",
    [(0.0, 1.0), (0.5, 1.0), (0.7, 1.0 - 0.99 * 0.5), (0.9, 0.01), (0.95, 0.01), (1.0, 0.01)],
)
def test_paper_schedule_closed_form(progress, expected):
    assert lr_factor("paper", progress) == pytest.approx(expected)
    assert lr_factor("const", progress) == 1.0


def test_unknown_schedule_and_optimizer(tmp_path):
    with pytest.raises(ValueError, match="lr schedule"):
        lr_factor("cosine", 0.1)
    with pytest.raises(ValueError, match="optimizer"):
        train(TrainConfig(**TINY, optimizer="adam"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_run_folder_contents_and_metrics(tmp_path):
    make_initial(TrainConfig(**TINY), tmp_path / "init.safetensors")
    cfg = TrainConfig(**TINY, snapshots=4, init=str(tmp_path / "init.safetensors"))
    run = train(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["metrics"] == run.record["metrics"]
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    files = sorted((tmp_path / "run" / "trajectory").glob("step_*.safetensors"))
    assert len(files) == 4 == len(record["snapshots"])
    init = load_checkpoint(tmp_path / "init.safetensors")
    first = load_checkpoint(files[0])
    final = load_checkpoint(tmp_path / "run" / "final.safetensors")
    assert first.hash == init.hash == record["init_hash"]  # the first snapshot is the start
    assert load_checkpoint(files[-1]).hash == final.hash == record["final_hash"]
    assert record["snapshots"][-1]["step"] == record["steps"] == 2 * 11  # ceil(1347/128) = 11
    # Final metrics equal an independent evaluation of the saved checkpoint.
    data = load_dataset("digits")
    model = final.build_model()
    params = dict(model.named_parameters())
    te_loss, te_acc = evaluate(model, params, dict(model.named_buffers()), data.x_test, data.y_test)
    assert record["metrics"]["test_loss"] == pytest.approx(te_loss, abs=1e-6)
    assert record["metrics"]["test_acc"] == pytest.approx(te_acc)
    assert final.meta["optimizer"]["name"] == "sgd"
    assert final.meta["data"] == {"name": "digits", "split_seed": 0}


def test_failed_run_record_write_leaves_no_record_and_no_temp(tmp_path, monkeypatch):
    import landscape.store

    real = landscape.store.os.replace

    def replace(src, dst):
        if str(dst).endswith("run.json"):
            raise OSError("disk full")
        return real(src, dst)

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")  # an earlier run's record must not survive a retrain
    monkeypatch.setattr(landscape.store.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        train(TrainConfig(**TINY, snapshots=0), out)
    assert sorted(p.name for p in out.iterdir()) == ["final.safetensors", "trajectory"]


def test_failed_curve_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    from landscape.checkpoints import save_checkpoint
    from landscape.curves import BezierCurve, CurveConfig, load_curve, save_curve
    from landscape.models import build_model

    arch = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "widths": [4]}}
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(arch["name"], **arch["kwargs"])
        save_checkpoint(tmp_path / f"{seed}.safetensors", model, {"arch": arch})
        ends.append(load_checkpoint(tmp_path / f"{seed}.safetensors"))
    curve = BezierCurve(ends[0].state, ends[1].state)
    monkeypatch.setattr("landscape.store.os.replace", _disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_curve(tmp_path / "c.safetensors", curve, *ends, CurveConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.safetensors", "1.safetensors"]
    monkeypatch.undo()
    assert load_curve(save_curve(tmp_path / "c.safetensors", curve, *ends, CurveConfig()), *ends)


def _disk_full(*args, **kwargs):
    raise OSError("disk full")


def test_loop_matches_a_hand_written_sgd_loop():
    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    models = [torch.nn.Linear(4, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    batches = [(x[i : i + 6], y[i : i + 6]) for i in range(0, 20, 6)]
    for xb, yb in batches:
        if len(yb) < 6:
            continue
        loss = torch.nn.functional.cross_entropy(models[0](xb), yb)
        opts[0].zero_grad()
        loss.backward()
        opts[0].step()
    seen, calls = [], []
    loop = Loop(opts[1], total=4, progress=lambda *a: calls.append(a))
    loop.epoch(
        lambda xb, yb: None if len(yb) < 6 else models[1](xb),  # the short last batch skipped
        batches + [(x[:2], y[:2])],
        after_step=lambda step, loss, logits, yb: seen.append((step, len(yb))),
        stage="s",
    )
    assert torch.equal(models[0].weight, models[1].weight)
    assert seen == [(1, 6), (2, 6), (3, 6)] and loop.step == 5  # 4 batches counted, 1 skipped
    assert calls == [(1, 4, "s"), (2, 4, "s"), (3, 4, "s")]


def test_training_is_deterministic(tmp_path):
    a = train(TrainConfig(**TINY, seed=3, snapshots=0), tmp_path / "a")
    b = train(TrainConfig(**TINY, seed=3, snapshots=0), tmp_path / "b")
    c = train(TrainConfig(**TINY, seed=4, snapshots=0), tmp_path / "c")
    assert a.record["final_hash"] == b.record["final_hash"] != c.record["final_hash"]


def test_grda_gives_sparsity_and_grdam_name(tmp_path):
    run = train(TrainConfig(**TINY, optimizer="grda", c=0.3, mu=0.7, momentum=0.5), tmp_path / "g")
    ckpt = load_checkpoint(tmp_path / "g" / "final.safetensors")
    model = ckpt.build_model()
    sp = sparsity(ckpt.state, prunable_names(model))
    assert sp["zero"] > 0.3
    assert run.record["metrics"]["sparsity"] == pytest.approx(sp["zero"])
    assert ckpt.meta["optimizer"]["name"] == "grdam"
    assert ckpt.meta["optimizer"]["hparams"]["c"] == 0.3


def test_init_from_other_architecture_is_refused(tmp_path):
    make_initial(TrainConfig(**TINY), tmp_path / "init.safetensors")
    cfg = TrainConfig(
        **{**TINY, "arch_kwargs": {"widths": [8]}}, init=str(tmp_path / "init.safetensors")
    )
    with pytest.raises(ValueError, match="--init"):
        train(cfg, tmp_path / "run")


def test_default_checkpoints_meet_targets():
    size = sum(p.stat().st_size for p in (REPO / "checkpoints").rglob("*") if p.is_file())
    assert size <= 5 * 1024 * 1024
    sgd = load_checkpoint(REPO / "checkpoints" / "sgd" / "final.safetensors")
    grda = load_checkpoint(REPO / "checkpoints" / "grda" / "final.safetensors")
    init = load_checkpoint(REPO / "checkpoints" / "init.safetensors")
    model = grda.build_model()
    assert sparsity(grda.state, prunable_names(model))["zero"] >= 0.80
    data = EvalData.from_dataset(load_dataset("digits"))
    accs = {}
    for name, ck in (("sgd", sgd), ("grda", grda)):
        m = ck.build_model()
        accs[name] = evaluate(
            m, dict(m.named_parameters()), dict(m.named_buffers()), data.x_test, data.y_test
        )[1]
    assert accs["grda"] >= accs["sgd"] - 0.02
    for run in ("sgd", "grda"):
        record = json.loads((REPO / "checkpoints" / run / "run.json").read_text())
        assert record["init_hash"] == init.hash  # both start from the shared initial weights


@pytest.mark.slow
def test_default_runs_are_reproduced(tmp_path):
    """Re-running the documented command gives the bundled checkpoints bit for bit."""
    from landscape.cli import main

    assert main(["defaults", "--out", str(tmp_path)]) == 0
    for run in ("sgd", "grda"):
        bundled = json.loads((REPO / "checkpoints" / run / "run.json").read_text())
        fresh = json.loads((tmp_path / run / "run.json").read_text())
        assert fresh["final_hash"] == bundled["final_hash"]
        assert fresh["metrics"] == pytest.approx(bundled["metrics"], abs=1e-6)
        assert [s["hash"] for s in fresh["snapshots"]] == [s["hash"] for s in bundled["snapshots"]]
    assert torch.equal(
        load_checkpoint(tmp_path / "init.safetensors").state["classifier.2.weight"],
        load_checkpoint(REPO / "checkpoints" / "init.safetensors").state["classifier.2.weight"],
    )


def test_training_on_the_requested_device(tmp_path, device):
    """`pytest --device cuda` trains on the GPU; the checkpoint comes back as CPU tensors."""
    cpu = train(TrainConfig(**TINY, optimizer="grda", c=0.05, snapshots=0), tmp_path / "cpu")
    dev = train(
        TrainConfig(**TINY, optimizer="grda", c=0.05, snapshots=0, device=device), tmp_path / "d"
    )
    ckpt = load_checkpoint(tmp_path / "d" / "final.safetensors")
    assert all(t.device.type == "cpu" for t in ckpt.state.values())
    assert dev.record["metrics"]["test_acc"] == pytest.approx(
        cpu.record["metrics"]["test_acc"], abs=0.02
    )
