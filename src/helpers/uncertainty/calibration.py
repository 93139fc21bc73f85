"""Temperature scaling fitted on validation, expected calibration error and the reliability diagram's bins."""

from __future__ import annotations

import numpy as np

CALIBRATION_BINS = 15


def scale_probabilities(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Return softmax(log p / temperature): the probabilities a temperature-scaled model gives (1: unchanged)."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Return the mean negative log-probability of the true classes."""
    chosen = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(chosen, 1e-12, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Return the temperature (0.05 to 20) that minimises the negative log-likelihood of the labels."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: negative_log_likelihood(scale_probabilities(probabilities, np.exp(log_t)),
                                                                  labels),
                            bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS):
    """Return, per equal-width bin of top-class confidence, the images in it, their mean confidence and accuracy."""
    import pandas as pd

    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for index in range(bins):
        members = which == index
        rows.append({"low": edges[index], "high": edges[index + 1], "images": int(members.sum()),
                     "confidence": float(confidence[members].mean()) if members.any() else np.nan,
                     "accuracy": float(correct[members].mean()) if members.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Return the expected calibration error: the image-weighted mean gap between confidence and accuracy over
    equal-width confidence bins (15 by default)."""
    table = reliability_bins(probabilities, labels, bins).dropna()
    return float((table["images"] * (table["confidence"] - table["accuracy"]).abs()).sum() / table["images"].sum())
