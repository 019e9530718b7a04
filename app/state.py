"""Session state and small cached wrappers over ``landscape`` functions.

The app computes nothing of its own: every number comes from a ``landscape`` function, either
read from the result store or computed by the same study functions the CLI calls. Checkpoints
are shared between sessions through ``st.cache_resource`` (never mutate them); cheap derived
values go through ``st.cache_data`` keyed by file modification time, so a replaced file is
read again.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st
import torch
from torch import nn

from landscape.checkpoints import Checkpoint, CheckpointError, checkpoint_dataset, load_checkpoint
from landscape.curves import CurveConfig, curve_meta, curve_study, load_curve
from landscape.evaluate import EvalData, evaluate_points
from landscape.hessian import HessianConfig, hessian_study, hvp
from landscape.params import Named, flatten, recalibrate_bn, split_state
from landscape.progress import Progress
from landscape.research import open_research
from landscape.store import Store, Stored
from landscape.studies import (
    CheckpointSummary,
    Member,
    NotComputed,
    Study,
    Upload,
    default_study,
    list_studies,
    list_uploads,
    lookup,
    save_upload,
    summarize,
    upload_arch,
)
from landscape.studies import imported_curves as studies_imported_curves
from landscape.surfaces import (
    DIRECTIONS,
    PCAConfig,
    PlaneConfig,
    pca_study,
    plane_study,
    slice_study,
)

STUDY_KEY = "study"  # session-state key of the selected study's name
PENDING_STUDY_KEY = "pending_study"  # set by the Upload page; applied before the selector
DEVICE_KEY = "device"
_PROGRESS_EVERY_S = 0.1  # redraw the progress bar at most this often


@dataclass(frozen=True)
class Selection:
    """What the sidebar selected: the study, its checkpoints A and B, and the device."""

    study: Study
    a: Member
    b: Member
    device: str


def _mtime(path: str | Path) -> int:
    return Path(path).stat().st_mtime_ns


@st.cache_resource(show_spinner=False, max_entries=32)
def _checkpoint(path: str, mtime_ns: int) -> Checkpoint:
    return load_checkpoint(path)


def checkpoint(member: Member) -> Checkpoint:
    """The validated checkpoint of a study member (shared between sessions: read only)."""
    return _checkpoint(member.path, _mtime(member.path))


@st.cache_data(show_spinner=False, max_entries=64)
def _summary(path: str, mtime_ns: int) -> CheckpointSummary:
    return summarize(_checkpoint(path, mtime_ns))


def summary(member: Member) -> CheckpointSummary:
    """Metadata, parameter count and sparsity of a member's checkpoint."""
    return _summary(member.path, _mtime(member.path))


@st.cache_data(show_spinner=False, max_entries=64)
def _run_record(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text())


def run_record(member: Member) -> dict | None:
    """The run.json of a member's run folder, or None for a lone checkpoint."""
    if member.run_dir is None or not (Path(member.run_dir) / "run.json").exists():
        return None
    path = Path(member.run_dir) / "run.json"
    return _run_record(str(path), _mtime(path))


def store() -> Store:
    """The result store under ``LANDSCAPE_HOME`` (read each time: tests point it elsewhere)."""
    return Store()


def studies() -> tuple[list[Study], str | None]:
    """All studies, and an error text if ``studies.json`` is unreadable (default only then)."""
    try:
        return list_studies(), None
    except ValueError as err:
        return [default_study()], str(err)


def members_available() -> list[Member]:
    """Checkpoints a new study can be made of: the default study's and the uploaded ones."""
    return [*default_study().members, *list_uploads()]


def devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def sidebar() -> Selection:
    """Draw the study, A/B and device selectors; the default study is selected on first load."""
    all_studies, error = studies()
    if error:
        st.sidebar.error(error)
    names = [s.name for s in all_studies]
    if st.session_state.get(PENDING_STUDY_KEY) in names:
        st.session_state[STUDY_KEY] = st.session_state.pop(PENDING_STUDY_KEY)
    if st.session_state.get(STUDY_KEY) not in names:
        st.session_state[STUDY_KEY] = names[0]
    name = st.sidebar.selectbox("Study", names, key=STUDY_KEY)
    study = all_studies[names.index(name)]
    missing = [m.path for m in study.members if not Path(m.path).is_file()]
    if missing:
        st.sidebar.error(
            f"Study {name!r} names missing files: {', '.join(missing)}; showing the default study."
        )
        study = all_studies[0]
    labels = [m.label for m in study.members]
    a, b = 0, 1
    if len(study.members) > 2:
        a = st.sidebar.selectbox("A", range(len(labels)), format_func=labels.__getitem__, key="a")
        others = [i for i in range(len(labels)) if i != a]
        b = st.sidebar.selectbox("B", others, format_func=labels.__getitem__, key="b")
    else:
        st.sidebar.caption(f"A = {labels[0]}, B = {labels[1]}")
    device = st.sidebar.selectbox("Device", devices(), key=DEVICE_KEY)
    return Selection(study, study.members[a], study.members[b], device)


