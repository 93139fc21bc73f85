"""Temperature scaling fitted on validation (the calibration error and reliability bins:
helpers.evaluation)."""

from __future__ import annotations

import numpy as np


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
