"""Command line: ``landscape train|info|defaults|app|...``.

Each sub-command is added by a small ``_add_<name>(subparsers)`` function that sets
``func``; every command returns an exit status and reports bad input as one ``error:`` line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from landscape.checkpoints import CheckpointError, load_checkpoint
from landscape.data import DATASETS, DataError
from landscape.models import MODELS, prunable_names
from landscape.params import sparsity
from landscape.progress import terminal_progress
from landscape.train import OPTIMIZERS, SCHEDULES, TrainConfig, make_initial, train

REPO = Path(__file__).resolve().parent.parent
DEFAULTS_DIR = REPO / "checkpoints"


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _add_train_options(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", choices=DATASETS, default=d.data)
    p.add_argument("--data-root", default=d.data_root, help="folder with mnist/cifar10 files")
    p.add_argument("--split-seed", type=int, default=d.split_seed)
    p.add_argument("--arch", choices=sorted(MODELS), default=d.arch)
    p.add_argument("--arch-kwargs", type=_json_dict, default={}, help='JSON, e.g. {"hidden": 32}')
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--c", type=float, default=d.c, help="gRDA sparsity strength")
    p.add_argument("--mu", type=float, default=d.mu, help="gRDA time exponent")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr-schedule", choices=SCHEDULES, default=d.lr_schedule)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--snapshots", type=int, default=d.snapshots)
    p.add_argument("--init", default=d.init, help="start from this checkpoint")
    p.add_argument("--device", default=d.device)


def _config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def _print_metrics(title: str, metrics: dict) -> None:
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<16} {v:.4f}" if isinstance(v, float) else f"  {k:<16} {v}")


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = _config_from(args)
    with terminal_progress("train") as progress:
        run = train(cfg, args.out, progress=progress)
    _print_metrics(f"run written to {run.path}", run.record["metrics"])
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SGD / gRDA / gRDAM with trajectory snapshots")
    _add_train_options(p)
    p.add_argument("--out", required=True, help="run folder to write")
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
    common = DEFAULT_COMMON | ({"epochs": epochs} if epochs is not None else {})
    make_initial(TrainConfig(**common), out / "init.safetensors")
    records = {}
    for name, opts in DEFAULT_RUNS.items():
        cfg = TrainConfig(**common, **opts, init=str(out / "init.safetensors"))
        with terminal_progress(name) as progress:
            records[name] = train(cfg, out / name, progress=progress).record
    return records


def _cmd_defaults(args: argparse.Namespace) -> int:
    records = make_defaults(Path(args.out), epochs=args.epochs)
    for name, rec in records.items():
        _print_metrics(f"{name}: {rec['wall_time_s']:.1f} s", rec["metrics"])
    return 0


def _add_defaults(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("defaults", help="regenerate the bundled default digits runs")
    p.add_argument("--out", default=str(DEFAULTS_DIR))
    p.add_argument("--epochs", type=int, default=None, help="shorten (for tests)")
    p.set_defaults(func=_cmd_defaults)


def _cmd_info(args: argparse.Namespace) -> int:
    arch = {"name": args.arch, "kwargs": args.arch_kwargs} if args.arch else None
    ckpt = load_checkpoint(args.checkpoint, arch=arch)
    model = ckpt.build_model()
    sp = sparsity(ckpt.state, prunable_names(model))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"file          {ckpt.path}")
    print(f"hash          {ckpt.hash}")
    for key in ("arch", "data", "optimizer", "step", "epoch", "seed"):
        print(f"{key:<13} {json.dumps(ckpt.meta.get(key))}")
    print(f"parameters    {n_params}")
    print(f"sparsity      {sp['zero']:.4f} exactly zero, {sp['small']:.4f} below 1e-3")
    for name, frac in sp["layers"].items():
        print(f"  {name:<30} {frac:.4f}")
    _print_metrics("metrics", ckpt.meta.get("metrics") or {})
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="metadata, metrics, parameter count and sparsity")
    p.add_argument("checkpoint")
    p.add_argument("--arch", choices=sorted(MODELS), help="architecture of a .pt/.pth file")
    p.add_argument("--arch-kwargs", type=_json_dict, default={})
    p.set_defaults(func=_cmd_info)


def _cmd_app(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py")]
    cmd += ["--server.port", str(args.port)]
    return subprocess.call(cmd, cwd=REPO)


def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the dashboard (http://localhost:8501)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=_cmd_app)


_COMMANDS = [_add_train, _add_defaults, _add_info, _add_app]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="landscape", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``landscape`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
