"""Fit a model's uncertainty record on validation and measure it (notebook 07; `make publish` ships the records).

Validation images (the dataset's own and the external train parts' held-out patients) are split in two halves by
class: the first fits the temperature, picks the novelty score by AUROC against one draw of generated outliers and
sets its threshold; the second calibrates the conformal sets and plays no other role. Figures are measured on the
official Testing split, every external test part, and a second, independent draw of outliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from helpers import config
from helpers.evaluation import expected_calibration_error, reliability_table
from helpers.targets import CALIBRATION_ERROR_TARGET, CLASS_COVERAGE_TARGET, OUTLIER_AUROC_TARGET, SET_SIZE_TARGET
from helpers.uncertainty.calibration import fit_temperature, scale_probabilities
from helpers.uncertainty.conformal import DEFAULT_LEVEL, calibration_scores, crepes_prediction_sets, set_summary
from helpers.uncertainty.novelty import (
    METHODS,
    ClassGaussians,
    auroc,
    feature_extractor,
    logit_layers,
    novelty_scores,
    threshold_for,
)
from helpers.uncertainty.outliers import outlier_sets
from helpers.uncertainty.record import UncertaintyRecord

SEED = config.DEFAULT_SEED
OUTLIERS_PER_KIND = 40
RISK_COVERAGES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)
OFFICIAL = "official Testing"


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
    """A model's probabilities and penultimate features for images, computed once."""

    probabilities: np.ndarray
    features: np.ndarray

    @classmethod
    def predict(cls, extractor, images: np.ndarray) -> Outputs:
        """Return the outputs of a feature extractor (novelty.feature_extractor) for (N, size, size) images."""
        probabilities, features = extractor.predict(np.asarray(images)[..., np.newaxis], batch_size=256, verbose=0)
        return cls(np.asarray(probabilities, dtype=np.float64), np.asarray(features, dtype=np.float64))

    def take(self, indices: np.ndarray) -> Outputs:
        """Return the outputs of some images."""
        return Outputs(self.probabilities[indices], self.features[indices])


def evaluate(outputs: Outputs, labels: np.ndarray, record: UncertaintyRecord, layers, name: str) -> dict[str, Any]:
    """Return one row of measured figures for a set of images (labels -1: class unknown)."""
    known = labels >= 0
    calibrated = record.calibrated(outputs.probabilities)
    sets = crepes_prediction_sets(calibrated, record.scores, record.score_labels, record.level)
    flagged = record.novelty(outputs.probabilities, outputs.features, layers) > record.threshold
    summary = set_summary(sets, labels, config.CLASS_NAMES)
    row: dict[str, Any] = {"images": name, "count": int(len(labels)), "flagged": float(flagged.mean()),
                              "coverage": summary["coverage"], "mean set size": summary["mean_set_size"],
                              "empty sets": summary["empty_sets"],
                              **{f"coverage {label}": value for label, value in summary["class_coverage"].items()}}
    if known.any():
        row.update({"accuracy": float((calibrated[known].argmax(axis=1) == labels[known]).mean()),
                    "ece before": expected_calibration_error(labels[known], outputs.probabilities[known]),
                    "ece after": expected_calibration_error(labels[known], calibrated[known]),
                    "accuracy when not flagged": (float((calibrated[known & ~flagged].argmax(axis=1)
                                                         == labels[known & ~flagged]).mean())
                                                  if (known & ~flagged).any() else None),
                    "risk coverage": risk_coverage(calibrated[known], labels[known])})
    return row


def method_scores(outputs: Outputs, gaussians: ClassGaussians, layers) -> dict[str, np.ndarray]:
    """Return the scores of every novelty method (METHODS) for some images."""
    return {method: novelty_scores(method, outputs.probabilities, outputs.features, gaussians, layers)
            for method in METHODS}


