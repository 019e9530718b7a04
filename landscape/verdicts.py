"""Verdicts: what a study's numbers say, in one sentence each, with the yardstick beside them.

Each function takes a typed result (``landscape.studies``) and returns a :class:`Verdict`: a
short title ("Connected"), a sentence with the numbers, the value it judges, the baseline it
compares against, the noise level (a standard error) and a status. The thresholds are the
module constants below (README: "Reading the verdicts"). Pure: no Streamlit, no Plotly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from landscape.studies.curve import CurveResult
from landscape.studies.frontier import FrontierResult
from landscape.studies.hessian import HessianResult
from landscape.studies.pca import PCAResult
from landscape.studies.plane import PlaneResult
from landscape.studies.sweep import SweepResult
from landscape.studies.threeway import ThreewayResult

__all__ = [
    "CONNECTED_BARRIER",
    "EQUAL_SE",
    "OFF_PLANE",
    "OVER_RANDOM",
    "SPARSITY_KEPT",
    "STATUSES",
    "Verdict",
    "accuracy_difference",
    "connectivity",
    "directions",
    "frontier",
    "plane",
    "pruning",
    "sparsity_along",
    "sweep_facts",
    "threeway",
    "trajectories",
]

CONNECTED_BARRIER = 0.10  # connected: the curve's train-loss barrier < 10% of the ends' mean loss
EQUAL_SE = 2.0  # two accuracies are "equal" when they differ by less than 2 standard errors
SPARSITY_KEPT = 0.5  # a path keeps the sparse end's zeros while its sparsity is >= half of it
OFF_PLANE = 0.10  # snapshots are "near" the PCA plane when residual < 10% of the in-plane extent
OVER_RANDOM = 2.0  # an overlap is "above random" at >= 2x the random expectation sqrt(k/n)
STATUSES = ("yes", "no", "unclear", "note")  # what a verdict's status can be


@dataclass(frozen=True)
class Verdict:
    """One finding about a result.

    Attributes:
        title: a few words ("Connected", "Not connected", ...).
        sentence: the finding with its numbers and the yardstick.
        value: the number judged (None when there is none).
        baseline: what it is compared against (a threshold, a random level), or None.
        noise: its standard error (or the random level's spread), or None when unknown.
        status: one of :data:`STATUSES`: "yes"/"no" answer the question the title asks,
            "unclear" when the difference is within noise, "note" for a plain observation.
    """

    title: str
    sentence: str
    value: float | None = None
    baseline: float | None = None
    noise: float | None = None
    status: str = "note"


def _se(p: float, n: int | None) -> float | None:
    """Binomial standard error sqrt(p(1 - p)/n) of an accuracy p on n samples."""
    return None if not n else math.sqrt(max(p * (1 - p), 0.0) / n)


def _images(diff: float, n: int | None) -> str:
    """ " (3 test images)" for an accuracy difference on n test samples ("" without n)."""
    if not n:
        return ""
    k = round(abs(diff) * n)
    return f" ({k} test image{'' if k == 1 else 's'})"


def connectivity(res: CurveResult, *, n_test: int | None = None) -> Verdict:
    """Whether the fitted curve joins A and B without a train-loss barrier.

    Connected when the curve's barrier (largest excess over the chord) is below
    :data:`CONNECTED_BARRIER` times the endpoints' mean train loss. The sentence adds the line's
    barrier and the curve's largest test-accuracy dip below the worse endpoint, with its
    binomial standard error sqrt(p(1 - p)/n_test).
    """
    curve, line = res.path("curve"), res.path("line")
    loss = np.asarray(res.curve["train_loss"], dtype=float)
    mean = float((loss[0] + loss[-1]) / 2)
    bc, bl = curve.barrier("train_loss").height, line.barrier("train_loss").height
    limit = CONNECTED_BARRIER * mean
    connected = bc <= limit
    rel = f"{bl / mean:.0%} of" if mean > 0 else "vs"
    text = (
        f"{'Connected' if connected else 'Not connected'}: the curve's train-loss barrier is "
        f"{bc:.3f} (line: {bl:.3f}, {rel} the endpoints' mean loss {mean:.3f}; connected below "
        f"{CONNECTED_BARRIER:.0%} of it)."
    )
    n = n_test or res.n_test
    acc = np.asarray(res.curve["test_acc"], dtype=float)
    worst = float(np.nanmin(acc))
    dip = max(min(acc[0], acc[-1]) - worst, 0.0)
    se = _se(worst, n)
    if se is not None:
        within = "within noise" if dip < EQUAL_SE * se else "beyond noise"
        text += (
            f" Test accuracy dips by at most {dip:.3f}{_images(dip, n)} below the worse "
            f"endpoint, standard error {se:.3f} on {n} test images: {within}."
        )
    else:
        text += f" Test accuracy dips by at most {dip:.3f} below the worse endpoint."
    return Verdict(
        "Connected" if connected else "Not connected",
        text,
        value=bc,
        baseline=limit,
        noise=se,
        status="yes" if connected else "no",
    )


def sparsity_along(res: CurveResult) -> Verdict:
    """Where along t the curve loses the sparse end's zeros.

    The sparse end is the endpoint with more exact zeros; walking from it, the zeros count as
    lost at the first t whose sparsity falls below :data:`SPARSITY_KEPT` of the end's.
    """
    t = np.asarray(res.t, dtype=float)
    sp = np.asarray(res.curve["sparsity"], dtype=float)
    end = 0 if sp[0] >= sp[-1] else len(sp) - 1
    step = 1 if end == 0 else -1
    if sp[end] <= 0:
        return Verdict("No sparse end", "Neither endpoint has exact zeros.", value=0.0)
    order = list(range(end, len(sp))) if step == 1 else list(range(end, -1, -1))
    lost = next((i for i in order if sp[i] < SPARSITY_KEPT * sp[end]), None)
    where = f"t = {t[end]:g}"
    if lost is None:
        text = f"The curve keeps the sparse end's zeros: sparsity >= {SPARSITY_KEPT:.0%} of "
        text += f"{sp[end]:.2f} ({where}) all along."
        return Verdict("Stays sparse", text, value=float(sp.min()), baseline=float(sp[end]))
    first = lost == end + step
    how = "leaves the sparse point at once" if first else f"keeps its zeros until t = {t[lost]:g}"
    text = (
        f"The curve {how}: sparsity {sp[end]:.2f} at {where}, {sp[lost]:.2f} at t = {t[lost]:.3g}."
    )
    if first:
        text += " Off the sparse point the path runs through dense weights (as the line does)."
    return Verdict(
        "Leaves the sparse point" if first else "Stays sparse for a while",
        text,
        value=float(t[lost]),
        baseline=float(sp[end]),
    )


def _nearest(axis: np.ndarray, x: float) -> int:
    return int(np.argmin(np.abs(np.asarray(axis) - x)))


def plane(res: PlaneResult, metric: str = "train_loss") -> Verdict:
    """The bend's loss against the endpoints', and whether the plane's low-loss region joins
    A and B.

    Values are read at the grid points nearest A, the bend (or third point) and B. The
    low-loss region is the grid below max(loss at A, loss at B) plus :data:`CONNECTED_BARRIER`
    times their mean; A and B are joined when they fall in one connected part of it.
    """
    z = np.asarray(res.metrics[metric], dtype=float)  # (beta, alpha)
    idx = [(_nearest(res.beta, y), _nearest(res.alpha, x)) for x, y in res.points_xy]
    la, lm, lb = (float(z[i]) for i in idx)
    level = max(la, lb) + CONNECTED_BARRIER * (la + lb) / 2
    parts, _ = ndimage.label(np.nan_to_num(z, nan=np.inf) <= level)
    joined = parts[idx[0]] != 0 and parts[idx[0]] == parts[idx[2]]
    mid = res.labels[1] if res.labels[1] != "bend" else "The bend (a control point)"
    text = (
        f"{mid} has {metric.replace('_', ' ')} {lm:.3f} (A: {la:.3f}, B: {lb:.3f}, at the nearest "
        f"grid points); the region below {level:.3f} "
        f"{'joins A and B' if joined else 'does not join A and B'} on this "
        f"{len(res.alpha)} x {len(res.beta)} grid."
    )
    return Verdict(
        "Joined in the plane" if joined else "Not joined in the plane",
        text,
        value=lm,
        baseline=level,
        status="yes" if joined else "no",
    )


def trajectories(res: PCAResult) -> Verdict:
    """How much of the trajectories the PCA plane explains and how far snapshots lie off it.

    The largest off-plane residual is compared with the trajectories' in-plane extent (the
    largest distance between projected snapshots); below :data:`OFF_PLANE` of it the contours
    near the snapshots are close to the loss they had.
    """
    r1, r2 = (float(r) for r in res.explained_variance_ratio)
    xy = np.asarray(res.xy, dtype=float)
    extent = float(np.max(np.linalg.norm(xy[:, None] - xy[None], axis=-1))) if len(xy) else 0.0
    worst = float(np.max(res.residual)) if len(res.residual) else 0.0
    rel = worst / extent if extent > 0 else math.inf
    near = rel < OFF_PLANE
    text = (
        f"The PCA plane explains {r1 + r2:.0%} of the trajectories' variance (PC1 {r1:.0%}, "
        f"PC2 {r2:.0%}); snapshots lie up to {worst:.3g} off it, {rel:.0%} of their in-plane "
        f"extent {extent:.3g}: "
        + (
            "the contours near the snapshots are close to their loss."
            if near
            else "the contours are the loss on the plane, not at the snapshots."
        )
    )
    return Verdict(
        "Trajectories near the plane" if near else "Trajectories off the plane",
        text,
        value=rel,
        baseline=OFF_PLANE,
        status="yes" if near else "no",
    )


def directions(res: HessianResult, *, n_params: int | None = None) -> Verdict:
    """The pruning direction's overlap |V^T d|/|d| with the top-k Hessian space, against random.

    A random unit vector in n dimensions has expected overlap about sqrt(k/n) with a k-space
    (spread about 1/sqrt(2n)); the ratio to it is reported beside the measured random direction
    and magnitude pruning. "Above random" at :data:`OVER_RANDOM` times or more.
    """
    if res.projection_ratio is None:
        return Verdict("No direction", "No second checkpoint: no pruning direction to measure.")
    k = len(res.eigenvalues)
    n = n_params or res.n_params
    if n is None and res.eigenvectors is not None:
        n = int(res.eigenvectors.shape[1])
    p = float(res.projection_ratio)
    expected = math.sqrt(k / n) if n else float(res.random_projection_ratio)
    spread = 1 / math.sqrt(2 * n) if n else None
    ratio = p / expected if expected > 0 else math.inf
    mag = float(res.magnitude_projection_ratio)
    rnd = float(res.random_projection_ratio)
    how = f"expected sqrt(k/n) = {expected:.3f}, n = {n:,}" if n else "the measured random level"
    text = (
        f"Pruning direction overlaps the top-{k} Hessian space {ratio:.1f}x a random direction "
        f"(|V^T d|/|d| = {p:.3f}; {how}; measured random {rnd:.3f}); magnitude pruning: "
        f"{mag:.3f} ({mag / expected:.1f}x random)."
    )
    above = ratio >= OVER_RANDOM
    return Verdict(
        "Above random" if above else "At the random level",
        text,
        value=p,
        baseline=expected,
        noise=spread,
        status="yes" if above else "no",
    )


def accuracy_difference(acc_a: float, acc_b: float, n_test: int | None) -> Verdict:
    """acc_a - acc_b with its standard error sqrt(pa(1 - pa)/n + pb(1 - pb)/n).

    "Equal" when |difference| < :data:`EQUAL_SE` standard errors (status "unclear");
    without ``n_test`` the difference is reported without a judgement.
    """
    diff = float(acc_a - acc_b)
    if not n_test:
        return Verdict("Difference", f"Difference {diff:+.4f} (test size unknown).", value=diff)
    se = math.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / n_test)
    equal = abs(diff) < EQUAL_SE * se or diff == 0
    text = (
        f"{acc_a:.4f} vs {acc_b:.4f}: difference {diff:+.4f}{_images(diff, n_test)}, standard "
        f"error {se:.4f} on {n_test} test images: "
        + ("equal within noise." if equal else f"{'higher' if diff > 0 else 'lower'}.")
    )
    title = "Equal" if equal else ("Higher" if diff > 0 else "Lower")
    return Verdict(
        title, text, value=diff, baseline=0.0, noise=se, status="unclear" if equal else "yes"
    )


def _twins(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(gRDA row, magnitude row) pairs of the same (c, mu, seed)."""
    mags = {(r["c"], r["mu"], r["seed"]): i for i, r in enumerate(rows) if r["kind"] != "grda"}
    return [
        (i, mags[(r["c"], r["mu"], r["seed"])])
        for i, r in enumerate(rows)
        if r["kind"] == "grda" and (r["c"], r["mu"], r["seed"]) in mags
    ]


