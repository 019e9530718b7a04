"""The paper's scale: peak memory and time of a VGG16 curve study, flat in the number of points.

Two random VGG16 checkpoints (registry ``vgg``, depth 16, 10 classes: the research code's
VGG16, 15M parameters) on a synthetic CIFAR-10 folder (``--n`` train and test images per file
set, written with tests/data_files.py); ``landscape.studies.run(curve.KIND, CurveConfig(
epochs=0, points=N, ...))`` evaluates the curve (order 2, bend on the line) and the line, each
run in a fresh process (launched through ``sh`` so ``ru_maxrss`` is not inherited) with its
own empty store. Prints peak RSS and wall time per point count; the peak must not grow with
the number of points and must stay under 3 GB at 61 points.

Usage: python bench/bench_scale.py [--points 11 31 61] [--n 64] [--subset 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.data_files import make_cifar  # noqa: E402 (after the path set-up above)

MAX_GB = 3.0
VGG16 = {"name": "vgg", "kwargs": {"depth": 16, "num_classes": 10, "in_shape": [3, 32, 32]}}

# Runs in the fresh process: writes nothing but the store; prints JSON.
CHILD = """
import json, resource, sys, time
import torch
from landscape.checkpoints import load_checkpoint, save_checkpoint
from landscape.models import build_model
from landscape.store import Store
from landscape.studies import curve, run
from landscape.curves import CurveConfig
folder, root, points, subset, arch = sys.argv[1:6]
arch, subset = json.loads(arch), json.loads(subset)
data = {"name": "cifar10", "split_seed": 0, "root": root, "normalize": "vgg"}
paths = []
for seed in (0, 1):
    torch.manual_seed(seed)
    model = build_model(arch["name"], **arch["kwargs"])
    paths.append(f"{folder}/vgg16_{seed}.safetensors")
    save_checkpoint(paths[-1], model, {"arch": arch, "data": data})
    del model
a, b = (load_checkpoint(p) for p in paths)
cfg = CurveConfig(epochs=0, points=int(points), data_root=root, bn_subset=subset,
                  train_subset=subset, test_subset=subset)
start = time.perf_counter()
result = run(curve.KIND, cfg, curve.CurveInputs(a, b), store=Store(f"{folder}/store"))
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"gb": rss, "seconds": seconds, "n_train": result.n_train,
                  "n_test": result.n_test, "loss": float(result.curve["train_loss"][0])}))
"""


def _child(points: int, root: Path, subset: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as folder:
        # Through sh, which forks python: Linux carries ru_maxrss across exec.
        args = ["sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", CHILD, folder]
        args += [str(root), str(points), json.dumps(subset), json.dumps(VGG16)]
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode:
        raise SystemExit(f"{points} points: exit {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[11, 31, 61])
    parser.add_argument("--n", type=int, default=64, help="images per split in the folder")
    parser.add_argument("--subset", type=int, default=None, help="train/test/BN subset")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cifar10"
        # Five training batch files of n/5 images each (at least 1) and a test batch of n.
        make_cifar(root, n=max(1, args.n // 5))
        make_cifar(Path(tmp) / "test", n=args.n)
        (Path(tmp) / "test" / "test_batch").replace(root / "test_batch")
        rows = {p: _child(p, root, args.subset) for p in args.points}
    print(f"VGG16 curve + line, synthetic CIFAR-10 (subset {args.subset}), fresh process each")
    print(
        f"{'points':>6} {'peak GB':>8} {'seconds':>8} {'s/point':>8} {'n_train':>7} {'n_test':>6}"
    )
    for p, r in rows.items():
        per = r["seconds"] / (2 * p)  # the curve and the line
        print(
            f"{p:>6} {r['gb']:>8.2f} {r['seconds']:>8.1f} {per:>8.2f} "
            f"{r['n_train']:>7} {r['n_test']:>6}"
        )
    peaks = [r["gb"] for r in rows.values()]
    flat = max(peaks) - min(peaks) < 0.1 * min(peaks)
    print(f"peak flat in points (within 10%): {flat}; under {MAX_GB} GB: {max(peaks) < MAX_GB}")


if __name__ == "__main__":
    main()
