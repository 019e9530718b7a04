"""The commands that manage studies and uploads: study, uploads."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["COMMANDS"]


def _study_members(args: argparse.Namespace, checkpoints: list[str]) -> list:
    """Study members: run folders and checkpoints with metadata as they are; a file that needs
    ``--arch`` or ``--data`` (a ``.pt``/``.pth`` state dict) kept as an upload first."""
    from landscape.cli.runs import _arch_option
    from landscape.workspace import member, save_upload, upload_arch

    arch = _arch_option(args)  # trusts --model-path folders and a file: --arch
    data = {"name": args.data, "split_seed": args.split_seed} if args.data else None
    if data is not None and args.data_root:
        data["root"] = args.data_root
    if arch is not None:
        arch = upload_arch(arch["name"], arch["kwargs"], data or {"name": "digits"})
    members = []
    for c in map(Path, checkpoints):
        plain = c.is_dir() or c.suffix.lower() == ".safetensors" and not (arch or data)
        members.append(member(c) if plain else save_upload(c, c.name, arch=arch, data=data).member)
    return members


def _cmd_study(args: argparse.Namespace) -> int:
    from landscape.deletion import delete_study
    from landscape.workspace import create_study, list_studies

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
    name, checkpoints = args.name, args.checkpoints
    if name == "new" and checkpoints:  # the explicit form: study new NAME CKPT...
        name, checkpoints = checkpoints[0], checkpoints[1:]
    study = create_study(name, _study_members(args, checkpoints))
    print(f"study {study.name!r}: " + ", ".join(m.label for m in study.members))
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    from landscape.cli.runs import _add_arch_options
    from landscape.datasources import DATASETS

    p = sub.add_parser(
        "study",
        help="list the studies, `study new NAME CKPT...` (also `study NAME CKPT...`) names one "
        "from two or more checkpoints, `study rm NAME` deletes one",
    )
    p.add_argument("name", nargs="?", help="new, rm, or the new study's name (none: list them)")
    p.add_argument("checkpoints", nargs="*", help="files or run folders; first A, second B")
    _add_arch_options(p)
    p.add_argument(
        "--data", choices=DATASETS, default=None,
        help="data set of checkpoints whose metadata names none (default: none)",
    )  # fmt: skip
    p.add_argument("--data-root", help="its folder, or the .npz file (default: none)")
    p.add_argument("--split-seed", type=int, default=0, help="train/test split seed (default: 0)")
    p.set_defaults(func=_cmd_study)


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
    p.add_argument(
        "action", nargs="?", choices=("list", "rm"), default="list",
        help="list the uploads or rm some (default: list)",
    )  # fmt: skip
    p.add_argument("hashes", nargs="*", help="content hashes to delete (from `uploads list`)")
    p.add_argument(
        "--with-studies",
        action="store_true",
        help="also delete the studies that use them (default: keep them)",
    )
    p.set_defaults(func=_cmd_uploads)


COMMANDS = (_add_study, _add_uploads)