def pruning(
    res: SweepResult,
    *,
    n_test: int | None = None,
    epochs: Mapping[int, float] | None = None,
) -> Verdict:
    """gRDA against magnitude pruning at equal sparsity, pair by pair, within noise.

    Args:
        res: the sweep (magnitude rows match the gRDA run of the same c, mu, seed).
        n_test: test samples behind the accuracies (None: differences are not judged).
        epochs: ``{row index: training epochs}`` when known; rows that differ are noted.
    """
    pairs = _twins(res.rows)
    if not pairs:
        return Verdict("No baseline", "No magnitude-pruning rows to compare the gRDA runs with.")
    found = [
        accuracy_difference(res.rows[g]["test_acc"], res.rows[m]["test_acc"], n_test)
        for g, m in pairs
    ]
    counts = {s: sum(v.title == s for v in found) for s in ("Equal", "Higher", "Lower")}
    if n_test:
        text = (
            f"gRDA vs magnitude-pruned SGD at the same sparsity, {len(pairs)} pairs: "
            f"{counts['Equal']} equal within {EQUAL_SE:g} standard errors, gRDA higher in "
            f"{counts['Higher']}, lower in {counts['Lower']} ({n_test} test images: one image "
            f"is {1 / n_test:.4f})."
        )
    else:
        diffs = ", ".join(f"{v.value:+.4f}" for v in found)
        text = f"gRDA minus magnitude test accuracy per pair: {diffs} (test size unknown)."
    ep = {g: (epochs or {}).get(g) for g, _ in pairs} | {m: (epochs or {}).get(m) for _, m in pairs}
    known = {v for v in ep.values() if v is not None}
    if len(known) > 1:
        text += (
            f" The rows were trained for different numbers of epochs "
            f"({', '.join(f'{e:g}' for e in sorted(known))}): not a like-for-like comparison."
        )
    worst = max(found, key=lambda v: abs(v.value or 0.0))
    status = "unclear" if counts["Equal"] == len(pairs) else "yes"
    title = "Equal within noise" if status == "unclear" else "Differences beyond noise"
    return Verdict(title, text, value=worst.value, noise=worst.noise, status=status)


