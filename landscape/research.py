"""Files saved by the mode-connectivity research code, opened without converting by hand.

The paper's runs and curves were saved by timgaripov/dnn-mode-connectivity and by the gRDA fork
of it (donlan2710/gRDA-Optimizer, ``directional_pruning/Connectivity_Projection``) as
``torch.save({"epoch": ..., "model_state": ..., "optimizer_state": ...})``. Two kinds exist:

- a **model** file: ``model_state`` is the state dict of one network (VGG16, PreResNet110,
  WideResNet28x10, ...), with the same names and shapes as :mod:`landscape.models`;
- a **curve** file: ``model_state`` is the state dict of their ``CurveNet``: the control points
  of every layer as ``net.<layer>.weight_<j>`` / ``bias_<j>`` (j = 0 .. k, BatchNorm affine
  parameters included), one set of BatchNorm running statistics, and the buffers of its
  ``coeff_layer``: ``binom``, ``range``, ``rev_range`` for a Bezier curve, ``range`` alone for
  a polygonal chain (their ``PolyChain``; the class name is not stored, so the type is read
  off these buffers, or taken from the caller's ``curve_type`` when a file holds none). It
  becomes landscape's format: two endpoint checkpoints and a
  :class:`~landscape.curves.BezierCurve` (``kind`` "bezier" or "polychain") with the k - 1 bends.

Files are read only through ``torch.load(weights_only=True)`` (no code runs). The architecture
is the user's choice or is recognised from the key set (:func:`recognize`,
:mod:`landscape.recognition`), and the guess is reported as such. The optimizer state (SGD's momentum, gRDA's accumulator and step counter) is
summarised in the metadata, never needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape.checkpoints import (
    FORMAT_VERSION,
    MAX_BYTES,
    TORCH_SUFFIXES,
    Checkpoint,
    CheckpointError,
    check_file,
    content_hash,
    fit_state,
    load_checkpoint,
    read_torch_object,
    save_checkpoint,
    state_from_object,
)
from landscape.curves import CURVE_TYPES, BezierCurve, save_curve
from landscape.models import build_model, resolve_arch
from landscape.params import param_names
from landscape.recognition import Recognition, not_recognised, recognition_of, recognize
from landscape.sources import is_external

__all__ = [
    "Recognition",
    "ResearchFile",
    "export_research",
    "load_any",
    "open_research",
    "recognize",
]

_POINT = re.compile(r"^net\.(?P<module>.+)\.(?P<param>weight|bias)_(?P<j>\d+)$")
_BUFFER = re.compile(
    r"^net\.(?P<module>.+)\.(?P<name>running_mean|running_var|num_batches_tracked)$"
)
# Their curve networks name the classifier layers of VGG fc1..fc3 (the base network nests them
# in `classifier` between Dropout and ReLU) and hold residual projections as a bare conv.
_VGG_FC = {"fc1": "classifier.1", "fc2": "classifier.4", "fc3": "classifier.6"}
_PROJECTIONS = ("downsample", "shortcut")


@dataclass
class ResearchFile:
    """A model or curve file of the research code, in landscape's terms.

    Attributes:
        path: the file.
        kind: "model" or "curve".
        arch: the architecture ``{"name", "kwargs"}`` (given or recognised).
        label: the research code's name when recognised, else None.
        recognized: whether ``arch`` is a guess from the key set (show it; let the user confirm).
        epoch: the training epoch saved in the file, if any.
        optimizer: summary of the optimizer state (name, hyperparameters, steps), if any.
        points: [the model] for a model file; [start (t = 0), end (t = 1)] for a curve file.
        curve: the curve of a curve file (None for a model file); ``curve.kind`` is its type.
        curve_type_from: "file" (read off its ``coeff_layer`` buffers) or "caller" (the file
            holds none; the given ``curve_type``); None for a model file.
    """

    path: Path
    kind: str
    arch: dict[str, Any]
    label: str | None
    recognized: bool
    epoch: int | None
    optimizer: dict[str, Any] | None
    points: list[Checkpoint]
    curve: BezierCurve | None = None
    curve_type_from: str | None = None


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _optimizer_summary(opt: Any) -> dict[str, Any] | None:
    """Name, hyperparameters and step count of a saved optimizer state (None if absent/odd)."""
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list):
        return None
    groups = [g for g in opt["param_groups"] if isinstance(g, dict)]
    if not groups:
        return None
    group = groups[0]
    name = "grda" if {"c", "mu"} <= set(group) else "sgd" if "momentum" in group else "unknown"
    summary: dict[str, Any] = {"name": name}
    for key in ("lr", "c", "mu", "momentum", "weight_decay"):
        if _number(group.get(key)) is not None:
            summary[key] = group[key]
    # gRDA keeps a step counter `iter_num` (and its accumulator) per parameter.
    counters = [
        s["iter_num"]
        for s in (opt.get("state") or {}).values()
        if isinstance(s, dict) and isinstance(s.get("iter_num"), torch.Tensor)
    ]
    counters = [c for c in counters if c.numel() == 1]
    if counters:
        summary["steps"] = int(max(float(c) for c in counters))
    return summary


def _is_curve(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("coeff_layer.") for k in state) or any(map(_POINT.match, state))


def _base_module(module: str) -> str:
    """Their curve network's module path -> the same module in the base network."""
    if module in _VGG_FC:
        return _VGG_FC[module]
    if module.rsplit(".", 1)[-1] in _PROJECTIONS:
        return module + ".0"  # a bare conv in the curve network, Sequential(conv) in the base
    return module


