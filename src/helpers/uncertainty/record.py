"""What a published model carries for honest uncertainty, saved beside it: the temperature, the conformal
calibration scores, and the detector of unfamiliar inputs; applied by brain-mri-predict and predict_files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.files import write_atomically
from helpers.uncertainty.calibration import scale_probabilities
from helpers.uncertainty.conformal import DEFAULT_LEVEL, GUARANTEE, NO_FIT_LEVEL, prediction_sets, with_answer
from helpers.uncertainty.novelty import ClassGaussians, StatisticsNeighbours, image_statistics, novelty_scores

SUFFIX = ".uncertainty.npz"
# Where a study keeps its models' records (notebook 07), under its run root; `make publish` copies them to models/.
RECORDS_FOLDER = "uncertainty"


def record_path(label_file: Path) -> Path:
    """Return where a model's uncertainty record lies: <name>.uncertainty.npz beside its <name>.json label file."""
    return label_file.with_name(label_file.stem + SUFFIX)


def study_record_path(run_root: Path, model_name: str) -> Path:
    """Return where a study keeps a model's uncertainty record: <run_root>/uncertainty/<name>.uncertainty.npz."""
    return Path(run_root) / RECORDS_FOLDER / f"{model_name}{SUFFIX}"


@dataclass
class UncertaintyRecord:
    """A model's fitted temperature, conformal calibration scores (per class) and novelty detectors: one on the
    model's features, one on the image statistics of its inputs (absent from records written before its
    nearest-neighbour form)."""

    temperature: float
    scores: np.ndarray  # non-conformity scores of the conformal calibration images, for their true class
    score_labels: np.ndarray
    method: str  # a helpers.uncertainty.novelty.METHODS name
    threshold: float  # novelty scores above it are flagged
    means: np.ndarray  # class means of the training features (mahalanobis)
    precision: np.ndarray  # their shared precision matrix (mahalanobis)
    level: float = DEFAULT_LEVEL
    statistics: StatisticsNeighbours | None = None  # the training inputs' image statistics
    statistics_threshold: float = float("inf")  # image-statistics distances above it are flagged

    def save(self, path: Path) -> Path:
        """Write the record as a compressed NumPy archive, atomically."""
        arrays: dict[str, Any] = {"temperature": np.float64(self.temperature), "scores": self.scores,
                  "score_labels": self.score_labels, "method": np.array(self.method),
                  "threshold": np.float64(self.threshold), "means": self.means, "precision": self.precision,
                  "level": np.float64(self.level)}
        if self.statistics is not None:
            arrays.update({"statistics_reference": self.statistics.reference,
                           "statistics_centre": self.statistics.centre, "statistics_scale": self.statistics.scale,
                           "statistics_threshold": np.float64(self.statistics_threshold)})

        def write(temporary: Path) -> None:
            with open(temporary, "wb") as handle:
                np.savez_compressed(handle, **arrays)
        write_atomically(path, write)
        return path

    @classmethod
    def load(cls, path: Path) -> UncertaintyRecord:
        """Read a record written by save."""
        with np.load(path, allow_pickle=False) as stored:
            statistics = (StatisticsNeighbours(stored["statistics_reference"], stored["statistics_centre"],
                                               stored["statistics_scale"])
                          if "statistics_reference" in stored.files else None)
            statistics_threshold = float(stored["statistics_threshold"]) if statistics is not None else float("inf")
            return cls(temperature=float(stored["temperature"]), scores=stored["scores"],
                       score_labels=stored["score_labels"], method=str(stored["method"]),
                       threshold=float(stored["threshold"]), means=stored["means"], precision=stored["precision"],
                       level=float(stored["level"]), statistics=statistics,
                       statistics_threshold=statistics_threshold)

    def novelty(self, probabilities: np.ndarray, features: np.ndarray, layers=None) -> np.ndarray:
        """Return the novelty scores of images from their raw probabilities and features."""
        return novelty_scores(self.method, probabilities, features, ClassGaussians(self.means, self.precision),
                              layers)

    def statistics_novelty(self, images: np.ndarray) -> np.ndarray | None:
        """Return the distance of each model input's image statistics to the training inputs' nearest (None for a
        record without that detector)."""
        return None if self.statistics is None else self.statistics_distances(image_statistics(images))

    def statistics_distances(self, statistics: np.ndarray) -> np.ndarray:
        """Return the distance of image statistics (novelty.image_statistics) to the training inputs' nearest (zeros
        for a record without that detector)."""
        return np.zeros(len(statistics)) if self.statistics is None else self.statistics.distances(statistics)

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """Return the temperature-scaled probabilities."""
        return scale_probabilities(probabilities, self.temperature)

    def sets(self, calibrated: np.ndarray, level: float | None = None, guarantee: float | None = GUARANTEE
             ) -> np.ndarray:
        """Return the conformal prediction sets (booleans per class) of calibrated probabilities at a level."""
        return prediction_sets(calibrated, self.scores, self.score_labels, level or self.level, guarantee)

    def answer_sets(self, calibrated: np.ndarray, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return the sets a user is shown (the conformal set with the predicted class added) and which images no
        class fits (an empty set at the NO_FIT_LEVEL: flagged)."""
        return with_answer(self.sets(calibrated, level), calibrated, self.sets(calibrated, NO_FIT_LEVEL, None))