def _file_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's landscape metadata from its safetensors header alone ({} if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {}).get("landscape", "{}"))
    except (OSError, ValueError, RuntimeError):
        return {}


def sweep_facts(res: SweepResult) -> tuple[int | None, dict[int, float]]:
    """(test samples, {row index: training epochs}) of a sweep, read from its files' headers.

    gRDA rows are run folders (their ``final.safetensors``), magnitude rows pruned checkpoints
    (their epoch is the SGD source's plus any fine-tuning). Unreadable files are left out.
    """
    from landscape.data import dataset_from_meta

    folder = Path(res.path)
    epochs: dict[int, float] = {}
    n_test = None
    for i, r in enumerate(res.rows):
        path = folder / r["path"]
        meta = _file_meta(path / "final.safetensors" if path.is_dir() else path)
        if isinstance(meta.get("epoch"), int | float):
            epochs[i] = float(meta["epoch"])
        if n_test is None and isinstance(meta.get("data"), dict):
            try:
                n_test = len(dataset_from_meta(meta["data"]).y_test)
            except Exception:  # noqa: BLE001 - a data set that cannot load: no test size
                n_test = None
    return n_test, epochs


METHOD_NAMES = {"grda": "gRDA", "magnitude": "magnitude-pruned SGD"}  # sweep kinds in words


