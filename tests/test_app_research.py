"""The dashboard on files of the mode-connectivity research code: upload, recognise, compare."""

from __future__ import annotations

import torch
from streamlit.testing.v1 import AppTest

from landscape.app import MAIN as APP_MAIN
from landscape.checkpoints import load_checkpoint
from landscape.curves import load_curve
from landscape.workspace import imported_curves, list_studies, save_upload
from tests.research_files import (
    WRN,
    curve_file,
    grda_state,
    make_model,
    make_points,
    save,
    tiny_cifar10,
)

MAIN = str(APP_MAIN)


def test_save_upload_of_a_curve_keeps_endpoints_curve_and_study(home, tmp_path):
    model = make_model(WRN)
    pts = make_points(model, 3)
    blob = curve_file(tmp_path / "curve-30.pt", model, pts).read_bytes()
    data = {"name": "cifar10", "split_seed": 0, "root": str(tmp_path / "cifar")}
    up = save_upload(blob, "curve-30.pt", data=data)
    assert up.study == "curve-30.pt" and up.end is not None
    a, b = load_checkpoint(up.member.path), load_checkpoint(up.end.path)
    # The user's folder completes what the recognised runs used (normalisation "resnet").
    assert a.meta["data"] == {**data, "normalize": "resnet"}
    assert torch.equal(a.state["linear.weight"], pts[0]["linear.weight"])
    assert torch.equal(b.state["linear.weight"], pts[2]["linear.weight"])
    (path,) = imported_curves(a, b)
    assert torch.equal(load_curve(path, a, b).bends[0]["conv1.weight"], pts[1]["conv1.weight"])
    study = [s for s in list_studies() if s.name == "curve-30.pt"][0]
    assert [m.path for m in study.members] == [up.member.path, up.end.path]
    # The same file again: nothing new, no second study.
    again = save_upload(blob, "curve-30.pt", data=data)
    assert not again.new and [s.name for s in list_studies()].count("curve-30.pt") == 1


def test_upload_page_recognises_then_connectivity_compares_curves(home, tmp_path):
    root = tiny_cifar10(tmp_path / "cifar")
    model = make_model(WRN)
    blob = curve_file(tmp_path / "c.pt", model, make_points(model, 3)).read_bytes()
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("views/upload.py").run()
    at.file_uploader(key="upload_file").upload("c.pt", blob)
    at.run()
    assert not at.exception
    info = " ".join(i.value for i in at.info)
    assert "Recognised: WideResNet10x1" in info and "Bezier curve of order 2" in info
    assert at.selectbox(key="upload_data").value == "cifar10"
    assert at.selectbox(key="upload_norm").value == "resnet"
    assert any("not bundled" in w.value for w in at.warning)  # no folder yet
    at.text_input(key="upload_root").input(str(root)).run()
    at.button(key="upload_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Study **c.pt**" in s.value for s in at.success)
    at.switch_page("views/connectivity.py").run()
    assert not at.exception
    assert at.selectbox(key="study").value == "c.pt"  # the new study is selected
    at.number_input(key="curve_points").set_value(3)
    at.number_input(key="curve_epochs").set_value(1).run()
    at.radio(key="curve_source").set_value("imported: c.pt").run()
    at.button(key="curve_compute").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Compute the curve fitted here" in " ".join(c.value for c in at.caption)
    # The Plane page takes the bend of the curve chosen on Connectivity: the imported one.
    at.switch_page("views/plane.py").run()
    assert not at.exception
    assert "Curve: the imported curve c.pt" in " ".join(c.value for c in at.caption)
    at.number_input(key="plane_grid").set_value(2).run()
    at.button(key="plane_compute").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.get("plotly_chart")  # the plane through the imported bend is drawn
    at.switch_page("views/connectivity.py").run()
    at.radio(key="curve_source").set_value("fitted here").run()
    at.button(key="curve_compute").click().run()
    assert not at.exception and not at.error
    # Both computed: the comparison charts (train loss and test accuracy) are drawn.
    assert len(at.get("plotly_chart")) == 6 + 2  # 5 path charts and the zeros-kept heat map


def test_upload_page_model_file_shows_optimizer_and_bad_file_errors(home, tmp_path):
    model = make_model(WRN)
    blob = save(tmp_path / "g.pt", model.state_dict(), optimizer_state=grda_state(model, 9))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    at.switch_page("views/upload.py").run()
    at.file_uploader(key="upload_file").upload("g.pt", blob.read_bytes())
    at.run()
    info = " ".join(i.value for i in at.info)
    assert "a model" in info and "name grda" in info and "steps 9" in info
    at.file_uploader(key="upload_file").upload("junk.pt", b"\x00junk" * 20)
    at.run()
    assert not at.exception
    # Unreadable is told apart from not recognised: no "choose it below" for a broken file.
    assert not any("not recognised" in i.value for i in at.info)
    assert any(e.value.startswith("Not readable: junk.pt:") for e in at.error)
    at.selectbox(key="upload_data").set_value("digits").run()  # still cifar10 from g.pt
    at.button(key="upload_add").click().run()
    assert not at.exception
    assert any(e.value.startswith("Not added: junk.pt:") for e in at.error)
    assert not (home / "uploads").exists()
