"""Predictions to metrics: accuracy, F1, per-class tables, confusion, ROC-AUC, calibration, bootstrap CIs, McNemar."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from helpers import config

# The specification's claimed RNN results (docs/design.md), shown beside every measurement of the RNN.
SPECIFICATION_CLAIMED_RNN = {"accuracy": 0.8847, "macro_f1": 0.8823, "weighted_f1": 0.8842}
SPECIFICATION_CLAIMED_RNN_PER_CLASS = pd.DataFrame(
    {"precision": [0.92, 0.89, 0.78, 0.94], "recall": [0.91, 0.89, 0.82, 0.91], "f1": [0.915, 0.892, 0.798, 0.925]},
    index=pd.Index(config.CLASS_NAMES, name="class"))


def _check_predictions(labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]) -> None:
    """Fail clearly when labels and probabilities do not describe the same images and classes."""
    if probabilities.ndim != 2 or probabilities.shape[1] != len(class_names):
        raise ValueError(f"probabilities must have shape (images, {len(class_names)}), not {probabilities.shape}")
    if len(labels) != len(probabilities):
        raise ValueError(f"{len(labels)} labels but {len(probabilities)} rows of probabilities")


def per_class_table(labels: np.ndarray, predicted: np.ndarray,
                    class_names: tuple[str, ...] = config.CLASS_NAMES) -> pd.DataFrame:
    """Return precision, recall, F1 and support for each class, indexed by class name."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(len(class_names)), zero_division=0)
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support},
                        index=pd.Index(class_names, name="class"))


def reliability_table(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Return, per confidence bin, the number of images, their mean confidence and their accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for index in range(bins):
        members = which == index
        rows.append({"bin_low": edges[index], "bin_high": edges[index + 1], "count": int(members.sum()),
                     "confidence": float(confidence[members].mean()) if members.any() else np.nan,
                     "accuracy": float(correct[members].mean()) if members.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Return the expected calibration error: the count-weighted mean |accuracy - confidence| over confidence bins."""
    table = reliability_table(labels, probabilities, bins).dropna()
    return float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / len(labels))


def tumour_sensitivity(labels: np.ndarray, predicted: np.ndarray,
                       class_names: tuple[str, ...] = config.CLASS_NAMES) -> float:
    """Return the share of tumour images predicted as any tumour class (tumour versus no tumour)."""
    no_tumour = class_names.index(config.NO_TUMOUR_CLASS)
    tumour = labels != no_tumour
    return float((predicted[tumour] != no_tumour).mean()) if tumour.any() else float("nan")


def partial_label_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Return the share of images predicted as a class their label allows: its class, or for ANY_TUMOUR_LABEL any
    tumour class (the external sets whose tumour type is not given)."""
    labels, predicted = np.asarray(labels), np.asarray(probabilities).argmax(axis=1)
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    right = np.where(labels == config.ANY_TUMOUR_LABEL, predicted != no_tumour, predicted == labels)
    return float(right.mean())


def bootstrap_confidence_interval(labels: np.ndarray, predicted: np.ndarray,
                                  metric: Callable[[np.ndarray, np.ndarray], float], resamples: int = 1000,
                                  confidence: float = 0.95, seed: int = config.DEFAULT_SEED) -> tuple[float, float]:
    """Return the percentile bootstrap interval of metric(labels, predicted) over images resampled with replacement."""
    generator = np.random.default_rng(seed)
    size = len(labels)
    values = np.empty(resamples)
    for index in range(resamples):
        sample = generator.integers(0, size, size)
        values[index] = metric(labels[sample], predicted[sample])
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Return the unweighted mean of per-class F1 scores."""
    return float(f1_score(labels, predicted, average="macro", zero_division=0))


def classification_summary(labels: np.ndarray, probabilities: np.ndarray,
                           class_names: tuple[str, ...] = config.CLASS_NAMES, with_intervals: bool = False,
                           resamples: int = 1000, seed: int = config.DEFAULT_SEED) -> dict[str, Any]:
    """Return every metric of one model on one split, computed from its predicted probabilities."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_predictions(labels, probabilities, class_names)
    predicted = probabilities.argmax(axis=1)
    present = np.unique(labels)
    summary: dict[str, Any] = {
        "images": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": macro_f1(labels, predicted),
        "weighted_f1": float(f1_score(labels, predicted, average="weighted", zero_division=0)),
        "tumour_sensitivity": tumour_sensitivity(labels, predicted, class_names),
        "expected_calibration_error": expected_calibration_error(labels, probabilities),
        "roc_auc_ovr_macro": (float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro",
                                                  labels=np.arange(len(class_names))))
                              if len(present) == len(class_names) else float("nan")),
        "per_class": per_class_table(labels, predicted, class_names),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=np.arange(len(class_names))),
    }
    if with_intervals:
        accuracy = lambda truth, guess: float((truth == guess).mean())  # noqa: E731
        summary["accuracy_ci"] = bootstrap_confidence_interval(labels, predicted, accuracy, resamples, seed=seed)
        summary["macro_f1_ci"] = bootstrap_confidence_interval(labels, predicted, macro_f1, resamples, seed=seed)
    return summary