def _relative(barrier: float, ends: Sequence[float]) -> tuple[float, float]:
    """(the endpoints' mean loss, the barrier as a fraction of it; inf when the mean is 0)."""
    mean = float(np.mean(ends))
    return mean, (barrier / mean if mean > 0 else (math.inf if barrier > 0 else 0.0))


def frontier(res: FrontierResult) -> list[Verdict]:
    """Per method, the sparsity at which the SGD minimum and the model stop being connected.

    A pair is connected when its curve's train-loss barrier is at most
    :data:`CONNECTED_BARRIER` times the endpoints' mean train loss (as in :func:`connectivity`).
    Walking up in sparsity, the method stops being connected at its first pair that is not.
    """
    found = []
    for method in dict.fromkeys(res.method):
        idx = sorted((i for i, m in enumerate(res.method) if m == method),
                     key=lambda i: res.sparsity[i])  # fmt: skip
        rel = [_relative(res.curve_train[i], res.end_train[i])[1] for i in idx]
        ok = [r <= CONNECTED_BARRIER for r in rel]
        name = METHOD_NAMES.get(method, method)
        rule = f"connected: the curve's train-loss barrier below {CONNECTED_BARRIER:.0%} of "
        rule += "the endpoints' mean train loss"
        count = f"{sum(ok)} of {len(idx)} models connected"
        if all(ok):
            top, worst = res.sparsity[idx[-1]], max(rel)
            line = max(res.line_train[i] for i in idx)
            text = (
                f"{name} stays connected to SGD up to sparsity {top:.3f} ({count}; largest "
                f"curve barrier {worst:.0%} of the endpoints' mean loss, line barrier up to "
                f"{line:.3f}; {rule})."
            )
            found.append(Verdict(f"{name}: connected throughout", text, value=None,
                                 baseline=CONNECTED_BARRIER, status="yes"))  # fmt: skip
            continue
        k = ok.index(False)
        i = idx[k]
        upto = f"connected up to sparsity {res.sparsity[idx[k - 1]]:.3f}" if k else "never"
        text = (
            f"{name} stops being connected at sparsity {res.sparsity[i]:.3f} ({upto}): curve "
            f"barrier {res.curve_train[i]:.3f} = {rel[k]:.0%} of the endpoints' mean loss "
            f"{np.mean(res.end_train[i]):.3f} (line: {res.line_train[i]:.3f}; test-loss "
            f"barrier {res.curve_test[i]:.3f}); {count}; {rule}."
        )
        title = f"{name}: not connected from sparsity {res.sparsity[i]:.2f}"
        found.append(Verdict(title, text, value=float(res.sparsity[i]),
                             baseline=CONNECTED_BARRIER, status="no"))  # fmt: skip
    return found


