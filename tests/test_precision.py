"""The fast float32 evaluator against a float64 evaluation of the same point.

The reference is tests/reference.py (train-mode BN pass, functional_call, no shared work) run on
a float64 copy of the model and the data (``model.double()``), so its rounding is ~1e-16: the
evaluator's losses, accuracies and BN statistics are held to float32 rounding, not to the
~1e-4 of torch's float32 BN statistics on channels-last inputs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from landscape.checkpoints import load_checkpoint
from landscape.data import load_dataset
from landscape.evaluate import METRICS, EvalData, Evaluator
from landscape.geometry import plane_through
from landscape.params import flatten, param_names, unflatten
from tests.reference import point_metrics, recalibrate_bn

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


@pytest.fixture(scope="module")
def plane_point():
    """(model, float32 plane basis, coords, float64 named point, digits): the digits CNN
    with BN, a point of the plane through the SGD, gRDA and initial weights off the three."""
    ckpts = [
        load_checkpoint(CHECKPOINTS / p)
        for p in ("sgd/final.safetensors", "grda/final.safetensors", "init.safetensors")
    ]
    model = ckpts[0].build_model()
    names = param_names(model)
    w = [flatten(c.state, names) for c in ckpts]
    plane = plane_through(w[0], w[2], w[1], {n: ckpts[0].state[n] for n in names})
    alpha, beta = 0.37 * float(plane.coords(w[1])[0]), 0.6 * float(plane.coords(w[2])[1])
    like64 = {n: p.double() for n, p in plane.like.items()}
    point64 = unflatten(plane.flat(alpha, beta), like64)  # float64
    data = load_dataset("digits", seed=ckpts[0].meta["data"]["split_seed"])
    return model, plane.basis(), [1.0, alpha, beta], point64, data


def _float64(model, data):
    """A float64 copy of the model, and the data (x_train, y_train, x_test, y_test) in float64."""
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    return copy.deepcopy(model).double(), [
        t.double() if t.is_floating_point() else t for t in tensors
    ]


@pytest.mark.parametrize("first_layer", ["auto", "plain"])
def test_plane_point_matches_float64(plane_point, first_layer):
    model, basis, coords, point64, data = plane_point
    ev = Evaluator(model, EvalData.from_dataset(data), basis, first_layer=first_layer)
    got = ev(coords)
    m64, (xtr, ytr, xte, yte) = _float64(model, data)
    want = point_metrics(m64, point64, xtr, ytr, xte, yte)
    for m in METRICS:
        if m.endswith("_loss"):
            assert got[m] == pytest.approx(want[m], rel=1e-5), m
        elif m.endswith("_acc"):  # a float32 argmax may flip on a near tie: one sample
            assert got[m] == pytest.approx(want[m], abs=1.01 / len(data.y_test)), m
        else:
            assert got[m] == pytest.approx(want[m], rel=1e-4, abs=1e-6), m


def test_bn_statistics_match_float64(plane_point):
    model, basis, coords, point64, data = plane_point
    ev = Evaluator(model, EvalData.from_dataset(data), basis)
    got = ev.buffers(coords)
    m64, (xtr, *_) = _float64(model, data)
    want = recalibrate_bn(m64, point64, xtr)
    stats = [n for n in want if n.endswith(("running_mean", "running_var"))]
    assert stats
    for n in stats:
        scale = want[n].abs().max()  # means near 0: relative to the layer's largest
        err = float((got[n].double() - want[n]).abs().max() / scale)
        assert err < 2e-6, (n, err)
    for n in want:
        if n.endswith("num_batches_tracked"):
            assert int(got[n]) == int(want[n]) == 1
