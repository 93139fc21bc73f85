"""Which model brain-mri-predict uses by default (DEFAULT_RULE), read from the study's comparison record, and the
external-validity targets it is judged by."""

from __future__ import annotations

from typing import Any

import numpy as np

from helpers.analysis.run_summaries import ensemble_name
from helpers.metrics_record import Comparison
from helpers.reporting.source_report import judged_targets

# How the published default is chosen: the same words in README, the model card and index.html.
DEFAULT_RULE = ("the model with the best mean validation accuracy over its seeds, shipped as the average of its seeds' "
                "probabilities (an ensemble) when that scores higher on validation than its best-on-validation seed "
                "alone, else as that seed")


def default_model(metrics: dict) -> str:
    """Return the published default: the model with the best mean validation accuracy over its seeds (validation
    holds the external train parts' held-out images where the recipe trains on them)."""
    summaries = Comparison.read(metrics).summaries
    return max(summaries, key=lambda name: float(np.mean(summaries[name].get("validation_accuracy", [0.0]))))


def cheap_accuracy_row(metrics: dict, name: str, variant: str) -> dict | None:
    """Return a model's row of notebook 04's cheap-accuracy table whose variant starts with the given words."""
    return next((row for row in Comparison.read(metrics).cheap_accuracy or []
                 if row["model"] == name and row["variant"].startswith(variant)), None)


def ships_ensemble(metrics: dict, name: str) -> bool:
    """Return whether a model's ensemble of seeds beat its best-on-validation seed on validation (notebook 04's
    cheap-accuracy rows)."""
    single = cheap_accuracy_row(metrics, name, "one network")
    ensemble = cheap_accuracy_row(metrics, name, "ensemble of")
    return (single is not None and ensemble is not None and ensemble["network passes per image"] > 1
            and ensemble["validation accuracy"] > single["validation accuracy"])


def shipped_default(metrics: dict) -> str:
    """Return the name of what brain-mri-predict uses by default (DEFAULT_RULE): a model, or its ensemble."""
    name = default_model(metrics)
    return ensemble_name(name) if ships_ensemble(metrics, name) else name


def external_targets(metrics: dict) -> list[dict[str, Any]]:
    """Return the external-validity targets of the published default as shipped (helpers.targets.EXTERNAL_TARGETS)."""
    return judged_targets(metrics, shipped_default(metrics)) if Comparison.recorded(metrics) else []
