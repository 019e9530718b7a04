"""Verdicts against hand-computed numbers on small synthetic results."""

import math

import numpy as np
import pytest

from landscape import verdicts
from landscape.studies.curve import CurveResult
from landscape.studies.hessian import HessianResult
from landscape.studies.sweep import SweepResult


def _curve(curve_loss, line_loss, sparsity, acc, n_test=450) -> CurveResult:
    t = np.linspace(0, 1, len(curve_loss))
    cols = lambda loss: {  # noqa: E731
        "train_loss": np.asarray(loss, float), "test_loss": np.asarray(loss, float),
        "test_acc": np.asarray(acc, float), "sparsity": np.asarray(sparsity, float),
        "segment": np.zeros(len(t)),
    }  # fmt: skip
    layers = np.zeros((len(t), 1))
    return CurveResult(
        t, cols(curve_loss), cols(line_loss), layers, layers, ["l"], "", {}, {}, 1, [], n_test
    )


def test_connected_below_ten_percent_of_the_endpoints_loss():
    res = _curve([0.02, 0.021, 0.02], [0.02, 0.05, 0.02], [0, 0, 0.85], [0.97, 0.96, 0.97])
    v = verdicts.connectivity(res)
    assert v.status == "yes" and v.title == "Connected"
    assert "barrier is 0.001 (line: 0.030, 150% of" in v.sentence
    assert v.noise == pytest.approx(math.sqrt(0.96 * 0.04 / 450))
    assert "within noise" in v.sentence  # 0.01 < 2 * 0.0092
    far = verdicts.connectivity(_curve([0.02, 0.1, 0.02], [0.02, 0.5, 0.02], [0] * 3, [1] * 3))
    assert far.status == "no" and far.title == "Not connected"


def test_sparsity_along_finds_where_the_zeros_go():
    sp = [0.0, 0.0, 0.0, 0.0, 0.85]
    v = verdicts.sparsity_along(_curve([1] * 5, [1] * 5, sp, [1] * 5))
    assert "leaves the sparse point at once: sparsity 0.85 at t = 1, 0.00 at t = 0.75" in v.sentence
    slow = verdicts.sparsity_along(_curve([1] * 5, [1] * 5, [0.9, 0.8, 0.6, 0.1, 0], [1] * 5))
    assert "keeps its zeros until t = 0.75" in slow.sentence


def test_directions_against_sqrt_k_over_n():
    k, n = 10, 13_754
    res = HessianResult(
        eigenvalues=np.arange(k, 0, -1.0), n_hvp=1, samples=1, bn_samples=1,
        projection_ratio=0.094, random_projection_ratio=0.028,
        magnitude_projection_ratio=0.051, n_params=n,
    )  # fmt: skip
    v = verdicts.directions(res)
    assert v.baseline == pytest.approx(math.sqrt(k / n))
    assert "overlaps the top-10 Hessian space 3.5x a random direction" in v.sentence
    assert "expected sqrt(k/n) = 0.027" in v.sentence and v.status == "yes"


@pytest.mark.parametrize(
    "a, b, n, title", [(0.9689, 0.9711, 450, "Equal"), (0.99, 0.90, 450, "Higher")]
)
def test_accuracy_difference_within_two_standard_errors(a, b, n, title):
    v = verdicts.accuracy_difference(a, b, n)
    assert v.noise == pytest.approx(math.sqrt((a * (1 - a) + b * (1 - b)) / n))
    assert v.title == title


def test_pruning_compares_twins_and_notes_epochs():
    row = lambda kind, acc: {"kind": kind, "c": 0.1, "mu": 0.7, "seed": 0, "test_acc": acc}  # noqa: E731
    res = SweepResult(path="", rows=[row("grda", 0.970), row("magnitude", 0.972)], frontier=[])
    v = verdicts.pruning(res, n_test=450, epochs={0: 20, 1: 60})
    assert v.title == "Equal within noise" and "1 equal" in v.sentence
    assert "different numbers of epochs (20, 60)" in v.sentence
