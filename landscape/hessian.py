"""Hessian-vector products, Lanczos top-k eigenpairs and the pruning-direction analysis.

The Hessian of the mean training cross-entropy is never formed: ``hvp`` differentiates the
gradient's inner product with a vector (double backward: ~20% faster than torch.func's
jvp-of-grad on the digits CNN here, see bench/bench_hessian.py) and
``top_eigen`` hands it to ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``) as a LinearOperator.
BatchNorm runs in eval mode with statistics recalibrated at the point, so the Hessian is that of
the function the network computes there. Both follow the one thread policy
(:func:`landscape.evaldata.small_model_threads`): a small model's products run on one CPU
thread (``landscape hessian`` on the digits CNN: 23.5 s on two threads before, 6.1 s with it).

Pruning direction (Chao et al. 2020): delta = w_B - w_A (gRDA minus SGD), with the top-k
eigenvectors V at w_A; ``|V^T delta| / |delta|`` beside the same for a random direction and for
the magnitude-pruning direction (w_A magnitude-pruned to B's sparsity, minus w_A).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape.evaldata import EvalData, small_model_threads
from landscape.params import Named, flatten, unflatten
from landscape.progress import Progress

__all__ = [
    "hvp",
    "top_eigen",
]


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
        buffers: BN statistics at that point (e.g. from :func:`landscape.evaluate.bn_statistics`).
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
        with torch.enable_grad(), small_model_threads(model, x):
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
    from scipy.sparse.linalg import LinearOperator, eigsh  # 0.5 s to import: only when used

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
    with small_model_threads(model, x):  # decided once here, not in every product
        vals, vecs = eigsh(op, k=k, which="LA", tol=tol, v0=v0, ncv=ncv)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order].T, count
