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

from landscape.checkpoints import CheckpointError
from landscape.data import DATASETS, NORMALIZATIONS, DataError
from landscape.models import MODELS, RESEARCH_ARCHS
from landscape.progress import terminal_progress
from landscape.research import export_research, load_any, open_research
from landscape.studies import DEFAULT_ROOT, summarize
from landscape.train import OPTIMIZERS, SCHEDULES, TrainConfig, make_initial, train

REPO = Path(__file__).resolve().parent.parent


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
    p.add_argument("--normalize", choices=sorted(NORMALIZATIONS), default=d.normalize)
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
    p.add_argument("--out", default=str(DEFAULT_ROOT))
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
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py")]
    cmd += ["--server.port", str(args.port)]
    return subprocess.call(cmd, cwd=REPO)


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
    from dataclasses import replace

    from landscape.sweep import SweepConfig, run_sweep

    if args.sgd is not None and not args.magnitude:
        raise ValueError("--sgd is only used with --magnitude")
    d = TrainConfig()
    base = replace(_config_from(args), c=d.c, mu=d.mu)  # every run gets the grid's c and mu
    cfg = SweepConfig(
        c=args.c,
        mu=args.mu,
        seeds=args.seeds,
        train=base,
        magnitude=args.magnitude,
        sgd=args.sgd,
        scope=args.scope,
        finetune_epochs=args.finetune_epochs,
    )
    with terminal_progress("sweep") as progress:
        result = run_sweep(cfg, args.out, workers=args.workers, progress=progress)
    print(f"{'kind':<10}{'c':>9}{'mu':>6}{'seed':>5}{'sparsity':>10}{'test_acc':>9}  frontier")
    for r in result.rows:
        print(
            f"{r['kind']:<10}{r['c']:>9g}{r['mu']:>6g}{r['seed']:>5}{r['sparsity']:>10.4f}"
            f"{r['test_acc']:>9.4f}  {'*' if r['pareto'] else ''}"
        )
    print(f"trained {result.trained} runs, reused {result.reused}; table in {result.path}")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    # "resolve": the grid's --c/--mu lists replace the single values of the training options.
    p = sub.add_parser(
        "sweep",
        help="train a gRDA (c, mu, seed) grid; sparsity-accuracy frontier",
        conflict_handler="resolve",
    )
    _add_train_options(p)
    p.add_argument("--optimizer", choices=("grda",), default="grda", help="sweeps train gRDA")
    p.add_argument("--c", type=_floats, required=True, help="e.g. 0.001,0.002,0.005")
    p.add_argument("--mu", type=_floats, required=True, help="e.g. 0.51,0.55,0.6,0.7")
    p.add_argument("--seeds", type=_ints, default=[0], help="batch-order seeds")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (no --init)")
    p.add_argument("--out", required=True, help="sweep folder (resumed if it exists)")
    p.add_argument("--workers", type=int, default=1, help="parallel training processes")
    p.add_argument("--magnitude", action="store_true", help="add magnitude-pruned SGD models")
    p.add_argument("--sgd", help="SGD run folder or checkpoint for --magnitude")
    p.add_argument("--scope", choices=("global", "layer"), default="global")
    p.add_argument("--finetune-epochs", type=int, default=0, help="masked SGD after pruning")
    p.set_defaults(func=_cmd_sweep)


def _cmd_prune(args: argparse.Namespace) -> int:
    from landscape.checkpoints import save_checkpoint
    from landscape.pruning import prune_checkpoint

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must be a .safetensors file, got {out}")
    ckpt = load_any(args.checkpoint)
    with terminal_progress("prune") as progress:
        state, meta = prune_checkpoint(
            ckpt,
            args.sparsity,
            scope=args.scope,
            finetune_epochs=args.finetune_epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            data_root=args.data_root,
            device=args.device,
            progress=progress,
        )
    digest = save_checkpoint(out, state, meta)
    _print_metrics(f"pruned checkpoint written to {out} (hash {digest})", meta["metrics"])
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="magnitude-prune a checkpoint, optionally fine-tune")
    p.add_argument("checkpoint")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of zeros, e.g. 0.85")
    p.add_argument("--scope", choices=("global", "layer"), default="global")
    p.add_argument("--finetune-epochs", type=int, default=0, help="masked SGD epochs")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="fine-tuning batch order")
    p.add_argument("--data-root", help="folder with mnist/cifar10 files")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help=".safetensors file to write")
    p.set_defaults(func=_cmd_prune)