def selection() -> Selection:
    """The current selection (the entry script draws the sidebar before every page)."""
    return st.session_state["selection"]


@contextmanager
def progress_bar(title: str) -> Iterator[Progress]:
    """An ``st.progress`` bar with stage text, driven by the Progress callback protocol."""
    bar = st.progress(0.0, text=f"{title}: starting")
    last = 0.0

    def update(done: int, total: int, stage: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < _PROGRESS_EVERY_S and done < total:
            return
        last = now
        frac = min(max(done / total, 0.0), 1.0) if total else 0.0
        bar.progress(frac, text=f"{title}: {stage} ({done}/{total})")

    try:
        yield update
    finally:
        bar.empty()


def select_study_next_run(name: str) -> None:
    """Make ``name`` the selected study on the next run (a drawn widget's key cannot change)."""
    st.session_state[PENDING_STUDY_KEY] = name


def upload_checkpoint(
    blob: bytes,
    filename: str,
    *,
    arch_name: str | None,
    arch_kwargs: str,
    data: dict,
    max_bytes: int,
) -> Upload:
    """Validate and keep an uploaded file (the Upload page's action, testable without a page).

    Args:
        blob: the file's bytes.
        filename: its name; ``.pt``/``.pth`` files use ``arch_name`` and ``arch_kwargs``.
        arch_name: architecture of a ``.pt``/``.pth`` file (registry or research-code name);
            None: recognised from the file's keys.
        arch_kwargs: its constructor arguments as JSON text ("" for none).
        data: ``{"name", "split_seed"[, "root"]}``: the data set, used when the file names none.
        max_bytes: size limit.

    Returns:
        The stored :class:`Upload`.

    Raises:
        CheckpointError / DataError / ValueError: the specific problem; nothing is written.
    """
    arch = None
    if Path(filename).suffix.lower() in (".pt", ".pth") and arch_name is not None:
        try:
            kwargs = json.loads(arch_kwargs) if arch_kwargs.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"architecture arguments are not valid JSON: {err}") from err
        arch = upload_arch(arch_name, kwargs, data)
    return save_upload(blob, filename, arch=arch, data=data, max_bytes=max_bytes)


