"""landscape/cost.py: counted work against hand arithmetic; rates measured on the default runs."""

import re

import pytest

from landscape.checkpoints import load_checkpoint
from landscape.cost import (
    HVP_PASSES,
    TRAIN_EPOCH_PASSES,
    Cost,
    Rates,
    curve_cost,
    estimate,
    estimate_text,
    grid_cost,
    hessian_cost,
    measure_rates,
    seconds_text,
    study_cost,
    sweep_cost,
)
from landscape.curves import CurveConfig
from landscape.studies import KINDS, curve
from landscape.studies.hessian import HessianConfig
from landscape.studies.pca import PCAConfig
from landscape.studies.plane import PlaneConfig
from landscape.studies.random_plane import RandomPlaneConfig
from landscape.studies.slices import SliceConfig
from landscape.workspace import default_checkpoints

N_TRAIN, N_TEST = 1347, 450  # digits split of the default runs
RATES = Rates(
    per_pass=0.01, per_point=0.01 * (2 + N_TEST / N_TRAIN), n_train=N_TRAIN, n_test=N_TEST
)


def test_curve_cost_counts_the_fit_and_both_paths():
    passes, seconds = estimate(curve_cost(CurveConfig(epochs=1, points=5)), RATES)
    # 3 passes for one fit epoch; 2 paths x 5 points x (BN + train + test = 2 + 450/1347).
    assert passes == pytest.approx(3 + 10 * (2 + N_TEST / N_TRAIN))
    assert round(passes) == 26  # the figure the browser test reads
    assert seconds == pytest.approx(passes * 0.01)
    assert curve_cost(CurveConfig(order=1, epochs=9, points=5)).passes == 0  # a line: no fit


def test_bn_subset_shortens_each_point():
    cost = grid_cost(PlaneConfig(grid=3, bn_subset=100))
    passes, _ = estimate(cost, RATES)
    assert cost.points == 9
    assert passes == pytest.approx(9 * (100 / N_TRAIN + 1 + N_TEST / N_TRAIN))
    assert grid_cost(PlaneConfig(), points=41).points == 41


def test_hessian_products_measured_or_counted_as_passes():
    cost = hessian_cost(HessianConfig(k=10, subset=200), N_TRAIN)
    assert cost.hvp_samples == 200 and cost.hvps == 23 and cost.passes == 1
    passes, _ = estimate(cost, RATES)
    assert passes == pytest.approx(1 + 23 * HVP_PASSES * 200 / N_TRAIN)
    _, seconds = estimate(cost, RATES, hvp_seconds=0.5)
    assert seconds == pytest.approx(0.01 + 23 * 0.5)
    assert hessian_cost(HessianConfig(subset=10**6), N_TRAIN).hvp_samples == N_TRAIN


def test_study_cost_of_every_kind_is_its_counting_function():
    assert study_cost("curve", CurveConfig(epochs=1, points=5), N_TRAIN) == curve_cost(
        CurveConfig(epochs=1, points=5)
    )
    assert study_cost("hessian", HessianConfig(k=3), N_TRAIN) == hessian_cost(
        HessianConfig(k=3), N_TRAIN
    )
    for kind, cfg in (
        ("plane", PlaneConfig(grid=3)),
        ("pca", PCAConfig(grid=4, bn_subset=50)),
        ("random_plane", RandomPlaneConfig(grid=5)),
    ):
        assert study_cost(kind, cfg, N_TRAIN) == grid_cost(cfg)
        assert study_cost(kind, cfg, N_TRAIN).points == cfg.grid**2
    assert study_cost("slice", SliceConfig(points=41), N_TRAIN) == Cost(points=41)
    # Each of these kinds costs something with its default config.
    for name in ("curve", "plane", "pca", "random_plane", "slice", "hessian"):
        cost = study_cost(name, KINDS[name].config(), N_TRAIN)
        assert cost.points > 0 or cost.hvps > 0
    # Every registered kind has a cost model.
    for name, kind in KINDS.items():
        assert isinstance(study_cost(name, kind.config(), N_TRAIN), Cost)
    sweep = KINDS["sweep"].config()
    runs = len(sweep.c) * len(sweep.mu) * len(sweep.seeds)
    assert study_cost("sweep", sweep, N_TRAIN) == sweep_cost(runs, sweep.train.epochs)
    with pytest.raises(ValueError, match="no cost model"):
        study_cost("nonsense", None, N_TRAIN)


def test_sweep_cost_is_training_epochs_and_twins():
    cost = sweep_cost(4, 20, magnitude=True)
    assert cost == Cost(passes=4 * 20 * TRAIN_EPOCH_PASSES, points=4)
    assert cost + Cost(points=1) == Cost(passes=cost.passes, points=5)