def mcnemar_test(labels: np.ndarray, predicted_first: np.ndarray, predicted_second: np.ndarray) -> dict[str, float]:
    """Return McNemar's exact test of two models on the same images: discordant counts and two-sided p-value."""
    if not len(labels) == len(predicted_first) == len(predicted_second):
        raise ValueError("McNemar's test needs both models' predictions on the same images")
    first_correct = np.asarray(predicted_first) == np.asarray(labels)
    second_correct = np.asarray(predicted_second) == np.asarray(labels)
    only_first = int((first_correct & ~second_correct).sum())
    only_second = int((~first_correct & second_correct).sum())
    discordant = only_first + only_second
    p_value = binomtest(only_first, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_first_correct": only_first, "only_second_correct": only_second, "p_value": float(p_value)}


def mcnemar_table(labels: np.ndarray, predicted: dict[str, np.ndarray]) -> pd.DataFrame:
    """Return McNemar's exact test for every pair of models (in the given order), one row per pair."""
    return pd.DataFrame([{"first": first, "second": second, **mcnemar_test(labels, predicted[first], predicted[second])}
                         for first, second in combinations(predicted, 2)])


def _seed_figure(per_seed: np.ndarray, means: np.ndarray) -> dict[str, Any]:
    """Return a figure's per-seed values, their mean and the 95% interval of its bootstrap means over images."""
    return {"per_seed": np.asarray(per_seed).tolist(), "mean": float(np.mean(per_seed)),
            "ci": (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))}


def both_sides_summary(tumour_probabilities: list[np.ndarray] | None, free_probabilities: list[np.ndarray] | None,
                       truth: str | np.ndarray = config.ANY_TUMOUR, resamples: int = 1000,
                       seed: int = config.DEFAULT_SEED) -> dict[str, Any]:
    """Return a model's figures on one source from each seed's probabilities on its tumour images and on its
    tumour-free images (either side may be None): tumour sensitivity (share not called "no tumour"), specificity
    (share called "no tumour"), type accuracy (where the truth is a class name or an array of labels) and balanced
    accuracy (the mean of sensitivity and specificity). Each figure: per seed, the mean over seeds and a 95% bootstrap
    interval of that mean, the two sides resampled apart."""
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    generator = np.random.default_rng(seed)
    summary: dict[str, Any] = {"tumour_images": 0, "tumour_free_images": 0,
                                  "seeds": len(tumour_probabilities or free_probabilities or []),
                                  "truth": truth if isinstance(truth, str) else "per image"}
    outcomes, draws = {}, {}
    if tumour_probabilities is not None:
        predicted = np.stack([np.asarray(probabilities).argmax(axis=1) for probabilities in tumour_probabilities])
        summary["tumour_images"] = int(predicted.shape[1])
        draws["tumour"] = generator.integers(0, predicted.shape[1], (resamples, predicted.shape[1]))
        outcomes["sensitivity"] = ("tumour", predicted != no_tumour)
        if not isinstance(truth, str) or truth != config.ANY_TUMOUR:
            wanted = config.CLASS_NAMES.index(truth) if isinstance(truth, str) else np.asarray(truth)[None, :]
            outcomes["type_accuracy"] = ("tumour", predicted == wanted)
        summary["tumour_predicted_share"] = {name: float((predicted == index).mean())
                                             for index, name in enumerate(config.CLASS_NAMES)}
    if free_probabilities is not None:
        predicted = np.stack([np.asarray(probabilities).argmax(axis=1) for probabilities in free_probabilities])
        summary["tumour_free_images"] = int(predicted.shape[1])
        draws["free"] = generator.integers(0, predicted.shape[1], (resamples, predicted.shape[1]))
        outcomes["specificity"] = ("free", predicted == no_tumour)
        summary["tumour_free_predicted_share"] = {name: float((predicted == index).mean())
                                                  for index, name in enumerate(config.CLASS_NAMES)}
    measured = {name: (right.mean(axis=1), right[:, draws[side]].mean(axis=(0, 2)))
                for name, (side, right) in outcomes.items()}
    for name, (per_seed, means) in measured.items():
        summary[name] = _seed_figure(per_seed, means)
    if "sensitivity" in measured and "specificity" in measured:
        (sensitivity, sensitivity_means), (specificity, specificity_means) = (measured["sensitivity"],
                                                                              measured["specificity"])
        summary["balanced_accuracy"] = _seed_figure((sensitivity + specificity) / 2,
                                                    (sensitivity_means + specificity_means) / 2)
    return summary