def _cmd_masks(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from landscape.pruning import mask_stability

    ms = mask_stability(args.run, tol=args.tol)
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
    p.add_argument("--tol", type=float, default=0.01, help="flipped fraction counted as settled")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_masks)


def _add_grid_options(p: argparse.ArgumentParser, *, grid: bool = True) -> None:
    """Options shared by the plane, pca, random-plane and slice commands."""
    if grid:
        p.add_argument("--grid", type=int, default=21, help="points per axis")
    p.add_argument("--bn-subset", type=int, default=None, help="BN recalibration samples")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--store", default=None, help="result folder (default $LANDSCAPE_HOME)")
    p.add_argument("--data-root", default=None, help="folder with mnist/cifar10 files")
    p.add_argument(
        "--launcher", type=int, default=1, help="evaluate with N local processes (or torchrun)"
    )


def _cmd_grid(args: argparse.Namespace, desc: str, study) -> int:
    """Run ``study(device, store, progress, shard)`` on every rank; rank 0 prints the result."""
    import os
    from contextlib import nullcontext

    from landscape.distributed import launch, process_group, relaunch_argv
    from landscape.store import Store
    from landscape.surfaces import summarize

    if args.launcher > 1 and "WORLD_SIZE" not in os.environ:
        return launch(args.launcher, relaunch_argv(args, build_parser().parse_args))
    store = Store(args.store) if args.store else Store()
    with process_group(args.device) as group:
        bar = terminal_progress(desc) if group.rank == 0 else nullcontext(None)
        with bar as progress:
            result = study(group.device, store, progress, group.shard)
    if group.rank == 0:
        print(summarize(result, store))
    return 0


def _endpoints(args: argparse.Namespace):
    """Checkpoints A and B and the curve given with ``--curve`` (None without it).

    ``--curve`` takes a landscape curve file or a curve file of the research code (``.pt``);
    the latter carries its own endpoints, which stand in for A and B when they are not given.
    """
    from landscape.curves import load_curve

    if args.curve and Path(args.curve).suffix.lower() in (".pt", ".pth"):
        found = open_research(args.curve)
        if found.kind != "curve":
            raise CheckpointError(f"{args.curve}: a model file, not a curve file")
        a, b = (load_any(args.a), load_any(args.b)) if args.a else found.points
        return a, b, found.curve
    if not (args.a and args.b):
        raise ValueError("give checkpoints A and B (or a research-code curve file with --curve)")
    a, b = load_any(args.a), load_any(args.b)
    return a, b, load_curve(args.curve, a, b) if args.curve else None


def _cmd_plane(args: argparse.Namespace) -> int:
    from landscape.surfaces import PlaneConfig, plane_study

    a, b, third = _endpoints(args)
    if third is None:
        third = load_any(args.third)

    def study(device, store, progress, shard):
        cfg = PlaneConfig(
            grid=args.grid,
            margin=args.margin,
            points_on_curve=args.points_on_curve,
            bn_subset=args.bn_subset,
            device=device,
            data_root=args.data_root,
        )
        return plane_study(a, b, third, cfg, store=store, progress=progress, shard=shard)

    return _cmd_grid(args, "plane", study)


