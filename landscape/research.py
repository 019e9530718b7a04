"""Files saved by the mode-connectivity research code, opened without converting by hand.

The paper's runs and curves were saved by timgaripov/dnn-mode-connectivity and by the gRDA fork
of it (donlan2710/gRDA-Optimizer, ``directional_pruning/Connectivity_Projection``) as
``torch.save({"epoch": ..., "model_state": ..., "optimizer_state": ...})``. Two kinds exist:

- a **model** file: ``model_state`` is the state dict of one network (VGG16, PreResNet110,
  WideResNet28x10, ...), with the same names and shapes as :mod:`landscape.models`;
- a **curve** file: ``model_state`` is the state dict of their ``CurveNet``: the control points
  of every layer as ``net.<layer>.weight_<j>`` / ``bias_<j>`` (j = 0 .. k, BatchNorm affine
  parameters included), one set of BatchNorm running statistics, and the Bernstein constants
  under ``coeff_layer.``. It becomes landscape's format: two endpoint checkpoints and a
  :class:`~landscape.curves.BezierCurve` with the k - 1 bends.

Files are read only through ``torch.load(weights_only=True)`` (no code runs). The architecture
is the user's choice or is recognised from the key set (:func:`recognize`), and the guess is
reported as such. The optimizer state (SGD's momentum, gRDA's accumulator and step counter) is
summarised in the metadata, never needed.
"""

from __future__ import annotations

import inspect
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
from landscape.curves import BezierCurve, save_curve
from landscape.layouts import key_candidates
from landscape.models import MODELS, build_model, resolve_arch
from landscape.params import param_names
from landscape.sources import is_external

__all__ = [
    "Recognition",
    "ResearchFile",
    "export_research",
    "load_any",
    "open_research",
    "recognize",
]

_IN_SHAPE = [3, 32, 32]  # every architecture of that code is built for 32x32 RGB images
_POINT = re.compile(r"^net\.(?P<module>.+)\.(?P<param>weight|bias)_(?P<j>\d+)$")
_BUFFER = re.compile(
    r"^net\.(?P<module>.+)\.(?P<name>running_mean|running_var|num_batches_tracked)$"
)
# Their curve networks name the classifier layers of VGG fc1..fc3 (the base network nests them
# in `classifier` between Dropout and ReLU) and hold residual projections as a bare conv.
_VGG_FC = {"fc1": "classifier.1", "fc2": "classifier.4", "fc3": "classifier.6"}
_PROJECTIONS = ("downsample", "shortcut")


@dataclass(frozen=True)
class Recognition:
    """An architecture recognised from a state dict's key set.

    Attributes:
        arch: ``{"name", "kwargs"}`` for :func:`landscape.models.build_model`.
        label: the research code's name for it ("VGG16", "WideResNet28x10", ...).
        data: the data set its runs used: ``{"name", "split_seed", "normalize"}`` (CIFAR-100 for
            100 classes, else CIFAR-10; the "VGG" transform for VGG, "ResNet" for the others).
    """

    arch: dict[str, Any]
    label: str
    data: dict[str, Any]


def _blocks(keys: set[str], stage: str) -> int:
    """Number of residual blocks in ``stage`` (e.g. "layer1"), from keys ``stage.<i>.*``."""
    return len({k.split(".")[1] for k in keys if k.startswith(stage + ".")})


