"""The commands that train, inspect and manage files: train, defaults, info, import, app,
sweep, prune, masks, upload.

The parsers take their options from the torch-free configs (:mod:`landscape.configs`) and
read the choices kept in torch modules from their source (:mod:`landscape.cli.options`); each
command builds its config first and then imports what it runs, so ``--help``, argument errors
and out-of-range options answer before torch loads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from landscape import configs
from landscape.cli.options import add_config, config_from, light_constant, light_keys
from landscape.datasources import DATASETS

if TYPE_CHECKING:
    from landscape.store import Store

__all__ = ["COMMANDS", "make_defaults"]


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _normalizations() -> tuple[str, ...]:
    return tuple(sorted(light_keys("landscape.data:NORMALIZATIONS")))


def _add_train_options(p: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """The TrainConfig options (defaults and help from the dataclass) and --arch-kwargs."""
    choices = {
        "data": DATASETS,
        "normalize": _normalizations(),
        "arch": tuple(sorted(light_keys("landscape.models:MODELS"))),
        "optimizer": configs.OPTIMIZERS,
        "lr_schedule": configs.SCHEDULES,
    }
    add_config(p, configs.TrainConfig, skip=skip, choices=choices)
    _kwargs_option(p, '{"hidden": 32}')


def _kwargs_option(p: argparse.ArgumentParser, example: str) -> None:
    help_text = f"architecture arguments as JSON, e.g. {example} (default: {{}})"
    p.add_argument("--arch-kwargs", type=_json_dict, default={}, help=help_text)


def _config_from(args: argparse.Namespace, **overrides) -> configs.TrainConfig:
    """The training config of the options, checked (before torch loads)."""
    cfg = config_from(args, configs.TrainConfig, **overrides)
    cfg.check()
    return cfg


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = _config_from(args)
    from landscape.cli.text import print_metrics
    from landscape.progress import terminal_progress
    from landscape.train import train

    with terminal_progress("train") as progress:
        run = train(cfg, args.out, progress=progress)
    print_metrics(f"run written to {run.path}", run.record["metrics"])
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SGD / gRDA / gRDAM with trajectory snapshots")
    _add_train_options(p)
    p.add_argument("--out", required=True, help="run folder to write (required)")
    p.set_defaults(func=_cmd_train)


# The default study: digits + cnn, SGD and gRDA from one shared initial checkpoint.
DEFAULT_RUNS: dict[str, dict] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1},
    "grda": {"optimizer": "grda", "lr": 0.1, "c": 0.03, "mu": 0.7},
}
DEFAULT_COMMON: dict = {
    "data": "digits",
    "arch": "cnn",
    "epochs": 60,
    "lr_schedule": "paper",
    "snapshots": 11,
    "seed": 0,
}


def make_defaults(out: Path, *, epochs: int | None = None) -> dict[str, dict]:
    """Write init.safetensors and the sgd/ and grda/ runs of the default study to ``out``."""
    from landscape.progress import terminal_progress
    from landscape.train import make_initial, train

    common = DEFAULT_COMMON | ({"epochs": epochs} if epochs is not None else {})
    make_initial(configs.TrainConfig(**common), out / "init.safetensors")
    records = {}
    for name, opts in DEFAULT_RUNS.items():
        cfg = configs.TrainConfig(**common, **opts, init=str(out / "init.safetensors"))
        with terminal_progress(name) as progress:
            records[name] = train(cfg, out / name, progress=progress).record
    return records


def _cmd_defaults(args: argparse.Namespace) -> int:
    from landscape.cli.text import print_metrics
    from landscape.workspace import default_checkpoints

    records = make_defaults(Path(args.out or default_checkpoints()), epochs=args.epochs)
    for name, rec in records.items():
        print_metrics(f"{name}: {rec['wall_time_s']:.1f} s", rec["metrics"])
    return 0


def _add_defaults(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("defaults", help="regenerate the bundled default digits runs")
    p.add_argument(
        "--out", default=None,
        help="folder for init.safetensors, sgd/ and grda/ (default: the bundled runs' folder, "
        "$LANDSCAPE_CHECKPOINTS if set)",
    )  # fmt: skip
    p.add_argument(
        "--epochs", type=int, default=None,
        help=f"epochs of each run, to shorten them (default: {DEFAULT_COMMON['epochs']})",
    )  # fmt: skip
    p.set_defaults(func=_cmd_defaults)


def _arch_name(text: str) -> str:
    """A registry or research-code name, or a torchvision:/file: source (an export: program is
    named by its file, never by --arch)."""
    names = [*light_keys("landscape.models:MODELS"), *light_keys("landscape.models:RESEARCH_ARCHS")]
    sources = tuple(light_constant(f"landscape.sources:{s}") for s in ("TORCHVISION", "FILE"))
    if text in names or text.startswith(sources):
        return text
    raise argparse.ArgumentTypeError(f"unknown architecture {text!r} (see --help)")


def _arch_option(args: argparse.Namespace) -> dict | None:
    from landscape.sources import trust_command_line

    trust_command_line(args.arch, args.model_path)  # the user's own files and folders
    return {"name": args.arch, "kwargs": args.arch_kwargs} if args.arch else None


def _add_arch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arch",
        type=_arch_name,
        metavar="ARCH",
        help="architecture of a state dict: a registry or research name, torchvision:<name> "
        "(landscape[zoo]) or file:<path.py>:<callable> (default: recognised from its keys)",
    )
    _kwargs_option(p, '{"depth": 16}')
    p.add_argument(
        "--model-path", action="append", help="trust the model files in this folder (default: none)"
    )


def _not_a_folder(path: Path) -> None:
    """ValueError naming a checkpoint inside ``path`` when it is a folder (run folders too)."""
    if not path.is_dir():
        return
    inside = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pt"))
    example = path / "final.safetensors" if (path / "final.safetensors").exists() else None
    example = example or (inside[0] if inside else path / "final.safetensors")
    raise ValueError(f"{path} is a folder: give a checkpoint file (e.g. {example})")


def _cmd_info(args: argparse.Namespace) -> int:
    from landscape.checkpoints import TORCH_SUFFIXES
    from landscape.cli.text import print_checkpoint, print_research
    from landscape.research import load_any, open_research

    _not_a_folder(Path(args.checkpoint))
    if Path(args.checkpoint).suffix.lower() in TORCH_SUFFIXES:
        print_research(open_research(args.checkpoint, arch=_arch_option(args)))
        return 0
    ckpt = load_any(args.checkpoint, arch=_arch_option(args), trust=args.trust)
    print(f"file          {ckpt.path}")
    print_checkpoint(ckpt)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="metadata, metrics, parameter count and sparsity")
    p.add_argument(
        "checkpoint", help=".safetensors, a .pt/.pth/.ckpt/.bin model or curve file, or .pt2"
    )
    _add_arch_options(p)
    p.add_argument(
        "--trust", action="store_true", help="open .pt2 (loading it can run code; default: off)"
    )
    p.set_defaults(func=_cmd_info)


def _data_option(args: argparse.Namespace) -> dict | None:
    if args.data is None:
        return None
    data = {"name": args.data, "split_seed": args.split_seed}
    if args.normalize is not None:
        data["normalize"] = args.normalize
    if args.data_root:
        data["root"] = args.data_root
    return data


def _cmd_import(args: argparse.Namespace) -> int:
    from landscape.cli.text import print_research
    from landscape.research import export_research, open_research

    found = open_research(args.file, arch=_arch_option(args), data=_data_option(args))
    print_research(found)
    files = export_research(found, args.out)
    print("written: " + ", ".join(str(f) for f in files.values()))
    if found.kind == "curve":
        print(
            f"evaluate it: landscape curve {files['start']} {files['end']} "
            f"--curve {files['curve']} --out <folder> [--data-root <folder>]"
        )
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a model or curve file of the mode-connectivity code")
    p.add_argument("file", help=".pt/.pth file (torch.save of model_state/optimizer_state)")
    p.add_argument(
        "--out", required=True, help="folder for model.safetensors or start/end/curve (required)"
    )
    _add_arch_options(p)
    p.add_argument(
        "--data", choices=DATASETS, default=None, help="data set (default: as recognised)"
    )
    p.add_argument("--split-seed", type=int, default=0, help="train/test split seed (default: 0)")
    p.add_argument(
        "--normalize", choices=_normalizations(), default=None,
        help="input normalisation (default: as recognised)",
    )  # fmt: skip
    p.add_argument(
        "--data-root",
        help="folder with the data set's files, kept in the metadata (default: none)",
    )
    p.set_defaults(func=_cmd_import)


def _cmd_app(args: argparse.Namespace) -> int:
    import subprocess

    from landscape.app import server_command

    return subprocess.call(server_command(port=args.port))


def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the dashboard (http://localhost:8501)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default: 8501)")
    p.set_defaults(func=_cmd_app)


def _cmd_sweep(args: argparse.Namespace) -> int:
    import os
    from contextlib import nullcontext
    from dataclasses import replace

    if args.sgd is not None and not args.magnitude:
        raise ValueError("--sgd is only used with --magnitude")
    d = configs.TrainConfig()
    # Every run gets the grid's c, mu and seed; --seed seeds the shared initial weights.
    base = _config_from(args, optimizer="grda", c=d.c, mu=d.mu)
    cfg = config_from(args, configs.SweepConfig, train=base)
    from landscape import verdicts
    from landscape.distributed import launch, process_group, relaunch_argv
    from landscape.progress import terminal_progress
    from landscape.sweep import run_sweep

    if args.launcher > 1 and "WORLD_SIZE" not in os.environ:
        from landscape.cli import build_parser

        return launch(args.launcher, relaunch_argv(args, build_parser().parse_args))
    # A barrier waits while the other ranks train their share: allow a week, not 30 minutes.
    with process_group(cfg.train.device, timeout_s=7 * 24 * 3600.0) as group:
        cfg = replace(cfg, train=replace(cfg.train, device=group.device))
        bar = terminal_progress("sweep") if group.rank == 0 else nullcontext(None)
        with bar as progress:
            result = run_sweep(cfg, args.out, progress=progress)
    if group.rank != 0:
        return 0  # rank 0 prints the table
    print(f"{'kind':<10}{'c':>9}{'mu':>6}{'seed':>5}{'sparsity':>10}{'test_acc':>9}  frontier")
    for r in result.rows:
        print(
            f"{r['kind']:<10}{r['c']:>9g}{r['mu']:>6g}{r['seed']:>5}{r['sparsity']:>10.4f}"
            f"{r['test_acc']:>9.4f}  {'*' if r['pareto'] else ''}"
        )
    print(f"trained {result.trained} runs, reused {result.reused}; table in {result.path}")
    if any(r["kind"] != "grda" for r in result.rows):
        n_test, epochs = verdicts.sweep_facts(result)
        found = verdicts.pruning(result, n_test=n_test, epochs=epochs)
        print(f"verdict: {found.title}. {found.sentence}")
    if args.connect:  # the connectivity frontier (landscape.cli.frontier), rank 0 alone
        from landscape.cli.frontier import connect

        with terminal_progress("frontier") as progress:
            _, text = connect(result.path, cfg.sgd, configs.CurveConfig(device=cfg.train.device),
                              progress=progress)  # fmt: skip
        print(text)
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train a gRDA (c, mu, seed) grid; sparsity-accuracy frontier")
    # The grid's --c/--mu lists replace the single values of the training options.
    _add_train_options(p, skip=("c", "mu", "optimizer"))
    add_config(
        p, configs.SweepConfig, required=("c", "mu"),
        choices={"scope": ("global", "layer")},
    )  # fmt: skip
    p.add_argument("--out", required=True, help="sweep folder, resumed if it exists (required)")
    p.add_argument("--connect", action="store_true", help="then fit a curve from --sgd to "
                   "every model: `landscape frontier` with default curve settings")  # fmt: skip
    p.add_argument(
        "--launcher", type=int, default=1,
        help="share the runs over N local processes, or under torchrun (default: 1)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_sweep)


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="result folder (default: $LANDSCAPE_HOME)")


def _store(args: argparse.Namespace) -> Store:
    from landscape.store import Store

    return Store(args.store) if args.store else Store()


def _cmd_prune(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must be a .safetensors file, got {out}")
    cfg = config_from(args, configs.PruneConfig)
    from landscape.cli.text import print_metrics
    from landscape.progress import terminal_progress
    from landscape.research import load_any
    from landscape.store import atomic_write
    from landscape.studies import prune

    inputs = prune.PruneInputs(load_any(args.checkpoint))
    with terminal_progress("prune") as progress:
        res = prune.prune(cfg, inputs, store=_store(args), progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, Path(res.path).read_bytes())
    print_metrics(f"pruned checkpoint written to {out} (hash {res.hash})", res.metrics)
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="magnitude-prune a checkpoint, optionally fine-tune")
    p.add_argument("checkpoint", help="checkpoint to prune (.safetensors or .pt/.pth)")
    add_config(
        p, configs.PruneConfig, required=("sparsity",),
        choices={"scope": ("global", "layer")},
    )  # fmt: skip
    p.add_argument("--out", required=True, help=".safetensors file to write (required)")
    _store_option(p)
    p.set_defaults(func=_cmd_prune)


def _cmd_masks(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    cfg = config_from(args, configs.MasksConfig)
    from landscape.studies import masks, run

    ms = run(masks.KIND, cfg, masks.MasksInputs(Path(args.run)), store=_store(args))
    if args.json:
        print(json.dumps(asdict(ms), indent=2))
        return 0
    print(f"{'step':>8}{'epoch':>8}{'sparsity':>10}{'J(final)':>10}{'J(prev)':>10}{'flipped':>10}")
    for i, step in enumerate(ms.steps):
        prev = "" if ms.jaccard_prev[i] is None else f"{ms.jaccard_prev[i]:.4f}"
        flip = "" if ms.flipped[i] is None else f"{ms.flipped[i]:.4f}"
        print(
            f"{step:>8}{ms.epochs[i]:>8.2f}{ms.sparsity[i]:>10.4f}{ms.jaccard_final[i]:>10.4f}"
            f"{prev:>10}{flip:>10}"
        )
    if ms.settled_step is None:
        print(f"mask never settled: the last change flips >= {ms.tol:g} of the weights")
    else:
        print(f"mask settled after step {ms.settled_step}: later changes flip < {ms.tol:g}")
    return 0


def _add_masks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("masks", help="zero-mask stability over a run's trajectory snapshots")
    p.add_argument("run", help="run folder")
    add_config(p, configs.MasksConfig)
    p.add_argument(
        "--json", action="store_true", help="print the result as JSON (default: a table)"
    )
    _store_option(p)
    p.set_defaults(func=_cmd_masks)


def _cmd_upload(args: argparse.Namespace) -> int:
    from landscape.sources import is_external
    from landscape.workspace import save_upload, upload_arch

    data = {"name": args.data, "split_seed": args.split_seed}
    if args.data_root:
        data["root"] = args.data_root
    arch = _arch_option(args)
    if arch is not None and not is_external(arch["name"]):
        arch = upload_arch(args.arch, args.arch_kwargs, data)
    path = Path(args.file)
    up = save_upload(path, path.name, arch=arch, data=data)  # read in place, not into memory
    print(f"{'stored' if up.new else 'already stored'}: {up.member.label} -> {up.member.path}")
    return 0


def _add_upload(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload", help="keep a checkpoint for studies, like the app's Upload page")
    p.add_argument("file", help=".safetensors, or a .pt/.pth state dict with --arch")
    _add_arch_options(p)
    p.add_argument(
        "--data", choices=DATASETS, default="digits",
        help="data set, if the file names none (default: digits)",
    )  # fmt: skip
    p.add_argument("--split-seed", type=int, default=0, help="train/test split seed (default: 0)")
    p.add_argument("--data-root", help="folder with the mnist/cifar10 files (default: none)")
    p.set_defaults(func=_cmd_upload)


COMMANDS = (
    _add_train,
    _add_defaults,
    _add_info,
    _add_import,
    _add_app,
    _add_sweep,
    _add_prune,
    _add_masks,
    _add_upload,
)
