"""The computations a page shows: looked up in the store, or run when the user asks.

A :class:`Job` names a study kind (``landscape.studies``), its config and how to build its
inputs: the same ``studies.run`` the CLI calls. Looking a result up computes its key (cheap and
pure) and reads the store; nothing runs. Costs are counted by ``landscape.cost`` and turned into
seconds with rates measured once per checkpoint and device (cached here).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st

from landscape import cost as costs
from landscape.app.sidebar import Selection, checkpoint, mtime
from landscape.checkpoints import Checkpoint, CheckpointError, checkpoint_dataset
from landscape.cost import Cost, Rates
from landscape.curves import CurveConfig, curve_meta, load_curve
from landscape.data import DataError
from landscape.progress import Progress
from landscape.store import Store
from landscape.studies import KINDS, base, curve, hessian, pca, plane, slices
from landscape.workspace import Member

Resolve = Callable[["Job"], Any]  # a prerequisite job -> its result (None: not there)


@dataclass(frozen=True)
class Job:
    """One stored computation a page shows: looked up, or run when the user asks.

    Attributes:
        title: what it is, for texts ("the curve").
        kind: the study kind.
        config: its config.
        inputs: ``inputs(resolve)`` builds the kind's inputs; results of prerequisite jobs come
            from ``resolve(job)``; None when a prerequisite is missing (nothing to look up).
        cost: what it costs when nothing is stored.
        needs: jobs whose results ``inputs`` builds on (computed first when missing).
        member: the checkpoint whose architecture and data the rates are measured on.
    """

    title: str
    kind: base.Kind
    config: Any
    inputs: Callable[[Resolve], Any]
    cost: Cost
    needs: tuple[Job, ...] = ()
    member: Member | None = None

    @property
    def device(self) -> str:
        return getattr(self.config, "device", "cpu")


@dataclass(frozen=True)
class Jobs:
    """Several jobs shown together (``{name: result}`` once all are stored)."""

    title: str
    parts: dict[str, Job]

    @property
    def cost(self) -> Cost:
        return functools.reduce(lambda a, b: a + b, (j.cost for j in self.parts.values()))

    @property
    def needs(self) -> tuple[Job, ...]:
        return tuple(n for j in self.parts.values() for n in j.needs)


@dataclass(frozen=True)
class Estimate:
    """What a job will take here: counted passes and calibrated seconds with their range."""

    passes: float
    seconds: float
    low: float
    high: float
    jobs: int  # earlier jobs the calibration is made of (0: the probe alone)

    def text(self) -> str:
        how = f"calibrated on {self.jobs} earlier jobs" if self.jobs else "from a quick probe"
        return (
            f"about {self.passes:,.0f} forward passes over the training data "
            f"({costs.range_text(self.low, self.high)} on this machine, {how})"
        )


def store() -> Store:
    """The result store under ``LANDSCAPE_HOME`` (read each time: tests point it elsewhere)."""
    return Store()


@functools.lru_cache(maxsize=256)
def _load(root: str, kind: str, key: str, mtime_ns: int) -> Any:
    # Keyed by the file's mtime: a result recomputed after a corrupt file is read again.
    found = Store(root).find(kind, key)
    return None if found is None else KINDS[kind].result.from_arrays(found.data, found.arrays)


def _find_one(job: Job) -> Any | None:
    inputs = job.inputs(find)
    if inputs is None:
        return None
    root = store().root
    key = base.study_key(job.kind, job.config, inputs)
    path = root / job.kind.name / f"{key}.json"
    if not path.exists():
        return None
    return _load(str(root), job.kind.name, key, path.stat().st_mtime_ns)


def find(job: Job | Jobs) -> Any | None:
    """The job's stored result (``{name: result}`` for :class:`Jobs`), or None; never computes.

    Raises:
        CheckpointError / DataError / ValueError: the job cannot run on these checkpoints.
    """
    if isinstance(job, Jobs):
        found = {name: _find_one(j) for name, j in job.parts.items()}
        return None if any(v is None for v in found.values()) else found
    return _find_one(job)


def compute(job: Job | Jobs, progress: Progress | None) -> Any:
    """Run the job and what it needs (the store's lock makes two tabs compute it once).

    A job that actually ran records its estimate and wall time in the store's calibration
    (``landscape.cost.record_timing``), so later estimates of its kind follow this machine.
    """
    if isinstance(job, Jobs):
        return {name: compute(j, progress) for name, j in job.parts.items()}

    def resolve(need: Job) -> Any:
        return compute(need, progress)

    inputs = job.inputs(resolve)
    missing = job.member is not None and _find_one(job) is None
    raw = _probe_seconds(job) if missing else 0.0
    start = time.perf_counter()
    out = base.run(job.kind, job.config, inputs, store=store(), progress=progress)
    if missing:
        wall = time.perf_counter() - start
        costs.record_timing(store().root, job.kind.name, raw, wall, device=job.device)
    return out


RATES_TTL_S = 120  # a shared machine's load changes: probe again after this long


@st.cache_resource(show_spinner=False, max_entries=16, ttl=RATES_TTL_S)
def _rates(path: str, mtime_ns: int, device: str, _member: Member) -> Rates:
    return costs.measure_rates(checkpoint(_member), device=device)


@st.cache_resource(show_spinner=False, max_entries=16, ttl=RATES_TTL_S)
def _hvp_seconds(path: str, mtime_ns: int, device: str, samples: int, _member: Member) -> float:
    return costs.measure_hvp(checkpoint(_member), samples, device=device)


def reprobe() -> None:
    """Forget the measured rates: the next estimate probes this machine again."""
    _rates.clear()
    _hvp_seconds.clear()


def rates(member: Member, device: str) -> Rates:
    """Seconds per pass and per point, measured once per checkpoint and device."""
    return _rates(member.path, mtime(member.path), device, member)


def estimate(cost: Cost, member: Member, device: str) -> tuple[float, float]:
    """What a cost amounts to on this machine: (forward passes over the training set, seconds).

    Args:
        cost: the work.
        member: the checkpoint whose architecture and data set the rates are measured on.
        device: where the work runs.
    """
    hvp = None
    if cost.hvps:
        when = mtime(member.path)
        hvp = _hvp_seconds(member.path, when, device, cost.hvp_samples, member)
    return costs.estimate(cost, rates(member, device), hvp_seconds=hvp)


def _probe_seconds(job: Job) -> float:
    """The uncalibrated seconds of one job's own work from a fresh probe (not the cached one):
    timed under the same load as the job, so the calibration's ratio is free of it."""
    ckpt = checkpoint(job.member)
    rates_now = costs.measure_rates(ckpt, device=job.device)
    hvp = None
    if job.cost.hvps:
        hvp = costs.measure_hvp(ckpt, job.cost.hvp_samples, device=job.device)
    return costs.estimate(job.cost, rates_now, hvp_seconds=hvp)[1]


def _todo(job: Job | Jobs) -> list[Job]:
    """The single jobs a compute would run: missing prerequisites first, then the parts."""
    parts = list(job.parts.values()) if isinstance(job, Jobs) else [job]
    needs: list[Job] = []
    for n in (n for p in parts for n in p.needs):
        if n not in needs and find(n) is None:
            needs.append(n)
    return [*needs, *parts]


def job_estimate(job: Job | Jobs) -> Estimate:
    """The job's time here: each kind's probe estimate times that kind's calibration."""
    passes = seconds = low = high = 0.0
    jobs_seen = None
    root = store().root
    for one in _todo(job):
        if one.member is None:
            continue
        p, raw = estimate(one.cost, one.member, one.device)
        cal = costs.calibration(root, one.kind.name, device=one.device)
        mid, lo, hi = cal.apply(raw)
        passes, seconds, low, high = passes + p, seconds + mid, low + lo, high + hi
        jobs_seen = cal.jobs if jobs_seen is None else min(jobs_seen, cal.jobs)
    return Estimate(passes, seconds, low, high, jobs_seen or 0)


def estimate_text(cost: Cost, member: Member, device: str) -> str:
    """What a cost amounts to, in words: passes and the time on this machine."""
    passes, seconds = estimate(cost, member, device)
    when = costs.seconds_text(seconds)
    return f"about {passes:,.0f} forward passes over the training data ({when} on this machine)"


def cost_text(job: Job | Jobs) -> str:
    """What a job costs: its own work and that of its missing prerequisites, and the time."""
    return job_estimate(job).text()


def _named(member: Member) -> Checkpoint:
    # A copy named as the study names it (results show the names); the cached one is shared.
    return replace(checkpoint(member), name=member.label)


def curve_job(sel: Selection, cfg: CurveConfig, imported: Path | None = None) -> Job:
    """Fit the curve from A to B (or take an imported one); evaluate it and the line."""
    if imported is not None:
        # The curve is given: the fit options do not apply, so they do not split the key.
        meta = curve_meta(imported)
        kind = meta.get("curve_type", "bezier")
        cfg = replace(cfg, order=int(meta["order"]), epochs=0, curve_type=kind, masked=False)

    def inputs(_resolve: Resolve) -> curve.CurveInputs:
        a, b = _named(sel.a), _named(sel.b)
        given = load_curve(imported, a, b) if imported is not None else None
        return curve.CurveInputs(a, b, given)

    title = "the imported curve" if imported is not None else "the curve"
    return Job(title, curve.KIND, cfg, inputs, costs.curve_cost(cfg), member=sel.a)


def plane_job(
    sel: Selection, curve_cfg: CurveConfig, cfg: plane.PlaneConfig, imported: Path | None = None
) -> Job:
    """The plane through A, the curve's bend and B (the curve is fitted first if missing).

    ``imported``: take the bend of this imported curve instead of the one fitted here.
    """
    fit = curve_job(sel, curve_cfg, imported)

    def inputs(resolve: Resolve) -> plane.PlaneInputs | None:
        fitted = resolve(fit)
        if fitted is None:
            return None
        a, b = _named(sel.a), _named(sel.b)
        return plane.PlaneInputs(a, b, load_curve(fitted.curve_file, a, b))

    return Job(
        "the plane", plane.KIND, cfg, inputs, costs.grid_cost(cfg), needs=(fit,), member=sel.a
    )


def pca_job(runs: list[Member], cfg: pca.PCAConfig) -> Job:
    """The PCA plane of the members' training trajectories (run folders)."""
    folders = tuple(Path(m.run_dir) for m in runs)
    inputs = lambda _r: pca.PCAInputs(folders)  # noqa: E731
    cost = costs.grid_cost(cfg)
    return Job("the PCA plane", pca.KIND, cfg, inputs, cost, member=runs[0] if runs else None)


@st.cache_data(show_spinner=False, max_entries=16)
def _n_train(path: str, mtime_ns: int, data_root: str | None, _member: Member) -> int:
    return len(checkpoint_dataset(checkpoint(_member), data_root=data_root).y_train)


def hessian_job(sel: Selection, cfg: hessian.HessianConfig) -> Job:
    """Top-k Hessian eigenpairs at A and the overlaps of the direction A -> B.

    A's data set is loaded once per file and data folder (for the cost); when it cannot be
    loaded the job's inputs raise the error, so looking the job up reports it.
    """
    try:
        n_train, error = _n_train(sel.a.path, mtime(sel.a.path), cfg.data_root, sel.a), None
    except (CheckpointError, DataError) as err:
        n_train, error = 0, err

    def inputs(_resolve: Resolve) -> hessian.HessianInputs:
        if error is not None:
            raise error
        return hessian.HessianInputs(_named(sel.a), _named(sel.b))

    cost = costs.hessian_cost(cfg, n_train)
    return Job("the Hessian eigenvectors", hessian.KIND, cfg, inputs, cost, member=sel.a)


def slices_job(sel: Selection, cfg: slices.SliceConfig) -> Jobs:
    """1D slices from A along delta = B - A, the top Hessian eigenvector and a random direction.

    The eigenvector slice takes the top eigenvector of the Hessian study with ``cfg.hessian``
    (the Directions page's own result); its cost counts that study in case it is missing.
    """
    eigen = hessian_job(sel, replace(cfg.hessian, device=cfg.device))

    def inputs(_resolve: Resolve) -> slices.SliceInputs:
        return slices.SliceInputs(_named(sel.a), _named(sel.b))

    parts = {}
    for d in slices.DIRECTIONS:
        dcfg = replace(cfg, direction=d, span=None)
        cost = costs.grid_cost(dcfg, points=dcfg.points)
        needs = (eigen,) if d == "eigen" else ()
        parts[d] = Job(f"the {d} slice", slices.KIND, dcfg, inputs, cost, needs, sel.a)
    return Jobs("the 1D slices", parts)


def frontier_job(folder: Path, sgd: Member, cfg: CurveConfig, rows: int) -> Job:
    """Curves from the SGD model to every model of a sweep folder (``rows`` of them)."""
    from landscape.studies import frontier

    def inputs(_resolve: Resolve) -> frontier.FrontierInputs:
        return frontier.FrontierInputs(folder, _named(sgd))

    cost = costs.frontier_cost(cfg, rows)
    return Job("the connectivity frontier", frontier.KIND, cfg, inputs, cost, member=sgd)


def threeway_job(sgd: Member, grda: Member, cfg: Any) -> Job:
    """SGD, gRDA and SGD magnitude-pruned to gRDA's sparsity: three curves and one plane."""
    from landscape.studies import threeway

    def inputs(_resolve: Resolve) -> threeway.ThreewayInputs:
        return threeway.ThreewayInputs(_named(sgd), _named(grda))

    cost = costs.threeway_cost(cfg)
    return Job("the three-way study", threeway.KIND, cfg, inputs, cost, member=sgd)
