"""Study kinds: one module each, one runner for all (see :mod:`landscape.studies.base`).

``run(kind.KIND, config, inputs)`` computes (or returns the stored) typed result;
``find(...)`` only looks it up. :data:`KINDS` maps kind names to kinds.
"""

from landscape.studies import (
    curve,
    frontier,
    hessian,
    masks,
    pca,
    plane,
    prune,
    random_plane,
    slices,
    sweep,
    threeway,
)
from landscape.studies.base import Context, Kind, Result, find, run, study_key

__all__ = [
    "KINDS",
    "Context",
    "Kind",
    "Result",
    "curve",
    "find",
    "frontier",
    "hessian",
    "masks",
    "pca",
    "plane",
    "prune",
    "random_plane",
    "run",
    "slices",
    "study_key",
    "sweep",
    "threeway",
]

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        curve.KIND,
        plane.KIND,
        pca.KIND,
        random_plane.KIND,
        slices.KIND,
        hessian.KIND,
        prune.KIND,
        sweep.KIND,
        masks.KIND,
        frontier.KIND,
        threeway.KIND,
    )
}