def threeway(res: ThreewayResult) -> list[Verdict]:
    """Per pair of the three minima: connected or not (as :func:`connectivity`), with the
    curve's largest test-accuracy dip below the worse endpoint and its standard error."""
    found = []
    for j, pair in enumerate(res.pairs):
        bc, bl = float(res.curve_barrier[j]), float(res.line_barrier[j])
        mean, rel = _relative(bc, res.end_loss[j])
        connected = rel <= CONNECTED_BARRIER
        dip = float(res.acc_dip[j])
        se = _se(float(min(res.end_acc[j])) - dip, res.n_test)
        noise = "" if se is None else (
            f", standard error {se:.3f}: {'within' if dip < EQUAL_SE * se else 'beyond'} noise"
        )  # fmt: skip
        text = (
            f"{pair}: the curve's train-loss barrier is {bc:.3f} ({rel:.0%} of the endpoints' "
            f"mean loss {mean:.3f}; line: {bl:.3f}); test accuracy dips by at most "
            f"{dip:.3f}{_images(dip, res.n_test)} below the worse end{noise}."
        )
        title = f"{pair}: {'connected' if connected else 'not connected'}"
        found.append(Verdict(title, text, value=bc, baseline=CONNECTED_BARRIER * mean,
                             noise=se, status="yes" if connected else "no"))  # fmt: skip
    return found
