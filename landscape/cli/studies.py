"""The study commands: curve, plane, pca, random-plane, slice, hessian.

Each builds the kind's config from its options (defaults from the config dataclass) first, so
an out-of-range option is reported before torch loads; then it loads the inputs, prints an estimate, runs ``landscape.studies.run`` (sharded over processes for the grid
commands) and prints the result's text.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape import configs
from landscape.cli.options import add_config, config_from

if TYPE_CHECKING:
    from landscape.store import Store
    from landscape.studies import base, curve

__all__ = ["COMMANDS"]


def _store(args: argparse.Namespace) -> Store:
    from landscape.store import Store

    return Store(args.store) if args.store else Store()


def _trusted_folder(folder: str) -> str:
    """``--model-path``: trusted as it is parsed, before any checkpoint naming a file: model
    in it is loaded (by every rank too, as each parses the same arguments)."""
    from landscape.sources import trust_folder

    trust_folder(folder)
    return folder


def _common(p: argparse.ArgumentParser, *, launcher: bool) -> None:
    p.add_argument("--store", default=None, help="result folder (default: $LANDSCAPE_HOME)")
    p.add_argument(
        "--model-path", action="append", type=_trusted_folder,
        help="trust the model files (file:) in this folder (default: $LANDSCAPE_MODEL_PATHS)",
    )  # fmt: skip
    p.add_argument(
        "--yes",
        action="store_true",
        help="start even if the estimate is over $LANDSCAPE_CONFIRM_S, 1800 s (default: ask)",
    )
    if launcher:
        p.add_argument(
            "--launcher",
            type=int,
            default=1,
            help="evaluate with N local processes, or under torchrun (default: 1)",
        )


def _estimate(kind: base.Kind, cfg: Any, ckpt) -> float | None:
    """One line on stderr before long work: the estimated time, from a quick measurement.

    Returns:
        The estimated seconds, or None when the measurement failed.
    """
    from landscape.checkpoints import CheckpointError
    from landscape.cost import estimate, estimate_text, measure_rates, study_cost
    from landscape.data import DataError

    try:
        rates = measure_rates(
            ckpt, device=cfg.device, data_root=cfg.data_root, samples=512, repeats=1
        )
    except (CheckpointError, DataError, ValueError, RuntimeError):
        return None  # no estimate; the study itself reports the problem
    cost = study_cost(kind.name, cfg, rates.n_train)
    print(estimate_text(cost, rates), file=sys.stderr)
    return estimate(cost, rates)[1]


def _refusal(args: argparse.Namespace, kind: base.Kind, cfg: Any, ckpt) -> str | None:
    """Print the estimate; why the study must not start without ``--yes`` (None: it may)."""
    from landscape.cost import confirm_limit, seconds_text

    limit = confirm_limit()
    seconds = _estimate(kind, cfg, ckpt)
    if seconds is None or seconds <= limit or args.yes:
        return None
    return (
        f"this {kind.name} study is estimated at {seconds_text(seconds)}, over the "
        f"{seconds_text(limit)} limit: add --yes to start it (limit: $LANDSCAPE_CONFIRM_S)"
    )


def _confirm(args: argparse.Namespace, kind: base.Kind, cfg: Any, ckpt) -> None:
    """ValueError (the CLI's one error line, exit 2) when the study needs ``--yes``."""
    why = _refusal(args, kind, cfg, ckpt)
    if why is not None:
        raise ValueError(why)


def _run_grid(args: argparse.Namespace, kind: base.Kind, cfg: Any, inputs: Any, a) -> int:
    """Run a grid study on every rank of the process group; rank 0 prints the result.

    The estimate is printed (and ``--yes`` required above the limit) once: by the launcher
    before it starts the ranks, else by rank 0, which tells the other ranks whether to start.
    """
    from landscape.cli.text import describe
    from landscape.distributed import LAUNCHED, broadcast, launch, process_group, relaunch_argv
    from landscape.progress import terminal_progress
    from landscape.studies import base

    if args.launcher > 1 and "WORLD_SIZE" not in os.environ:
        from landscape.cli import build_parser

        argv = relaunch_argv(args, build_parser().parse_args)
        _confirm(args, kind, cfg, a)
        return launch(args.launcher, argv)
    store = _store(args)
    with process_group(cfg.device) as group:
        checked = group.rank > 0 or os.environ.get(LAUNCHED) == "1"
        why = None if checked else _refusal(args, kind, cfg, a)
        if (why if group.world == 1 else broadcast(why)) is not None:
            raise ValueError(why or "rank 0 refused to start (see its error)")
        bar = terminal_progress(kind.name) if group.rank == 0 else nullcontext(None)
        with bar as progress:
            cfg = replace(cfg, device=group.device)
            res = base.run(kind, cfg, inputs, store=store, progress=progress, shard=group.shard)
    if group.rank == 0:
        key = base.study_key(kind, cfg, inputs)
        print(describe(kind.name, key, store.root / kind.name / f"{key}.json", res))
        _print_verdicts(res)
    return 0


def _print_verdicts(res: object) -> None:
    """What the result says (landscape.verdicts), after its numbers."""
    from landscape.cli.text import study_verdicts, verdicts_text

    text = verdicts_text(study_verdicts(res))
    if text:
        print(text)


def endpoints(args: argparse.Namespace, curve_type: str | None = None):
    """Checkpoints A and B and the curve given with ``--curve`` (None without it).

    ``--curve`` takes a landscape curve file or a curve file of the research code (``.pt``);
    the latter carries its own endpoints, which stand in for A and B when they are not given,
    and its type (``curve_type`` decides for a file without coeff_layer buffers).
    """
    from landscape.checkpoints import CheckpointError
    from landscape.curves import load_curve
    from landscape.research import load_any, open_research

    if args.curve and Path(args.curve).suffix.lower() in (".pt", ".pth"):
        found = open_research(args.curve, curve_type=curve_type)
        if found.kind != "curve":
            raise CheckpointError(f"{args.curve}: a model file, not a curve file")
        a, b = (load_any(args.a), load_any(args.b)) if args.a else found.points
        return a, b, found.curve
    if not (args.a and args.b):
        raise ValueError("give checkpoints A and B (or a research-code curve file with --curve)")
    a, b = load_any(args.a), load_any(args.b)
    return a, b, load_curve(args.curve, a, b) if args.curve else None


def _cmd_plane(args: argparse.Namespace) -> int:
    cfg = config_from(args, configs.PlaneConfig)  # checked before torch loads
    from landscape.research import load_any
    from landscape.studies import plane

    a, b, third = endpoints(args, args.curve_type)
    inputs = plane.PlaneInputs(a, b, third if third is not None else load_any(args.third))
    return _run_grid(args, plane.KIND, cfg, inputs, a)


def _add_plane(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plane", help="loss/accuracy on the plane through A, a bend or C, and B")
    p.add_argument("a", nargs="?", help="checkpoint A (origin)")
    p.add_argument("b", nargs="?", help="checkpoint B")
    third = p.add_mutually_exclusive_group(required=True)
    third.add_argument(
        "--curve", help="a curve between A and B (its bend is the 3rd point); a .pt curve file "
        "of the research code brings its own A and B (this or --third is required)",
    )  # fmt: skip
    third.add_argument("--third", help="a third checkpoint C (this or --curve is required)")
    p.add_argument(
        "--curve-type", choices=configs.CURVE_TYPES, default=None,
        help="the type of a research .pt curve file that holds no coeff_layer buffers "
        "(a file that has them says its own type; default: none, such a file is refused)",
    )  # fmt: skip
    add_config(p, configs.PlaneConfig)
    _common(p, launcher=True)
    p.set_defaults(func=_cmd_plane)


def _cmd_pca(args: argparse.Namespace) -> int:
    cfg = config_from(args, configs.PCAConfig)  # checked before torch loads
    from landscape.checkpoints import load_checkpoint
    from landscape.studies import pca

    inputs = pca.PCAInputs(tuple(args.runs))
    a = load_checkpoint(inputs.final)
    return _run_grid(args, pca.KIND, cfg, inputs, a)


def _add_pca(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pca", help="loss/accuracy on the PCA plane of training trajectories")
    p.add_argument("runs", nargs="+", help="one or two run folders (with trajectory/)")
    add_config(p, configs.PCAConfig, choices={"centre": configs.CENTRES})
    _common(p, launcher=True)
    p.set_defaults(func=_cmd_pca)


def _cmd_random_plane(args: argparse.Namespace) -> int:
    cfg = config_from(args, configs.RandomPlaneConfig)  # checked before torch loads
    from landscape.research import load_any
    from landscape.studies import random_plane

    a = load_any(args.a)
    return _run_grid(args, random_plane.KIND, cfg, random_plane.RandomPlaneInputs(a), a)


def _add_random_plane(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("random-plane", help="random filter-normalised plane around A")
    p.add_argument("a", help="checkpoint at the centre")
    add_config(p, configs.RandomPlaneConfig)
    _common(p, launcher=True)
    p.set_defaults(func=_cmd_random_plane)


def _cmd_slice(args: argparse.Namespace) -> int:
    # Checked before torch loads.
    hcfg = configs.HessianConfig(k=1, subset=args.subset, data_root=args.data_root)
    cfg = config_from(args, configs.SliceConfig, hessian=hcfg)
    from landscape.research import load_any
    from landscape.studies import slices

    a = load_any(args.a)
    b = load_any(args.to) if args.to else None
    return _run_grid(args, slices.KIND, cfg, slices.SliceInputs(a, b), a)


def _add_slice(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slice", help="1D loss/accuracy along delta, random or top eigenvector")
    p.add_argument("a", help="checkpoint A (s = 0)")
    p.add_argument(
        "--to", help="checkpoint B: delta = B - A, s = 1 is B (default: none; needed for delta)"
    )
    p.add_argument(
        "--subset", type=int, default=None, help="Hessian samples for eigen (default: all)"
    )
    add_config(p, configs.SliceConfig, choices={"direction": configs.DIRECTIONS})
    _common(p, launcher=True)
    p.set_defaults(func=_cmd_slice)


def _cmd_hessian(args: argparse.Namespace) -> int:
    cfg = config_from(args, configs.HessianConfig)  # checked before torch loads
    from landscape.cli.text import describe
    from landscape.progress import terminal_progress
    from landscape.research import load_any
    from landscape.studies import base, hessian

    a = load_any(args.a)
    b = load_any(args.direction_to) if args.direction_to else None
    inputs = hessian.HessianInputs(a, b)
    store = _store(args)
    _confirm(args, hessian.KIND, cfg, a)
    with terminal_progress("hessian") as progress:
        res = base.run(hessian.KIND, cfg, inputs, store=store, progress=progress)
    key = base.study_key(hessian.KIND, cfg, inputs)
    print(describe("hessian", key, store.root / "hessian" / f"{key}.json", res))
    _print_verdicts(res)
    return 0


def _add_hessian(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hessian", help="top Hessian eigenvalues; pruning-direction overlaps")
    p.add_argument("a", help="checkpoint where the Hessian is taken (SGD minimum)")
    p.add_argument(
        "--direction-to",
        help="checkpoint B: overlaps of B - A, the gRDA minimum (default: none, eigenvalues only)",
    )
    add_config(p, configs.HessianConfig)
    _common(p, launcher=False)
    p.set_defaults(func=_cmd_hessian)


def _write_curve_outputs(out: Path, res: curve.CurveResult, key: str, store: Store) -> None:
    """curve.safetensors (verified against its checksum), result.json and path.csv in ``out``,
    each written atomically."""
    import io

    from landscape.store import atomic_write

    blob = store.read_artifact(res.curve_file)  # the bytes checked are the bytes copied
    if blob is None:
        raise ValueError(f"{res.curve_file}: the stored curve is damaged; run the command again")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "curve.safetensors", blob)
    info, _ = res.to_arrays()
    atomic_write(out / "result.json", json.dumps({**info, "key": key}, indent=2).encode())
    cols = [(name, c) for name in ("curve", "line") for c in getattr(res, name)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["t", *(f"{name}_{c}" for name, c in cols)])
    for i, t in enumerate(res.t):
        writer.writerow([f"{t:.6g}", *(f"{getattr(res, n)[c][i]:.8g}" for n, c in cols)])
    atomic_write(out / "path.csv", buf.getvalue().encode())


def _cmd_curve(args: argparse.Namespace) -> int:
    cfg = config_from(args, configs.CurveConfig)
    cfg.check()  # bad options fail before anything is read or written, and torch loads
    from landscape.cli.text import curve_table
    from landscape.progress import terminal_progress
    from landscape.studies import base, curve

    a, b, given = endpoints(args, cfg.curve_type)
    if given is not None:
        cfg = replace(cfg, order=given.order)
    _confirm(args, curve.KIND, replace(cfg, epochs=0) if given is not None else cfg, a)
    inputs = curve.CurveInputs(a, b, given)
    store = _store(args)
    with terminal_progress("curve") as progress:
        res = base.run(curve.KIND, cfg, inputs, store=store, progress=progress)
    out = Path(args.out)
    _write_curve_outputs(out, res, base.study_key(curve.KIND, cfg, inputs), store)
    print(curve_table(res, (_name(a, "A"), _name(b, "B"))))
    _print_verdicts(res)
    print(f"written: {out / 'curve.safetensors'}, {out / 'result.json'}, {out / 'path.csv'}")
    return 0


def _name(ckpt, role: str) -> str:
    """A's or B's name for the table: a run's final.safetensors is named after its folder."""
    if ckpt.path is not None and ckpt.path.name == "final.safetensors":
        return f"{ckpt.path.parent.name}/final"
    return ckpt.name or role


def _add_curve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curve", help="fit a Bezier curve between two minima; loss along it")
    p.add_argument("a", nargs="?", help="checkpoint A (t = 0)")
    p.add_argument("b", nargs="?", help="checkpoint B (t = 1)")
    p.add_argument(
        "--out",
        required=True,
        help="folder for curve.safetensors, result.json, path.csv (required)",
    )
    p.add_argument(
        "--curve", default=None, help="evaluate this curve instead of fitting one: a landscape "
        "curve file, or a .pt curve file of the research code (its endpoints are A and B) "
        "(default: fit one)",
    )  # fmt: skip
    add_config(p, configs.CurveConfig)
    _common(p, launcher=False)
    p.set_defaults(func=_cmd_curve)


COMMANDS = (_add_curve, _add_plane, _add_pca, _add_random_plane, _add_slice, _add_hessian)
