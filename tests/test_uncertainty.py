"""Honest uncertainty: temperature scaling, calibration error, conformal sets, the novelty detector and the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import evaluation
from helpers.inputs import data
from helpers.metrics_record import Uncertainty
from helpers.modeling import predict, recipes, training
from helpers.uncertainty import calibration, conformal, novelty
from helpers.uncertainty.fitting import (
    FAR_KINDS,
    OFFICIAL,
    Outputs,
    chosen_temperature,
    conformal_calibration,
    fit_record,
    halves,
    judged_targets,
    measure_model,
    model_table,
    risk_coverage,
)
from helpers.uncertainty.outliers import outlier_images, outlier_sets
from helpers.uncertainty.record import UncertaintyRecord, record_path
from helpers.uncertainty.report import input_checks_markdown, readme_sentence


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_calibration_error():
    generator = np.random.default_rng(0)
    logits = generator.normal(0, 3, (20000, 4))
    truth = _softmax(logits / 2.0)  # the labels follow the logits at temperature 2: the raw softmax is overconfident
    labels = np.array([generator.choice(4, p=row) for row in truth])
    overconfident = _softmax(logits)
    temperature = calibration.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.0, rel=0.05)
    scaled = calibration.scale_probabilities(overconfident, temperature)
    np.testing.assert_allclose(scaled, truth, atol=0.03)
    assert evaluation.expected_calibration_error(labels, scaled) < 0.02 < evaluation.expected_calibration_error(
        labels, overconfident)


def _labelled(logits: np.ndarray, temperature: float, generator) -> np.ndarray:
    truth = _softmax(logits / temperature)
    return np.array([generator.choice(4, p=row) for row in truth])


def test_a_temperature_ships_only_when_it_lowers_the_calibration_error_on_other_validation_images():
    generator = np.random.default_rng(1)
    logits = generator.normal(0, 3, (8000, 4))
    overconfident = _labelled(logits[:4000], 2.0, generator)  # these images need temperature 2
    honest = _labelled(logits[4000:], 1.0, generator)  # these are calibrated as they are
    same = chosen_temperature(_softmax(logits[:2000]), overconfident[:2000], _softmax(logits[2000:4000]),
                              overconfident[2000:])
    assert same["kept"] and same["temperature"] == same["fitted temperature"] == pytest.approx(2.0, rel=0.1)
    assert same["validation ece after"] < same["validation ece before"]
    other = chosen_temperature(_softmax(logits[:2000]), overconfident[:2000], _softmax(logits[4000:]), honest)
    assert not other["kept"] and other["temperature"] == 1.0 and other["fitted temperature"] > 1.5
    assert other["validation ece after"] > other["validation ece before"]


def test_the_sets_are_calibrated_on_the_datasets_own_images_only():
    generator = np.random.default_rng(2)
    own_probabilities = _softmax(generator.normal(0, 3, (400, 4)))
    own_labels = own_probabilities.argmax(axis=1)  # the model is right on its own source
    foreign_probabilities = _softmax(generator.normal(0, 3, (400, 4)))
    foreign_labels = (foreign_probabilities.argmax(axis=1) + 1) % 4  # and always wrong on another
    probabilities = np.concatenate([own_probabilities, foreign_probabilities])
    labels = np.concatenate([own_labels, foreign_labels])
    own = np.r_[np.ones(400, bool), np.zeros(400, bool)]
    scores, score_labels = conformal_calibration(probabilities, np.r_[labels[:-1], -1], own)
    np.testing.assert_array_equal(scores, conformal.calibration_scores(own_probabilities, own_labels))
    np.testing.assert_array_equal(score_labels, own_labels)
    mixed_scores, mixed_labels = conformal_calibration(probabilities, labels, np.ones(800, bool))
    own_sets = conformal.prediction_sets(own_probabilities, scores, score_labels, 0.9)
    mixed_sets = conformal.prediction_sets(own_probabilities, mixed_scores, mixed_labels, 0.9)
    assert own_sets.sum(axis=1).mean() < 1.2 < mixed_sets.sum(axis=1).mean(), "the other source widens every set"


def test_a_shown_set_always_holds_the_answer_and_an_empty_one_is_reported():
    generator = np.random.default_rng(4)
    probabilities = _softmax(generator.normal(0, 2, (500, 4)))
    sets = generator.random((500, 4)) < 0.3
    shown, empty = conformal.with_answer(sets, probabilities, sets)
    assert conformal.holds_answer(shown, probabilities) == 1.0 > conformal.holds_answer(sets, probabilities)
    np.testing.assert_array_equal(empty, sets.sum(axis=1) == 0)
    assert (shown >= sets).all() and (shown.sum(axis=1) - sets.sum(axis=1) <= 1).all()


def _record(scores: np.ndarray, score_labels: np.ndarray, **statistics) -> UncertaintyRecord:
    """A record with the identity temperature, given conformal scores, and no feature detector to speak of."""
    return UncertaintyRecord(temperature=1.0, scores=scores, score_labels=score_labels, method="confidence",
                             threshold=1.0, means=np.zeros((4, 1), np.float32),
                             precision=np.eye(1, dtype=np.float32), **statistics)


def test_an_image_no_class_fits_is_one_whose_set_is_empty_even_at_the_wide_level():
    # 200 calibration images per class, non-conformity spread evenly over [0, 0.5): a class enters the 90% set from a
    # probability of about 0.55, the 99% set from about 0.505; no image's probability reaches either in all classes.
    scores = np.tile(np.linspace(0.0, 0.5, 200, endpoint=False), 4)
    record = _record(scores, np.repeat(np.arange(4), 200))
    probabilities = np.array([[0.52, 0.16, 0.16, 0.16],   # empty at 90%, holds class 0 at 99%: answered
                              [0.40, 0.30, 0.20, 0.10],   # empty at 99%: no class fits
                              [0.90, 0.04, 0.03, 0.03]])  # a confident answer
    assert not record.sets(probabilities).any(axis=1)[:2].any()
    shown, no_class_fits = record.answer_sets(probabilities)
    np.testing.assert_array_equal(no_class_fits, [False, True, False])
    np.testing.assert_array_equal(shown.argmax(axis=1), [0, 0, 0])
    assert (shown.sum(axis=1) == 1).all()


def test_two_scores_share_the_flag_budget_equally_and_together_stay_within_it():
    generator = np.random.default_rng(5)
    first, second = generator.random(5000), generator.random(5000)
    first_threshold, second_threshold = novelty.union_thresholds(first, second, 0.02)
    first_share, second_share = (first > first_threshold).mean(), (second > second_threshold).mean()
    together = ((first > first_threshold) | (second > second_threshold)).mean()
    assert 0.01 <= first_share == pytest.approx(second_share, abs=0.001) and 0.019 <= together <= 0.02
    same_first, same_second = novelty.union_thresholds(first, first, 0.02)  # one score twice: each may take it all
    assert (first > same_first).mean() == pytest.approx(0.02, abs=0.001)


def test_the_guaranteed_flag_rate_keeps_new_images_flagged_under_the_rate_in_nine_draws_of_ten():
    generator = np.random.default_rng(6)
    rate = novelty.guaranteed_flag_rate(900)
    assert 0.012 < rate < 0.02 and novelty.guaranteed_flag_rate(900, guarantee=None) == pytest.approx(0.02)
    assert rate < novelty.guaranteed_flag_rate(20000) < 0.02  # more validation images, less margin needed
    # scores uniform on [0, 1]: a threshold t flags a share 1 - t of new images
    true_rates = np.array([1.0 - novelty.threshold_for(generator.random(900), rate) for _ in range(2000)])
    plain = np.array([1.0 - novelty.threshold_for(generator.random(900), 0.02) for _ in range(2000)])
    assert (true_rates > 0.02).mean() <= 0.12 and (plain > 0.02).mean() > 0.3


def test_image_statistics_describe_a_half_dark_half_bright_image_as_such():
    image = np.zeros((1, 64, 64), np.uint8)
    image[:, :, 32:] = 255
    statistics = novelty.image_statistics(image)[0]
    histogram = statistics[:novelty.HISTOGRAM_BINS] ** 2
    np.testing.assert_allclose(histogram, [0.5, *[0.0] * (novelty.HISTOGRAM_BINS - 2), 0.5], atol=1e-12)
    radial = statistics[novelty.HISTOGRAM_BINS:novelty.HISTOGRAM_BINS + novelty.RINGS]
    np.testing.assert_allclose(radial[:4], 0.5)  # every full ring around the centre is half bright
    flat = novelty.HISTOGRAM_BINS + novelty.RINGS + novelty.GRADIENT_BINS
    assert statistics[flat] == pytest.approx(31 * 63 / 63 ** 2)  # bright flat pixels, edge column excluded
    orientation = statistics[flat + 1:]
    assert len(orientation) == novelty.ORIENTATION_BINS  # one vertical edge: every gradient points along the rows
    np.testing.assert_allclose(orientation, [1.0, *[0.0] * (novelty.ORIENTATION_BINS - 1)], atol=1e-6)
    turned = novelty.image_statistics(np.rot90(image, axes=(1, 2)).copy())[0][flat + 1:]
    assert turned[novelty.ORIENTATION_BINS // 2] == pytest.approx(1.0)  # a horizontal edge: the middle bin


def test_nearest_neighbours_of_the_statistics_see_a_gap_between_two_kinds_of_training_images():
    generator = np.random.default_rng(0)
    two_kinds = np.r_[generator.normal(-3, 0.1, (50, 2)), generator.normal(3, 0.1, (50, 2))]
    neighbours = novelty.StatisticsNeighbours.fit(two_kinds)
    between, inside = neighbours.distances(np.zeros((1, 2))), neighbours.distances(np.full((1, 2), 3.0))
    assert inside[0] < 0.1 < 0.9 < between[0]  # standardised: each kind sits about one unit from the middle
    single = novelty.ClassGaussians.fit(two_kinds, np.zeros(100, np.int64))  # one Gaussian calls the gap typical
    assert single.distances(np.zeros((1, 2)))[0] < single.distances(np.full((1, 2), 3.0))[0]


def test_image_statistics_flag_ct_like_and_drawn_images_and_keep_the_datasets_own(phantom_root):
    dataset = data.load_dataset(phantom_root, image_size=64, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.3, seed=0)
    neighbours = novelty.StatisticsNeighbours.fit(novelty.image_statistics(kept.images))
    threshold = novelty.threshold_for(neighbours.distances(novelty.image_statistics(validation.images)), 0.01)
    record = _record(np.zeros(4), np.arange(4), statistics=neighbours, statistics_threshold=threshold)
    assert (record.statistics_novelty(dataset.testing.images) > threshold).mean() <= 0.1
    for kind, images in outlier_sets(64, "resize", 10, seed=2).items():
        assert (record.statistics_novelty(images[..., np.newaxis]) > threshold).all(), kind
    assert _record(np.zeros(4), np.arange(4)).statistics_novelty(dataset.testing.images) is None


def test_a_record_written_before_the_image_statistics_loads_without_them(tmp_path):
    path = tmp_path / "old.uncertainty.npz"
    _record(np.linspace(0, 1, 8), np.repeat(np.arange(4), 2)).save(path)
    with np.load(path) as stored:
        assert "statistics_reference" not in stored.files
    loaded = UncertaintyRecord.load(path)
    assert loaded.statistics is None and loaded.statistics_threshold == float("inf")
    np.testing.assert_array_equal(loaded.statistics_distances(np.ones((2, 3))), [0.0, 0.0])
    reference = np.r_[np.zeros((5, 3)), np.ones((5, 3))]
    with_statistics = _record(np.linspace(0, 1, 8), np.repeat(np.arange(4), 2),
                              statistics=novelty.StatisticsNeighbours.fit(reference), statistics_threshold=7.5)
    reloaded = UncertaintyRecord.load(with_statistics.save(tmp_path / "new.uncertainty.npz"))
    assert reloaded.statistics_threshold == 7.5
    np.testing.assert_array_equal(reloaded.statistics_distances(np.ones((2, 3))), [0.0, 0.0])
    # statistics added later are appended: a record of fewer reads the first columns
    np.testing.assert_array_equal(reloaded.statistics_distances(np.c_[np.ones((2, 3)), np.full((2, 4), 9.0)]),
                                  [0.0, 0.0])


def test_the_model_card_names_the_outlier_kind_caught_least_only_when_one_is():
    from helpers.uncertainty.report import _far_and_near

    alike = {"outliers": [{"kind": "noise", "flagged": 1.0}, {"kind": "photographs", "flagged": 1.0}]}
    assert _far_and_near(alike) == ("noise 100%, photographs 100%", "")
    apart = {"outliers": [{"kind": "noise", "flagged": 1.0}, {"kind": "photographs", "flagged": 0.9}]}
    assert _far_and_near(apart) == ("noise 100%, photographs 90%", "photographs")


def test_a_flagged_answer_reads_as_withheld_in_the_table_and_says_so_in_json():
    flagged = predict.Prediction("photo.jpg", "meningioma", 0.985, {"meningioma": 0.985}, flags=[
        "unlike the training images (mahalanobis 990 over 901)"], prediction_set=["meningioma"], answer_withheld=True)
    answered = predict.Prediction("scan.jpg", "glioma", 0.91, {"glioma": 0.91}, prediction_set=["glioma"])
    lines = predict.format_table([flagged, answered]).splitlines()
    assert lines[1].split()[1:3] == ["(meningioma?)", "0.985"] and "ANSWER WITHHELD: unlike the training" in lines[1]
    assert lines[2].split()[1] == "glioma" and "WITHHELD" not in lines[2]


def test_calibration_error_has_known_values():
    sure_and_half_right = np.tile([[1.0, 0.0]], (10, 1))
    assert evaluation.expected_calibration_error(np.r_[np.zeros(5), np.ones(5)].astype(int), sure_and_half_right) \
        == pytest.approx(0.5)
    eighty = np.tile([[0.8, 0.2]], (10, 1))
    assert evaluation.expected_calibration_error(np.r_[np.zeros(8), np.ones(2)].astype(int), eighty) \
        == pytest.approx(0.0, abs=1e-12)


def test_class_conditional_sets_cover_every_class_and_match_crepes():
    generator = np.random.default_rng(1)
    centres = np.eye(4) * 2.5
    labels = generator.integers(0, 4, 8000)
    labels[:2000] = 3  # an unbalanced class mix: class-conditional coverage holds for each class anyway
    probabilities = _softmax(centres[labels] + generator.normal(0, 1.5, (8000, 4)))
    calibration_part, test_part = np.arange(3000), np.arange(3000, 8000)
    scores = conformal.calibration_scores(probabilities[calibration_part], labels[calibration_part])
    sets = conformal.prediction_sets(probabilities[test_part], scores, labels[calibration_part], 0.9, None)
    summary = conformal.set_summary(sets, labels[test_part], ("a", "b", "c", "d"))
    assert all(0.88 <= value <= 0.93 for value in summary["class_coverage"].values()), summary
    guaranteed = conformal.prediction_sets(probabilities[test_part], scores, labels[calibration_part], 0.9)
    assert (guaranteed >= sets).all()
    sets = guaranteed
    assert 1.0 < summary["mean_set_size"] < 4.0
    np.testing.assert_array_equal(sets, conformal.crepes_prediction_sets(probabilities[test_part], scores,
                                                                         labels[calibration_part], 0.9))
    wider = conformal.prediction_sets(probabilities[test_part], scores, labels[calibration_part], 0.99)
    assert (wider >= sets).all() and wider.sum() > sets.sum()
    assert conformal.describe_set(["a", "c"]) == "a or c" and conformal.describe_set([]) == "none"
    with pytest.raises(ValueError, match="between 0 and 1"):
        conformal.prediction_sets(probabilities[:2], scores, labels[calibration_part], 90)


def test_each_class_is_covered_at_the_level_on_nine_calibration_draws_in_ten():
    generator = np.random.default_rng(3)
    test_scores = np.linspace(0.0, 1.0, 2001)[1:-1, np.newaxis]  # uniform scores: coverage = share of this grid
    covered = {guarantee: [] for guarantee in (None, 0.9)}
    for _ in range(2000):
        scores = generator.uniform(size=100)
        for guarantee in covered:
            sets = conformal.prediction_sets(1.0 - test_scores, scores, np.zeros(100, np.int64), 0.9, guarantee)
            covered[guarantee].append(sets[:, 0].mean() >= 0.9)
    assert np.mean(covered[0.9]) >= 0.88 and np.mean(covered[None]) < 0.75
    assert conformal.guaranteed_level(0.9, 50) == pytest.approx(48.5 / 51)  # keeps 49 of 50 (hand-computed)
    assert conformal.guaranteed_level(0.9, 50, None) == 0.9 and conformal.guaranteed_level(0.9, 10) == 0.9


def test_mahalanobis_scores_grow_away_from_the_classes_and_the_threshold_keeps_two_percent():
    generator = np.random.default_rng(2)
    labels = np.repeat([0, 1], 1000)
    features = generator.normal(0, 1, (2000, 5)) + np.where(labels[:, None] == 0, -3.0, 3.0)
    gaussians = novelty.ClassGaussians.fit(features, labels)
    np.testing.assert_allclose(gaussians.means[:, 0], [-3, 3], atol=0.15)
    inside = gaussians.distances(generator.normal(0, 1, (500, 5)) + 3.0)
    far = gaussians.distances(generator.normal(0, 1, (500, 5)) + 12.0)
    threshold = novelty.threshold_for(inside)
    assert (inside > threshold).mean() <= 0.02 and (far > threshold).all()
    assert novelty.auroc(inside, far) == 1.0
    layers = [(np.eye(5)[:, :2], np.zeros(2))]
    energy = novelty.energy_scores(np.zeros((1, 5)), layers)
    assert energy[0] == pytest.approx(-np.log(2.0))


def test_risk_coverage_keeps_the_most_confident_images_first():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.99, 0.01]])
    labels = np.array([0, 1, 1, 0])  # the two least confident are wrong
    curve = risk_coverage(probabilities, labels, (1.0, 0.5))
    assert curve == [{"coverage": 1.0, "accuracy": 0.5}, {"coverage": 0.5, "accuracy": 1.0}]
    first, second = halves(np.repeat([0, 1, 2], 10))
    assert not set(first) & set(second) and len(first) == len(second) == 15


def test_generated_outliers_come_in_every_kind_at_the_model_size():
    kinds = outlier_sets(32, "standardised", per_kind=3, seed=0)
    assert {"uniform noise", "gradients", "photographs", "CT-like head phantom", "CT slice (chest)"} <= set(kinds)
    assert all(images.shape[1:] == (32, 32) and images.dtype == np.uint8 for images in kinds.values())


@pytest.fixture(scope="module")
def recorded_run(phantom_root, tmp_path_factory):
    """A quickly trained RNN run folder on the phantom dataset, with an uncertainty record fitted beside it."""
    dataset = data.load_dataset(phantom_root, image_size=64, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.3, seed=0)
    settings = recipes.TrainingSettings(epochs=3, batch_size=32, seed=5, verbose=0)
    run = training.train_model("rnn", data.take_per_class(kept, 40), validation, None,
                               tmp_path_factory.mktemp("uncertainty") / "run", settings)
    extractor = novelty.feature_extractor(run.model)
    first, second = halves(validation.labels)
    outputs = Outputs.predict(extractor, validation.images)
    selection = {kind: Outputs.predict(extractor, images)
                 for kind, images in outlier_sets(64, "resize", 10, seed=1).items()}
    record, validation_auroc, _, _ = fit_record(run.model, Outputs.predict(extractor, kept.images), kept.labels,
                                             outputs.take(first), validation.labels[first], outputs.take(second),
                                             validation.labels[second], selection)
    record.save(record_path(run.directory / "labels.json"))
    return run, record, validation_auroc


@pytest.mark.slow
def test_a_record_survives_saving(recorded_run):
    run, record, validation_auroc = recorded_run
    loaded = UncertaintyRecord.load(record_path(run.directory / "labels.json"))
    assert loaded.method == record.method == max(validation_auroc, key=validation_auroc.get)
    assert loaded.temperature == record.temperature and loaded.threshold == record.threshold
    assert loaded.statistics_threshold == record.statistics_threshold < float("inf")
    np.testing.assert_array_equal(loaded.scores, record.scores)
    np.testing.assert_array_equal(loaded.statistics.reference, record.statistics.reference)


@pytest.mark.slow
def test_the_command_flags_noise_keeps_phantoms_and_prints_sets(recorded_run, phantom_root, tmp_path, capsys):
    run, record, _ = recorded_run
    generator = np.random.default_rng(3)
    noise = [tmp_path / f"noise{index}.png" for index in range(4)]
    for file in noise:
        Image.fromarray(generator.integers(0, 256, (128, 128)).astype(np.uint8)).save(file)
    phantoms = [str(file) for name in ("glioma", "notumor") for file in
                sorted((phantom_root / "Testing" / name).iterdir())[:5]]
    results = predict.predict_files([*phantoms, *map(str, noise)], run.directory)
    flagged = [any(flag.startswith("unlike the training images") for flag in result.flags) for result in results]
    assert all(flagged[len(phantoms):]) and sum(flagged[:len(phantoms)]) <= 2
    assert all(result.prediction_set is not None and result.novelty_score is not None for result in results)
    assert sum(results[0].probabilities.values()) == pytest.approx(1.0)
    assert predict.main([*phantoms[:2], str(noise[0]), "--model", str(run.directory), "--strict"]) == \
        predict.EXIT_FLAGGED
    table = capsys.readouterr().out
    assert "90% conformal prediction set" in table and len(table.strip().splitlines()) == 3 + 3
    assert predict.main([phantoms[0], "--model", str(run.directory), "--json", "--level", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["calibrated"] and printed["set_level"] == 0.5
    assert isinstance(printed["predictions"][0]["prediction_set"], list)


@pytest.mark.slow
def test_the_command_flags_a_ct_like_head_by_its_image_statistics(recorded_run, tmp_path):
    run, _, _ = recorded_run
    head = outlier_images(1, seed=0)["CT-like head phantom"][0]
    head.save(tmp_path / "head.png")
    flags = predict.predict_files(str(tmp_path / "head.png"), run.directory)[0].flags
    assert any(flag.startswith("unlike the training images (image statistics") for flag in flags), flags


@pytest.mark.slow
def test_the_command_reads_the_record_without_scikit_learn(recorded_run, phantom_root):
    run, _, _ = recorded_run
    phantom = str(sorted((phantom_root / "Testing" / "glioma").iterdir())[0])
    command = [sys.executable, "-c", "import sys, helpers.modeling.predict as p; code = p.main(sys.argv[1:]); "
               "print(sorted(name for name in ('tensorflow', 'sklearn', 'crepes') if name in sys.modules), "
               "file=sys.stderr); raise SystemExit(code)", phantom, "--model", str(run.directory), "--json"]
    environment = {name: value for name, value in os.environ.items() if name != "KERAS_BACKEND"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    assert finished.returncode in (0, predict.EXIT_FLAGGED), finished.stderr
    assert json.loads(finished.stdout)["predictions"][0]["prediction_set"] is not None
    assert finished.stderr.strip().splitlines()[-1] in ("[]", "['tensorflow']")


@pytest.mark.slow
def test_measured_figures_feed_the_tables_targets_and_the_model_card(recorded_run, phantom_root):
    run, _, _ = recorded_run
    dataset = data.load_dataset(phantom_root, image_size=64, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.3, seed=0)
    images = {"training": (kept.images, kept.labels), "validation": (validation.images, validation.labels),
              OFFICIAL: (dataset.testing.images, dataset.testing.labels), "external": {},
              "outliers for selection": outlier_sets(64, "resize", 5, seed=1),
              "outliers": outlier_sets(64, "resize", 5, seed=2)}
    record, figures = measure_model(run.model, images, level=0.8)
    official = figures["rows"][0]
    assert record.level == figures["level"] == 0.8 and official["images"] == OFFICIAL
    assert official["count"] == len(dataset.testing) and 0.0 <= official["flagged"] <= 1.0
    assert [point["coverage"] for point in official["risk coverage"]][0] == 1.0
    assert {row["kind"] for row in figures["outliers"]} >= set(FAR_KINDS)
    table = model_table({"rnn": figures})
    assert table.loc["rnn", "ECE after"] == official["ece after"] and table.loc["rnn", "novelty score"] == record.method
    targets = judged_targets(figures)
    assert len(targets) == 8 and all(isinstance(row["met"], bool) for row in targets)
    assert official["holds answer"] == 1.0 and figures["calibration"]["temperature"] == record.temperature
    assert 0.0 <= official["set keeps tumours"] <= 1.0 and official["reliability"]
    metrics = {"notebooks": {Uncertainty.NOTEBOOK: {"models": {"rnn": figures}}}}
    checks = input_checks_markdown(metrics, "rnn")
    assert f"{official['unfamiliar']:.1%} of the official Testing images flagged" in checks
    assert "80% conformal" in checks and "answer is then withheld" in checks
    assert f"{official['coverage']:.1%} of images" in readme_sentence(metrics, "rnn")
    assert "Uncertainty targets: ECE on official Testing" in checks
    assert readme_sentence({"notebooks": {}}, "rnn") == "" and "no uncertainty record" in input_checks_markdown(
        {"notebooks": {}}, "rnn")