def _add_plane(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plane", help="loss/accuracy on the plane through A, a bend or C, and B")
    p.add_argument("a", nargs="?", help="checkpoint A (origin)")
    p.add_argument("b", nargs="?", help="checkpoint B")
    third = p.add_mutually_exclusive_group(required=True)
    third.add_argument(
        "--curve", help="a curve between A and B (its bend is the 3rd point); a .pt curve file "
        "of the research code brings its own A and B",
    )  # fmt: skip
    third.add_argument("--third", help="a third checkpoint C")
    p.add_argument("--margin", type=float, default=0.2, help="fraction of the extent per side")
    p.add_argument("--points-on-curve", type=int, default=61)
    _add_grid_options(p)
    p.set_defaults(func=_cmd_plane)


def _cmd_pca(args: argparse.Namespace) -> int:
    from landscape.surfaces import PCAConfig, pca_study

    def study(device, store, progress, shard):
        cfg = PCAConfig(
            grid=args.grid,
            margin=args.margin,
            centre=args.centre,
            bn_subset=args.bn_subset,
            device=device,
            data_root=args.data_root,
        )
        return pca_study(args.runs, cfg, store=store, progress=progress, shard=shard)

    return _cmd_grid(args, "pca", study)


def _add_pca(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pca", help="loss/accuracy on the PCA plane of training trajectories")
    p.add_argument("runs", nargs="+", help="one or two run folders (with trajectory/)")
    p.add_argument("--centre", choices=("final", "mean"), default="final")
    p.add_argument("--margin", type=float, default=0.2, help="fraction of the extent per side")
    _add_grid_options(p)
    p.set_defaults(func=_cmd_pca)


def _cmd_random_plane(args: argparse.Namespace) -> int:
    from landscape.surfaces import PlaneConfig, random_plane_study

    ckpt = load_any(args.a)

    def study(device, store, progress, shard):
        cfg = PlaneConfig(
            grid=args.grid, bn_subset=args.bn_subset, device=device, data_root=args.data_root
        )
        return random_plane_study(
            ckpt, cfg, seed=args.seed, span=args.span, store=store, progress=progress, shard=shard
        )

    return _cmd_grid(args, "random plane", study)


def _add_random_plane(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("random-plane", help="random filter-normalised plane around A")
    p.add_argument("a", help="checkpoint at the centre")
    p.add_argument("--seed", type=int, default=0, help="seed of the two directions")
    p.add_argument("--span", type=float, default=1.0, help="grid covers [-span, span]^2")
    _add_grid_options(p)
    p.set_defaults(func=_cmd_random_plane)


def _cmd_slice(args: argparse.Namespace) -> int:
    from landscape.hessian import HessianConfig
    from landscape.surfaces import PlaneConfig, slice_study

    a = load_any(args.a)
    b = load_any(args.to) if args.to else None

    def study(device, store, progress, shard):
        cfg = PlaneConfig(bn_subset=args.bn_subset, device=device, data_root=args.data_root)
        hcfg = HessianConfig(k=1, subset=args.subset, device=device, data_root=args.data_root)
        return slice_study(
            a, args.direction, b=b, points=args.points, span=args.span, seed=args.seed,
            cfg=cfg, hessian=hcfg, store=store, progress=progress, shard=shard,
        )  # fmt: skip

    return _cmd_grid(args, "slice", study)


def _add_slice(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slice", help="1D loss/accuracy along delta, random or top eigenvector")
    p.add_argument("a", help="checkpoint A (s = 0)")
    p.add_argument("--direction", choices=("delta", "random", "eigen"), required=True)
    p.add_argument("--to", help="checkpoint B: delta = B - A (s = 1 is B)")
    p.add_argument("--points", type=int, default=41)
    p.add_argument("--span", type=float, default=None, help="delta: 0.5, others: 1")
    p.add_argument("--seed", type=int, default=0, help="seed of the random direction")
    p.add_argument("--subset", type=int, default=None, help="Hessian samples (eigen)")
    _add_grid_options(p, grid=False)
    p.set_defaults(func=_cmd_slice)


def _cmd_hessian(args: argparse.Namespace) -> int:
    from landscape.hessian import HessianConfig, hessian_study, summarize
    from landscape.store import Store

    a = load_any(args.a)
    b = load_any(args.direction_to) if args.direction_to else None
    cfg = HessianConfig(
        k=args.k,
        subset=args.subset,
        seed=args.seed,
        tol=args.tol,
        device=args.device,
        data_root=args.data_root,
    )
    store = Store(args.store) if args.store else Store()
    with terminal_progress("hessian") as progress:
        result = hessian_study(a, b, cfg, store=store, progress=progress)
    print(summarize(result, store))
    return 0


def _add_hessian(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hessian", help="top Hessian eigenvalues; pruning-direction overlaps")
    p.add_argument("a", help="checkpoint where the Hessian is taken (SGD minimum)")
    p.add_argument("--direction-to", help="checkpoint B: overlaps of B - A (gRDA minimum)")
    p.add_argument("--k", type=int, default=10, help="number of top eigenpairs")
    p.add_argument("--subset", type=int, default=None, help="training samples (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-3, help="eigenvalue relative tolerance")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--store", default=None, help="result folder (default $LANDSCAPE_HOME)")
    p.add_argument("--data-root", default=None, help="folder with mnist/cifar10 files")
    p.set_defaults(func=_cmd_hessian)


def _cmd_curve(args: argparse.Namespace) -> int:
    import csv
    import shutil

    from landscape.curves import PATH_METRICS, CurveConfig, curve_study
    from landscape.store import Store

    a, b, curve = _endpoints(args)
    cfg = CurveConfig(
        order=args.order,
        epochs=args.epochs,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seed=args.seed,
        points=args.points,
        bn_subset=args.bn_subset,
        data_root=args.data_root,
        device=args.device,
    )
    cfg.check()  # bad options fail before anything is written
    if curve is not None:
        cfg.order = curve.order
    store = Store(args.store) if args.store else Store()
    with terminal_progress("curve") as progress:
        result = curve_study(a, b, cfg, store=store, progress=progress, curve=curve)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.data["curve_file"], out / "curve.safetensors")
    doc = {**result.data, "key": result.key}
    (out / "result.json").write_text(json.dumps(doc, indent=2))
    cols = [f"{path}_{m}" for path in ("curve", "line") for m in PATH_METRICS]
    with open(out / "path.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t", *cols])
        for i, t in enumerate(result.arrays["t"]):
            writer.writerow([f"{t:.6g}", *(f"{result.arrays[c][i]:.8g}" for c in cols)])
    print(
        f"{a.name} (t=0) -> {b.name} (t=1), order {cfg.order}, {cfg.points} points, "
        f"BN on {result.data['bn_samples']} samples"
    )
    row = "{:<6} {:>14} {:>13} {:>12} {:>10} {:>12} {:>8}"
    print(
        row.format(
            "path",
            "train loss max",
            "train barrier",
            "test acc min",
            "t best acc",
            "mid test acc",
            "length",
        )
    )
    for name, s in result.data["summary"].items():
        m = s["metrics"]
        cells = (
            m["train_loss"]["max"],
            s["barrier"]["train_loss"]["height"],
            m["test_acc"]["min"],
            s["best_test_acc"]["t"],
            s["midpoint"]["test_acc"],
            s["length"],
        )
        print(row.format(name, *(f"{v:.4f}" for v in cells)))
    print(f"written: {out / 'curve.safetensors'}, {out / 'result.json'}, {out / 'path.csv'}")
    return 0


def _add_curve(sub: argparse._SubParsersAction) -> None:
    from landscape.curves import CurveConfig

    d = CurveConfig()
    p = sub.add_parser("curve", help="fit a Bezier curve between two minima; loss along it")
    p.add_argument("a", nargs="?", help="checkpoint A (t = 0)")
    p.add_argument("b", nargs="?", help="checkpoint B (t = 1)")
    p.add_argument(
        "--out", required=True, help="folder for curve.safetensors, result.json, path.csv"
    )
    p.add_argument("--order", type=int, default=d.order, help="Bezier order (1: straight line)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="fitting epochs (0: no fit)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="on the bends")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--points", type=int, default=d.points, help="values of t in [0, 1]")
    p.add_argument("--bn-subset", type=int, default=None, help="BN recalibration samples")
    p.add_argument(
        "--curve", default=None, help="evaluate this curve instead of fitting one: a landscape "
        "curve file, or a .pt curve file of the research code (its endpoints are A and B)",
    )  # fmt: skip
    p.add_argument("--store", default=None, help="result folder (default $LANDSCAPE_HOME)")
    p.add_argument("--data-root", default=None, help="folder with mnist/cifar10 files")
    p.add_argument("--device", default=d.device, help="cpu or cuda")
    p.set_defaults(func=_cmd_curve)


def _cmd_study(args: argparse.Namespace) -> int:
    from landscape.studies import create_study, list_studies, member

    if args.name is None:
        for study in list_studies():
            print(f"{study.name}{' (bundled)' if study.builtin else ''}")
            for i, m in enumerate(study.members):
                role = "AB"[i] if i < 2 else " "
                print(f"  {role} {m.label:<24} {m.path}")
        return 0
    study = create_study(args.name, [member(c) for c in args.checkpoints])
    print(f"study {study.name!r}: " + ", ".join(m.label for m in study.members))
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="list the studies, or name one from two or more checkpoints")
    p.add_argument("name", nargs="?", help="name of the new study (none: list the studies)")
    p.add_argument("checkpoints", nargs="*", help="files or run folders; first A, second B")
    p.set_defaults(func=_cmd_study)


def _cmd_upload(args: argparse.Namespace) -> int:
    from landscape.studies import save_upload, upload_arch

    data = {"name": args.data, "split_seed": args.split_seed}
    if args.data_root:
        data["root"] = args.data_root
    arch = upload_arch(args.arch, args.arch_kwargs, data) if args.arch else None
    path = Path(args.file)
    up = save_upload(path.read_bytes(), path.name, arch=arch, data=data)
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


_COMMANDS = [
    _add_train,
    _add_defaults,
    _add_info,
    _add_import,
    _add_app,
    _add_sweep,
    _add_prune,
    _add_masks,
    _add_plane,
    _add_pca,
    _add_random_plane,
    _add_slice,
    _add_hessian,
    _add_curve,
    _add_study,
    _add_upload,
]


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