def _curve_type(
    state: Mapping[str, torch.Tensor], curve_type: str | None, source: str
) -> tuple[str, str, int | None]:
    """(type, "file" or "caller", number of control points the buffers give) of a curve file.

    Their ``Bezier`` registers ``binom``, ``range`` and ``rev_range``; their ``PolyChain``
    ``range`` only. A file without these buffers cannot tell: the caller's type decides.
    """
    if "coeff_layer.binom" in state:
        return "bezier", "file", len(state["coeff_layer.binom"])
    if "coeff_layer.range" in state:
        return "polychain", "file", len(state["coeff_layer.range"])
    if curve_type is None:
        raise CheckpointError(
            f"{source}: the curve file holds no coeff_layer buffers, so a Bezier curve and a "
            f"polygonal chain (PolyChain) cannot be told apart: give the curve type "
            f"(--curve-type bezier|polychain)"
        )
    if curve_type not in CURVE_TYPES:
        raise CheckpointError(f"{source}: curve type must be one of {', '.join(CURVE_TYPES)}")
    return curve_type, "caller", None


def _curve_points(
    state: Mapping[str, torch.Tensor], source: str, want: int | None
) -> list[dict[str, torch.Tensor]]:
    """The k + 1 control points of a curve file as base-network state dicts (shared buffers);
    ``want``: how many its coeff_layer buffers say (None: as many as it holds)."""
    points: dict[int, dict[str, torch.Tensor]] = {}
    shared: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("coeff_layer."):
            continue
        if m := _POINT.match(key):
            name = f"{_base_module(m['module'])}.{m['param']}"
            points.setdefault(int(m["j"]), {})[name] = value
        elif m := _BUFFER.match(key):
            shared[f"{_base_module(m['module'])}.{m['name']}"] = value
        else:
            raise CheckpointError(f"{source}: unexpected key {key!r} in a curve file")
    bends = len(points) if want is None else want
    if sorted(points) != list(range(bends)) or bends < 2:
        raise CheckpointError(
            f"{source}: the curve has {bends} control points in coeff_layer but parameters "
            f"for points {sorted(points)}"
        )
    names = set(points[0])
    for j, point in points.items():
        if set(point) != names:
            diff = sorted(names ^ set(point))
            raise CheckpointError(
                f"{source}: control point {j} differs from point 0 in {', '.join(diff[:5])}"
            )
    return [{**points[j], **shared} for j in range(bends)]


