"""Checkpoints: round trip, content hash, every validation error, and unsafe pickles refused."""

from __future__ import annotations

import builtins
import json
import pathlib
import pickle
import re

import pytest
import torch
from safetensors.torch import save_file

from landscape.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    content_hash,
    load_checkpoint,
    save_checkpoint,
)
from landscape.models import MODELS, build_model

ARCH = {"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}}
META = {
    "arch": ARCH,
    "data": {"name": "digits", "split_seed": 0},
    "optimizer": {"name": "grda", "lr": 0.01, "c": 0.005, "mu": 0.51},
    "step": 120,
    "epoch": 3,
    "seed": 7,
    "metrics": {"train_loss": 0.25, "test_acc": 0.9},
}


def _model(seed: int = 0) -> torch.nn.Module:
    """The ARCH model with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = build_model(ARCH["name"], **ARCH["kwargs"])
    with torch.no_grad():
        for name, b in model.named_buffers():
            if "running" in name:
                b.copy_(torch.rand_like(b) + 0.5)
            else:
                b.fill_(11)
    return model


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _model(seed).state_dict().items()}


def _write(path: pathlib.Path, state, meta=META) -> pathlib.Path:
    save_checkpoint(path, state, meta)
    return path


def _assert_state_equal(a, b):
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- round trip and hash


def test_round_trip(tmp_path):
    model = _model()
    path = tmp_path / "sub" / "final.safetensors"
    h = save_checkpoint(path, model, META)
    ck = load_checkpoint(path)
    _assert_state_equal(ck.state, model.state_dict())
    assert ck.meta == {"format_version": FORMAT_VERSION, **META}
    assert ck.meta["format_version"] == FORMAT_VERSION == 1
    assert ck.arch == ARCH
    assert ck.hash == h == content_hash(model.state_dict())
    assert ck.path == path and ck.name == "final"


def test_hash_stable_across_save_and_load(tmp_path):
    state = _state()
    h1 = save_checkpoint(tmp_path / "a.safetensors", state, META)
    ck1 = load_checkpoint(tmp_path / "a.safetensors")
    h2 = save_checkpoint(tmp_path / "b.safetensors", ck1.state, {**META, "seed": 99})
    ck2 = load_checkpoint(tmp_path / "b.safetensors")
    assert h1 == ck1.hash == h2 == ck2.hash  # metadata is not hashed
    assert re.fullmatch(r"[0-9a-f]{16}", h1)
    assert content_hash(dict(reversed(list(state.items())))) == h1  # key order does not matter


def test_hash_changes_with_content():
    state = _state()
    h = content_hash(state)
    changed = dict(state)
    w = state["classifier.2.weight"].clone()
    w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(10.0))  # smallest possible change
    changed["classifier.2.weight"] = w
    assert content_hash(changed) != h
    renamed = {("x" + k if k == "classifier.2.bias" else k): v for k, v in state.items()}
    assert content_hash(renamed) != h
    reshaped = dict(state, **{"classifier.2.bias": state["classifier.2.bias"].reshape(2, 5)})
    assert content_hash(reshaped) != h  # same bytes, different shape
    doubled = dict(state, **{"classifier.2.bias": state["classifier.2.bias"].double()})
    assert content_hash(doubled) != h
    assert content_hash(state) == h  # nothing was mutated


def test_hash_handles_scalar_and_empty_tensors():
    a = {"n": torch.tensor(3), "e": torch.zeros(0, 4)}
    assert content_hash(a) == content_hash({"n": torch.tensor(3), "e": torch.zeros(0, 4)})
    assert content_hash(a) != content_hash({"n": torch.tensor(4), "e": torch.zeros(0, 4)})
    assert content_hash(a) != content_hash({"n": torch.tensor(3), "e": torch.zeros(4, 0)})


def test_build_model_reproduces_outputs(tmp_path):
    model = _model().eval()
    path = _write(tmp_path / "m.safetensors", model)
    rebuilt = load_checkpoint(path).build_model().eval()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "final.safetensors"
    save_checkpoint(path, _state(0), META)
    h = save_checkpoint(path, _state(1), META)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["final.safetensors"]
    assert load_checkpoint(path).hash == h == content_hash(_state(1))


def _failing_replace(*args, **kwargs):
    raise OSError("disk full")


def test_failed_checkpoint_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "final.safetensors"
    h = save_checkpoint(path, _state(0), META)
    monkeypatch.setattr("landscape.store.os.replace", _failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(1), META)
    assert [p.name for p in tmp_path.iterdir()] == ["final.safetensors"]
    assert load_checkpoint(path).hash == h  # the old file, whole


def test_save_needs_arch(tmp_path):
    with pytest.raises(CheckpointError, match="arch"):
        save_checkpoint(tmp_path / "m.safetensors", _state(), {"seed": 1})
    with pytest.raises(CheckpointError, match="arch"):
        save_checkpoint(tmp_path / "m.safetensors", _state(), {"arch": {"kwargs": {}}})
    assert list(tmp_path.iterdir()) == []


def test_arch_and_data_overrides(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in _state().items()}, str(path))  # no metadata
    with pytest.raises(CheckpointError, match="names no architecture"):
        load_checkpoint(path)
    ck = load_checkpoint(path, arch=ARCH, data={"name": "digits", "split_seed": 3})
    assert ck.arch == ARCH and ck.meta["data"] == {"name": "digits", "split_seed": 3}
    _assert_state_equal(ck.state, _state())


def test_float64_is_converted_to_float32(tmp_path):
    state = {k: (v.double() if v.is_floating_point() else v) for k, v in _state().items()}
    ck = load_checkpoint(_write(tmp_path / "d.safetensors", state))
    assert ck.state["classifier.2.weight"].dtype == torch.float32
    assert ck.state["features.1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(ck.state["classifier.2.weight"], state["classifier.2.weight"].float())


# ---------------------------------------------------------------- validation errors


def test_unknown_architecture(tmp_path):
    path = _write(
        tmp_path / "m.safetensors", _state(), {"arch": {"name": "resnet50", "kwargs": {}}}
    )
    known = ", ".join(sorted(MODELS))
    with pytest.raises(CheckpointError, match=f"unknown architecture 'resnet50'; known: {known}"):
        load_checkpoint(path)


def test_bad_architecture_kwargs(tmp_path):
    path = _write(
        tmp_path / "m.safetensors", _state(), {"arch": {"name": "cnn", "kwargs": {"x": 1}}}
    )
    with pytest.raises(CheckpointError, match="Bad arguments for architecture 'cnn'"):
        load_checkpoint(path)


SHAPE = "architecture must be {name: str, kwargs: dict}"


@pytest.mark.parametrize(
    ("arch", "why"),
    [
        ("cnn", SHAPE),
        (["cnn"], SHAPE),
        ({"name": ["cnn"]}, SHAPE),
        ({"name": None}, SHAPE),
        ({"name": "cnn", "kwargs": "channels"}, SHAPE),
        ({"name": "cnn", "kwargs": {"channels": [-1]}}, "negative dimension"),
    ],
)
def test_malformed_architecture_metadata(tmp_path, arch, why):
    path = _write(tmp_path / "m.safetensors", _state(), {"arch": {"name": "cnn"}})
    # Rewrite the metadata by hand: save_checkpoint only checks that arch has a name.
    state = load_checkpoint(path, arch=ARCH).state
    save_file(state, str(path), metadata={"landscape": json.dumps({"arch": arch})})
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: ") + ".*" + re.escape(why)):
        load_checkpoint(path)


def test_missing_key(tmp_path):
    state = _state()
    del state["classifier.0.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys for cnn: classifier\.0\.bias$"):
        load_checkpoint(_write(tmp_path / "m.safetensors", state))


def test_many_missing_keys_are_counted(tmp_path):
    state = {"features.0.weight": _state()["features.0.weight"]}
    with pytest.raises(CheckpointError, match=r"missing keys for cnn: .*\(and \d+ more\)"):
        load_checkpoint(_write(tmp_path / "m.safetensors", state))


def test_unexpected_key(tmp_path):
    state = _state()
    state["head.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match=r"unexpected keys for cnn: head\.weight"):
        load_checkpoint(_write(tmp_path / "m.safetensors", state))


def test_wrong_shape_names_first_bad_key_and_both_shapes(tmp_path):
    state = _state()
    state["classifier.0.weight"] = torch.zeros(16, 33)  # expects (16, 32)
    state["classifier.2.weight"] = torch.zeros(3, 16)  # expects (10, 16); comes later
    msg = "wrong shape for classifier.0.weight: file has (16, 33), cnn expects (16, 32)"
    with pytest.raises(CheckpointError, match=re.escape(msg)):
        load_checkpoint(_write(tmp_path / "m.safetensors", state))


def test_wrong_kwargs_show_as_shape_error(tmp_path):
    """Weights of a wider model under the metadata of a narrower one."""
    torch.manual_seed(0)
    wide = build_model("cnn", channels=[4, 8], hidden=32).state_dict()
    with pytest.raises(CheckpointError, match=re.escape("file has (32, 32), cnn expects (16, 32)")):
        load_checkpoint(_write(tmp_path / "m.safetensors", wide))


def test_wrong_dtype(tmp_path):
    state = _state()
    state["features.0.weight"] = state["features.0.weight"].to(torch.int32)
    with pytest.raises(CheckpointError, match=r"wrong dtype for features\.0\.weight"):
        load_checkpoint(_write(tmp_path / "m.safetensors", state))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", ["features.0.weight", "features.1.running_var"])
def test_non_finite(tmp_path, bad, key):
    state = _state()
    state[key].view(-1)[1] = bad
    with pytest.raises(
        CheckpointError, match=rf"non-finite values \(nan or inf\) in {re.escape(key)}"
    ):
        load_checkpoint(_write(tmp_path / "m.safetensors", state))


def test_truncated_file(tmp_path):
    path = _write(tmp_path / "m.safetensors", _state())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "blob", [b"\x00\x01garbage" * 50, bytes(range(256)) * 4, b"{}", b"\x08" + b"\x00" * 7 + b"{}"]
)
def test_garbage_bytes(tmp_path, blob):
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(path, arch=ARCH)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint


def test_over_size_limit(tmp_path):
    path = _write(tmp_path / "m.safetensors", _state())
    size = path.stat().st_size
    with pytest.raises(CheckpointError, match=f"file is {size} bytes, over the size limit of 100 "):
        load_checkpoint(path, max_bytes=100)
    limit = size - 1
    with pytest.raises(CheckpointError, match=f"over the size limit of {limit} bytes"):
        load_checkpoint(path, max_bytes=limit)
    assert load_checkpoint(path, max_bytes=size).hash == content_hash(_state())


def test_metadata_not_json(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(
        {k: v.contiguous() for k, v in _state().items()}, str(path), metadata={"landscape": "{x"}
    )
    with pytest.raises(CheckpointError, match="metadata is not valid JSON"):
        load_checkpoint(path)


def test_metadata_not_an_object(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(
        {k: v.contiguous() for k, v in _state().items()}, str(path), metadata={"landscape": "[1]"}
    )
    with pytest.raises(CheckpointError, match="metadata must be a JSON object"):
        load_checkpoint(path)


@pytest.mark.parametrize(("version", "why"), [(2, "is newer than 1"), ("1", "is not an integer")])
def test_format_version(tmp_path, version, why):
    path = _write(tmp_path / "m.safetensors", _state(), {**META, "format_version": version})
    with pytest.raises(CheckpointError, match=why):
        load_checkpoint(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "m.npz"
    torch.save(_state(), path)
    with pytest.raises(CheckpointError, match=r"unsupported file type '\.npz'"):
        load_checkpoint(path, arch=ARCH)


# ---------------------------------------------------------------- .pt / .pth state dicts


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".PT"])
def test_pt_needs_arch(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    torch.save(_state(), path)
    with pytest.raises(CheckpointError, match="needs an architecture"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    ],
    ids=["plain", "state_dict", "model", "model_state_dict", "module", "wrapped_module"],
)
@pytest.mark.parametrize("legacy", [False, True])
def test_pt_state_dict(tmp_path, wrap, legacy):
    state = _state()
    path = tmp_path / "m.pth"
    torch.save(wrap(state), path, _use_new_zipfile_serialization=not legacy)
    ck = load_checkpoint(path, arch=ARCH)
    _assert_state_equal(ck.state, state)
    assert ck.meta == {"format_version": FORMAT_VERSION, "arch": ARCH}
    assert ck.hash == content_hash(state)
    model = ck.build_model().eval()
    reference = _model().eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_pt_partial_module_prefix_is_kept(tmp_path):
    """Only a prefix on every key is DataParallel's; a partial one is a real key mismatch."""
    state = _state()
    first = next(iter(state))
    state[f"module.{first}"] = state.pop(first)
    path = tmp_path / "m.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(path, arch=ARCH)


@pytest.mark.parametrize(
    "obj",
    [[torch.zeros(2)], {"w": [1, 2]}, {3: torch.zeros(2)}, torch.zeros(3)],
    ids=["list", "non_tensor_value", "int_key", "tensor"],
)
def test_pt_not_a_state_dict(tmp_path, obj):
    path = tmp_path / "m.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="expected a dict of name -> tensor"):
        load_checkpoint(path, arch=ARCH)


@pytest.mark.parametrize("cut", ["half", "garbage"])
def test_pt_truncated_or_garbage(tmp_path, cut):
    path = tmp_path / "m.pt"
    torch.save(_state(), path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2] if cut == "half" else b"garbage!" * 64)
    with pytest.raises(CheckpointError, match=r"not a readable PyTorch state dict|refused"):
        load_checkpoint(path, arch=ARCH)


