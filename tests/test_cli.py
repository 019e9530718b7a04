from pathlib import Path

import pytest

from landscape.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_info_prints_metadata_and_sparsity(capsys):
    assert main(["info", str(REPO / "checkpoints" / "grda" / "final.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "parameters    13754" in out
    assert "exactly zero" in out and "features.0.weight" in out and "test_acc" in out


def test_info_on_garbage_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "bad.safetensors" in err[0]


def test_info_pt_needs_architecture(tmp_path, capsys):
    import torch

    from landscape.models import build_model

    sd = build_model("mlp", in_shape=(1, 8, 8), num_classes=10).state_dict()
    torch.save(sd, tmp_path / "m.pt")
    assert main(["info", str(tmp_path / "m.pt")]) == 2
    assert "architecture" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "m.pt"), "--arch", "mlp"]) == 0


def test_train_command_writes_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--arch", "mlp", "--arch-kwargs", '{"widths": [8]}', "--epochs", "1"]
    args += ["--optimizer", "grda", "--c", "0.01", "--snapshots", "2", "--out", str(out)]
    assert main(args) == 0
    assert (out / "final.safetensors").exists() and (out / "run.json").exists()
    assert len(list((out / "trajectory").glob("*.safetensors"))) == 2
    assert "test_acc" in capsys.readouterr().out


def test_bad_arch_kwargs_is_an_argparse_error():
    with pytest.raises(SystemExit):
        main(["train", "--arch-kwargs", "[1, 2]", "--out", "x"])
