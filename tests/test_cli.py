import dataclasses
import typing
from pathlib import Path

import numpy as np
import pytest

from landscape.cli import build_parser, main
from landscape.cli.options import config_from
from landscape.cli.text import curve_table
from landscape.curves import CurveConfig
from landscape.evaluate import METRICS
from landscape.studies.curve import PATH_COLUMNS, CurveResult
from landscape.studies.hessian import HessianConfig
from landscape.studies.masks import MasksConfig
from landscape.studies.pca import PCAConfig
from landscape.studies.plane import PlaneConfig
from landscape.studies.prune import PruneConfig
from landscape.studies.random_plane import RandomPlaneConfig
from landscape.studies.slices import SliceConfig
from landscape.studies.sweep import SweepConfig
from landscape.train import TrainConfig

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

    torch.save({"head.weight": torch.zeros(3, 4)}, tmp_path / "odd.pt")  # no known layout
    assert main(["info", str(tmp_path / "odd.pt")]) == 2
    assert "architecture" in capsys.readouterr().err
    sd = build_model("mlp", in_shape=(1, 8, 8), num_classes=10).state_dict()
    torch.save(sd, tmp_path / "m.pt")
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


STUDY_COMMANDS = [
    # (command line without options, the config dataclass its options come from)
    (["curve", "a", "b", "--out", "o"], CurveConfig),
    (["plane", "a", "b", "--third", "c"], PlaneConfig),
    (["pca", "run"], PCAConfig),
    (["random-plane", "a"], RandomPlaneConfig),
    (["slice", "a"], SliceConfig),
    (["hessian", "a"], HessianConfig),
]


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: unwrap


@pytest.mark.parametrize(("argv", "cls"), STUDY_COMMANDS, ids=lambda x: getattr(x, "__name__", ""))
def test_study_options_take_their_defaults_from_the_config(argv, cls, capsys):
    args = build_parser().parse_args(argv)
    assert config_from(args, cls) == cls()  # no flags: the dataclass's defaults
    text = _help(argv[0], capsys)
    hints = typing.get_type_hints(cls)
    scalar = (int, float, str, bool, int | None, float | None, str | None)
    fields = [f for f in dataclasses.fields(cls) if hints[f.name] in scalar]
    assert fields
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert f"(default: {f.default})" in text, f.name  # as declared, before __post_init__


def test_plane_help_shows_the_config_default_grid(capsys):
    text = _help("plane", capsys)
    assert f"points per axis (default: {PlaneConfig().grid})" in text
    assert "(default: 21)" in text
    assert "(default: 10)" in _help("hessian", capsys)  # HessianConfig.k
    assert f"(default: {CurveConfig().points})" in _help("curve", capsys)


def test_study_options_parse_into_the_config():
    args = build_parser().parse_args(["plane", "a", "b", "--third", "c", "--grid", "5"])
    assert config_from(args, PlaneConfig) == PlaneConfig(grid=5)
    args = build_parser().parse_args(["hessian", "a", "--k", "3", "--subset", "none"])
    assert config_from(args, HessianConfig) == HessianConfig(k=3, subset=None)
    args = build_parser().parse_args(["curve", "a", "b", "--out", "o", "--bn-subset", "64"])
    assert config_from(args, CurveConfig) == CurveConfig(bn_subset=64)


def _curve_result(names: tuple[str, str]) -> tuple[CurveResult, str]:
    t = np.linspace(0, 1, 5)
    cols = {m: np.zeros(5) for m in (*METRICS, *PATH_COLUMNS)}
    curve = {**cols, "train_loss": np.array([1.0, 1.2, 0.9, 0.8, 0.5])}
    line = {**cols, "train_loss": np.array([1.0, 2.0, 3.0, 1.0, 0.5])}
    curve["test_acc"] = np.array([0.9, 0.7, 0.8, 0.85, 0.95])
    line["test_acc"] = np.array([0.9, 0.1, 0.2, 0.5, 0.95])
    curve["segment"] = np.array([0.0, 1.0, 1.0, 1.0, 1.0])
    line["segment"] = np.array([0.0, 0.5, 0.5, 0.5, 0.5])
    res = CurveResult(
        t=t,
        curve=curve,
        line=line,
        curve_layer_sparsity=np.zeros((5, 1)),
        line_layer_sparsity=np.zeros((5, 1)),
        layers=["w"],
        curve_file="c.safetensors",
        config={"order": 2},
        endpoints={},
        bn_samples=100,
        fit_history=[],
    )
    return res, curve_table(res, names)


