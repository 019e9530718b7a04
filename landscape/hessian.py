"""Hessian-vector products, Lanczos top-k eigenpairs and the pruning-direction analysis.

The Hessian of the mean training cross-entropy is never formed: ``hvp`` differentiates the
gradient's inner product with a vector (double backward: ~20% faster than torch.func's
jvp-of-grad on the digits CNN here, see bench/bench_hessian.py) and
``top_eigen`` hands it to ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``) as a LinearOperator.
BatchNorm runs in eval mode with statistics recalibrated at the point, so the Hessian is that of
the function the network computes there.

Pruning direction (Chao et al. 2020): delta = w_B - w_A (gRDA minus SGD), with the top-k
eigenvectors V at w_A; ``|V^T delta| / |delta|`` beside the same for a random direction and for
the magnitude-pruning direction (w_A magnitude-pruned to B's sparsity, minus w_A).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from torch.func import functional_call

from landscape.checkpoints import Checkpoint, checkpoint_dataset
from landscape.evaluate import EvalData
from landscape.models import prunable_names
from landscape.params import (
    Named,
    flatten,
    param_names,
    recalibrate_bn,
    sparsity,
    split_state,
    unflatten,
)
from landscape.progress import Progress
from landscape.pruning import magnitude_prune
from landscape.store import Store, Stored

__all__ = [
    "MAX_EIGENVECTOR_FLOATS",
    "HessianConfig",
    "hessian_study",
    "hvp",
    "summarize",
    "top_eigen",
]

MAX_EIGENVECTOR_FLOATS = 5_000_000  # eigenvectors are stored only below k * P of this


@dataclass
class HessianConfig:
    """What the Hessian analysis computes and on which data."""

    k: int = 10  # number of top eigenpairs
    subset: int | None = None  # training samples the Hessian averages over (None: all)
    seed: int = 0  # Lanczos start vector and the random comparison direction
    tol: float = 1e-3  # relative accuracy of the eigenvalues (ARPACK tol)
    device: str = "cpu"  # cpu or cuda
    data_root: str | None = None  # folder with the mnist / cifar10 files


def hvp(
    model: nn.Module,
    params: Named,
    buffers: Named,
    x: torch.Tensor,
    y: torch.Tensor,
    vec: torch.Tensor,
    *,
    batch_size: int = 2048,
) -> torch.Tensor:
    """Hessian-vector product of the mean cross-entropy on (x, y) at ``params``.

    Args:
        model: the architecture (weights unused); BatchNorm runs in eval mode with ``buffers``.
        params: the weight point.
        buffers: BN statistics at that point (e.g. from :func:`landscape.params.recalibrate_bn`).
        x, y: the samples the loss averages over, on the parameters' device.
        vec: flat vector (P,) in the order of ``params``.
        batch_size: samples per pass (the result does not depend on it).

    Returns:
        H @ vec, flat (P,), dtype of the parameters.
    """
    w = flatten(params).detach().requires_grad_()
    v = vec.to(w)
    out = torch.zeros_like(w)
    named = unflatten(w, params)  # views of w: gradients reach the flat vector
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for i in range(0, x.shape[0], batch_size):
                logits = functional_call(model, (named, buffers), (x[i : i + batch_size],))
                loss = F.cross_entropy(logits, y[i : i + batch_size], reduction="sum")
                (g,) = torch.autograd.grad(loss, w, create_graph=True)
                (hv,) = torch.autograd.grad(g, w, grad_outputs=v)
                out += hv
    finally:
        model.train(was_training)
    return out / x.shape[0]


def top_eigen(
    model: nn.Module,
    params: Named,
    buffers: Named,
    data: EvalData,
    k: int = 10,
    *,
    subset: int | None = None,
    tol: float = 1e-3,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k eigenpairs of the training-loss Hessian by Lanczos (eigsh, which="LA").

    Args:
        model, params, buffers: the network at the point (see :func:`hvp`).
        data: the training data (``x_train``, ``y_train``; ``batch_size`` per pass).
        k: number of eigenpairs (1 <= k < P).
        subset: average over the first ``subset`` training samples (None: all).
        tol: ARPACK's relative tolerance.
        seed: seed of the start vector (ARPACK's default start is random).
        progress: ``progress(hvps done, estimate, stage)``.

    Returns:
        (eigenvalues (k,) in descending order, eigenvectors (k, P) unit rows, number of HVPs).
    """
    n_params = sum(t.numel() for t in params.values())
    if not 1 <= k < n_params:
        raise ValueError(f"k must be in [1, {n_params - 1}] for {n_params} parameters, got {k}")
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be >= 1, got {subset}")
    x, y = data.x_train[:subset], data.y_train[:subset]
    device = next(iter(params.values())).device
    ncv = min(n_params, max(2 * k + 1, 20))  # eigsh's default Krylov dimension
    count = 0

    def matvec(v: np.ndarray) -> np.ndarray:
        nonlocal count
        vec = torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(-1)).to(device)
        hv = hvp(model, params, buffers, x, y, vec, batch_size=data.batch_size)
        count += 1
        if progress is not None:
            # One Lanczos factorisation (ncv + 1 products) often converges; restarts add more.
            progress(count, max(count, ncv + 1), "Hessian-vector products")
        return hv.double().cpu().numpy()

    op = LinearOperator((n_params, n_params), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n_params)
    vals, vecs = eigsh(op, k=k, which="LA", tol=tol, v0=v0, ncv=ncv)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order].T, count