def fit_record(model, training: Outputs, training_labels: np.ndarray, first: Outputs, first_labels: np.ndarray,
               second: Outputs, second_labels: np.ndarray, selection_outliers: dict[str, Outputs],
               level: float = DEFAULT_LEVEL) -> tuple[UncertaintyRecord, dict[str, float], dict[str, np.ndarray]]:
    """Fit the temperature and pick the novelty score on the first validation half (with one draw of outliers),
    calibrate the conformal sets on the second; return the record, each method's validation AUROC and each method's
    scores of the first half."""
    known = first_labels >= 0
    temperature = fit_temperature(first.probabilities[known], first_labels[known])
    gaussians = ClassGaussians.fit(training.features, training_labels)
    layers = logit_layers(model)
    inside = method_scores(first, gaussians, layers)
    outside = [method_scores(outputs, gaussians, layers) for outputs in selection_outliers.values()]
    validation_auroc = {method: float(np.mean([auroc(inside[method], scores[method]) for scores in outside]))
                        for method in METHODS}
    method = max(METHODS, key=lambda name: validation_auroc[name])
    usable = second_labels >= 0
    calibrated = scale_probabilities(second.probabilities[usable], temperature)
    record = UncertaintyRecord(temperature=temperature,
                               scores=calibration_scores(calibrated, second_labels[usable]),
                               score_labels=second_labels[usable].astype(np.int64), method=method,
                               threshold=threshold_for(inside[method]), means=gaussians.means,
                               precision=gaussians.precision, level=level)
    return record, validation_auroc, inside


def class_labels(labels: np.ndarray) -> np.ndarray:
    """Return training labels as class indices, with -1 where only "some tumour" is known."""
    labels = np.asarray(labels).astype(np.int64)
    return np.where(labels == config.ANY_TUMOUR_LABEL, -1, labels)


def study_images(data, image_size: int, preprocessing: str) -> dict[str, Any]:
    """Return the images every measurement reads, from a study's data: training, validation, official Testing, the
    external test parts and two independent draws of outliers, each with class labels (-1: class unknown)."""
    test_parts = {name: images for name, images in sorted(data.external.items()) if images.spec.part == "test"}
    return {"training": (data.training.images, np.asarray(data.training.labels)),
            "validation": (data.validation.images, class_labels(data.validation.labels)),
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
    record, validation_auroc, inside_scores = fit_record(
        model, Outputs.predict(extractor, training_images), training_labels, validation.take(first),
        validation_labels[first], validation.take(second), validation_labels[second], selection, level)
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
        scores = method_scores(Outputs.predict(extractor, kind_images), gaussians, layers)
        outliers.append({"kind": kind, "count": int(len(kind_images)),
                         **{f"auroc {method}": auroc(inside_scores[method], scores[method]) for method in METHODS},
                         "flagged": float((scores[record.method] > record.threshold).mean())})
    return record, {"temperature": record.temperature, "method": record.method, "threshold": record.threshold,
                    "validation auroc": validation_auroc, "level": record.level,
                    "calibration images": int(len(record.scores)), "rows": rows, "outliers": outliers,
                    "reliability": reliability}


# The outlier kinds that must all be flagged; the MR slice of another body part is nearer.
FAR_KINDS = ("uniform noise", "gaussian noise", "salt and pepper noise", "gradients", "photographs",
             "CT-like head phantom", "CT slice (chest)")


def model_table(figures: dict[str, dict]):
    """Return one row per model: temperature, calibration error before and after, coverage, the lowest class
    coverage, mean set size and flagged share on official Testing, and the novelty score chosen."""
    import pandas as pd

    rows = {}
    for name, measured in figures.items():
        official = measured["rows"][0]
        classes = [value for key, value in official.items() if key.startswith("coverage ")]
        rows[name] = {"temperature": measured["temperature"], "ECE before": official["ece before"],
                      "ECE after": official["ece after"], "coverage": official["coverage"],
                      "lowest class coverage": min(classes), "mean set size": official["mean set size"],
                      "flagged": official["flagged"], "novelty score": measured["method"]}
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
        {"target": f"<= 2% of {OFFICIAL} flagged", "measured": f"{official['flagged']:.1%}",
         "met": official["flagged"] <= 0.02},
    ]
