"""Checkpoint layouts users have (landscape.layouts through load_checkpoint / load_any): every
layout of the bundled SGD default opens to the same weights, bitwise, as the safetensors file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from landscape.checkpoints import CheckpointError, load_checkpoint
from landscape.layouts import key_candidates, unwrap
from landscape.research import load_any, open_research
from landscape.workspace import default_checkpoints

CNN = {"name": "cnn", "kwargs": {}}


@pytest.fixture(scope="module")
def sgd():
    return load_checkpoint(default_checkpoints() / "sgd" / "final.safetensors")


def _prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


LAYOUTS = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd},
    "model": lambda sd: {"model": sd, "epoch": 3},
    "model_state": lambda sd: {"model_state": sd, "optimizer_state": {"state": {}}},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 0.1}},
    "lightning": lambda sd: {
        "epoch": 4,
        "global_step": 100,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": _prefixed(sd, "model."),
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1}]}],
        "lr_schedulers": [],
        "callbacks": {},
    },
    "dataparallel": lambda sd: _prefixed(sd, "module."),
    "compiled": lambda sd: _prefixed(sd, "_orig_mod."),
    "lightning_ddp_compiled": lambda sd: {"state_dict": _prefixed(sd, "model.module._orig_mod.")},
}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("suffix", [".pt", ".ckpt"])
def test_layout_opens_bitwise(tmp_path: Path, sgd, layout: str, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    torch.save(LAYOUTS[layout](dict(sgd.state)), path)
    given = load_checkpoint(path, arch=sgd.arch)
    _same(given.state, sgd.state)
    assert given.hash == sgd.hash
    recognised = load_any(path)  # landscape's cnn is recognised from its keys
    _same(recognised.state, sgd.state)
    assert recognised.arch["name"] == "cnn"
    assert recognised.meta["data"]["name"] == "digits"


def test_plain_state_dict_of_the_default_opens_with_arch_cnn(tmp_path: Path, sgd) -> None:
    path = tmp_path / "sgd.pt"
    torch.save(sgd.build_model().state_dict(), path)
    found = open_research(path, arch=CNN)
    ckpt = found.points[0]
    _same(ckpt.state, sgd.state)
    assert ckpt.meta["data"] == {"name": "digits", "split_seed": 0}
    assert found.arch["kwargs"]["in_shape"] == [1, 8, 8]
    recognised = open_research(path)
    assert recognised.recognized and recognised.arch == found.arch


@pytest.mark.parametrize("prefix", ["", "module."])
def test_hugging_face_style_safetensors_needs_arch(tmp_path: Path, sgd, prefix: str) -> None:
    path = tmp_path / "model.safetensors"
    save_file(_prefixed(dict(sgd.state), prefix), str(path))  # no landscape metadata
    with pytest.raises(CheckpointError, match="names no architecture; choose one"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, arch=sgd.arch)
    _same(ckpt.state, sgd.state)


def test_prefix_kept_when_it_would_not_match_exactly(tmp_path: Path, sgd) -> None:
    """A shared prefix is removed only when the result is exactly the model's key set."""
    state = _prefixed(dict(sgd.state), "module.")
    state["module.head.weight"] = torch.zeros(2, 2)  # one key the cnn does not have
    path = tmp_path / "m.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, arch=CNN)
    assert "unexpected keys for cnn (after removing the prefix 'module.'): head.weight" in str(
        err.value
    )


def test_mismatch_lists_the_nearest_keys(tmp_path: Path, sgd) -> None:
    state = dict(sgd.state)
    state["classifier.0.weights"] = state.pop("classifier.0.weight")  # a renamed key
    path = tmp_path / "m.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, arch=CNN)
    message = str(err.value)
    assert "missing keys for cnn: classifier.0.weight" in message
    assert "nearest: 'classifier.0.weights' for 'classifier.0.weight'" in message


def test_partial_prefix_is_a_mismatch(tmp_path: Path, sgd) -> None:
    state = dict(sgd.state)
    first = next(iter(state))
    state[f"module.{first}"] = state.pop(first)
    path = tmp_path / "m.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"nearest: 'module.{first}' for '{first}'"):
        load_checkpoint(path, arch=CNN)


def test_unwrap_and_candidates() -> None:
    t = torch.zeros(1)
    assert unwrap({"a": t}) == {"a": t}
    assert unwrap({"state_dict": {"model": {"a": t}}}) == {"a": t}
    assert unwrap({"epoch": 1}) is None and unwrap([t]) is None
    prefixes = [p for p, _ in key_candidates({"model.module.a.w": t, "model.module.b.w": t})]
    assert prefixes == ["", "model.", "model.module."]
