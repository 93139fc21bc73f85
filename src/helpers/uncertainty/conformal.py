"""Class-conditional (Mondrian) conformal prediction sets: crepes fits and evaluates them; prediction reads the
calibration scores it stored (docs/decisions.md: the prediction command does not import crepes' scikit-learn)."""

from __future__ import annotations

from math import exp, lgamma, log
from typing import Any

import numpy as np

DEFAULT_LEVEL = 0.90
# An image no class fits: its set is empty even at this level (every class's p-value under 1%).
NO_FIT_LEVEL = 0.99
# The shown sets cover each class at the level with this probability over the calibration draw (not only on average).
GUARANTEE = 0.90


def nonconformity(probabilities: np.ndarray) -> np.ndarray:
    """Return the hinge non-conformity score of every class for every image: 1 - its probability."""
    return 1.0 - np.asarray(probabilities, dtype=np.float64)


def calibration_scores(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return each calibration image's non-conformity score for its true class."""
    return nonconformity(probabilities)[np.arange(len(labels)), np.asarray(labels)]


def check_level(level: float) -> float:
    """Return the coverage level, failing unless it lies strictly between 0 and 1."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"coverage level must lie between 0 and 1 (for example 0.9), not {level}")
    return float(level)


def guaranteed_rank(level: float, count: int, guarantee: float = GUARANTEE) -> int:
    """Return the smallest rank k such that, with the k-th smallest of count exchangeable scores as threshold, at
    least level of new scores fall at or under it with probability guarantee over the draw of the count."""
    level = check_level(level)
    # With the k-th smallest of n scores as threshold, coverage is Beta(k, n + 1 - k): P(coverage >= level) is the
    # probability that Binomial(n, level) stays under k.
    below = 0.0
    log_ways, log_hit, log_miss = lgamma(count + 1), log(level), log(1.0 - level)
    for candidate in range(1, count + 1):
        successes = candidate - 1
        below += exp(log_ways - lgamma(successes + 1) - lgamma(count - successes + 1)
                     + successes * log_hit + (count - successes) * log_miss)
        if below >= guarantee:
            return candidate
    return count


def guaranteed_level(level: float, count: int, guarantee: float | None = GUARANTEE) -> float:
    """Return the level at which to calibrate a class with count calibration scores so that its coverage is at least
    level with probability guarantee over the calibration draw (None: the plain level, met on average only)."""
    level = check_level(level)
    if guarantee is None or count < 1:
        return level
    # The non-smoothed set rule with this level keeps exactly the scores up to the rank-th smallest.
    return max(level, (guaranteed_rank(level, count, guarantee) - 0.5) / (count + 1))


def class_levels(score_labels: np.ndarray, classes: int, level: float,
                 guarantee: float | None = GUARANTEE) -> np.ndarray:
    """Return each class's calibration level (guaranteed_level for its number of calibration scores)."""
    counts = np.bincount(np.asarray(score_labels, dtype=np.int64), minlength=classes)
    return np.array([guaranteed_level(level, int(count), guarantee) for count in counts[:classes]])


def prediction_sets(probabilities: np.ndarray, scores: np.ndarray, score_labels: np.ndarray,
                    level: float = DEFAULT_LEVEL, guarantee: float | None = GUARANTEE) -> np.ndarray:
    """Return (N, classes) booleans: class c is in an image's set when the non-smoothed Mondrian p-value of its score
    among the calibration scores of class c is at least 1 - (class c's level: class_levels)."""
    test_scores = nonconformity(probabilities)
    levels = class_levels(score_labels, test_scores.shape[1], level, guarantee)
    sets = np.zeros(test_scores.shape, dtype=bool)
    for label in range(test_scores.shape[1]):
        calibration = np.sort(np.asarray(scores)[np.asarray(score_labels) == label])
        at_least = len(calibration) - np.searchsorted(calibration, test_scores[:, label], side="left")
        sets[:, label] = (at_least + 1) / (len(calibration) + 1) >= 1.0 - levels[label]
    return sets


def crepes_prediction_sets(probabilities: np.ndarray, scores: np.ndarray, score_labels: np.ndarray,
                           level: float = DEFAULT_LEVEL, guarantee: float | None = GUARANTEE) -> np.ndarray:
    """Return the same sets computed by crepes' ConformalClassifier with Mondrian bins by class (non-smoothed): the
    study's figures come from it, the prediction command from prediction_sets."""
    from crepes import ConformalClassifier

    classifier = ConformalClassifier().fit(np.asarray(scores), bins=np.asarray(score_labels))
    test_scores = nonconformity(probabilities)
    levels = class_levels(score_labels, test_scores.shape[1], level, guarantee)
    columns = [classifier.predict_set(test_scores, bins=np.full(len(test_scores), label),
                                      confidence=float(levels[label]), smoothing=False)[:, label]
               for label in range(test_scores.shape[1])]
    return np.stack(columns, axis=1).astype(bool)


def with_answer(sets: np.ndarray, probabilities: np.ndarray, wide_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sets with each image's predicted class added (a set never leaves out the answer given beside it;
    coverage can only rise), and which images no class fits: empty wide_sets (the same images' sets at NO_FIT_LEVEL),
    so they are flagged."""
    answered = np.array(sets, dtype=bool)
    answered[np.arange(len(answered)), np.asarray(probabilities).argmax(axis=1)] = True
    return answered, np.logical_not(np.asarray(wide_sets, dtype=bool).any(axis=1))


def holds_answer(sets: np.ndarray, probabilities: np.ndarray) -> float:
    """Return the share of sets that hold the predicted class."""
    return float(np.asarray(sets)[np.arange(len(sets)), np.asarray(probabilities).argmax(axis=1)].mean())


def set_summary(sets: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
    """Return the coverage (share of sets holding the true class) overall and per class, and the mean set size;
    labels of -1 (type unknown) count in the set size only."""
    labels = np.asarray(labels)
    known = labels >= 0
    covered = sets[np.flatnonzero(known), labels[known]]
    per_class = {name: float(covered[labels[known] == index].mean()) for index, name in enumerate(class_names)
                 if (labels[known] == index).any()}
    return {"images": int(len(sets)), "coverage": float(covered.mean()) if known.any() else None,
            "class_coverage": per_class, "mean_set_size": float(sets.sum(axis=1).mean()),
            "empty_sets": float((sets.sum(axis=1) == 0).mean())}


def describe_set(names: list[str]) -> str:
    """Return a set of class names as words: "glioma or meningioma", or "none" when it is empty."""
    return " or ".join(names) if names else "none"
