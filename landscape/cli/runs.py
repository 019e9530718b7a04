"""The commands that train, inspect and manage files: train, defaults, info, import, app,
sweep, prune, masks, study, upload, uploads."""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import asdict
from pathlib import Path

from landscape.cli.options import add_config, config_from, field_help
from landscape.data import DATASETS, NORMALIZATIONS
from landscape.models import MODELS, RESEARCH_ARCHS
from landscape.progress import terminal_progress
from landscape.research import export_research, load_any, open_research
from landscape.store import Store, atomic_write
from landscape.studies import masks, prune, run
from landscape.studies.sweep import SweepConfig
from landscape.train import OPTIMIZERS, SCHEDULES, TrainConfig, make_initial, train
from landscape.workspace import default_checkpoints, summarize

__all__ = ["COMMANDS", "make_defaults"]


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


_TRAIN_CHOICES = {
    "data": DATASETS,
    "normalize": tuple(sorted(NORMALIZATIONS)),
    "arch": tuple(sorted(MODELS)),
    "optimizer": OPTIMIZERS,
    "lr_schedule": SCHEDULES,
}


def _add_train_options(p: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """The TrainConfig options (defaults and help from the dataclass) and --arch-kwargs."""
    add_config(p, TrainConfig, skip=skip, choices=_TRAIN_CHOICES)
    p.add_argument("--arch-kwargs", type=_json_dict, default={}, help='JSON, e.g. {"hidden": 32}')


def _config_from(args: argparse.Namespace, **overrides) -> TrainConfig:
    return config_from(args, TrainConfig, **overrides)


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
    p.add_argument("--out", default=str(default_checkpoints()))
    p.add_argument("--epochs", type=int, default=None, help="shorten (for tests)")
    p.set_defaults(func=_cmd_defaults)


ARCH_CHOICES = sorted(MODELS) + sorted(RESEARCH_ARCHS)  # registry names, research-code names


def _arch_option(args: argparse.Namespace) -> dict | None:
    return {"name": args.arch, "kwargs": args.arch_kwargs} if args.arch else None


def _add_arch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arch", choices=ARCH_CHOICES, help="architecture of a .pt/.pth file (default: recognised)"
    )
    p.add_argument("--arch-kwargs", type=_json_dict, default={}, help='JSON, e.g. {"depth": 16}')


def _print_checkpoint(ckpt) -> None:
    summary = summarize(ckpt)
    print(f"hash          {ckpt.hash}")
    for key in ("arch", "data", "optimizer", "step", "epoch", "seed", "source"):
        if key in ckpt.meta:
            print(f"{key:<13} {json.dumps(ckpt.meta.get(key))}")
    print(f"parameters    {summary.n_params}")
    print(
        f"sparsity      {summary.sparsity:.4f} exactly zero, "
        f"{summary.sparsity_small:.4f} below 1e-3"
    )
    for name, frac in summary.layer_sparsity.items():
        print(f"  {name:<30} {frac:.4f}")
    _print_metrics("metrics", ckpt.meta.get("metrics") or {})


def _print_research(found) -> None:
    how = "recognised from its keys" if found.recognized else "as given"
    label = f" ({found.label})" if found.label else ""
    print(f"file          {found.path}")
    print(f"kind          {found.kind} (.pt/.pth)")
    print(f"architecture  {found.arch['name']}{label} {json.dumps(found.arch['kwargs'])}, {how}")
    if found.kind == "curve":
        print(f"curve         Bezier, order {found.curve.order} ({found.curve.order - 1} bends)")
    for ckpt in found.points:
        if found.kind == "curve":
            print(f"-- {ckpt.name}")
        _print_checkpoint(ckpt)


