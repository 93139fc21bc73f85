"""helpers.evaluation: metrics checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import evaluation


def _one_hot(predicted, classes=4, confidence=0.7):
    """Return probabilities that put `confidence` on each predicted class and share the rest."""
    probabilities = np.full((len(predicted), classes), (1 - confidence) / (classes - 1))
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_summary_matches_hand_computed_values():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    predicted = np.array([0, 1, 1, 1, 2, 0, 3, 3])
    summary = evaluation.classification_summary(labels, _one_hot(predicted))
    assert summary["accuracy"] == pytest.approx(6 / 8)
    table = summary["per_class"]
    assert table.loc["glioma", "precision"] == pytest.approx(0.5)  # predicted 0 twice, right once
    assert table.loc["glioma", "recall"] == pytest.approx(0.5)
    assert table.loc["meningioma", "precision"] == pytest.approx(2 / 3)
    assert table.loc["meningioma", "f1"] == pytest.approx(0.8)
    assert table.loc["pituitary", "f1"] == pytest.approx(1.0)
    assert summary["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3 + 1.0) / 4)
    assert summary["confusion_matrix"].tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 2]]
    # every image is predicted with confidence 0.7 and 6/8 are right: |0.75 - 0.7|
    assert summary["expected_calibration_error"] == pytest.approx(0.05)
    assert 0.5 < summary["roc_auc_ovr_macro"] <= 1.0


def test_tumour_sensitivity_counts_any_tumour_class_as_found():
    labels = np.array([0, 1, 3, 3, 2, 2])
    predicted = np.array([1, 1, 0, 2, 2, 0])  # one pituitary called no tumour
    assert evaluation.tumour_sensitivity(labels, predicted) == pytest.approx(3 / 4)


def test_calibration_error_is_zero_when_confidence_equals_accuracy():
    labels = np.array([0] * 8 + [1] * 2)
    probabilities = np.tile([0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3], (10, 1))  # always 0.8 on class 0, right 8/10
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_images():
    generator = np.random.default_rng(0)
    intervals = []
    for size in (100, 2000):
        labels = generator.integers(0, 4, size)
        predicted = np.where(generator.random(size) < 0.8, labels, (labels + 1) % 4)
        accuracy = (labels == predicted).mean()
        low, high = evaluation.bootstrap_confidence_interval(labels, predicted,
                                                             lambda t, p: float((t == p).mean()), 500)
        assert low <= accuracy <= high
        intervals.append(high - low)
    assert intervals[1] < intervals[0] / 2


def test_intervals_are_reported_when_asked():
    labels = np.repeat(np.arange(4), 25)
    predicted = labels.copy()
    predicted[:10] = 1
    summary = evaluation.classification_summary(labels, _one_hot(predicted), with_intervals=True, resamples=200)
    low, high = summary["accuracy_ci"]
    assert low < summary["accuracy"] < high
    assert summary["macro_f1_ci"][0] < summary["macro_f1"] < summary["macro_f1_ci"][1]


def test_mcnemar_counts_discordant_pairs_and_gives_the_exact_p_value():
    labels = np.zeros(20, dtype=int)
    first = np.zeros(20, dtype=int)
    second = np.zeros(20, dtype=int)
    second[:6] = 1  # first right, second wrong: 6
    first[6:7] = 1  # second right, first wrong: 1
    result = evaluation.mcnemar_test(labels, first, second)
    assert (result["only_first_correct"], result["only_second_correct"]) == (6, 1)
    assert result["p_value"] == pytest.approx(2 * (1 + 7) / 2**7)  # two-sided binomial, n=7, k<=1
    assert evaluation.mcnemar_test(labels, first, first)["p_value"] == 1.0
    table = evaluation.mcnemar_table(labels, {"a": first, "b": second, "c": labels})
    assert list(zip(table["first"], table["second"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert table.iloc[0][["only_first_correct", "only_second_correct"]].tolist() == [6, 1]
    assert table.iloc[2][["only_first_correct", "only_second_correct"]].tolist() == [0, 6]


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        evaluation.classification_summary(np.zeros(3, int), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="3 labels but 2 rows"):
        evaluation.classification_summary(np.zeros(3, int), np.zeros((2, 4)))


def test_multi_seed_summary_averages_seeds_and_brackets_the_mean():
    labels = np.array([0, 1, 2, 3] * 25)
    right = np.eye(4)[labels]
    half_wrong = right.copy()
    half_wrong[:50] = np.eye(4)[(labels[:50] + 1) % 4]
    summary = evaluation.multi_seed_summary(labels, [right, half_wrong], resamples=200)
    accuracy = summary["accuracy"]
    assert accuracy["per_seed"] == [1.0, 0.5] and accuracy["mean"] == 0.75
    assert accuracy["std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert accuracy["ci"][0] < 0.75 < accuracy["ci"][1]
    assert summary["seeds"] == 2 and summary["images"] == 100
    with pytest.raises(ValueError, match="100 labels"):
        evaluation.multi_seed_summary(labels, [right[:10]])


def test_row_occlusion_finds_the_rows_a_model_relies_on():
    def predict(images):
        """A stand-in model whose confidence in class 0 is the brightness of rows 8-11."""
        signal = images[:, 8:12].mean(axis=(1, 2, 3)) / 255.0
        return np.stack([0.5 + 0.5 * signal, 0.5 - 0.5 * signal], axis=1)

    images = np.full((3, 16, 16, 1), 200, dtype=np.uint8)
    importance = evaluation.row_occlusion_importance(predict, images, band=4)
    assert importance.shape == (3, 4)
    assert np.all(importance.argmax(axis=1) == 2) and np.allclose(importance[:, [0, 1, 3]], 0.0)
    with pytest.raises(ValueError, match="multiple of 5"):
        evaluation.row_occlusion_importance(predict, images, band=5)
