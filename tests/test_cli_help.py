"""`landscape <cmd> --help`, argument errors and out-of-range options answer before torch loads
(issue 15; the configs live in the torch-free landscape.configs), and the choices read from the
modules' source equal those of the imported modules."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each case parsed as `landscape ...` (only that command's parser is built): argparse rejects
# the value, and the message names what is wrong.
BAD_VALUES = [
    (["plane", "a", "b", "--grid", "x"], "invalid int value: 'x'"),
    (["train", "--arch", "nope", "--out", "o"], "invalid choice: 'nope'"),
    (["train", "--data", "nope", "--out", "o"], "invalid choice: 'nope'"),
    (["import", "f.pt", "--out", "o", "--normalize", "x"], "invalid choice: 'x'"),
    (["info", "x.pt", "--arch", "nope"], "unknown architecture 'nope'"),
    (["sweep", "--c", "0.1", "--mu", "x", "--out", "o"], "not a comma-separated list: 'x'"),
    (["prune", "x.safetensors", "--out", "o"], "required: --sparsity"),
    (["slice", "a", "--direction", "sideways"], "invalid choice: 'sideways'"),
    (["pca", "run", "--centre", "nowhere"], "invalid choice: 'nowhere'"),
    (["threeway", "a", "b", "--margin", "wide"], "invalid float value: 'wide'"),
]

# Values the config's checks reject: the command builds its config before it imports torch or
# reads a file (none of these checkpoints exist), so each is one `error:` line and exit 2.
RANGE_ERRORS = [
    (["plane", "a", "b", "--third", "c", "--grid", "0"], "grid (points per axis) must be in"),
    (["curve", "a", "b", "--out", "o", "--order", "0"], "order must be in [1, 20]"),
    (["train", "--out", "o", "--epochs", "0"], "epochs and batch_size must be >= 1"),
    (["slice", "a", "--points", "1"], "points must be in [2, 100001], got 1"),
    (["hessian", "a", "--k", "0"], "k must be in [1, 200], got 0"),
    (["random-plane", "a", "--grid", "1"], "grid (points per axis) must be in"),
    (["pca", "run", "--margin", "-1"], "margin must be in [0, 100], got -1.0"),
    (["frontier", "sweep", "--points", "1"], "points must be in [2, 100001]"),
    (["threeway", "a", "b", "--grid", "1"], "grid (points per axis) must be in"),
    (["sweep", "--c", "0.1", "--mu", "0.6", "--out", "o", "--batch-size", "0"], "batch_size"),
]

# In one process: every command's help, an unknown option, the bad values and the range errors
# above, then whether torch was imported; then each command's options described before and
# after the modules whose source was read are imported (so the second pass reads the modules).
SCRIPT = r"""
import contextlib, importlib, io, json, sys
import landscape.cli.options as options
from landscape.cli import COMMANDS, build_parser, main

read, tree = set(), options._module_tree
options._module_tree = lambda module: read.add(module) or tree(module)


def exit_of(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as done:
            code = done.code
    return [code, out.getvalue(), err.getvalue()]


def options_of(cmd):
    sub = next(a for a in build_parser((cmd,))._actions if a.dest == "command")
    return [[a.dest, a.option_strings, a.default, a.choices and list(a.choices), a.help,
             a.required] for a in sub.choices[cmd]._actions]


report = {cmd: {"help": exit_of([cmd, "--help"]), "unknown": exit_of([cmd, "--no-such-opt"])}
          for cmd in COMMANDS}
report["bad"] = [exit_of(argv) for argv, _ in json.loads(sys.argv[1])]
report["range"] = [exit_of(argv) for argv, _ in json.loads(sys.argv[2])]
report["torch"] = "torch" in sys.modules
light = {cmd: options_of(cmd) for cmd in COMMANDS}
for module in read:
    importlib.import_module(module)
report["read"] = sorted(read)
report["differ"] = [cmd for cmd in COMMANDS if json.dumps(options_of(cmd)) != json.dumps(light[cmd])]
print(json.dumps(report, default=str))
"""


def _report() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(BAD_VALUES), json.dumps(RANGE_ERRORS)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_help_argument_and_range_errors_of_every_command_do_not_import_torch():
    from landscape.cli import COMMANDS

    report = _report()
    assert report["torch"] is False
    for cmd in COMMANDS:
        code, out, _ = report[cmd]["help"]
        assert code == 0 and out.startswith(f"usage: landscape {cmd}"), cmd
        code, _, err = report[cmd]["unknown"]
        assert code == 2 and "error: " in err, cmd  # unrecognized, or a missing argument
    for (argv, message), (code, _, err) in zip(BAD_VALUES, report["bad"], strict=True):
        assert code == 2 and message in err, argv
    for (argv, message), (code, out, err) in zip(RANGE_ERRORS, report["range"], strict=True):
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1, (argv, err)
        assert lines[0].startswith("error: ") and message in lines[0], argv
    # The source reader, not a fallback import, answered: it read the registries' modules.
    assert {"landscape.models", "landscape.data", "landscape.sources"} <= set(report["read"])
    assert report["differ"] == []  # options, defaults, choices and help as from the modules


def test_bare_help_and_importing_the_cli_do_not_import_torch():
    code = """
import sys
from landscape.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print("torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stderr
