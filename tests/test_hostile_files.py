"""Hostile uploads: each file of the issue's probes is refused before its cost is paid.

Every probe goes through the loader (``load_checkpoint`` / ``open_research``) and through
``workspace.save_upload``, which the app and ``landscape upload`` call; "before its cost" is
checked by making the expensive step (building a model, ``torch.load``, ``safe_open``) fail
if it is reached, never by timing.
"""

from __future__ import annotations

import pytest
import torch

import landscape.checkpoints as checkpoints
from landscape.checkpoints import CheckpointError, load_checkpoint
from landscape.models import MODELS
from landscape.research import open_research
from landscape.workspace import list_uploads, save_upload
from tests.hostile_files import (
    GIB,
    checkpoint_a,
    write_arch_metadata,
    write_code_pickle,
    write_huge_float64,
    write_huge_header,
    write_zip_bomb,
)


def _upload(path, **kwargs):
    return save_upload(path.read_bytes(), path.name, **kwargs)


def _failing(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} was called on a hostile file")

    return fail


def _forbid(monkeypatch, module, name: str) -> None:
    monkeypatch.setattr(module, name, _failing(name))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_float64_weight_that_overflows_float32_is_refused(tmp_path, suffix):
    path = write_huge_float64(tmp_path, suffix)
    arch = checkpoint_a()[1]["arch"]
    expected = r"non-finite values \(nan or inf\) in classifier\.0\.weight \(as float32"
    with pytest.raises(CheckpointError, match=expected):
        if suffix == ".pt":
            open_research(path, arch=arch)
        else:
            load_checkpoint(path)
    if suffix == ".pt":
        with pytest.raises(CheckpointError, match=expected):
            load_checkpoint(path, arch=arch)
    with pytest.raises(CheckpointError, match=expected):
        _upload(path, arch=arch, data={"name": "digits", "split_seed": 0})
    assert list_uploads() == []


@pytest.mark.parametrize(
    "name, kwargs, said",
    [
        ("preresnet", {"depth": 900002}, r"preresnet\(depth=900002\) has at least 5400008 "),
        ("preresnet", {"depth": 90002}, r"preresnet\(depth=90002\) has at least 540008 "),
        ("mlp", {"widths": [64] * 100_000}, r"mlp\(widths=\[64, 64, 64, \.\.\. \(100000 items"),
        ("wideresnet", {"depth": 10**30}, r"wideresnet\(depth=10{30}\) has at least"),
        ("resnet20", {"blocks": 10**6}, r"resnet20\(blocks=1000000\) has at least 36000008 "),
    ],
)
def test_runaway_architecture_is_refused_before_any_model_is_built(
    tmp_path, monkeypatch, name, kwargs, said
):
    path = write_arch_metadata(tmp_path, name, kwargs, "runaway")
    _forbid(monkeypatch, checkpoints, "build_model")
    for key in list(MODELS):  # no model class may be called, on any device
        monkeypatch.setitem(MODELS, key, _failing(key))
    message = rf"{said}.*tensors, but the file holds only 16 tensors \(refused before building it\)"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        _upload(path)
    assert list_uploads() == []


def test_zip_bomb_is_refused_from_declared_sizes_before_torch_load(tmp_path, monkeypatch):
    path = write_zip_bomb(tmp_path, 2 * GIB)
    assert path.stat().st_size < 3 * 1024 * 1024  # ~2 MB on disk, 2 GiB once inflated
    _forbid(monkeypatch, torch, "load")
    message = r"its records expand to 2147483\d{3} bytes, over the size limit of 1073741824 bytes"
    arch = checkpoint_a()[1]["arch"]
    with pytest.raises(CheckpointError, match=message):
        open_research(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, arch=arch)
    with pytest.raises(CheckpointError, match=message.replace(str(tmp_path), "")):
        _upload(path, arch=arch)
    assert list_uploads() == []


def test_compressed_record_under_the_size_limit_is_refused_by_its_ratio(tmp_path, monkeypatch):
    path = write_zip_bomb(tmp_path, 64 * 1024 * 1024)  # 64 KB inflating to 64 MiB: ~1000:1
    _forbid(monkeypatch, torch, "load")
    with pytest.raises(CheckpointError, match=r"record archive/data/0 expands .* zip bomb"):
        open_research(path)


def test_huge_safetensors_header_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = write_huge_header(tmp_path)
    _forbid(monkeypatch, checkpoints, "safe_open")
    message = r"not a valid safetensors file: header of 99999992 bytes, over the limit of 16777216"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        _upload(path)


def test_truncated_header_and_too_many_tensors_are_refused(tmp_path, monkeypatch):
    path = write_huge_header(tmp_path, 4096)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated: the header claims 4096 bytes"):
        load_checkpoint(path)
    monkeypatch.setattr(checkpoints, "MAX_TENSORS", 15)
    a = write_arch_metadata(tmp_path, "cnn", checkpoint_a()[1]["arch"]["kwargs"], "a")
    with pytest.raises(CheckpointError, match="16 tensors, over the limit of 15 tensors"):
        load_checkpoint(a)


def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    path, marker = write_code_pickle(tmp_path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        open_research(path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        _upload(path)
    assert not marker.exists()
