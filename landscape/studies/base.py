"""What every study kind shares: typed results, pure keys, find without computing, one runner.

A study kind is a module of :mod:`landscape.studies` that defines a typed ``Config`` dataclass
(one comment per default; the CLI takes its defaults from it), an ``Inputs`` dataclass (the
loaded checkpoints, data set, ...), a ``Result`` dataclass and a :class:`Kind`:

* ``identity(config, inputs)`` is pure and cheap: content hashes of the inputs and the settings
  that change the numbers. With the kind's ``version`` it gives the result's key
  (:func:`study_key`), so looking a result up (:func:`find`) never computes anything.
* ``compute(config, inputs, context)`` returns the Result; ``context`` carries the store and key
  (for resumable partial results), the progress callback and the process shard.

:func:`run` is the one way a study is computed, for the CLI, the app and the benchmarks alike.
"""

from __future__ import annotations

import dataclasses
import platform
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from landscape.distributed import broadcast, current_shard
from landscape.progress import Progress
from landscape.store import Arrays, Store, result_key

__all__ = [
    "Context",
    "Kind",
    "Result",
    "config_identity",
    "find",
    "run",
    "study_key",
]

C = TypeVar("C")
I = TypeVar("I")  # noqa: E741 - the inputs type, beside C(onfig) and R(esult)
R = TypeVar("R", bound="Result")

_SPEED_ONLY = ("device", "data_root", "points_per_pass")  # settings that never change the numbers


def _is_array_dict(hint: Any) -> bool:
    return typing.get_origin(hint) is dict and typing.get_args(hint)[1:] == (np.ndarray,)


@dataclass
class Result:
    """Base of typed study results.

    Fields typed ``np.ndarray`` (or ``np.ndarray | None``) go to the result's ``.npz``; fields
    typed ``dict[str, np.ndarray]`` (metric columns) go there as ``<field>.<name>``; everything
    else goes to its JSON. A subclass declares fields and nothing else, besides
    ``ARTIFACTS``: the names of fields holding paths of files it wrote into the store with
    :meth:`Store.save_artifact` (their checksums go into the result, which is recomputed when
    one is missing or corrupt).
    """

    ARTIFACTS: ClassVar[tuple[str, ...]] = ()

    def artifacts(self) -> list[Path]:
        """The files in the store this result refers to."""
        return [Path(getattr(self, name)) for name in self.ARTIFACTS]

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    def to_arrays(self) -> tuple[dict[str, Any], Arrays]:
        """(JSON-able fields, arrays) for the store."""
        info: dict[str, Any] = {}
        arrays: Arrays = {}
        hints = self._hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            elif _is_array_dict(hints[f.name]):
                arrays |= {f"{f.name}.{k}": np.asarray(v) for k, v in value.items()}
            else:
                info[f.name] = value
        return info, arrays

    @classmethod
    def from_arrays(cls: type[R], info: dict[str, Any], arrays: Arrays) -> R:
        """The inverse of :meth:`to_arrays`."""
        hints = cls._hints()
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if _is_array_dict(hints[f.name]):
                prefix = f"{f.name}."
                kwargs[f.name] = {
                    k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)
                }
            elif f.name in arrays:
                kwargs[f.name] = arrays[f.name]
            elif f.name in info:
                kwargs[f.name] = info[f.name]
        return cls(**kwargs)


@dataclass(frozen=True)
class Context:
    """What a study's compute function gets besides its config and inputs.

    Attributes:
        store: where partial results of long computations are kept (under ``kind``/``key``).
        kind: the study kind's name.
        key: the result's key.
        progress: ``progress(done, total, stage)`` or None.
        shard: (rank, world) of the process group evaluating the points.
    """

    store: Store
    kind: str
    key: str
    progress: Progress | None = None
    shard: tuple[int, int] = (0, 1)


@dataclass(frozen=True)
class Kind(Generic[C, I, R]):
    """A study kind: its name, version, types and two functions (see the module notes)."""

    name: str
    version: int  # bump when the computation changes: results of older versions are stale
    config: type[C]
    result: type[R]
    identity: Callable[[C, I], dict[str, Any]]
    compute: Callable[[C, I, Context], R]


def config_identity(config: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config's fields for a result key, without the settings that only change speed."""
    return {
        k: v for k, v in dataclasses.asdict(config).items() if k not in _SPEED_ONLY + tuple(skip)
    }


def study_key(kind: Kind[C, I, R], config: C, inputs: I) -> str:
    """The key of the result of ``kind`` on ``inputs`` with ``config`` (cheap, pure)."""
    return result_key(kind.name, kind.version, kind.identity(config, inputs))


def find(kind: Kind[C, I, R], config: C, inputs: I, *, store: Store | None = None) -> R | None:
    """The stored result, or None; never computes."""
    store = store or Store()
    found = store.find(kind.name, study_key(kind, config, inputs))
    return None if found is None else kind.result.from_arrays(found.data, found.arrays)


def run(
    kind: Kind[C, I, R],
    config: C,
    inputs: I,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
) -> R:
    """The stored result of ``kind`` on ``inputs``, computed and stored first if missing.

    In a process group (``shard`` or the initialised one with world > 1) rank 0 alone reads
    and writes the store; whether the result is there is broadcast, so every rank either
    returns it or computes its share of the points together with the others.
    """
    store = store or Store()
    rank, world = shard if shard is not None else current_shard()
    identity = kind.identity(config, inputs)
    key = result_key(kind.name, kind.version, identity)
    context = Context(store, kind.name, key, progress, (rank, world))
    if rank == 0:
        store.remove_stale(kind.name)  # temp files of writers that died

    def compute() -> tuple[dict[str, Any], Arrays, list[Path]]:
        start = time.perf_counter()
        result = kind.compute(config, inputs, context)
        info, arrays = result.to_arrays()
        # The wall time goes next to the inputs: earlier jobs calibrate estimates (cost.py).
        wall = {"wall_s": time.perf_counter() - start, "host": platform.node()}
        return {**info, "inputs": identity, **wall}, arrays, result.artifacts()

    if world == 1:
        found = store.get_or_compute(kind.name, key, compute)
    else:
        found = broadcast(store.load(kind.name, key) if rank == 0 else None)
        if found is None:
            info, arrays, files = compute()
            if rank == 0:
                with store.lock(kind.name, key):
                    store.save(kind.name, key, info, arrays, artifacts=files)
            return kind.result.from_arrays(info, arrays)
    return kind.result.from_arrays(found.data, found.arrays)