def _cmd_info(args: argparse.Namespace) -> int:
    if Path(args.checkpoint).suffix.lower() in (".pt", ".pth"):
        _print_research(open_research(args.checkpoint, arch=_arch_option(args)))
        return 0
    ckpt = load_any(args.checkpoint, arch=_arch_option(args))
    print(f"file          {ckpt.path}")
    _print_checkpoint(ckpt)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="metadata, metrics, parameter count and sparsity")
    p.add_argument("checkpoint", help=".safetensors, or a .pt/.pth model or curve file")
    _add_arch_options(p)
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
    found = open_research(args.file, arch=_arch_option(args), data=_data_option(args))
    _print_research(found)
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
    p.add_argument("--out", required=True, help="folder for model.safetensors or start/end/curve")
    _add_arch_options(p)
    p.add_argument("--data", choices=DATASETS, default=None, help="default: as recognised")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--normalize", choices=sorted(NORMALIZATIONS), default=None)
    p.add_argument("--data-root", help="folder with the data set's files (kept in the metadata)")
    p.set_defaults(func=_cmd_import)


def _cmd_app(args: argparse.Namespace) -> int:
    from landscape.app import server_command

    return subprocess.call(server_command(port=args.port))


def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the dashboard (http://localhost:8501)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=_cmd_app)


def _comma_list(text: str, kind: type) -> list:
    """Parse "a,b,c" into [kind(a), kind(b), kind(c)] (an argparse type)."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def _floats(text: str) -> list[float]:
    return _comma_list(text, float)


def _ints(text: str) -> list[int]:
    return _comma_list(text, int)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from landscape.sweep import run_sweep

    if args.sgd is not None and not args.magnitude:
        raise ValueError("--sgd is only used with --magnitude")
    d = TrainConfig()
    # Every run gets the grid's c, mu and seed; --seed seeds the shared initial weights.
    base = _config_from(args, optimizer="grda", c=d.c, mu=d.mu)
    cfg = config_from(args, SweepConfig, train=base)
    with terminal_progress("sweep") as progress:
        result = run_sweep(cfg, args.out, progress=progress)
    print(f"{'kind':<10}{'c':>9}{'mu':>6}{'seed':>5}{'sparsity':>10}{'test_acc':>9}  frontier")
    for r in result.rows:
        print(
            f"{r['kind']:<10}{r['c']:>9g}{r['mu']:>6g}{r['seed']:>5}{r['sparsity']:>10.4f}"
            f"{r['test_acc']:>9.4f}  {'*' if r['pareto'] else ''}"
        )
    print(f"trained {result.trained} runs, reused {result.reused}; table in {result.path}")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train a gRDA (c, mu, seed) grid; sparsity-accuracy frontier")
    # The grid's --c/--mu lists replace the single values of the training options.
    _add_train_options(p, skip=("c", "mu", "optimizer"))
    add_config(p, SweepConfig, choices={"scope": ("global", "layer")})
    helps, d = field_help(SweepConfig), SweepConfig()
    p.add_argument("--c", type=_floats, required=True, help=f"{helps['c']}, e.g. 0.001,0.002")
    p.add_argument("--mu", type=_floats, required=True, help=f"{helps['mu']}, e.g. 0.51,0.7")
    p.add_argument("--seeds", type=_ints, default=d.seeds, help=f"{helps['seeds']}, e.g. 0,1")
    p.add_argument("--out", required=True, help="sweep folder (resumed if it exists)")
    p.set_defaults(func=_cmd_sweep)


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="result folder (default $LANDSCAPE_HOME)")


def _cmd_prune(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must be a .safetensors file, got {out}")
    cfg = config_from(args, prune.PruneConfig)
    inputs = prune.PruneInputs(load_any(args.checkpoint))
    store = Store(args.store) if args.store else Store()
    with terminal_progress("prune") as progress:
        res = prune.prune(cfg, inputs, store=store, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, Path(res.path).read_bytes())
    _print_metrics(f"pruned checkpoint written to {out} (hash {res.hash})", res.metrics)
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="magnitude-prune a checkpoint, optionally fine-tune")
    p.add_argument("checkpoint")
    add_config(p, prune.PruneConfig, skip=("sparsity",), choices={"scope": ("global", "layer")})
    help_text = field_help(prune.PruneConfig)["sparsity"]
    p.add_argument("--sparsity", type=float, required=True, help=f"{help_text}, e.g. 0.85")
    p.add_argument("--out", required=True, help=".safetensors file to write")
    _store_option(p)
    p.set_defaults(func=_cmd_prune)


def _cmd_masks(args: argparse.Namespace) -> int:
    store = Store(args.store) if args.store else Store()
    cfg = config_from(args, masks.MasksConfig)
    ms = run(masks.KIND, cfg, masks.MasksInputs(Path(args.run)), store=store)
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
    add_config(p, masks.MasksConfig)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _store_option(p)
    p.set_defaults(func=_cmd_masks)


def _cmd_study(args: argparse.Namespace) -> int:
    from landscape.deletion import delete_study
    from landscape.workspace import create_study, list_studies, member

    if args.name is None:
        for study in list_studies():
            print(f"{study.name}{' (bundled)' if study.builtin else ''}")
            for i, m in enumerate(study.members):
                role = "AB"[i] if i < 2 else " "
                print(f"  {role} {m.label:<24} {m.path}")
        return 0
    if args.name == "rm" and len(args.checkpoints) == 1:  # a study needs two checkpoints
        delete_study(args.checkpoints[0])
        print(f"deleted study {args.checkpoints[0]!r}")
        return 0
    study = create_study(args.name, [member(c) for c in args.checkpoints])
    print(f"study {study.name!r}: " + ", ".join(m.label for m in study.members))
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="list the studies, name one from two or more checkpoints, or `study rm NAME`",
    )
    p.add_argument("name", nargs="?", help="name of the new study (none: list the studies)")
    p.add_argument("checkpoints", nargs="*", help="files or run folders; first A, second B")
    p.set_defaults(func=_cmd_study)


def _cmd_upload(args: argparse.Namespace) -> int:
    from landscape.workspace import save_upload, upload_arch

    data = {"name": args.data, "split_seed": args.split_seed}
    if args.data_root:
        data["root"] = args.data_root
    arch = upload_arch(args.arch, args.arch_kwargs, data) if args.arch else None
    path = Path(args.file)
    up = save_upload(path, path.name, arch=arch, data=data)  # read in place, not into memory
    print(f"{'stored' if up.new else 'already stored'}: {up.member.label} -> {up.member.path}")
    return 0


def _add_upload(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload", help="keep a checkpoint for studies, like the app's Upload page")
    p.add_argument("file", help=".safetensors, or a .pt/.pth state dict with --arch")
    p.add_argument("--arch", choices=sorted(MODELS), help="architecture of a .pt/.pth file")
    p.add_argument("--arch-kwargs", type=_json_dict, default={})
    p.add_argument("--data", choices=DATASETS, default="digits", help="if the file names none")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--data-root", help="folder with mnist/cifar10 files")
    p.set_defaults(func=_cmd_upload)


def _cmd_uploads(args: argparse.Namespace) -> int:
    from landscape.deletion import delete_upload, upload_hash
    from landscape.settings import settings
    from landscape.workspace import list_uploads, uploads_usage

    if args.action == "rm":
        if not args.hashes:
            raise ValueError("uploads rm: name the content hashes to delete (see `uploads list`)")
        for hash_ in args.hashes:
            gone = delete_upload(hash_, with_studies=args.with_studies)
            extra = f" and the studies {', '.join(map(repr, gone))}" if gone else ""
            print(f"deleted upload {hash_}{extra}")
        return 0
    for m in list_uploads():
        size = Path(m.path).stat().st_size
        print(f"{upload_hash(m.path)}  {size:>12}  {m.label}")
    print(f"{uploads_usage()} of {settings().upload_quota} bytes used")
    return 0


def _add_uploads(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("uploads", help="list the uploaded checkpoints, or delete some (rm HASH)")
    p.add_argument("action", nargs="?", choices=("list", "rm"), default="list")
    p.add_argument("hashes", nargs="*", help="content hashes to delete (from `uploads list`)")
    p.add_argument(
        "--with-studies", action="store_true", help="also delete the studies that use them"
    )
    p.set_defaults(func=_cmd_uploads)


COMMANDS = (
    _add_train,
    _add_defaults,
    _add_info,
    _add_import,
    _add_app,
    _add_sweep,
    _add_prune,
    _add_masks,
    _add_study,
    _add_upload,
    _add_uploads,
)