def _guess(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any], str] | None:
    """(registry name, kwargs, research label) read off the key set, or None."""
    keys = set(state)
    if "classifier.6.weight" in keys and any(k.startswith("layer_blocks.") for k in keys):
        convs = [k for k in keys if k.startswith("layer_blocks.") and state[k].ndim == 4]
        batch_norm = any(k.endswith("running_mean") for k in keys)
        depth = len(convs) + 3  # 13 convs + 3 linear layers = VGG16, 16 + 3 = VGG19
        kwargs = {"depth": depth, "batch_norm": batch_norm}
        classes = state["classifier.6.weight"].shape[0]
        return "vgg", {**kwargs, "num_classes": classes}, f"VGG{depth}{'BN' if batch_norm else ''}"
    if {"linear.weight", "conv1.bias", "layer1.0.conv1.weight"} <= keys:
        n = _blocks(keys, "layer1")
        widen = state["layer1.0.conv1.weight"].shape[0] // 16
        batch_norm = "bn1.weight" in keys
        kwargs = {"depth": 6 * n + 4, "widen_factor": widen, "batch_norm": batch_norm}
        label = f"WideResNet{6 * n + 4}x{widen}{'' if batch_norm else '_nobn'}"
        return "wideresnet", {**kwargs, "num_classes": state["linear.weight"].shape[0]}, label
    if {"fc.weight", "bn.weight", "conv1.weight", "layer1.0.bn1.weight"} <= keys:
        n = _blocks(keys, "layer1")
        depth = 9 * n + 2 if "layer1.0.conv3.weight" in keys else 6 * n + 2
        kwargs = {"depth": depth, "num_classes": state["fc.weight"].shape[0]}
        return "preresnet", kwargs, f"PreResNet{depth}"
    return None


# Inputs of the registry's own runs, by the size of a flattened image: digits, MNIST, CIFAR.
_SHAPES = {64: ([1, 8, 8], "digits"), 784: ([1, 28, 28], "mnist"), 3072: ([3, 32, 32], "cifar10")}


