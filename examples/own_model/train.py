"""Train SGD and gRDA in your own loop; landscape.Recorder writes the run folders.

python examples/own_model/train.py OUT [EPOCHS]
landscape curve OUT/sgd OUT/grda --model-path examples/own_model --out OUT/curve
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from model import SmallNet  # this script's folder is on sys.path
from sklearn.datasets import load_digits

import landscape
from landscape.optim import GRDA

out, epochs = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20
x, y = load_digits(return_X_y=True)
x = (x / 16).astype(np.float32).reshape(-1, 1, 8, 8)  # (N, C, H, W) in [0, 1]
out.mkdir(parents=True, exist_ok=True)
np.savez(out / "digits.npz", x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
data = {"name": "npz", "root": str(out / "digits.npz")}
arch = {"name": f"file:{Path(__file__).resolve().parent / 'model.py'}:SmallNet", "kwargs": {}}
xt, yt = torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400]).long()

for name in ("sgd", "grda"):
    torch.manual_seed(0)  # one initialisation for both runs
    model = SmallNet()
    if name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
    else:
        opt = GRDA(model.parameters(), lr=0.1, c=0.02, mu=0.7)
    rec = landscape.Recorder(model, opt, out=out / name, every=20, data=data, arch=arch)
    for _ in range(epochs):
        for idx in torch.randperm(len(yt)).split(64):
            logits = model(xt[idx])
            loss = F.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(loss, logits, yt[idx])
    run = rec.close()
    print(name, {k: round(v, 4) for k, v in run.record["metrics"].items()})