def test_texts():
    assert seconds_text(0.42) == "~0.4 s" and seconds_text(42) == "~42 s"
    assert seconds_text(600) == "~10 min"
    line = estimate_text(Cost(passes=1200), RATES)
    assert line == "estimated ~12 s (1,200 passes at 10.0 ms)"


def test_measured_rates_scale_from_a_subset():
    ckpt = load_checkpoint(default_checkpoints() / "sgd" / "final.safetensors")
    rates = measure_rates(ckpt, samples=256, repeats=1, points=1)
    assert (rates.n_train, rates.n_test) == (N_TRAIN, N_TEST)
    assert 0 < rates.per_pass < 5
    assert rates.per_point == pytest.approx(rates.per_pass * rates.point_passes(None))


def test_cli_prints_one_estimate_line_on_stderr(capsys):
    from landscape.cli.studies import _estimate

    ckpt = load_checkpoint(default_checkpoints() / "grda" / "final.safetensors")
    _estimate(curve.KIND, CurveConfig(epochs=1, points=5), ckpt)
    out = capsys.readouterr()
    assert out.out == ""
    assert re.fullmatch(r"estimated ~[\d.]+ (s|min) \(26 passes at [\d.]+ ms\)\n", out.err)


def test_default_checkpoints_env_then_package_then_checkout(tmp_path, monkeypatch):
    import landscape.workspace as ws

    monkeypatch.setenv("LANDSCAPE_CHECKPOINTS", str(tmp_path))
    assert default_checkpoints() == tmp_path.resolve()
    monkeypatch.delenv("LANDSCAPE_CHECKPOINTS")
    packaged = tmp_path / "_checkpoints"
    monkeypatch.setattr(ws, "_PACKAGED", packaged)
    assert default_checkpoints() == ws._CHECKOUT  # a source tree: no packaged copy
    packaged.mkdir()
    assert default_checkpoints() == packaged
    assert ws.default_study().members[0].path == str(packaged / "sgd" / "final.safetensors")


# --- calibration from this machine's earlier jobs ---


def test_without_earlier_jobs_the_range_is_the_probe_halved_and_doubled(tmp_path):
    from landscape.cost import calibration

    cal = calibration(tmp_path, "curve")
    assert cal.jobs == 0 and cal.apply(10.0) == (10.0, 5.0, 20.0)


def test_calibration_is_the_ratio_of_earlier_jobs_of_the_kind(tmp_path):
    from landscape.cost import calibration, record_timing

    for est, actual in ((10.0, 3.0), (12.0, 3.6), (8.0, 2.4)):  # 3x overestimated, same size
        record_timing(tmp_path, "plane", est, actual)
    record_timing(tmp_path, "curve", 10.0, 30.0)  # another kind: its own ratio
    cal = calibration(tmp_path, "plane")
    assert cal.jobs == 3 and cal.ratio == pytest.approx(0.3)
    mid, low, high = cal.apply(20.0)
    assert mid == pytest.approx(6.0) and low == pytest.approx(6.0 / 1.25)
    assert high == pytest.approx(6.0 * 1.25)  # noise floor of the range
    assert calibration(tmp_path, "curve").ratio == pytest.approx(3.0)
    assert calibration(tmp_path, "plane", device="cuda").jobs == 0  # per device


def test_calibration_learns_a_set_up_time_from_jobs_of_different_sizes(tmp_path):
    from landscape.cost import calibration, record_timing

    for est in (1.0, 4.0, 16.0):  # actual = 0.5 * estimate + 2 s of set-up
        record_timing(tmp_path, "pca", est, 0.5 * est + 2.0)
    cal = calibration(tmp_path, "pca")
    assert cal.ratio == pytest.approx(0.5) and cal.overhead == pytest.approx(2.0)
    assert cal.apply(40.0)[0] == pytest.approx(22.0)


def test_calibration_keeps_the_newest_and_survives_a_broken_file(tmp_path):
    from landscape.cost import CALIBRATION_FILE, calibration, record_timing

    (tmp_path / CALIBRATION_FILE).write_text("{broken")
    assert calibration(tmp_path, "curve").jobs == 0
    for i in range(30):
        record_timing(tmp_path, "curve", 1.0, 2.0 if i >= 10 else 100.0)
    cal = calibration(tmp_path, "curve")
    assert cal.jobs == 20 and cal.ratio == pytest.approx(2.0)  # the 10 oldest dropped
    record_timing(tmp_path, "curve", 0.0, 5.0)  # no estimate: nothing to learn
    assert calibration(tmp_path, "curve").jobs == 20


@pytest.mark.parametrize(
    ("low", "high", "text"),
    [
        (0.5, 2.0, "~0.5-2.0 s"),
        (8.2, 12.4, "~8-12 s"),
        (150, 300, "~2-5 min"),
        (9000, 20000, "~2-6 h"),
    ],
)
def test_range_text(low, high, text):
    from landscape.cost import range_text

    assert range_text(low, high) == text