def accuracy_by_group(labels: np.ndarray, predicted: np.ndarray, groups: np.ndarray,
                      order: tuple[str, ...]) -> pd.Series:
    """Return the accuracy within each group (NaN where a group has no image), in the given order."""
    labels, predicted, groups = np.asarray(labels), np.asarray(predicted), np.asarray(groups)
    return pd.Series({group: float((predicted[groups == group] == labels[groups == group]).mean())
                      if (groups == group).any() else float("nan") for group in order})


def notumor_specificity(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Return the share of no-tumour images predicted as no tumour."""
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    healthy = np.asarray(labels) == no_tumour
    return float((np.asarray(predicted)[healthy] == no_tumour).mean()) if healthy.any() else float("nan")


def multi_seed_summary(labels: np.ndarray, probabilities_per_seed: list[np.ndarray], resamples: int = 1000,
                       seed: int = config.DEFAULT_SEED) -> dict[str, Any]:
    """Return accuracy and macro-F1 over seeds: per seed, mean, std, and a bootstrap CI of the mean over images."""
    labels = np.asarray(labels)
    predicted = np.stack([np.asarray(probabilities).argmax(axis=1) for probabilities in probabilities_per_seed])
    if predicted.shape[1] != len(labels):
        raise ValueError(f"{len(labels)} labels but predictions for {predicted.shape[1]} images")
    metrics = {"accuracy": lambda truth, guess: float((truth == guess).mean()), "macro_f1": macro_f1}
    generator = np.random.default_rng(seed)
    samples = [generator.integers(0, len(labels), len(labels)) for _ in range(resamples)]
    summary: dict[str, Any] = {"seeds": len(predicted), "images": int(len(labels))}
    for name, metric in metrics.items():
        values = np.array([metric(labels, row) for row in predicted])
        means = [np.mean([metric(labels[sample], row[sample]) for row in predicted]) for sample in samples]
        summary[name] = {**_seed_figure(values, np.asarray(means)),
                         "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return summary


def row_occlusion_importance(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                             band: int = 4) -> np.ndarray:
    """Return, per image and band of rows, how much blanking those rows lowers the predicted class's probability.

    predict maps uint8 images (N, size, size, 1) to class probabilities. The result has shape (N, size // band).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] % band:
        raise ValueError(f"images must be (N, size, size, 1) with size a multiple of {band}, not {images.shape}")
    baseline = predict(images)
    predicted = baseline.argmax(axis=1)
    rows = np.arange(len(images))
    importance = np.empty((len(images), images.shape[1] // band), dtype=np.float32)
    for index in range(importance.shape[1]):
        occluded = images.copy()
        occluded[:, index * band:(index + 1) * band] = 0
        importance[:, index] = baseline[rows, predicted] - predict(occluded)[rows, predicted]
    return importance


def mean_with_spread(mean: float, std: float, seeds: int) -> str:
    """Return a mean over seeds as a percentage with its standard deviation ("91.23% ± 0.51%"), or "(one seed)" when
    there is nothing to spread."""
    return f"{mean:.2%} ± {std:.2%}" if seeds > 1 else f"{mean:.2%} (one seed)"
