"""Fit every published model's uncertainty record on validation and measure it: `python -m helpers.uncertainty.fitting`
(`make uncertainty`) writes models/<name>.uncertainty.npz and reports/uncertainty.json.

Validation images (the dataset's own and the external train parts' held-out patients) are split in two halves by
class: the first fits the temperature, picks the novelty score by AUROC against one draw of generated outliers and
sets its threshold; the second calibrates the conformal sets and plays no other role. Figures are measured on the
official Testing split, every external test part, and a second, independent draw of outliers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from helpers import config
from helpers.uncertainty.calibration import expected_calibration_error, fit_temperature, reliability_bins
from helpers.uncertainty.conformal import DEFAULT_LEVEL, calibration_scores, set_summary
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
from helpers.uncertainty.record import UncertaintyRecord, record_path

UNCERTAINTY_FILE = "uncertainty.json"
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


class Outputs:
    """A model's probabilities and penultimate features for images, computed once."""

    def __init__(self, extractor, images: np.ndarray) -> None:
        probabilities, features = extractor.predict(np.asarray(images)[..., np.newaxis], batch_size=256, verbose=0)
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.features = np.asarray(features, dtype=np.float64)

    def take(self, indices: np.ndarray) -> Outputs:
        """Return the outputs of some images."""
        taken = object.__new__(Outputs)
        taken.probabilities, taken.features = self.probabilities[indices], self.features[indices]
        return taken


def evaluate(outputs: Outputs, labels: np.ndarray, record: UncertaintyRecord, layers, name: str) -> dict[str, object]:
    """Return one row of measured figures for a set of images (labels -1: class unknown)."""
    known = labels >= 0
    calibrated = record.calibrated(outputs.probabilities)
    sets = record.sets(calibrated)
    flagged = record.novelty(outputs.probabilities, outputs.features, layers) > record.threshold
    summary = set_summary(sets, labels, config.CLASS_NAMES)
    row: dict[str, object] = {"images": name, "count": int(len(labels)), "flagged": float(flagged.mean()),
                              "coverage": summary["coverage"], "mean set size": summary["mean_set_size"],
                              **{f"coverage {label}": value for label, value in summary["class_coverage"].items()}}
    if known.any():
        row.update({"accuracy": float((calibrated[known].argmax(axis=1) == labels[known]).mean()),
                    "ece before": expected_calibration_error(outputs.probabilities[known], labels[known]),
                    "ece after": expected_calibration_error(calibrated[known], labels[known]),
                    "accuracy when not flagged": (float((calibrated[known & ~flagged].argmax(axis=1)
                                                         == labels[known & ~flagged]).mean())
                                                  if (known & ~flagged).any() else None),
                    "risk coverage": risk_coverage(calibrated[known], labels[known])})
    return row


def fit_record(model, training: Outputs, training_labels: np.ndarray, first: Outputs, first_labels: np.ndarray,
               second: Outputs, second_labels: np.ndarray, selection_outliers: dict[str, Outputs],
               level: float = DEFAULT_LEVEL) -> tuple[UncertaintyRecord, dict[str, float]]:
    """Fit the temperature and pick the novelty score on the first validation half (with one draw of outliers),
    calibrate the conformal sets on the second; return the record and each method's validation AUROC."""
    known = first_labels >= 0
    temperature = fit_temperature(first.probabilities[known], first_labels[known])
    gaussians = ClassGaussians.fit(training.features, training_labels)
    layers = logit_layers(model)

    def scores(method: str, outputs: Outputs) -> np.ndarray:
        return novelty_scores(method, outputs.probabilities, outputs.features, gaussians, layers)

    inside = {method: scores(method, first) for method in METHODS}
    validation_auroc = {method: float(np.mean([auroc(inside[method], scores(method, outputs))
                                               for outputs in selection_outliers.values()])) for method in METHODS}
    method = max(METHODS, key=lambda name: validation_auroc[name])
    usable = second_labels >= 0
    calibrated = UncertaintyRecord(temperature, np.zeros(0), np.zeros(0, np.int64), method, 0.0,
                                   gaussians.means, gaussians.precision).calibrated(second.probabilities[usable])
    record = UncertaintyRecord(temperature=temperature,
                               scores=calibration_scores(calibrated, second_labels[usable]),
                               score_labels=second_labels[usable].astype(np.int64), method=method,
                               threshold=threshold_for(inside[method]), means=gaussians.means,
                               precision=gaussians.precision, level=level)
    return record, validation_auroc


def class_labels(labels: np.ndarray) -> np.ndarray:
    """Return training labels as class indices, with -1 where only "some tumour" is known."""
    labels = np.asarray(labels).astype(np.int64)
    return np.where(labels == config.ANY_TUMOUR_LABEL, -1, labels)


def load_images(data_dir: str | None, external_dir: str | None, image_size: int, preprocessing: str,
                collections: tuple[str, ...] | None) -> dict[str, object]:
    """Return the images every measurement reads: training, validation, official Testing, external test parts and two
    independent draws of outliers, each with its class labels (-1: class unknown)."""
    from helpers.external import load_external_sets, load_training_data

    loaded = load_training_data(data_dir, image_size, preprocessing, True, external_dir, progress=False,
                                collections=collections)
    external = load_external_sets(external_dir, image_size, preprocessing, parts=("test",))
    return {"training": (loaded.training.images, np.asarray(loaded.training.labels)),
            "validation": (loaded.validation.images, class_labels(loaded.validation.labels)),
            OFFICIAL: (loaded.dataset.testing.images, np.asarray(loaded.dataset.testing.labels)),
            **{name: (images.images, class_labels(images.labels)) for name, images in sorted(external.items())},
            "outliers for selection": outlier_sets(image_size, preprocessing, OUTLIERS_PER_KIND, seed=1),
            "outliers": outlier_sets(image_size, preprocessing, OUTLIERS_PER_KIND, seed=2),
            "fingerprint": loaded.dataset.fingerprint}