def test_pt_validated_like_safetensors(tmp_path):
    state = _state()
    state["classifier.0.bias"][0] = float("nan")
    path = tmp_path / "m.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"non-finite values .* classifier\.0\.bias"):
        load_checkpoint(path, arch=ARCH)


# ---------------------------------------------------------------- unsafe pickles


class _WriteMarker:
    """Unpickling this calls Path.write_text(marker, ...): code execution from a file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "pwned"))


class _ExecMarker:
    """Unpickling this runs arbitrary source through builtins.exec."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


PAYLOADS = {"write_text": _WriteMarker, "exec": _ExecMarker}


def _write_evil(path: pathlib.Path, marker: pathlib.Path, payload: str, fmt: str) -> None:
    evil = PAYLOADS[payload](marker)
    obj = {"state_dict": {**_state(), "features.0.weight": evil}}
    if fmt == "zip":  # what torch.save writes by default
        torch.save(obj, path)
    elif fmt == "torch_legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle stream
        with open(path, "wb") as f:
            pickle.dump(evil, f, protocol=2)


def _unsafe_load(path: pathlib.Path, fmt: str) -> None:
    if fmt == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)


@pytest.mark.parametrize("fmt", ["zip", "torch_legacy", "pickle"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_malicious_pickle_is_refused(tmp_path, fmt, payload, suffix):
    # Control: an unsafe loader does run the payload, so this test can fail.
    control = tmp_path / "control"
    control.mkdir()
    control_marker = control / "marker"
    _write_evil(control / f"evil{suffix}", control_marker, payload, fmt)
    _unsafe_load(control / f"evil{suffix}", fmt)
    assert control_marker.read_text() == "pwned"

    attack = tmp_path / "attack"
    attack.mkdir()
    marker = attack / "marker"
    path = attack / f"evil{suffix}"
    _write_evil(path, marker, payload, fmt)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(path, arch=ARCH)
    assert not marker.exists()
    assert sorted(p.name for p in attack.iterdir()) == [f"evil{suffix}"]