@st.cache_data(max_entries=4, show_spinner="Reading the file")
def inspect_research(blob: bytes, filename: str) -> dict:
    """What a ``.pt``/``.pth`` file holds, its architecture recognised from its keys.

    Returns:
        {"kind", "label", "arch", "data", "epoch", "optimizer", "order"} (plain data, cached).

    Raises:
        CheckpointError: unreadable, refused, or not recognised.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(filename).name
        path.write_bytes(blob)
        try:
            found = open_research(path)
        except CheckpointError as err:
            raise CheckpointError(str(err).replace(str(path), Path(filename).name)) from err
    return {
        "kind": found.kind,
        "label": found.label,
        "arch": found.arch,
        "data": found.points[0].meta.get("data", {}),
        "epoch": found.epoch,
        "optimizer": found.optimizer,
        "order": found.curve.order if found.curve is not None else None,
    }


@dataclass(frozen=True)
class Cost:
    """What a computation costs, in the units its time is measured in.

    Attributes:
        passes: training-set passes outside point evaluation (the curve fit), each counted
            as forward passes.
        points: weight points evaluated (BN recalibration, train and test pass each).
        bn_subset: BN recalibration samples of each point (None: the whole training set).
        hvps: Hessian-vector products.
        hvp_samples: training samples each product averages over.
    """

    passes: float = 0.0
    points: int = 0
    bn_subset: int | None = None
    hvps: float = 0.0
    hvp_samples: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.passes + other.passes,
            self.points + other.points,
            self.bn_subset,
            self.hvps + other.hvps,
            self.hvp_samples or other.hvp_samples,
        )


@dataclass(frozen=True)
class Job:
    """One stored computation a page shows: looked up, or run when the user asks.

    Attributes:
        title: what it is, for texts ("the curve").
        ident: identity for the lookup cache (function, checkpoint files, configuration).
        cost: what it costs when nothing is stored.
        run: ``run(*, store, progress=None)`` calls the ``landscape`` study functions and
            returns their result (a Stored, or a dict of them).
        needs: jobs whose results ``run`` builds on (computed first when missing).
    """

    title: str
    ident: str
    cost: Cost
    run: Callable[..., Any]
    needs: tuple[Job, ...] = ()


@st.cache_resource(show_spinner=False, max_entries=256)
def _found(ident: str, root: str, _job: Job) -> Any:
    # A miss raises, and streamlit caches only returned values: a result computed later (in
    # this tab, another tab or the CLI) is found on the next run.
    found = lookup(_job.run, store=Store(root))
    if found is None:
        raise NotComputed(_job.title, ident)
    return found


def find(job: Job) -> Any | None:
    """The job's stored result, or None; never computes.

    Raises:
        CheckpointError / DataError / ValueError: the job cannot run on these checkpoints.
    """
    try:
        return _found(job.ident, str(store().root), job)
    except NotComputed:
        return None


def compute(job: Job, progress: Progress | None) -> Any:
    """Run the job (the store's lock makes two tabs asking at once compute it once)."""
    return job.run(store=store(), progress=progress)


@dataclass(frozen=True)
class Rates:
    """Measured seconds per pass and per point on this machine (one checkpoint, one device)."""

    per_pass: float  # one forward pass over the training set
    per_point: float  # one point of evaluate_points (BN recalibration, train and test pass)
    n_train: int
    n_test: int

    def point_passes(self, bn_subset: int | None) -> float:
        """Forward passes (in training-set units) of one evaluated point: BN, train, test."""
        bn = 1.0 if bn_subset is None else min(bn_subset, self.n_train) / self.n_train
        return bn + 1.0 + self.n_test / self.n_train


_RATE_REPEATS = 3  # timings per rate; the fastest counts (others' load only slows it)
_RATE_POINTS = 3  # weight points per timed evaluation


def _fastest(fn: Callable[[], object], repeats: int = _RATE_REPEATS) -> float:
    fn()  # warm-up: first calls allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _point_setup(path: str, mtime_ns: int, device: str) -> tuple[nn.Module, Named, EvalData]:
    ckpt = _checkpoint(path, mtime_ns)
    data = EvalData.from_dataset(checkpoint_dataset(ckpt), device=device)
    model = ckpt.build_model().to(device)
    params = {n: p.to(device) for n, p in split_state(model, ckpt.state)[0].items()}
    return model, params, data


@st.cache_resource(show_spinner=False, max_entries=16)
def _rates(path: str, mtime_ns: int, device: str) -> Rates:
    model, params, data = _point_setup(path, mtime_ns, device)
    n = _RATE_POINTS  # several points per call: the evaluator's set-up is paid once per call
    per_point = _fastest(lambda: evaluate_points(model, lambda i: params, n, data)) / n
    rates = Rates(0.0, per_point, len(data.y_train), len(data.y_test))
    return replace(rates, per_pass=per_point / rates.point_passes(None))


@st.cache_resource(show_spinner=False, max_entries=16)
def _hvp_seconds(path: str, mtime_ns: int, device: str, samples: int) -> float:
    # Timed at the study's own sample count: the cost per sample grows with the batch here.
    model, params, data = _point_setup(path, mtime_ns, device)
    buffers = recalibrate_bn(model, params, data.x_train)
    x, y, vec = data.x_train[:samples], data.y_train[:samples], flatten(params)
    return _fastest(lambda: hvp(model, params, buffers, x, y, vec), repeats=1)


def rates(member: Member, device: str) -> Rates:
    """Seconds per pass and per point, measured once per checkpoint and device."""
    return _rates(member.path, _mtime(member.path), device)


def estimate(cost: Cost, member: Member, device: str) -> tuple[float, float]:
    """What a cost amounts to on this machine: (forward passes over the training set, seconds).

    Args:
        cost: the work.
        member: the checkpoint whose architecture and data set the rates are measured on.
        device: where the work runs.
    """
    r = rates(member, device)
    scale = r.point_passes(cost.bn_subset) / r.point_passes(None)
    seconds = cost.passes * r.per_pass + cost.points * r.per_point * scale
    if cost.hvps:
        mtime = _mtime(member.path)
        seconds += cost.hvps * _hvp_seconds(member.path, mtime, device, cost.hvp_samples)
    return seconds / r.per_pass, seconds


def cost_text(job: Job, member: Member, device: str) -> str:
    """What a job costs: its own work and that of its missing prerequisites, and the time."""
    cost = job.cost
    for need in job.needs:
        if find(need) is None:
            cost = cost + need.cost
    passes, seconds = estimate(cost, member, device)
    when = f"~{seconds:.0f} s" if seconds < 120 else f"~{seconds / 60:.0f} min"
    return f"about {passes:,.0f} forward passes over the training data ({when} on this machine)"


def _named(member: Member) -> Checkpoint:
    # A copy named as the study names it (results show the names); the cached one is shared.
    return replace(checkpoint(member), name=member.label)


def _ident(fn: str, members: Sequence[Member], *configs: object) -> str:
    files = [f"{m.path}@{_mtime(m.path)}" for m in members]
    parts = [asdict(c) if is_dataclass(c) else c for c in configs]
    return json.dumps([fn, files, parts], sort_keys=True, default=str)


def data_root(member: Member) -> str | None:
    """The data folder recorded with an uploaded checkpoint (mnist, cifar10), if any."""
    return (summary(member).data or {}).get("root")


def imported_curves(sel: Selection) -> list[Path]:
    """Curve files uploaded from the research code that run from A to B."""
    return studies_imported_curves(checkpoint(sel.a), checkpoint(sel.b))


def curve_job(sel: Selection, cfg: CurveConfig, imported: Path | None = None) -> Job:
    """Fit the Bezier curve from A to B (or take an imported one); evaluate it and the line."""
    if imported is not None:
        # The curve is given: the fit options do not apply, so they do not split the key.
        cfg = replace(cfg, order=int(curve_meta(imported)["order"]), epochs=0)
    fit = 3.0 * cfg.epochs if cfg.order > 1 else 0.0  # forward + backward ~ 3 forward passes
    cost = Cost(passes=fit, points=2 * cfg.points, bn_subset=cfg.bn_subset)  # curve and line

    def run(*, store: Store, progress: Progress | None = None) -> Stored:
        a, b = _named(sel.a), _named(sel.b)
        curve = load_curve(imported, a, b) if imported is not None else None
        return curve_study(a, b, cfg, store=store, progress=progress, curve=curve)

    title = "the imported curve" if imported is not None else "the curve"
    return Job(title, _ident("curve", [sel.a, sel.b], cfg, str(imported)), cost, run)


def plane_job(
    sel: Selection, curve_cfg: CurveConfig, cfg: PlaneConfig, imported: Path | None = None
) -> Job:
    """The plane through A, the curve's bend and B (the curve is fitted first if missing).

    ``imported``: take the bend of this imported curve instead of the one fitted here.
    """
    cost = Cost(points=cfg.grid**2, bn_subset=cfg.bn_subset)
    curve = curve_job(sel, curve_cfg, imported)

    def run(*, store: Store, progress: Progress | None = None) -> Stored:
        a, b = _named(sel.a), _named(sel.b)
        fitted = curve.run(store=store, progress=progress)
        bezier = load_curve(fitted.data["curve_file"], a, b)
        return plane_study(a, b, bezier, cfg, store=store, progress=progress)

    ident = _ident("plane", [sel.a, sel.b], curve_cfg, cfg, str(imported))
    return Job("the plane", ident, cost, run, needs=(curve,))


def pca_job(runs: Sequence[Member], cfg: PCAConfig) -> Job:
    """The PCA plane of the members' training trajectories (run folders)."""
    cost = Cost(points=cfg.grid**2, bn_subset=cfg.bn_subset)

    def run(*, store: Store, progress: Progress | None = None) -> Stored:
        dirs = [m.run_dir for m in runs]
        return pca_study(dirs, cfg, store=store, progress=progress)

    return Job("the PCA plane", _ident("pca", runs, cfg), cost, run)


def hessian_job(sel: Selection, cfg: HessianConfig) -> Job:
    """Top-k Hessian eigenpairs at A and the overlaps of the direction A -> B."""
    n_train = len(checkpoint_dataset(checkpoint(sel.a)).y_train)
    samples = n_train if cfg.subset is None else min(cfg.subset, n_train)
    hvps = max(2 * cfg.k + 1, 20) + 2  # ARPACK's Krylov size: one Lanczos run, typically
    cost = Cost(passes=1.0, hvps=hvps, hvp_samples=samples)  # BN recalibration, products

    def run(*, store: Store, progress: Progress | None = None) -> Stored:
        return hessian_study(_named(sel.a), _named(sel.b), cfg, store=store, progress=progress)

    return Job("the Hessian eigenvectors", _ident("hessian", [sel.a, sel.b], cfg), cost, run)


def slices_job(sel: Selection, points: int, cfg: PlaneConfig, hessian: HessianConfig) -> Job:
    """1D slices from A along delta = B - A, the top Hessian eigenvector and a random direction.

    The result is ``{direction: Stored}``. The eigenvector slice takes the top eigenvector of
    ``hessian_study(A, B, hessian)``, the Directions page's own result; the cost counts it in
    case that result is missing.
    """
    eigen = hessian_job(sel, hessian)
    cost = Cost(points=len(DIRECTIONS) * points, bn_subset=cfg.bn_subset) + eigen.cost

    def run(*, store: Store, progress: Progress | None = None) -> dict[str, Stored]:
        a, b = _named(sel.a), _named(sel.b)
        return {
            d: slice_study(
                a,
                d,
                b=b,
                points=points,
                cfg=cfg,
                hessian=hessian,
                store=store,
                progress=progress,
            )
            for d in DIRECTIONS
        }

    ident = _ident("slices", [sel.a, sel.b], cfg, hessian, points)
    return Job("the 1D slices", ident, cost, run)
