from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.data import load_dataset
from landscape.models import build_model, prunable_names
from landscape.params import split_state
from landscape.pruning import (
    jaccard,
    magnitude_prune,
    mask_stability,
    prune_checkpoint,
    settled_index,
)
from landscape.train import TrainConfig, train
from tests.reference import evaluate

REPO = Path(__file__).resolve().parent.parent
MLP = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "widths": [8]}}


@pytest.fixture(scope="module")
def mlp_ckpt(tmp_path_factory):
    """A briefly trained small MLP on digits (no BatchNorm)."""
    out = tmp_path_factory.mktemp("mlp_run")
    cfg = TrainConfig(arch="mlp", arch_kwargs={"widths": [32]}, epochs=3, lr=0.1, snapshots=0)
    train(cfg, out)
    return load_checkpoint(out / "final.safetensors")


def _tied_state(seed: int) -> dict[str, torch.Tensor]:
    """Weights drawn from a few integer values, so many magnitudes tie."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (6, 5), "a.bias": (6,), "b.weight": (3, 7)}
    return {k: torch.randint(-4, 5, s, generator=gen).float() for k, s in shapes.items()}


def _reference_keep(state: dict, names: list[str], sparsity: float) -> np.ndarray:
    """numpy: prune the k smallest |w| of the concatenation, ties broken by position."""
    flat = np.concatenate([state[n].numpy().ravel() for n in names])
    k = round(sparsity * flat.size)
    order = np.lexsort((np.arange(flat.size), np.abs(flat)))  # by |w|, then by position
    keep = np.ones(flat.size, dtype=bool)
    keep[order[:k]] = False
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_prune_matches_numpy_reference(seed, sparsity, scope):
    state = _tied_state(seed)
    prunable = ["a.weight", "b.weight"]
    pruned, masks = magnitude_prune(state, prunable, sparsity, scope=scope)
    groups = [[n] for n in prunable] if scope == "layer" else [prunable]
    for names in groups:
        keep = _reference_keep(state, names, sparsity)
        got = np.concatenate([masks[n].numpy().ravel() for n in names])
        np.testing.assert_array_equal(got, keep)
        n_total = keep.size
        assert (~got).sum() == round(sparsity * n_total)  # exact count despite ties
        mags = np.concatenate([state[n].abs().numpy().ravel() for n in names])
        if got.any() and (~got).any():  # every kept weight is at least as large as any pruned
            assert mags[got].min() >= mags[~got].max()
    for n in prunable:
        np.testing.assert_array_equal(pruned[n].numpy(), state[n].numpy() * masks[n].numpy())
    assert torch.equal(pruned["a.bias"], state["a.bias"])  # biases are never pruned


def test_magnitude_prune_rejects_bad_arguments():
    state = _tied_state(0)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(state, ["a.weight"], 1.5)
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(state, ["a.weight"], 0.5, scope="row")


def test_finetune_step_is_masked_sgd(mlp_ckpt, device):
    """One full-batch fine-tuning step equals (w - lr * autograd grad) * mask."""
    data = load_dataset("digits")
    n = len(data.y_train)
    lr = 0.05
    state, _ = prune_checkpoint(
        mlp_ckpt, 0.6, finetune_epochs=1, lr=lr, batch_size=n, seed=3, device=device
    )  # one step: batch = whole training set
    model = mlp_ckpt.build_model()
    prunable = prunable_names(model)
    pruned, masks = magnitude_prune(mlp_ckpt.state, prunable, 0.6)
    model.load_state_dict(pruned)
    loss = F.cross_entropy(model(data.x_train), data.y_train)
    names, tensors = zip(*model.named_parameters(), strict=True)
    grads = dict(zip(names, torch.autograd.grad(loss, tensors), strict=True))
    for name, p in model.named_parameters():
        expected = p.detach() - lr * grads[name]
        if name in masks:
            expected = expected * masks[name]
        torch.testing.assert_close(state[name], expected, atol=1e-6, rtol=1e-5)


def test_finetune_keeps_pruned_weights_zero_and_lowers_loss(mlp_ckpt, device):
    prunable = prunable_names(mlp_ckpt.build_model())
    _, masks = magnitude_prune(mlp_ckpt.state, prunable, 0.9)
    plain, meta0 = prune_checkpoint(mlp_ckpt, 0.9, device=device)
    tuned, meta1 = prune_checkpoint(
        mlp_ckpt, 0.9, finetune_epochs=3, lr=0.05, batch_size=32, device=device
    )
    for n in prunable:
        assert torch.all(tuned[n][~masks[n]] == 0)  # pruned stay exactly zero
        assert not torch.equal(tuned[n][masks[n]], plain[n][masks[n]])  # kept ones trained
    total = sum(masks[n].numel() for n in prunable)
    assert meta1["metrics"]["sparsity"] == round(0.9 * total) / total
    assert meta1["metrics"]["train_loss"] < meta0["metrics"]["train_loss"]
    assert meta1["step"] == mlp_ckpt.meta["step"] + 3 * -(-1347 // 32)


def test_prune_without_finetune_recalibrates_batchnorm(device):
    """Stored BN statistics are those of the pruned weights (first BN: exact data moments)."""
    sgd = load_checkpoint(REPO / "checkpoints" / "sgd" / "final.safetensors")
    state, meta = prune_checkpoint(sgd, 0.8, device=device)
    x = load_dataset("digits").x_train
    z = F.conv2d(x, state["features.0.weight"], padding=1)  # (N, 16, 8, 8), conv has no bias
    torch.testing.assert_close(
        state["features.1.running_mean"], z.mean((0, 2, 3)), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        state["features.1.running_var"], z.var((0, 2, 3), unbiased=True), atol=1e-5, rtol=1e-4
    )
    assert not torch.allclose(
        state["features.1.running_mean"], sgd.state["features.1.running_mean"]
    )
    # The stored metrics are those of the stored state.
    model = sgd.build_model()
    params, buffers = split_state(model, state)
    test_loss, test_acc = evaluate(
        model, params, buffers, load_dataset("digits").x_test, load_dataset("digits").y_test
    )
    assert meta["metrics"]["test_acc"] == pytest.approx(test_acc)
    assert meta["metrics"]["test_loss"] == pytest.approx(test_loss, rel=1e-6)


def test_prune_refuses_a_source_sparser_than_the_target():
    grda = load_checkpoint(REPO / "checkpoints" / "grda" / "final.safetensors")
    with pytest.raises(ValueError, match="already"):
        prune_checkpoint(grda, 0.5)


def test_prune_cli_writes_a_valid_checkpoint_with_exact_sparsity(mlp_ckpt, tmp_path, capsys):
    out = tmp_path / "pruned.safetensors"
    args = ["prune", str(mlp_ckpt.path), "--sparsity", "0.7", "--scope", "layer"]
    assert main([*args, "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)  # validates against the architecture
    assert ckpt.arch == mlp_ckpt.arch and ckpt.meta["data"] == mlp_ckpt.meta["data"]
    opt = ckpt.meta["optimizer"]
    assert opt["name"] == "magnitude" and opt["source_hash"] == mlp_ckpt.hash
    assert opt["hparams"] == {"sparsity": 0.7, "scope": "layer", "finetune_epochs": 0}
    for n in prunable_names(ckpt.build_model()):
        w = ckpt.state[n]
        assert int((w == 0).sum()) == round(0.7 * w.numel())
    assert "test_acc" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sparsity", "1.5", "--out", "p.safetensors"], "sparsity"),
        (["--sparsity", "0.5", "--out", "p.pt"], ".safetensors"),
        (["--sparsity", "0.5", "--finetune-epochs", "-1", "--out", "p.safetensors"], "finetune"),
    ],
)
def test_prune_cli_bad_input_writes_nothing(mlp_ckpt, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / e) if e.startswith("p.") else e for e in extra]
    assert main(["prune", str(mlp_ckpt.path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert list(tmp_path.iterdir()) == []


def test_jaccard_hand_computed():
    a = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool)
    assert jaccard(a, b) == 2 / 4  # intersection {0, 4}, union {0, 1, 2, 4}
    empty = torch.zeros(6, dtype=torch.bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(a, empty) == 0.0


@pytest.mark.parametrize(
    "flipped, expected",
    [
        ([None, 0.2, 0.05, 0.005, 0.0], 2),
        ([None, 0.005, 0.02, 0.001, 0.009], 2),
        ([None, 0.0, 0.0], 0),
        ([None, 0.2, 0.005, 0.05], None),  # the last change is large: not settled
        ([None, 0.01], None),  # exactly at the threshold is not "less than"
        ([None], None),
    ],
)
def test_settled_index(flipped, expected):
    assert settled_index(flipped, 0.01) == expected


def _write_snapshots(run: Path, steps: list[int], flips: list[int], seed: int = 0) -> list:
    """A run folder whose consecutive zero-masks differ in exactly ``flips[i]`` weights."""
    model = build_model(MLP["name"], **MLP["kwargs"])
    prunable = prunable_names(model)
    sizes = [model.state_dict()[n].numel() for n in prunable]
    rng = np.random.default_rng(seed)
    zero = rng.random(sum(sizes)) < 0.3
    masks = [zero.copy()]
    for f in flips:
        zero = zero.copy()
        idx = rng.choice(zero.size, size=f, replace=False)
        zero[idx] = ~zero[idx]
        masks.append(zero)
    for step, mask in zip(steps, masks, strict=True):
        state = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
        chunks = np.split(mask, np.cumsum(sizes)[:-1])
        for n, z in zip(prunable, chunks, strict=True):
            state[n] = torch.from_numpy(np.where(z, 0.0, 0.5).astype(np.float32)).view_as(state[n])
        meta = {"arch": MLP, "step": step, "epoch": step / 10, "metrics": {}}
        save_checkpoint(run / "trajectory" / f"step_{step:06d}.safetensors", state, meta)
    save_checkpoint(run / "final.safetensors", state, {"arch": MLP, "metrics": {}})
    return masks


def test_mask_stability_on_synthetic_snapshots(tmp_path, capsys):
    steps = [0, 10, 20, 30, 40, 120]
    n = 64 * 8 + 8 * 10
    flips = [120, 30, 3, 0, 5]  # fractions .20, .05, .005, 0, .008: settled after step 20
    masks = _write_snapshots(tmp_path / "run", steps, flips)
    ms = mask_stability(tmp_path / "run")
    assert ms.steps == steps and ms.epochs == [s / 10 for s in steps]
    assert ms.settled_step == 20
    final = set(np.flatnonzero(masks[-1]))
    for i, mask in enumerate(masks):
        zeros = set(np.flatnonzero(mask))
        assert ms.sparsity[i] == pytest.approx(len(zeros) / n)
        assert ms.jaccard_final[i] == pytest.approx(len(zeros & final) / len(zeros | final))
        if i == 0:
            assert ms.jaccard_prev[0] is None and ms.flipped[0] is None
        else:
            prev = set(np.flatnonzero(masks[i - 1]))
            assert ms.jaccard_prev[i] == pytest.approx(len(zeros & prev) / len(zeros | prev))
            assert ms.flipped[i] == pytest.approx(flips[i - 1] / n)
    assert main(["masks", str(tmp_path / "run")]) == 0
    assert "settled after step 20" in capsys.readouterr().out


def test_mask_that_keeps_changing_never_settles(tmp_path, capsys):
    _write_snapshots(tmp_path / "run", [0, 5, 10], [2, 12])  # last change 12/592 > 1%
    assert mask_stability(tmp_path / "run").settled_step is None
    assert mask_stability(tmp_path / "run", tol=0.05).settled_step == 0
    assert main(["masks", str(tmp_path / "run")]) == 0
    assert "never settled" in capsys.readouterr().out


def test_mask_stability_needs_snapshots(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="snapshots"):
        mask_stability(tmp_path / "run")


def test_masks_kind_is_mask_stability_keyed_by_the_files(tmp_path):
    from dataclasses import asdict

    from landscape.store import Store
    from landscape.studies import KINDS, find, run, study_key
    from landscape.studies.masks import MasksConfig, MasksInputs

    kind, store = KINDS["masks"], Store(tmp_path / "store")
    _write_snapshots(tmp_path / "run", [0, 10, 20], [30, 2])
    inputs, cfg = MasksInputs(tmp_path / "run"), MasksConfig()
    assert find(kind, cfg, inputs, store=store) is None
    got = run(kind, cfg, inputs, store=store)
    assert asdict(got) == asdict(mask_stability(tmp_path / "run"))
    assert find(kind, cfg, inputs, store=store) == got
    key = study_key(kind, cfg, inputs)
    assert study_key(kind, MasksConfig(tol=0.05), inputs) != key
    _write_snapshots(tmp_path / "run", [0, 10, 20], [30, 2], seed=1)  # other snapshot bytes
    assert study_key(kind, cfg, inputs) != key
    with pytest.raises(ValueError, match="tol"):
        study_key(kind, MasksConfig(tol=0.0), inputs)


def test_prune_kind_stores_the_pruned_checkpoint_and_the_cli_copies_it(mlp_ckpt, tmp_path):
    from dataclasses import replace

    from landscape.checkpoints import content_hash
    from landscape.store import Store
    from landscape.studies import KINDS, find, study_key
    from landscape.studies.prune import PruneConfig, PruneInputs, prune, pruned_checkpoint

    kind, store = KINDS["prune"], Store(tmp_path / "store")
    cfg, inputs = PruneConfig(sparsity=0.6), PruneInputs(mlp_ckpt)
    key = study_key(kind, cfg, inputs)
    assert study_key(kind, replace(cfg, lr=0.5, device="meta"), inputs) == key  # no fine-tune
    assert study_key(kind, replace(cfg, finetune_epochs=1), inputs) != key
    res = prune(cfg, inputs, store=store)
    assert Path(res.path) == (store.root / "prune" / f"{key}.safetensors").resolve()
    state, meta = prune_checkpoint(mlp_ckpt, 0.6)
    assert pruned_checkpoint(res).hash == res.hash == content_hash(state)
    assert res.metrics == meta["metrics"] and res.source_hash == mlp_ckpt.hash
    assert find(kind, cfg, inputs, store=store) == res
    Path(res.path).unlink()  # the artefact went missing: written again
    assert pruned_checkpoint(prune(cfg, inputs, store=store)).hash == res.hash
    out = tmp_path / "out" / "pruned.safetensors"
    args = ["prune", str(mlp_ckpt.path), "--sparsity", "0.6", "--store", str(store.root)]
    assert main([*args, "--out", str(out)]) == 0
    assert out.read_bytes() == Path(res.path).read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["pruned.safetensors"]  # no temp left