def _overlaps(vecs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """|<v_i, d>| / |d| for each eigenvector row (NaN for a zero direction)."""
    norm = np.linalg.norm(d)
    return np.abs(vecs @ d) / norm if norm > 0 else np.full(len(vecs), np.nan)


def hessian_study(
    a: Checkpoint,
    b: Checkpoint | None = None,
    cfg: HessianConfig | None = None,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
) -> Stored:
    """Top Hessian eigenvalues at A and, with B, how the direction A -> B lies in their span.

    Args:
        a: the point of the Hessian (the dense SGD minimum).
        b: the other minimum (gRDA); delta = w_B - w_A over parameters (not BN statistics).
        cfg: k, data subset, seed, tolerance, device.
        store: result store (default ``Store()``).
        progress: ``progress(done, total, stage)``.

    Returns:
        Stored (kind "hessian"). arrays: "eigenvalues" (k,) descending; "eigenvectors" (k, P)
        float32 when k * P < :data:`MAX_EIGENVECTOR_FLOATS`; with b also "overlap" (k,)
        = |<v_i, delta>| / |delta|, "random_overlap" (k,) for a seeded Gaussian direction of
        norm |delta|, "magnitude_overlap" (k,) for the magnitude-pruning direction (w_A
        globally magnitude-pruned to B's sparsity over prunable weights, minus w_A). data:
        "n_hvp", "samples" (training samples averaged over), "bn_samples", "inputs"; with b
        also "projection_ratio" |V^T delta| / |delta|, "random_projection_ratio",
        "magnitude_projection_ratio", "delta_norm", "sparsity_b" (fraction of exact zeros in
        B's prunable weights).
    """
    cfg = cfg or HessianConfig()
    store = store or Store()
    if b is not None and b.arch != a.arch:
        raise ValueError(f"{b.name} and {a.name} have different architectures")
    ds = checkpoint_dataset(a, data_root=cfg.data_root)
    data = EvalData.from_dataset(ds, device=cfg.device)
    n_samples = data.x_train.shape[0] if cfg.subset is None else min(cfg.subset, len(ds.y_train))
    inputs = {
        "a": a.hash,
        "b": b.hash if b is not None else None,
        "k": cfg.k,
        "subset": cfg.subset,
        "seed": cfg.seed,
        "tol": cfg.tol,
        "data": {**ds.describe(), **data.describe()},
    }

    def compute(_key: str) -> tuple[dict, dict]:
        model = a.build_model()
        names = param_names(model)
        params = {n: split_state(model, a.state)[0][n].to(cfg.device) for n in names}
        buffers = recalibrate_bn(model, params, data.x_train, batch_size=data.batch_size)
        vals, vecs, n_hvp = top_eigen(
            model, params, buffers, data, cfg.k, subset=cfg.subset, tol=cfg.tol,
            seed=cfg.seed, progress=progress,
        )  # fmt: skip
        arrays: dict[str, np.ndarray] = {"eigenvalues": vals}
        if vecs.size < MAX_EIGENVECTOR_FLOATS:
            arrays["eigenvectors"] = vecs.astype(np.float32)
        info = {"n_hvp": n_hvp, "samples": n_samples, "bn_samples": data.describe()["bn_samples"]}
        if b is not None:
            more_info, more_arrays = _directions(a, b, model, vecs, cfg.seed)
            info |= more_info
            arrays |= more_arrays
        return info, arrays

    return store.get_or_compute("hessian", inputs, compute)


def _directions(
    a: Checkpoint, b: Checkpoint, model: nn.Module, vecs: np.ndarray, seed: int
) -> tuple[dict, dict[str, np.ndarray]]:
    """Overlaps of the pruning, random and magnitude-pruning directions with the eigenvectors."""
    names = param_names(model)

    def flat(state: Named) -> np.ndarray:
        return flatten(state, names).double().cpu().numpy()

    wa = flat(a.state)
    delta = flat(b.state) - wa
    prunable = prunable_names(model)
    sparsity_b = sparsity(b.state, prunable)["zero"]
    pruned, _ = magnitude_prune(a.state, prunable, sparsity_b, scope="global")
    magnitude = flat(pruned) - wa
    rand = np.random.default_rng(seed).standard_normal(delta.size)
    rand *= np.linalg.norm(delta) / np.linalg.norm(rand)
    arrays = {
        "overlap": _overlaps(vecs, delta),
        "random_overlap": _overlaps(vecs, rand),
        "magnitude_overlap": _overlaps(vecs, magnitude),
    }
    info = {
        "projection_ratio": float(np.linalg.norm(arrays["overlap"])),
        "random_projection_ratio": float(np.linalg.norm(arrays["random_overlap"])),
        "magnitude_projection_ratio": float(np.linalg.norm(arrays["magnitude_overlap"])),
        "delta_norm": float(np.linalg.norm(delta)),
        "sparsity_b": float(sparsity_b),
    }
    return info, arrays


def summarize(result: Stored, store: Store | None = None) -> str:
    """A few lines describing a hessian result (for the CLI)."""
    d, arr = result.data, result.arrays
    where = f" ({store.root / result.kind / result.key}.json)" if store is not None else ""
    vals = ", ".join(f"{v:.4g}" for v in arr["eigenvalues"])
    lines = [
        f"hessian {result.key}{where}: {d['n_hvp']} Hessian-vector products on "
        f"{d['samples']} samples",
        f"  top eigenvalues        {vals}",
    ]
    if "projection_ratio" in d:
        lines += [
            f"  |delta|                {d['delta_norm']:.4f} (B sparsity {d['sparsity_b']:.4f})",
            f"  |V^T d|/|d| pruning    {d['projection_ratio']:.4f}",
            f"  |V^T d|/|d| random     {d['random_projection_ratio']:.4f}",
            f"  |V^T d|/|d| magnitude  {d['magnitude_projection_ratio']:.4f}",
        ]
    return "\n".join(lines)