def _resolve(arch: dict[str, Any] | None, recognition: Recognition | None, source: str) -> dict:
    """The user's architecture (research names resolved), else the recognised one.

    A user's choice of the recognised family is completed by what the file shows (classes,
    input shape) unless the user's arguments say otherwise.
    """
    if arch is None:
        assert recognition is not None
        return recognition.arch
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{source}: architecture must be {{name, kwargs}}: {arch!r}")
    if is_external(arch["name"]):  # torchvision:, file:, export: take their kwargs as given
        return {"name": arch["name"], "kwargs": dict(arch.get("kwargs") or {})}
    try:
        name, kwargs = resolve_arch(arch["name"], arch.get("kwargs") or {})
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err
    if recognition is not None and recognition.arch["name"] == name:
        kwargs = {**recognition.arch["kwargs"], **kwargs}
    return {"name": name, "kwargs": kwargs}


def _file_states(
    state: Mapping[str, torch.Tensor], source: str, curve_type: str | None
) -> tuple[str, list[dict[str, torch.Tensor]], tuple[str | None, str | None]]:
    """("model" or "curve", its state dicts, (the curve's type, "file" or "caller"))."""
    if not _is_curve(state):
        return "model", [dict(state)], (None, None)
    curve_kind, said_by, want = _curve_type(state, curve_type, source)
    return "curve", _curve_points(state, source, want), (curve_kind, said_by)


def open_research(
    path: str | Path,
    *,
    arch: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    max_bytes: int = MAX_BYTES,
    curve_type: str | None = None,
) -> ResearchFile:
    """Open a ``.pt``/``.pth`` model or curve file of the mode-connectivity research code.

    Plain state dicts and other training dicts (``state_dict``, ``model``, ...) open too.
    Args:
        path: the file.
        arch: ``{"name", "kwargs"}`` (a registry name or a research name such as
            "WideResNet28x10"); None: recognised from the key set.
        data: ``{"name", "split_seed"[, "root", "normalize"]}``; completed by (or, when None,
            taken from) what the recognised architecture's runs used.
        max_bytes: files larger than this are refused before reading.
        curve_type: "bezier" or "polychain": the type of a curve file without coeff_layer.

    Returns:
        The :class:`ResearchFile`, its checkpoints validated against the architecture.

    Raises:
        CheckpointError: a refused pickle, an unknown layout, or keys and shapes that do not
            fit the architecture; the message names the file and the problem.
    """
    path = Path(path)
    source = str(path)
    check_file(path, max_bytes)
    obj = read_torch_object(path, max_bytes=max_bytes)
    state = state_from_object(obj, path)
    kind, states, shape = _file_states(state, source, curve_type)
    recognition = recognition_of(states[0])
    guessed = arch is None
    if guessed and recognition is None:
        raise not_recognised(source)
    arch = _resolve(arch, recognition, source)
    # Validated once, against the architecture finally used (a guess is named as such).
    tag = f" (recognised as {recognition.label})" if guessed else ""
    notes: dict[str, Any] = {}  # BN counters filled in (files of torch <= 0.4)
    for j, point in enumerate(states):  # a model file's key prefixes are removed here
        where = source if kind == "model" else f"{source} (control point {j})"
        states[j] = fit_state(point, arch, source=where + tag, strip=kind == "model", notes=notes)
    data = {**(recognition.data if recognition else {}), **(data or {})}
    meta = {**_research_meta(path, kind, arch, obj if isinstance(obj, dict) else {}, data), **notes}
    points, curve = _research_points(path, states, arch, meta, shape[0] or "bezier")
    return ResearchFile(
        path=path,
        kind=kind,
        arch=arch,
        label=recognition.label if recognition and recognition.arch == arch else None,
        recognized=guessed,
        epoch=meta["epoch"],
        optimizer=meta["optimizer"],
        points=points,
        curve=curve,
        curve_type_from=shape[1],
    )


