"""The commands that connect SGD with pruned models: frontier (a whole sweep) and threeway."""

from __future__ import annotations

import argparse
from pathlib import Path

from landscape import configs
from landscape.cli.options import add_config, config_fields, config_from

__all__ = ["COMMANDS", "connect", "frontier_table", "threeway_table"]


def _store(args: argparse.Namespace):
    from landscape.store import Store

    return Store(args.store) if args.store else Store()


def _verdict_lines(found) -> str:
    return "\n".join(f"verdict: {v.title}. {v.sentence}" for v in found)


def frontier_table(res) -> str:
    """The frontier's rows (sorted by method, then sparsity) as text."""
    head = f"{'kind':<10}{'c':>8}{'mu':>6}{'seed':>5}{'sparsity':>10}"
    lines = [head + f"{'curve':>9}{'line':>9}{'curve':>9}{'line':>9}  (barriers: train | test)"]
    order = sorted(range(len(res.method)), key=lambda i: (res.method[i], res.sparsity[i]))
    for i in order:
        lines.append(
            f"{res.method[i]:<10}{res.c[i]:>8g}{res.mu[i]:>6g}{int(res.seed[i]):>5}"
            f"{res.sparsity[i]:>10.4f}{res.curve_train[i]:>9.4f}{res.line_train[i]:>9.4f}"
            f"{res.curve_test[i]:>9.4f}{res.line_test[i]:>9.4f}"
        )
    return "\n".join(lines)


def connect(folder: str | Path, sgd: str | Path | None, cfg, *, store=None, progress=None):
    """The frontier of a sweep folder and its text (table and verdicts).

    Args:
        folder: the sweep folder.
        sgd: SGD run folder or checkpoint (None: the sweep's magnitude baseline source).
        cfg: the :class:`landscape.curves.CurveConfig` of every pair's curve.

    Returns:
        (FrontierResult, text).
    """
    from landscape import verdicts
    from landscape.research import load_any
    from landscape.studies import frontier, run
    from landscape.sweep import load_sweep

    sgd = sgd if sgd is not None else load_sweep(folder).config.get("sgd")
    if sgd is None:
        raise ValueError("no SGD model: give --sgd (the sweep names none)")
    path = Path(sgd)
    ckpt = load_any(str(path / "final.safetensors" if path.is_dir() else path))
    inputs = frontier.FrontierInputs(Path(folder), ckpt)
    res = run(frontier.KIND, cfg, inputs, store=store, progress=progress)
    return res, frontier_table(res) + "\n" + _verdict_lines(verdicts.frontier(res))


def _cmd_frontier(args: argparse.Namespace) -> int:
    cfg = config_from(args, configs.CurveConfig)
    cfg.check()  # before torch loads
    from contextlib import nullcontext
    from dataclasses import replace

    from landscape.distributed import process_group
    from landscape.progress import terminal_progress

    # Under torchrun the rows are shared out over the ranks (row i on rank i % world).
    with process_group(cfg.device) as group:
        cfg = replace(cfg, device=group.device)
        bar = terminal_progress("frontier") if group.rank == 0 else nullcontext(None)
        with bar as progress:
            _, text = connect(args.sweep, args.sgd, cfg, store=_store(args), progress=progress)
    if group.rank == 0:
        print(text)
    return 0


def _add_frontier(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frontier", help="curves from SGD to every model of a sweep; barriers")
    p.add_argument("sweep", help="sweep folder (made by `landscape sweep --magnitude`)")
    p.add_argument(
        "--sgd", default=None,
        help="SGD run folder or checkpoint (default: the sweep's --sgd)",
    )  # fmt: skip
    p.add_argument("--store", default=None, help="result folder (default: $LANDSCAPE_HOME)")
    add_config(p, configs.CurveConfig)
    p.set_defaults(func=_cmd_frontier)


def threeway_table(res) -> str:
    """The three pairs' barriers, accuracy dips and endpoint accuracies as text."""
    lines = [
        f"gRDA sparsity {res.sparsity:.4f}; magnitude-pruned SGD twin {res.twin_sparsity:.4f}",
        f"{'pair':<16}{'curve':>9}{'line':>9}{'acc dip':>9}{'acc t=0':>9}{'acc t=1':>9}",
    ]
    for j, pair in enumerate(res.pairs):
        lines.append(
            f"{pair:<16}{res.curve_barrier[j]:>9.4f}{res.line_barrier[j]:>9.4f}"
            f"{res.acc_dip[j]:>9.4f}{res.end_acc[j][0]:>9.4f}{res.end_acc[j][1]:>9.4f}"
        )
    lines.append(f"plane result: {res.plane_key} (landscape plane SGD GRDA --third TWIN)")
    return "\n".join(lines)


def _cmd_threeway(args: argparse.Namespace) -> int:
    curve_cfg = config_from(args, configs.CurveConfig)
    curve_cfg.check()  # the curve's and the plane's options, before torch loads
    plane_cfg = configs.PlaneConfig(
        grid=args.grid, margin=args.margin, bn_subset=curve_cfg.bn_subset,
        device=curve_cfg.device, data_root=curve_cfg.data_root,
    )  # fmt: skip
    cfg = configs.ThreewayConfig(curve_cfg, plane_cfg, args.scope, args.finetune_epochs)
    from landscape import verdicts
    from landscape.progress import terminal_progress
    from landscape.research import load_any
    from landscape.studies import run, threeway

    inputs = threeway.ThreewayInputs(load_any(args.sgd), load_any(args.grda))
    with terminal_progress("threeway") as progress:
        res = run(threeway.KIND, cfg, inputs, store=_store(args), progress=progress)
    print(threeway_table(res))
    print(_verdict_lines(verdicts.threeway(res)))
    return 0


def _add_threeway(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("threeway", help="SGD, gRDA and magnitude-pruned SGD: 3 curves, 1 plane")
    p.add_argument("sgd", help="the dense (SGD) checkpoint")
    p.add_argument("grda", help="the sparse (gRDA) checkpoint; the twin is pruned to its sparsity")
    plane = {o.name: o for o in config_fields(configs.PlaneConfig)}
    for name in ("grid", "margin"):
        o = plane[name]
        p.add_argument(
            f"--{name}",
            type=o.kind,
            default=o.default,
            help=f"plane {o.help} (default: {o.default})",
        )
    p.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="magnitude pruning scope (default: global)")  # fmt: skip
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="masked SGD epochs after pruning the twin (default: 0)")  # fmt: skip
    p.add_argument("--store", default=None, help="result folder (default: $LANDSCAPE_HOME)")
    add_config(p, configs.CurveConfig)
    p.set_defaults(func=_cmd_threeway)


COMMANDS = (_add_frontier, _add_threeway)
