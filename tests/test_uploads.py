"""Hostile uploads: broken stored files, quota and deletion, long names, bytes kept in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from landscape.app import MAIN as APP_MAIN
from landscape.checkpoints import load_checkpoint
from landscape.cli import main as cli_main
from landscape.deletion import delete_upload
from landscape.workspace import (
    Member,
    create_study,
    default_checkpoints,
    get_study,
    list_studies,
    list_uploads,
    save_upload,
    uploads_usage,
)
from tests.research_files import WRN, curve_file, make_model, make_points

MAIN = str(APP_MAIN)
SGD = default_checkpoints() / "sgd" / "final.safetensors"
GRDA = default_checkpoints() / "grda" / "final.safetensors"
LONG = "x" * 300 + ".safetensors"


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _break(path: str) -> None:
    """Make a stored upload fail validation (as a file refused by a newer check would)."""
    blob = Path(path).read_bytes()
    Path(path).write_bytes(blob[: len(blob) // 2])


# --- 1: a stored upload that no longer validates ---


def test_broken_upload_is_listed_with_delete_and_page_still_works(home):
    up = save_upload(GRDA.read_bytes(), "copy.safetensors")
    _break(up.member.path)
    at = _app("upload")
    headers = [h.value for h in at.subheader]
    assert "Uploaded checkpoints" in headers and "New study" in headers
    table = at.dataframe[0].value
    assert table.loc[0, "status"].startswith("broken: ")
    assert any("copy.safetensors" in e.value and "no longer loads" in e.value for e in at.error)
    at.selectbox(key="delete_upload").set_value(up.hash).run()
    at.button(key="delete_upload_button").click().run()
    assert not at.exception and not list_uploads()
    assert "Deleted copy.safetensors" in at.success[0].value


def test_study_with_a_broken_member_shows_an_error_not_a_traceback(home):
    up = save_upload(GRDA.read_bytes(), "copy.safetensors")
    create_study("mine", [Member("sgd", str(SGD)), up.member])
    _break(up.member.path)
    at = _app()
    at.selectbox(key="study").set_value("mine").run()
    for page in ("overview", "connectivity", "upload"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.selectbox(key="study").options[-1] == "mine"  # the sidebar still lists it
        if page != "upload":
            assert any("does not load" in e.value for e in at.error), page


# --- 6: quota, per-file limit, deletion ---


def test_quota_refuses_the_upload_that_would_exceed_it(home, monkeypatch):
    size = GRDA.stat().st_size
    monkeypatch.setenv("LANDSCAPE_UPLOAD_QUOTA", str(int(size * 1.5)))
    save_upload(GRDA.read_bytes(), "one.safetensors")
    with pytest.raises(ValueError, match=r"two.safetensors: .* over the quota .*LANDSCAPE_UPLOAD"):
        save_upload(SGD, "two.safetensors")
    assert len(list_uploads()) == 1 and uploads_usage() <= size * 1.5


def test_per_file_limit_is_the_setting(home, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_MAX_UPLOAD", "1000")
    with pytest.raises(ValueError, match="over the size limit of 1000 bytes"):
        save_upload(GRDA, "big.safetensors", max_bytes=10**9)
    assert not list_uploads()


def test_delete_upload_used_by_a_study_is_refused_naming_it(home):
    up = save_upload(GRDA, "copy.safetensors")
    create_study("mine", [Member("sgd", str(SGD)), up.member])
    with pytest.raises(ValueError, match="used by the studies 'mine'"):
        delete_upload(up.hash)
    assert Path(up.member.path).exists()
    assert delete_upload(up.hash, with_studies=True) == ["mine"]
    assert not Path(up.member.path).exists() and [s.name for s in list_studies()] == ["default"]
    with pytest.raises(ValueError, match="no upload"):
        delete_upload(up.hash)
    with pytest.raises(ValueError, match="not an upload"):
        delete_upload("../studies")


def test_cli_uploads_list_rm_and_study_rm(home, capsys):
    up = save_upload(GRDA, "copy.safetensors")
    create_study("mine", [Member("sgd", str(SGD)), up.member])
    assert cli_main(["uploads", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{up.hash}" in out and "copy.safetensors" in out and "bytes used" in out
    assert cli_main(["uploads", "rm", up.hash]) == 2
    assert "'mine'" in capsys.readouterr().err
    assert cli_main(["study", "rm", "mine"]) == 0
    assert [s.name for s in list_studies()] == ["default"]
    assert cli_main(["study", "rm", "default"]) == 2
    assert cli_main(["uploads", "rm", up.hash]) == 0
    assert not list_uploads() and uploads_usage() == 0


def test_page_deletes_a_study_and_refuses_an_upload_in_use(home):
    up = save_upload(GRDA, "copy.safetensors")
    create_study("mine", [Member("sgd", str(SGD)), up.member])
    at = _app("upload")
    at.button(key="delete_upload_button").click().run()
    assert "used by the studies 'mine'" in at.error[0].value and list_uploads()
    at.button(key="delete_study_button").click().run()
    assert not at.exception and [s.name for s in list_studies()] == ["default"]


# --- 7: long names are labels, never paths ---


def test_300_character_name_is_stored_by_hash_with_a_short_label(home):
    up = save_upload(GRDA.read_bytes(), LONG)
    assert Path(up.member.path).name == f"{up.hash}.safetensors"
    assert len(up.member.label) <= 120 and up.member.label.endswith(".safetensors")


def test_300_character_curve_name(home, tmp_path):
    model = make_model(WRN)
    blob = curve_file(tmp_path / "c.pt", model, make_points(model, 3)).read_bytes()
    data = {"name": "cifar10", "split_seed": 0, "root": str(tmp_path / "cifar")}
    up = save_upload(blob, "c" * 300 + ".pt", data=data)
    assert len(Path(up.curve).name) < 200 and len(up.study) <= 80
    assert get_study(up.study).members[0].path == up.member.path
    assert delete_upload(up.hash, with_studies=True) == [up.study]
    assert not Path(up.curve).exists()


def test_a_curve_upload_reads_its_endpoints_once(home, tmp_path, monkeypatch):
    """The study made for a curve file checks the endpoints it holds: no file read again."""
    import landscape.workspace as workspace

    model = make_model(WRN)
    blob = curve_file(tmp_path / "c.pt", model, make_points(model, 3)).read_bytes()
    reads = []
    monkeypatch.setattr(workspace, "load_checkpoint", lambda *a, **k: reads.append(a))
    data = {"name": "cifar10", "split_seed": 0, "root": str(tmp_path / "cifar")}
    up = save_upload(blob, "curve.pt", data=data)
    assert reads == [] and get_study(up.study).members[1].path == up.end.path


def test_300_character_name_in_the_page(home):
    at = _app("upload")
    at.file_uploader(key="upload_file").upload(LONG, GRDA.read_bytes())
    at.run()
    at.button(key="upload_add").click().run()
    assert not at.exception and not at.error
    assert "Stored" in at.success[0].value and len(list_uploads()[0].label) <= 120


# --- 10a: no bytes kept after an upload ---


def test_upload_keeps_no_bytes_in_session_state_and_no_temp_file(home, tmp_path):
    at = _app("upload")
    at.file_uploader(key="upload_file").upload("copy.safetensors", GRDA.read_bytes())
    at.run()
    at.button(key="upload_add").click().run()
    assert not at.exception and "Stored" in at.success[0].value
    state = {k: at.session_state[k] for k in at.session_state}
    assert not any(isinstance(v, bytes | bytearray | memoryview) for v in state.values())
    assert "upload_spool" not in state  # the temp copy was removed once stored


def test_inspect_research_is_keyed_by_content_hash_not_bytes(tmp_path):
    import inspect

    from landscape.app import sidebar

    params = inspect.signature(sidebar.inspect_research).parameters
    assert list(params) == ["_path", "digest", "filename"]  # the path is not hashed
    model = make_model(WRN)
    path = curve_file(tmp_path / "c.pt", model, make_points(model, 3))
    sidebar.inspect_research.clear()
    first = sidebar.inspect_research(str(path), "d1", "c.pt")
    path.unlink()  # a second call with the same hash reads nothing
    assert sidebar.inspect_research(str(path), "d1", "c.pt") == first


# --- issue 13: architectures from torchvision: and trusted model files ---

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_model"


def test_upload_arch_takes_external_sources_and_refuses_untrusted_files(monkeypatch, tmp_path):
    from landscape.workspace import upload_arch

    digits = {"name": "digits", "split_seed": 0}
    assert upload_arch("torchvision:resnet18", {"num_classes": 10}, digits) == {
        "name": "torchvision:resnet18",
        "kwargs": {"num_classes": 10},
    }
    spec = f"file:{EXAMPLE / 'model.py'}:SmallNet"
    with pytest.raises(ValueError, match="not in a trusted folder"):
        upload_arch(spec, {}, digits)
    with pytest.raises(ValueError, match="--trust"):
        upload_arch("export:0123", {}, digits)
    monkeypatch.setenv("LANDSCAPE_MODEL_PATHS", str(EXAMPLE))
    monkeypatch.chdir(EXAMPLE.parent)  # a relative spelling names the same file
    assert upload_arch("file:own_model/model.py:SmallNet", {}, digits)["name"] == spec


def test_page_uploads_a_state_dict_of_a_trusted_model_file(home, monkeypatch, tmp_path):
    import torch

    from landscape.models import build_model

    monkeypatch.setenv("LANDSCAPE_MODEL_PATHS", str(EXAMPLE))
    spec = f"file:{EXAMPLE / 'model.py'}:SmallNet"
    torch.save(build_model(spec).state_dict(), tmp_path / "s.pt")
    at = _app("upload")
    at.file_uploader(key="upload_file").upload("s.pt", (tmp_path / "s.pt").read_bytes())
    at.run()
    assert any("not recognised" in i.value for i in at.info) and not at.error
    at.radio(key="upload_arch_source").set_value("Model file (trusted)").run()
    assert at.selectbox(key="upload_model_file").options == [spec]
    at.button(key="upload_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Stored" in at.success[0].value and spec in at.success[0].value
    assert len(list_uploads()) == 1


def test_cli_study_new_and_the_old_form(home, capsys, tmp_path):
    import torch

    assert cli_main(["study", "new", "mine", str(SGD), str(GRDA)]) == 0
    assert cli_main(["study", "old", str(SGD), str(GRDA)]) == 0
    for name, path in (("a.pt", SGD), ("b.pt", GRDA)):  # bare state dicts: --arch and --data
        torch.save(load_checkpoint(path).state, tmp_path / name)
    arch = json.dumps(load_checkpoint(GRDA).arch["kwargs"])
    pts = [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    argv = ["study", "new", "pt", *pts, "--arch", "cnn", "--arch-kwargs", arch]
    assert cli_main([*argv, "--data", "digits"]) == 0
    assert [m.label for m in get_study("pt").members] == ["a.pt", "b.pt"]
    assert {s.name for s in list_studies()} >= {"mine", "old", "pt"}
    assert cli_main(["study", "new", "lone", str(SGD)]) == 2