def _guess_registry(state: Mapping[str, torch.Tensor]) -> tuple[str, dict, int] | None:
    """(name, kwargs, flattened input size) of landscape's cnn or mlp, read off the keys."""
    keys = set(state)
    if {"features.0.weight", "classifier.0.weight", "classifier.2.weight"} <= keys:
        convs = sorted(
            (int(k.split(".")[1]), state[k])
            for k in keys
            if k.startswith("features.") and k.endswith(".weight") and state[k].ndim == 4
        )
        channels = [w.shape[0] for _, w in convs]
        fc = state["classifier.0.weight"]
        pool = round((fc.shape[1] // max(channels[-1], 1)) ** 0.5)
        c_in = convs[0][1].shape[1]
        kwargs = {"channels": channels, "hidden": fc.shape[0], "pool": pool}
        kwargs["num_classes"] = state["classifier.2.weight"].shape[0]
        return "cnn", kwargs, 64 if c_in == 1 else 3072
    linears = sorted(int(k.split(".")[1]) for k in keys if re.fullmatch(r"net\.\d+\.weight", k))
    if linears and keys == {f"net.{i}.{p}" for i in linears for p in ("weight", "bias")}:
        dims = [state[f"net.{i}.weight"].shape for i in linears]
        kwargs = {"widths": [d[0] for d in dims[:-1]], "num_classes": dims[-1][0]}
        return "mlp", kwargs, dims[0][1]
    return None


def _defaults(name: str) -> dict[str, Any]:
    """A registry model's constructor defaults, sequences as lists (as in metadata)."""
    params = inspect.signature(MODELS[name]).parameters.values()
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


_DEFAULTS = {name: _defaults(name) for name in ("cnn", "mlp")}


def _registry_recognition(state: Mapping[str, torch.Tensor]) -> Recognition | None:
    """landscape's own cnn/mlp (a plain state dict of a default run), sized to its data set."""
    guess = _guess_registry(state)
    if guess is None:
        return None
    name, kwargs, flat = guess
    in_shape, data = _SHAPES.get(flat, ([1, 8, 8], "digits"))
    if name == "cnn":
        in_shape = [1, 8, 8] if flat == 64 else [3, 32, 32]
    if data == "cifar10" and kwargs["num_classes"] == 100:
        data = "cifar100"
    # Arguments equal to the constructor's defaults are left out, as `landscape train` writes
    # them, so a recognised state dict compares equal to the run it came from.
    kwargs = {k: v for k, v in kwargs.items() if k == "num_classes" or _DEFAULTS[name].get(k) != v}
    arch = {"name": name, "kwargs": {"in_shape": in_shape, **kwargs}}
    return Recognition(arch=arch, label=name, data={"name": data, "split_seed": 0})


def _recognition(state: Mapping[str, torch.Tensor]) -> Recognition | None:
    """The guess read off the key names and a few shapes (not validated), or None; key
    prefixes shared by every key (``module.``, ...) are looked through."""
    for _, candidate in key_candidates(state):
        found = _research_recognition(candidate) or _registry_recognition(candidate)
        if found is not None:
            return found
    return None


def _research_recognition(state: Mapping[str, torch.Tensor]) -> Recognition | None:
    guess = _guess(state)
    if guess is None:
        return None
    name, kwargs, label = guess
    arch = {"name": name, "kwargs": {"in_shape": list(_IN_SHAPE), **kwargs}}
    data = {
        "name": "cifar100" if kwargs["num_classes"] == 100 else "cifar10",
        "split_seed": 0,
        "normalize": "vgg" if name == "vgg" else "resnet",
    }
    return Recognition(arch=arch, label=label, data=data)


def _not_recognised(source: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: architecture not recognised from its keys (not landscape's cnn or mlp, "
        f"nor a VGG, PreResNet or WideResNet of the mode-connectivity code); choose one with "
        f"--arch (a registry name, torchvision:<name> or file:<path.py>:<callable>)"
    )


def recognize(state: Mapping[str, torch.Tensor], *, source: str = "file") -> Recognition:
    """Recognise a research-code architecture (VGG, PreResNet, WideResNet) from a state dict.

    The guess is read off the key names and a few shapes, then checked like any checkpoint:
    every key and shape must match the guessed architecture.

    Raises:
        CheckpointError: the key set matches none of them (the user must choose).
    """
    recognition = _recognition(state)
    if recognition is None:
        raise _not_recognised(source)
    where = f"{source} (recognised as {recognition.label})"
    fit_state(dict(state), recognition.arch, source=where)
    return recognition


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
        curve: the Bezier curve of a curve file (None for a model file).
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


def _curve_points(state: Mapping[str, torch.Tensor], source: str) -> list[dict[str, torch.Tensor]]:
    """The k + 1 control points of a curve file as base-network state dicts (shared buffers)."""
    if "coeff_layer.binom" not in state:
        kind = "a polygonal chain (PolyChain)" if "coeff_layer.range" in state else "unknown"
        raise CheckpointError(
            f"{source}: the curve is {kind}, not a Bezier curve; only Bezier curves are opened"
        )
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
    bends = len(state["coeff_layer.binom"])
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


def open_research(
    path: str | Path,
    *,
    arch: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    max_bytes: int = MAX_BYTES,
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
    kind = "curve" if _is_curve(state) else "model"
    states = _curve_points(state, source) if kind == "curve" else [state]
    recognition = _recognition(states[0])
    guessed = arch is None
    if guessed and recognition is None:
        raise _not_recognised(source)
    arch = _resolve(arch, recognition, source)
    # Validated once, against the architecture finally used (a guess is named as such).
    tag = f" (recognised as {recognition.label})" if guessed else ""
    notes: dict[str, Any] = {}  # BN counters filled in (files of torch <= 0.4)
    for j, point in enumerate(states):  # a model file's key prefixes are removed here
        where = source if kind == "model" else f"{source} (control point {j})"
        states[j] = fit_state(point, arch, source=where + tag, strip=kind == "model", notes=notes)
    data = {**(recognition.data if recognition else {}), **(data or {})}
    meta = {**_research_meta(path, kind, arch, obj if isinstance(obj, dict) else {}, data), **notes}
    points, curve = _research_points(path, states, arch, meta)
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
    path: Path, states: list[dict[str, torch.Tensor]], arch: dict[str, Any], meta: dict[str, Any]
) -> tuple[list[Checkpoint], BezierCurve | None]:
    """The model's checkpoint, or a curve's two endpoint checkpoints and its Bezier curve."""
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
    return points, BezierCurve(params[0], params[-1], params[1:-1])


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
            f"{path}: a Bezier curve file (order {found.curve.order}), not one model: pass it "
            f"with --curve, or write its endpoints with `landscape import`"
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