def test_curve_table_names_both_ends_and_reports_hand_computed_numbers():
    res, text = _curve_result(("sgd/final", "grda/final"))
    head, header, *rows = text.splitlines()
    assert head.startswith("sgd/final (t=0) -> grda/final (t=1), order 2, 5 points")
    assert "BN on 100 samples" in head
    assert "train barrier" in header
    cells = {r.split()[0]: [float(x) for x in r.split()[1:]] for r in rows}
    # Barrier by hand: max_i loss_i - ((1 - t_i) loss_0 + t_i loss_4).
    t = res.t
    for name, loss, acc, length in (
        ("curve", res.curve["train_loss"], res.curve["test_acc"], 4.0),
        ("line", res.line["train_loss"], res.line["test_acc"], 2.0),
    ):
        barrier = max(loss[i] - ((1 - t[i]) * loss[0] + t[i] * loss[-1]) for i in range(5))
        want = [loss.max(), barrier, acc.min(), t[np.argmax(acc)], acc[2], length]
        assert cells[name] == pytest.approx(want, abs=1e-4), name


def test_cli_curve_names_both_default_runs_distinctly(tmp_path, capsys):
    """Both ends are a run's final.safetensors: each is named after its run folder."""
    sgd = REPO / "checkpoints" / "sgd" / "final.safetensors"
    grda = REPO / "checkpoints" / "grda" / "final.safetensors"
    argv = ["curve", str(sgd), str(grda), "--out", str(tmp_path / "o"), "--epochs", "0"]
    argv += ["--points", "3", "--bn-subset", "64", "--store", str(tmp_path / "s")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("sgd/final (t=0) -> grda/final (t=1), order 2")


def test_every_option_of_every_command_has_help():
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, p in sub.choices.items()
        for a in p._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
    ]
    assert missing == []
    for name, p in sub.choices.items():  # every option says its default (or that it is required)
        for a in p._actions:
            if a.option_strings and not isinstance(a, argparse._HelpAction):
                assert "default" in a.help or "required" in a.help, (name, a.option_strings)
        p.format_help()  # no bad %-formatting


def test_info_on_a_folder_names_a_checkpoint(capsys):
    assert main(["info", str(REPO / "checkpoints" / "sgd")]) == 2
    err = capsys.readouterr().err
    assert "sgd is a folder: give a checkpoint file (e.g. " in err
    assert "final.safetensors" in err and "no such file" not in err


def test_unreadable_pt_does_not_leak_internal_errors(tmp_path, capsys):
    (tmp_path / "a.pt").write_bytes(b"a")  # torch.load: IndexError "pop from empty list"
    (tmp_path / "b.pt").write_bytes(b"garbage not a pickle\n")
    for name in ("a.pt", "b.pt"):
        assert main(["info", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert "pop from empty list" not in err and "truncated or garbage" in err
        assert len(err.strip().splitlines()) == 1


def test_study_commands_print_verdicts(tmp_path, capsys):
    a = REPO / "checkpoints" / "sgd" / "final.safetensors"
    b = REPO / "checkpoints" / "grda" / "final.safetensors"
    assert main(["hessian", str(a), "--direction-to", str(b), "--k", "2"]) == 0
    assert "verdict: " in capsys.readouterr().out


def test_the_command_table_matches_the_commands():
    import argparse

    from landscape.cli import COMMANDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {a.dest: a.help for a in sub._choices_actions} == {
        name: text for name, (_, text) in COMMANDS.items()
    }


@pytest.mark.parametrize(
    "cls",
    [cls for _, cls in STUDY_COMMANDS] + [TrainConfig, SweepConfig, PruneConfig, MasksConfig],
    ids=lambda c: c.__name__,
)
def test_the_study_modules_re_export_the_one_torch_free_config(cls):
    # The CLI builds (and so checks) configs from landscape.configs before torch loads: the
    # names the study modules export must be those classes, not second definitions.
    import landscape.configs

    assert cls.__module__ == "landscape.configs"
    assert getattr(landscape.configs, cls.__name__) is cls


def test_a_field_derived_in_post_init_follows_the_other_options():
    # SliceConfig.span is None until __post_init__ derives it from the direction: the parser
    # must pass None on, not the delta direction's 0.5.
    args = build_parser().parse_args(["slice", "a", "--direction", "random"])
    assert config_from(args, SliceConfig).span == 1.0
    args = build_parser().parse_args(["slice", "a", "--to", "b"])
    assert config_from(args, SliceConfig).span == 0.5


def test_list_options_parse_into_the_config():
    args = build_parser().parse_args(["sweep", "--c", "0.001,0.002", "--mu", "0.6", "--out", "o"])
    cfg = config_from(args, SweepConfig)
    assert (cfg.c, cfg.mu, cfg.seeds) == ([0.001, 0.002], [0.6], SweepConfig().seeds)
    args = build_parser().parse_args(
        ["sweep", "--c", "1", "--mu", "1", "--seeds", "3,4", "--out", "o"]
    )
    assert config_from(args, SweepConfig).seeds == [3, 4]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--c", ",", "--mu", "1", "--out", "o"])  # empty


def test_the_lazy_package_keeps_its_public_names():
    import landscape

    for name in landscape.__all__:
        assert getattr(landscape, name) is not None
    from landscape import train

    assert callable(train) and train.__module__ == "landscape.train"
