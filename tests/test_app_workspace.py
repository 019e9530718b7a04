"""Studies, uploads and jobs: what the dashboard is built on (the library side, no AppTest)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.app import MAIN as APP_MAIN
from landscape.checkpoints import CheckpointError, content_hash, load_checkpoint
from landscape.cli import main as cli_main
from landscape.curves import CurveConfig
from landscape.models import build_model
from landscape.store import Store
from landscape.studies import base
from landscape.workspace import (
    Member,
    create_study,
    default_checkpoints,
    default_study,
    get_study,
    list_studies,
    list_uploads,
    member,
    save_upload,
)

MAIN = str(APP_MAIN)
DEFAULTS = default_checkpoints()
SGD = DEFAULTS / "sgd" / "final.safetensors"
GRDA = DEFAULTS / "grda" / "final.safetensors"
PAGES = ["overview", "connectivity", "plane", "trajectories", "directions", "upload"]


def _mlp_pt(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(build_model("mlp", in_shape=(1, 8, 8), num_classes=10).state_dict(), path)
    return path


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- studies and uploads (landscape/workspace.py) ---


def test_default_study_is_the_bundled_pair(home):
    study = list_studies()[0]
    assert study == default_study() and study.builtin
    assert [m.label for m in study.members] == ["sgd", "grda"]
    assert (
        Path(study.members[0].path) == SGD
        and (Path(study.members[1].run_dir) / "run.json").exists()
    )


def test_upload_keeps_file_by_content_hash_once(home):
    blob = SGD.read_bytes()
    first = save_upload(blob, "mine.safetensors")
    expected = content_hash(load_checkpoint(SGD).state)
    assert first.new and first.hash == expected
    assert Path(first.member.path) == home / "uploads" / f"{expected}.safetensors"
    assert load_checkpoint(first.member.path).hash == expected
    again = save_upload(blob, "renamed.safetensors")
    assert not again.new and again.member.label == "mine.safetensors"  # first name kept
    assert [m.label for m in list_uploads()] == ["mine.safetensors"]


def test_upload_pt_needs_architecture_and_gets_data_shape(home, tmp_path):
    torch.save({"head.weight": torch.zeros(3, 4)}, tmp_path / "odd.pt")  # no known layout
    with pytest.raises(
        CheckpointError, match=r"odd\.pt: architecture not recognised from its keys .*; choose one"
    ):
        save_upload((tmp_path / "odd.pt").read_bytes(), "odd.pt", data={"name": "digits"})
    blob = _mlp_pt(tmp_path / "m.pt").read_bytes()
    arch = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10}}
    up = save_upload(blob, "m.pt", arch=arch, data={"name": "digits", "split_seed": 0})
    ckpt = load_checkpoint(up.member.path)
    assert ckpt.arch == arch and ckpt.meta["data"]["name"] == "digits"
    want = torch.load(tmp_path / "m.pt", weights_only=True)
    assert all(torch.equal(ckpt.state[k], v) for k, v in want.items())
    # landscape's own mlp is also recognised from its keys; the same weights are kept once
    again = save_upload(blob, "m.pt", data={"name": "digits", "split_seed": 0})
    assert not again.new and again.member.path == up.member.path


@pytest.mark.parametrize(
    ("name", "blob", "arch", "match"),
    [
        (
            "bad.safetensors",
            b"\x00garbage" * 10,
            None,
            r"bad\.safetensors: not a valid safetensors",
        ),
        ("empty.safetensors", b"", None, r"empty\.safetensors: empty file"),
        ("notes.txt", b"hello", None, r"notes\.txt: unsupported file type '\.txt'"),
        ("bad.pt", b"not a pickle", {"name": "mlp", "kwargs": {}}, r"bad\.pt: refused to unpickle"),
        ("evil.pt", "EVIL", {"name": "mlp", "kwargs": {}}, r"evil\.pt: refused to unpickle"),
    ],
)
def test_bad_upload_is_a_specific_error_and_writes_nothing(home, tmp_path, name, blob, arch, match):
    if blob == "EVIL":  # a pickle that would call print() on load: must never run
        torch.save({"w": _Evil()}, tmp_path / "evil.pt")
        blob = (tmp_path / "evil.pt").read_bytes()
    create_study("kept", [Member("sgd", str(SGD)), Member("grda", str(GRDA))])
    before = {p: p.read_bytes() for p in _files(home)}
    with pytest.raises(CheckpointError, match=match):
        save_upload(blob, name, arch=arch, data={"name": "digits", "split_seed": 0})
    assert {p: p.read_bytes() for p in _files(home)} == before
    assert [s.name for s in list_studies()] == ["default", "kept"]


def test_upload_wrong_shapes_names_the_tensor(home, tmp_path):
    blob = _mlp_pt(tmp_path / "m.pt").read_bytes()
    arch = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10, "widths": [32]}}
    with pytest.raises(CheckpointError, match=r"m\.pt: (missing|unexpected) keys|wrong shape"):
        save_upload(blob, "m.pt", arch=arch, data={"name": "digits", "split_seed": 0})
    assert not _files(home / "uploads")


def test_upload_over_size_limit_is_refused(home):
    with pytest.raises(CheckpointError, match="over the size limit of 100 bytes"):
        save_upload(SGD.read_bytes(), "big.safetensors", max_bytes=100)
    assert not _files(home)


def test_create_study_validates_and_persists(home, tmp_path):
    members = [Member("grda", str(GRDA)), Member("sgd", str(SGD))]
    study = create_study("  reversed ", members)
    assert study.name == "reversed" and study.members[0].label == "grda"
    assert list_studies()[1] == study  # read back from studies.json
    index = json.loads((home / "studies.json").read_text())
    assert index["studies"][0]["members"][1]["path"] == str(SGD)
    before = (home / "studies.json").read_bytes()
    arch = {"name": "mlp", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10}}
    mlp = save_upload(
        _mlp_pt(tmp_path / "m.pt").read_bytes(),
        "m.pt",
        arch=arch,
        data={"name": "digits", "split_seed": 0},
    )
    after_upload = (home / "studies.json").read_bytes()
    assert json.loads(after_upload)["studies"] == json.loads(before)["studies"]
    for name, ms, match in [
        ("reversed", members, "already exists"),
        ("default", members, "already exists"),
        ("", members, "needs a name"),
        ("one", members[:1], "at least two"),
        ("twice", [members[0], members[0]], "same checkpoint file twice"),
        ("mixed", [members[0], mlp.member], "architecture"),
    ]:
        with pytest.raises(ValueError, match=match):
            create_study(name, ms)
        assert (home / "studies.json").read_bytes() == after_upload


def test_corrupt_studies_json_is_reported_not_overwritten(home):
    home.mkdir(parents=True)
    (home / "studies.json").write_text("{torn")
    with pytest.raises(ValueError, match="studies.json: not valid JSON"):
        list_studies()
    with pytest.raises(ValueError, match="not valid JSON"):
        create_study("x", [Member("sgd", str(SGD)), Member("grda", str(GRDA))])
    assert (home / "studies.json").read_text() == "{torn"


def test_member_from_run_folder_or_file(tmp_path):
    run = member(DEFAULTS / "grda")
    assert run == member(GRDA) == Member("grda", str(GRDA), str(DEFAULTS / "grda"))
    lone = tmp_path / "x.safetensors"
    lone.write_bytes(SGD.read_bytes())
    assert member(lone) == Member("x", str(lone), None)


def _never(*args, **kwargs):
    raise AssertionError("a look-up computed")


def test_jobs_find_never_computes_then_reads_what_compute_stored(home, monkeypatch):
    from landscape.app import jobs, sidebar

    study = default_study()
    sel = sidebar.Selection(study, study.members[0], study.members[1], "cpu")
    job = jobs.curve_job(sel, CurveConfig(epochs=0, points=3))
    # The same key, a kind whose compute fails: a look-up that computed would raise.
    failing = replace(job, kind=replace(job.kind, compute=_never))
    with monkeypatch.context() as mp:
        mp.setattr(base, "run", _never)
        mp.setattr(Store, "get_or_compute", _never)
        assert jobs.find(failing) is None and jobs.find(job) is None
    assert not (home / "results").exists()
    made = jobs.compute(job, None)
    with monkeypatch.context() as mp:
        mp.setattr(base, "run", _never)
        found = jobs.find(failing)
    assert found is not None and found.curve_file == made.curve_file
    assert np.array_equal(found.t, made.t)
    for name in ("curve", "line"):
        want, got = made.path(name), found.path(name)
        assert got.columns.keys() == want.columns.keys()
        assert all(np.array_equal(got.columns[c], want.columns[c]) for c in want.columns)
        assert got.barrier("train_loss") == want.barrier("train_loss")


def test_cli_study_and_upload(home, capsys):
    assert cli_main(["study", "pair", str(DEFAULTS / "grda"), str(SGD)]) == 0
    assert [m.label for m in get_study("pair").members] == ["grda", "sgd"]
    assert cli_main(["study"]) == 0
    out = capsys.readouterr().out
    assert "pair" in out and "A grda" in out
    assert cli_main(["study", "pair", str(SGD), str(GRDA)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["upload", str(GRDA)]) == 0
    assert [m.label for m in list_uploads()] == ["final.safetensors"]
    junk = home / "junk.pt"
    junk.write_bytes(b"junk")
    assert cli_main(["upload", str(junk), "--arch", "mlp"]) == 2
    assert "junk.pt: not a readable PyTorch state dict" in capsys.readouterr().err


# --- the app ---