def measure_model(saved, images: dict[str, object], level: float = DEFAULT_LEVEL) -> tuple[UncertaintyRecord, dict]:
    """Fit one model's uncertainty record and return it with its measured figures."""
    extractor = feature_extractor(saved.model)
    layers = logit_layers(saved.model)
    training_images, training_labels = images["training"]
    validation_images, validation_labels = images["validation"]
    validation = Outputs(extractor, validation_images)
    first, second = halves(validation_labels)
    selection = {kind: Outputs(extractor, kind_images)
                 for kind, kind_images in images["outliers for selection"].items()}
    record, validation_auroc = fit_record(saved.model, Outputs(extractor, training_images), training_labels,
                                          validation.take(first), validation_labels[first], validation.take(second),
                                          validation_labels[second], selection, level)
    rows, reliability = [], {}
    for name in [OFFICIAL, *[key for key in images if "/" in key]]:
        set_images, labels = images[name]
        outputs = Outputs(extractor, set_images)
        rows.append(evaluate(outputs, labels, record, layers, name))
        if name == OFFICIAL:
            reliability = {"before": reliability_bins(outputs.probabilities, labels).to_dict("records"),
                           "after": reliability_bins(record.calibrated(outputs.probabilities), labels)
                           .to_dict("records")}
    inside = validation.take(first)
    inside_scores = {method: novelty_scores(method, inside.probabilities, inside.features,
                                            ClassGaussians(record.means, record.precision), layers)
                     for method in METHODS}
    outliers = []
    for kind, kind_images in images["outliers"].items():
        outputs = Outputs(extractor, kind_images)
        scores = {method: novelty_scores(method, outputs.probabilities, outputs.features,
                                         ClassGaussians(record.means, record.precision), layers)
                  for method in METHODS}
        outliers.append({"kind": kind, "count": int(len(kind_images)),
                         **{f"auroc {method}": auroc(inside_scores[method], scores[method]) for method in METHODS},
                         "flagged": float((scores[record.method] > record.threshold).mean())})
    return record, {"temperature": record.temperature, "method": record.method, "threshold": record.threshold,
                    "validation auroc": validation_auroc, "level": record.level,
                    "calibration images": int(len(record.scores)), "rows": rows, "outliers": outliers,
                    "reliability": reliability}


def published_label_files(models_dir: Path = config.MODELS_DIR) -> dict[str, Path]:
    """Return the label file of every published model, by name (models/models.json)."""
    import json

    index = json.loads((models_dir / "models.json").read_text())
    return {name: models_dir / Path(entry["file"]).with_suffix(".json").name
            for name, entry in index["models"].items()}


def _main(argv: list[str] | None = None) -> int:
    """Command line: fit and measure the uncertainty record of published models -> models/, reports/uncertainty.json."""
    import argparse
    import json

    from helpers.data import DataError
    from helpers.files import write_atomically
    from helpers.predict import load_saved_model
    from helpers.provenance import provenance

    parser = argparse.ArgumentParser(prog="python -m helpers.uncertainty.fitting", description=_main.__doc__)
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: $BRAIN_MRI_DATA_DIR or data/)")
    parser.add_argument("--external-dir", default=None,
                        help="external sets folder (default: $BRAIN_MRI_EXTERNAL_DIR or data/external)")
    parser.add_argument("--models", nargs="+", default=None, help="published model names (default: every one)")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="coverage level of the sets (0.9)")
    arguments = parser.parse_args(argv)
    label_files = published_label_files()
    chosen = arguments.models or list(label_files)
    report_path = config.REPORTS_DIR / UNCERTAINTY_FILE
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"models": {}}
    cache: dict[tuple, dict] = {}
    for name in chosen:
        if name not in label_files:
            print(f"error: {name}: not a published model (choose from {', '.join(label_files)})", file=sys.stderr)
            return 2
        saved = load_saved_model(label_files[name] if name.endswith("ensemble")
                                 else label_files[name].with_suffix(".keras"))
        settings = json.loads(label_files[name].read_text()).get("settings", {})
        key = (saved.image_size, saved.preprocessing, tuple(settings.get("external_collections",
                                                                          config.TUMOUR_COLLECTIONS)))
        try:
            if key not in cache:
                cache[key] = load_images(arguments.data_dir, arguments.external_dir, *key)
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"{name}: fitting and measuring", flush=True)
        record, figures = measure_model(saved, cache[key], arguments.level)
        record.save(record_path(label_files[name]))
        report["models"][name] = {**figures, "data_fingerprint": cache[key]["fingerprint"]}
        official = figures["rows"][0]
        print(f"{name}: temperature {record.temperature:.2f}, ECE {official['ece before']:.3f} -> "
              f"{official['ece after']:.3f}, coverage {official['coverage']:.3f}, set size "
              f"{official['mean set size']:.2f}, {record.method} flags {official['flagged']:.1%}", flush=True)
    report.update({"provenance": provenance(), "seed": SEED,
                   "note": "temperature, novelty score and threshold fitted on one half of validation, conformal "
                           "sets calibrated on the other; figures on official Testing, external test parts and "
                           "an independent draw of outliers"})
    write_atomically(report_path, lambda temporary: temporary.write_text(json.dumps(report, indent=2) + "\n"))
    print(f"uncertainty figures written to {report_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
