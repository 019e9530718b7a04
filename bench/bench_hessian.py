"""Hessian analysis of the default digits runs: Lanczos cost and the pruning-direction answer.

Run: python bench/bench_hessian.py [--threads 1] [--k 10] [--device cpu]

1. One Hessian-vector product two ways, timed alternately (median): double backward (what
   ``landscape.hessian.hvp`` does) against torch.func's forward-over-reverse (jvp of grad),
   and their largest difference.
2. Lanczos (scipy eigsh on a LinearOperator) top-k at checkpoints/sgd/final.safetensors: wall
   time, number of HVPs, and the eigenvalues against a tighter tolerance run.
3. The pruning direction delta = w_gRDA - w_SGD against the top-k eigenvectors at w_SGD:
   |V^T d| / |d| for delta, a random direction of equal norm and the magnitude-pruning direction,
   from the hessian study as ``landscape hessian`` and the app run it
   (``landscape.studies.run(hessian.KIND, HessianConfig(k), ...)``), timed end to end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

from landscape.checkpoints import load_checkpoint
from landscape.data import load_dataset
from landscape.evaluate import EvalData, bn_statistics
from landscape.hessian import hvp, top_eigen
from landscape.params import flatten, param_names, unflatten
from landscape.store import Store
from landscape.studies import hessian, run
from landscape.studies.hessian import HessianConfig, HessianInputs

REPO = Path(__file__).resolve().parent.parent


def hvp_jvp(model, params, buffers, x, y, v) -> torch.Tensor:
    """Forward-over-reverse HVP with torch.func (the alternative to double backward)."""
    w = flatten(params).detach()
    model.eval()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (unflatten(flat, params), buffers), (x,))
        return F.cross_entropy(logits, y)

    return jvp(grad(loss), (w,), (v,))[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: default)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    print(f"device {dev}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    sgd = load_checkpoint(REPO / "checkpoints/sgd/final.safetensors")
    grda = load_checkpoint(REPO / "checkpoints/grda/final.safetensors")
    model = sgd.build_model()
    names = param_names(model)
    params = {n: sgd.state[n].to(dev) for n in names}
    data = EvalData.from_dataset(load_dataset("digits"), device=dev)
    buffers = bn_statistics(model, params, data)
    x, y = data.x_train, data.y_train
    n_params = flatten(params).numel()
    print(f"digits CNN: {n_params} parameters, Hessian over {len(y)} training samples")

    print("== 1. one Hessian-vector product ==")
    v = torch.randn(n_params, generator=torch.Generator().manual_seed(0)).to(dev)
    fns = {
        "double backward": lambda: hvp(model, params, buffers, x, y, v),
        "jvp of grad": lambda: hvp_jvp(model, params, buffers, x, y, v),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.repeats + 1):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            start = time.perf_counter()
            out = fns[name]()
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(t) for k, t in times.items()}
    diff = float((fns["double backward"]() - fns["jvp of grad"]()).abs().max())
    for name, sec in med.items():
        print(f"{name:<16} {sec * 1e3:.1f} ms")
    print(f"ratio jvp / double backward: {med['jvp of grad'] / med['double backward']:.2f}x")
    print(f"max |difference| {diff:.2e} (|Hv| max {float(out.abs().max()):.2e})")

    print(f"== 2. Lanczos top-{args.k} ==")
    start = time.perf_counter()
    vals, _, n_hvp = top_eigen(model, params, buffers, data, args.k, tol=1e-3)
    wall = time.perf_counter() - start
    tight, _, n_tight = top_eigen(model, params, buffers, data, args.k, tol=1e-8)
    print(f"tol 1e-3: {wall:.2f} s, {n_hvp} HVPs ({wall / n_hvp * 1e3:.0f} ms per HVP)")
    print("eigenvalues:", " ".join(f"{e:.4f}" for e in vals))
    rel = np.abs(vals - tight) / np.abs(tight)
    print(f"max relative difference to tol 1e-8 ({n_tight} HVPs): {rel.max():.1e}")

    print("== 3. pruning direction at the SGD minimum ==")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = HessianConfig(k=args.k, device=dev)
        start = time.perf_counter()
        res = run(hessian.KIND, cfg, HessianInputs(sgd, grda), store=Store(Path(tmp)))
        study = time.perf_counter() - start
    print(f"whole study: {study:.2f} s, {res.n_hvp} HVPs ({study / wall:.2f}x Lanczos alone)")
    print(f"|delta| = {res.delta_norm:.4f}, gRDA sparsity {res.sparsity_b:.4f}")
    print(f"|V^T d|/|d|  pruning (gRDA - SGD) {res.projection_ratio:.4f}")
    print(f"|V^T d|/|d|  random, equal norm   {res.random_projection_ratio:.4f}")
    print(f"|V^T d|/|d|  magnitude pruning    {res.magnitude_projection_ratio:.4f}")
    print(f"sqrt(k/P) (random in expectation) {np.sqrt(args.k / n_params):.4f}")
    for key in ("overlap", "random_overlap", "magnitude_overlap"):
        print(f"{key:<18}", " ".join(f"{o:.3f}" for o in getattr(res, key)))


if __name__ == "__main__":
    main()