def _research_meta(
    path: Path, kind: str, arch: dict[str, Any], info: dict, data: dict[str, Any]
) -> dict[str, Any]:
    """The metadata shared by a research file's checkpoints (``data`` left out when empty)."""
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "epoch": info.get("epoch") if _number(info.get("epoch")) is not None else None,
        "optimizer": _optimizer_summary(info.get("optimizer_state")),
        "source": {"file": path.name, "kind": kind},
    }
    if data:
        meta["data"] = data
    return meta


def _research_checkpoint(
    path: Path, point: dict[str, torch.Tensor], meta: dict[str, Any], tag: str, j: int | None
) -> Checkpoint:
    """One checkpoint of a research file (floats as float32; a curve point names its index)."""
    point = {k: v.float() if v.is_floating_point() else v for k, v in point.items()}
    m = {**meta, "source": {**meta["source"], **({"point": j} if j is not None else {})}}
    return Checkpoint(point, m, content_hash(point), path, f"{path.stem}{tag}")


def _research_points(
    path: Path,
    states: list[dict[str, torch.Tensor]],
    arch: dict[str, Any],
    meta: dict[str, Any],
    curve_type: str,
) -> tuple[list[Checkpoint], BezierCurve | None]:
    """The model's checkpoint, or a curve's two endpoint checkpoints and its curve."""
    if meta["source"]["kind"] == "model":
        return [_research_checkpoint(path, states[0], meta, "", None)], None
    k = len(states) - 1
    points = [
        _research_checkpoint(path, states[0], meta, ":t=0", 0),
        _research_checkpoint(path, states[-1], meta, ":t=1", k),
    ]
    with torch.device("meta"):
        model = build_model(arch["name"], **arch.get("kwargs", {}))
    names = param_names(model)  # the curve's flat vectors follow the model's order
    params = [{n: s[n].float() for n in names} for s in states]
    return points, BezierCurve(params[0], params[-1], params[1:-1], kind=curve_type)


def load_any(
    path: str | Path,
    *,
    arch: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    max_bytes: int = MAX_BYTES,
    trust: bool = False,
) -> Checkpoint:
    """One checkpoint from any file a command accepts.

    ``.safetensors`` files (and, with ``trust``, ``.pt2`` exported programs) go through
    :func:`landscape.checkpoints.load_checkpoint`; ``torch.save`` files (``.pt``, ``.pth``,
    Lightning ``.ckpt``, ``.bin``) through :func:`open_research` (architecture recognised when
    not given). A curve file is refused with a pointer to the commands that take curves.

    Raises:
        CheckpointError: the specific problem.
    """
    path = Path(path)
    if path.suffix.lower() not in TORCH_SUFFIXES:
        return load_checkpoint(path, arch=arch, data=data, max_bytes=max_bytes, trust=trust)
    found = open_research(path, arch=arch, data=data, max_bytes=max_bytes)
    if found.kind == "curve":
        raise CheckpointError(
            f"{path}: a {found.curve.kind} curve file (order {found.curve.order}), not one model: "
            f"pass it with --curve, or write its endpoints with `landscape import`"
        )
    return found.points[0]


def export_research(found: ResearchFile, out: str | Path) -> dict[str, Path]:
    """Write a research file in landscape's formats into the folder ``out``.

    A model file becomes ``model.safetensors``; a curve file ``start.safetensors`` (t = 0),
    ``end.safetensors`` (t = 1) and ``curve.safetensors`` (the bends, tied to the endpoints'
    hashes), which ``landscape curve start end --curve curve.safetensors`` evaluates.

    Returns:
        The written files by role ("model", or "start", "end", "curve").
    """
    out = Path(out)
    if found.kind == "model":
        target = out / "model.safetensors"
        save_checkpoint(target, found.points[0].state, found.points[0].meta)
        return {"model": target}
    files = {"start": out / "start.safetensors", "end": out / "end.safetensors"}
    for role, ckpt in zip(files, found.points, strict=True):
        save_checkpoint(files[role], ckpt.state, ckpt.meta)
    assert found.curve is not None
    # A given curve: nothing was fitted, so no fitting settings are recorded.
    files["curve"] = save_curve(out / "curve.safetensors", found.curve, *found.points, None)
    return files
