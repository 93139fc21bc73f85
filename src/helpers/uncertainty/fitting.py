"""Fit a model's uncertainty record on validation and measure it (notebook 07; `make publish` ships the records).

Validation images (the dataset's own and the external train parts' held-out patients) are split in two halves by
class. The claims are made for the official split, so calibration reads the dataset's own validation images: the first
half's fit the temperature, which is kept only when it lowers the calibration error on the second half's (else the
identity ships); the second half's calibrate the conformal sets. The novelty score is picked on the whole first half,
against one draw of generated outliers, and the thresholds are set on both halves. Figures are measured on the
official Testing split, every external test part (coverage per source), and a second, independent draw of outliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from helpers import config
from helpers.evaluation import expected_calibration_error, reliability_table
from helpers.inputs.external import dataset_rows
from helpers.targets import (
    CALIBRATION_ERROR_TARGET,
    CLASS_COVERAGE_TARGET,
    FLAGGED_TARGET,
    OUTLIER_AUROC_TARGET,
    SET_SIZE_TARGET,
)
from helpers.uncertainty.calibration import fit_temperature, scale_probabilities
from helpers.uncertainty.conformal import (
    DEFAULT_LEVEL,
    NO_FIT_LEVEL,
    calibration_scores,
    crepes_prediction_sets,
    holds_answer,
    set_summary,
    with_answer,
)
from helpers.uncertainty.novelty import (
    METHODS,
    ClassGaussians,
    StatisticsNeighbours,
    auroc,
    feature_extractor,
    guaranteed_flag_rate,
    image_statistics,
    logit_layers,
    novelty_scores,
    union_thresholds,
)
from helpers.uncertainty.outliers import outlier_sets
from helpers.uncertainty.record import UncertaintyRecord

SEED = config.DEFAULT_SEED
OUTLIERS_PER_KIND = 40
RISK_COVERAGES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)
OFFICIAL = config.OFFICIAL_TESTING


def halves(labels: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return two disjoint halves of the indices, each holding half of every label's images."""
    generator = np.random.default_rng(seed)
    first, second = [], []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        first.append(members[: len(members) // 2])
        second.append(members[len(members) // 2:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def risk_coverage(probabilities: np.ndarray, labels: np.ndarray,
                  coverages: tuple[float, ...] = RISK_COVERAGES) -> list[dict[str, float]]:
    """Return the accuracy on the most confident share of the images, for each share kept."""
    order = np.argsort(-np.asarray(probabilities).max(axis=1), kind="stable")
    correct = (np.asarray(probabilities).argmax(axis=1) == labels)[order]
    return [{"coverage": share, "accuracy": float(correct[: max(1, int(round(share * len(correct))))].mean())}
            for share in coverages]


@dataclass
class Outputs:
    """A model's probabilities and penultimate features for images, and the images' statistics, computed once."""

    probabilities: np.ndarray
    features: np.ndarray
    statistics: np.ndarray

    @classmethod
    def predict(cls, extractor, images: np.ndarray) -> Outputs:
        """Return the outputs of a feature extractor (novelty.feature_extractor) for (N, size, size) images."""
        probabilities, features = extractor.predict(np.asarray(images)[..., np.newaxis], batch_size=256, verbose=0)
        return cls(np.asarray(probabilities, dtype=np.float64), np.asarray(features, dtype=np.float64),
                   image_statistics(images))

    def take(self, indices: np.ndarray) -> Outputs:
        """Return the outputs of some images."""
        return Outputs(self.probabilities[indices], self.features[indices], self.statistics[indices])


def set_sides(sets: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Return both sides of a source as the sets see them: the share of tumour images (any tumour label, or "some
    tumour") whose set holds a tumour class, and of tumour-free images whose set holds no tumour."""
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    tumour, tumour_free = (labels >= 0) & (labels != no_tumour) | (labels == -1), labels == no_tumour
    tumour_classes = [index for index in range(len(config.CLASS_NAMES)) if index != no_tumour]
    return {"set keeps tumours": float(sets[tumour][:, tumour_classes].any(axis=1).mean()) if tumour.any() else None,
            "set keeps tumour-free": float(sets[tumour_free, no_tumour].mean()) if tumour_free.any() else None}


def evaluate(outputs: Outputs, labels: np.ndarray, record: UncertaintyRecord, layers, name: str) -> dict[str, Any]:
    """Return one row of measured figures for a set of images (labels -1: class unknown): the sets shown hold the
    predicted class, and an image no class fits or unlike the training images is flagged."""
    known = labels >= 0
    calibrated = record.calibrated(outputs.probabilities)
    conformal = crepes_prediction_sets(calibrated, record.scores, record.score_labels, record.level)
    sets, no_class_fits = with_answer(conformal, calibrated, crepes_prediction_sets(
        calibrated, record.scores, record.score_labels, NO_FIT_LEVEL, None))
    unfamiliar = unfamiliar_images(record.novelty(outputs.probabilities, outputs.features, layers), outputs, record)
    flagged = unfamiliar | no_class_fits
    summary = set_summary(sets, labels, config.CLASS_NAMES)
    row: dict[str, Any] = {"images": name, "count": int(len(labels)), "flagged": float(flagged.mean()),
                              "unfamiliar": float(unfamiliar.mean()), "coverage": summary["coverage"],
                              "mean set size": summary["mean_set_size"], "empty sets": float(no_class_fits.mean()),
                              "holds answer before": holds_answer(conformal, calibrated),
                              "holds answer": holds_answer(sets, calibrated), **set_sides(sets, labels),
                              **{f"coverage {label}": value for label, value in summary["class_coverage"].items()}}
    if known.any():
        row.update({"accuracy": float((calibrated[known].argmax(axis=1) == labels[known]).mean()),
                    "reliability": reliability_table(labels[known], calibrated[known]).to_dict("records"),
                    "ece before": expected_calibration_error(labels[known], outputs.probabilities[known]),
                    "ece after": expected_calibration_error(labels[known], calibrated[known]),
                    "accuracy when not flagged": (float((calibrated[known & ~flagged].argmax(axis=1)
                                                         == labels[known & ~flagged]).mean())
                                                  if (known & ~flagged).any() else None),
                    "risk coverage": risk_coverage(calibrated[known], labels[known])})
    return row


def unfamiliar_images(feature_scores: np.ndarray, outputs: Outputs, record: UncertaintyRecord) -> np.ndarray:
    """Return which images are unlike the training images: by their scores of the record's feature method or by
    their image statistics."""
    return ((feature_scores > record.threshold)
            | (record.statistics_distances(outputs.statistics) > record.statistics_threshold))


def method_scores(outputs: Outputs, gaussians: ClassGaussians, layers) -> dict[str, np.ndarray]:
    """Return the scores of every novelty method (METHODS) for some images."""
    return {method: novelty_scores(method, outputs.probabilities, outputs.features, gaussians, layers)
            for method in METHODS}


def chosen_temperature(fit_probabilities: np.ndarray, fit_labels: np.ndarray, check_probabilities: np.ndarray,
                       check_labels: np.ndarray) -> dict[str, Any]:
    """Fit a temperature on some images and keep it only when it lowers the calibration error on others (else the
    identity, 1): the fitted and the kept temperature with the check images' error before and after."""
    fitted = fit_temperature(fit_probabilities, fit_labels)
    before = expected_calibration_error(check_labels, check_probabilities)
    after = expected_calibration_error(check_labels, scale_probabilities(check_probabilities, fitted))
    kept = bool(after < before)
    return {"fitted temperature": fitted, "temperature": fitted if kept else 1.0, "kept": kept,
            "validation ece before": before, "validation ece after": after}


def conformal_calibration(calibrated: np.ndarray, labels: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the conformal calibration scores and their labels from the dataset's own images with a known class (the
    images exchangeable with the official split the claim is made for)."""
    usable = (labels >= 0) & own
    return calibration_scores(calibrated[usable], labels[usable]), labels[usable].astype(np.int64)


def fit_record(model, training: Outputs, training_labels: np.ndarray, first: Outputs, first_labels: np.ndarray,
               second: Outputs, second_labels: np.ndarray, selection_outliers: dict[str, Outputs],
               level: float = DEFAULT_LEVEL, first_own: np.ndarray | None = None, second_own: np.ndarray | None = None
               ) -> tuple[UncertaintyRecord, dict[str, float], dict[str, np.ndarray], dict[str, Any]]:
    """Fit the temperature on the first validation half's own images (kept only if it helps on the second half's),
    pick the novelty score on the whole first half (with one draw of outliers) and set its threshold and the image
    statistics' on both halves, calibrate the conformal sets on the second half's own images; return the record,
    each method's validation AUROC, each method's scores of the first half, and the calibration decision. first_own,
    second_own: which images are the dataset's own (default: all)."""
    first_own = np.ones(len(first_labels), bool) if first_own is None else np.asarray(first_own, bool)
    second_own = np.ones(len(second_labels), bool) if second_own is None else np.asarray(second_own, bool)
    fitting, checking = (first_labels >= 0) & first_own, (second_labels >= 0) & second_own
    calibration = chosen_temperature(first.probabilities[fitting], first_labels[fitting],
                                     second.probabilities[checking], second_labels[checking])
    temperature = calibration["temperature"]
    gaussians = ClassGaussians.fit(training.features, training_labels)
    layers = logit_layers(model)
    inside = method_scores(first, gaussians, layers)
    outside = [method_scores(outputs, gaussians, layers) for outputs in selection_outliers.values()]
    validation_auroc = {method: float(np.mean([auroc(inside[method], scores[method]) for scores in outside]))
                        for method in METHODS}
    method = max(METHODS, key=lambda name: validation_auroc[name])
    scores, score_labels = conformal_calibration(scale_probabilities(second.probabilities, temperature),
                                                 second_labels, second_own)
    statistics = StatisticsNeighbours.fit(training.statistics)
    validation_scores = np.r_[inside[method], novelty_scores(method, second.probabilities, second.features,
                                                               gaussians, layers)]
    threshold, statistics_threshold = union_thresholds(
        validation_scores, statistics.distances(np.r_[first.statistics, second.statistics]),
        guaranteed_flag_rate(len(validation_scores)))
    record = UncertaintyRecord(temperature=temperature, scores=scores, score_labels=score_labels, method=method,
                               threshold=threshold, means=gaussians.means, precision=gaussians.precision, level=level,
                               statistics=statistics, statistics_threshold=statistics_threshold)
    return record, validation_auroc, inside, calibration


def class_labels(labels: np.ndarray) -> np.ndarray:
    """Return training labels as class indices, with -1 where only "some tumour" is known."""
    labels = np.asarray(labels).astype(np.int64)
    return np.where(labels == config.ANY_TUMOUR_LABEL, -1, labels)


def study_images(data, image_size: int, preprocessing: str) -> dict[str, Any]:
    """Return the images every measurement reads, from a study's data: training, validation, official Testing, the
    external test parts and two independent draws of outliers, each with class labels (-1: class unknown)."""
    test_parts = {name: images for name, images in sorted(data.external.items()) if images.spec.part == "test"}
    own = np.zeros(len(data.validation), bool)
    own[dataset_rows(data.validation.paths)] = True
    return {"training": (data.training.images, np.asarray(data.training.labels)),
            "validation": (data.validation.images, class_labels(data.validation.labels)), "validation own": own,
            OFFICIAL: (data.testing.images, np.asarray(data.testing.labels)),
            "external": {name: (images.images, class_labels(images.labels)) for name, images in test_parts.items()},
            "outliers for selection": outlier_sets(image_size, preprocessing, OUTLIERS_PER_KIND, seed=1),
            "outliers": outlier_sets(image_size, preprocessing, OUTLIERS_PER_KIND, seed=2)}


def measure_model(model, images: dict[str, Any], level: float = DEFAULT_LEVEL) -> tuple[UncertaintyRecord, dict]:
    """Fit one model's uncertainty record and return it with its measured figures: a row per set of images
    (official Testing, each external test part), the outlier table and the reliability bins before and after."""
    extractor = feature_extractor(model)
    layers = logit_layers(model)
    training_images, training_labels = images["training"]
    validation_images, validation_labels = images["validation"]
    validation = Outputs.predict(extractor, validation_images)
    first, second = halves(validation_labels)
    selection = {kind: Outputs.predict(extractor, kind_images)
                 for kind, kind_images in images["outliers for selection"].items()}
    own = images.get("validation own", np.ones(len(validation_labels), bool))
    record, validation_auroc, inside_scores, calibration = fit_record(
        model, Outputs.predict(extractor, training_images), training_labels, validation.take(first),
        validation_labels[first], validation.take(second), validation_labels[second], selection, level,
        own[first], own[second])
    official_images, official_labels = images[OFFICIAL]
    official = Outputs.predict(extractor, official_images)
    rows = [evaluate(official, official_labels, record, layers, OFFICIAL),
            *[evaluate(Outputs.predict(extractor, set_images), labels, record, layers, name)
              for name, (set_images, labels) in images["external"].items()]]
    reliability = {"before": reliability_table(official_labels, official.probabilities).to_dict("records"),
                   "after": reliability_table(official_labels, record.calibrated(official.probabilities))
                   .to_dict("records")}
    gaussians = ClassGaussians(record.means, record.precision)
    outliers = []
    for kind, kind_images in images["outliers"].items():
        outputs = Outputs.predict(extractor, kind_images)
        scores = method_scores(outputs, gaussians, layers)
        outliers.append({"kind": kind, "count": int(len(kind_images)),
                         **{f"auroc {method}": auroc(inside_scores[method], scores[method]) for method in METHODS},
                         f"flagged by {record.method}": float((scores[record.method] > record.threshold).mean()),
                         "flagged": float(unfamiliar_images(scores[record.method], outputs, record).mean())})
    return record, {"temperature": record.temperature, "calibration": calibration, "method": record.method,
                    "threshold": record.threshold, "statistics threshold": record.statistics_threshold,
                    "validation auroc": validation_auroc, "level": record.level,
                    "calibration images": int(len(record.scores)), "rows": rows, "outliers": outliers,
                    "reliability": reliability}


# The outlier kinds that must all be flagged; the MR slice of another body part is nearer.
FAR_KINDS = ("uniform noise", "gaussian noise", "salt and pepper noise", "gradients", "photographs",
             "CT-like head phantom", "CT slice (chest)")


def model_table(figures: dict[str, dict]):
    """Return one row per model: temperature (and whether validation kept it), calibration error before and after,
    coverage, the lowest class coverage, mean set size, the share of conformal sets that held the answer before it
    was added, the flagged share on official Testing, the novelty score chosen and the far outliers' lowest flagged
    share."""
    import pandas as pd

    rows = {}
    for name, measured in figures.items():
        official = measured["rows"][0]
        classes = [value for key, value in official.items() if key.startswith("coverage ")]
        calibration = measured.get("calibration", {})
        rows[name] = {"temperature": measured["temperature"], "calibration kept": calibration.get("kept"),
                      "ECE before": official["ece before"], "ECE after": official["ece after"],
                      "coverage": official["coverage"], "lowest class coverage": min(classes),
                      "mean set size": official["mean set size"], "set holds the answer (before)":
                      official.get("holds answer before"), "flagged": official["flagged"],
                      "novelty score": measured["method"], "far outliers flagged (lowest)": min(
                          row["flagged"] for row in measured["outliers"] if row["kind"] in FAR_KINDS)}
    return pd.DataFrame.from_dict(rows, orient="index")


def judged_targets(measured: dict) -> list[dict[str, Any]]:
    """Return the uncertainty targets of one model with the measured value and whether each is met."""
    official = measured["rows"][0]
    classes = {key[len("coverage "):]: value for key, value in official.items() if key.startswith("coverage ")}
    far = [row for row in measured["outliers"] if row["kind"] in FAR_KINDS]
    method = measured["method"]
    return [
        {"target": f"ECE on {OFFICIAL} <= {CALIBRATION_ERROR_TARGET:.0%}", "measured": f"{official['ece after']:.1%}",
         "met": official["ece after"] <= CALIBRATION_ERROR_TARGET},
        {"target": "calibration never worse than none", "measured": f"{official['ece before']:.1%} -> "
         f"{official['ece after']:.1%}", "met": official["ece after"] <= official["ece before"]},
        {"target": "every set holds the predicted class", "measured": f"{official['holds answer']:.1%} (the "
         f"conformal sets alone: {official['holds answer before']:.1%})", "met": official["holds answer"] == 1.0},
        {"target": f"every class covered >= {CLASS_COVERAGE_TARGET:.0%} at the {measured['level']:.0%} level",
         "measured": ", ".join(f"{name} {value:.1%}" for name, value in classes.items()),
         "met": min(classes.values()) >= CLASS_COVERAGE_TARGET},
        {"target": f"mean set size <= {SET_SIZE_TARGET}", "measured": f"{official['mean set size']:.2f}",
         "met": official["mean set size"] <= SET_SIZE_TARGET},
        {"target": "noise, gradients, photographs and CT slices all flagged",
         "measured": ", ".join(f"{row['kind']} {row['flagged']:.0%}" for row in far),
         "met": all(row["flagged"] == 1.0 for row in far)},
        {"target": f"AUROC >= {OUTLIER_AUROC_TARGET} on every far kind ({method})",
         "measured": f"lowest {min(row[f'auroc {method}'] for row in far):.3f}",
         "met": all(row[f"auroc {method}"] >= OUTLIER_AUROC_TARGET for row in far)},
        {"target": f"<= {FLAGGED_TARGET:.0%} of {OFFICIAL} flagged",
         "measured": f"{official['flagged']:.1%} (unlike the training images {official['unfamiliar']:.1%}, no class "
                     f"fits {official['empty sets']:.1%})", "met": official["flagged"] <= FLAGGED_TARGET},
    ]
