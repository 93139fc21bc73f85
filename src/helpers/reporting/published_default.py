"""Which model brain-mri-predict uses by default (DEFAULT_RULE), read from the study's comparison record, and the
external-validity targets it is judged by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from helpers.analysis.run_summaries import ENSEMBLE_SUFFIX, ensemble_name
from helpers.metrics_record import Comparison
from helpers.reporting.source_report import judged_targets

# How the published default is chosen: the same words in README, the model card and index.html.
DEFAULT_RULE = ("the model with the best validation score (the mean of the accuracy on the dataset's own validation "
                "images and the balanced accuracy on the external ones, over its seeds), shipped as its seeds' "
                "average (an ensemble) when that scores higher than its best seed")


def published_recipe(metrics: dict, name: str) -> str:
    """Return the recipe a model is published with: notebook 04's choice by the selection rule (in a record written
    before it, the profile's recipe for the model)."""
    from helpers import config

    chosen = Comparison.read(metrics).published_recipes.get(name.removesuffix(ENSEMBLE_SUFFIX))
    return chosen or config.get_profile(metrics["profile"]).recipe_name(name.removesuffix(ENSEMBLE_SUFFIX))


def published_run(metrics: dict, run_root: Path, name: str, seed: int) -> Path:
    """Return the run folder of a published model's seed under the recipe it is published with."""
    from helpers import config

    return config.run_folder(run_root, published_recipe(metrics, name), name, seed)


def default_model(metrics: dict) -> str:
    """Return the published default: the model with the best mean validation score over its seeds (the validation
    accuracy in a record written before the score)."""
    summaries = Comparison.read(metrics).summaries

    def score(name: str) -> float:
        summary = summaries[name]
        return float(np.mean(summary.get("validation_score", summary.get("validation_accuracy", [0.0]))))

    return max(summaries, key=score)


def cheap_accuracy_row(metrics: dict, name: str, variant: str) -> dict | None:
    """Return a model's row of notebook 04's cheap-accuracy table whose variant starts with the given words."""
    return next((row for row in Comparison.read(metrics).cheap_accuracy or []
                 if row["model"] == name and row["variant"].startswith(variant)), None)


def ships_ensemble(metrics: dict, name: str) -> bool:
    """Return whether a model's ensemble of seeds beat its best-on-validation seed on validation (notebook 04's
    cheap-accuracy rows)."""
    single = cheap_accuracy_row(metrics, name, "one network")
    ensemble = cheap_accuracy_row(metrics, name, "ensemble of")
    measure = "validation score" if single is not None and "validation score" in single else "validation accuracy"
    return (single is not None and ensemble is not None and ensemble["network passes per image"] > 1
            and ensemble[measure] > single[measure])


def shipped_default(metrics: dict) -> str:
    """Return the name of what brain-mri-predict uses by default (DEFAULT_RULE): a model, or its ensemble."""
    name = default_model(metrics)
    return ensemble_name(name) if ships_ensemble(metrics, name) else name


def external_targets(metrics: dict) -> list[dict[str, Any]]:
    """Return the external-validity targets of the published default as shipped (helpers.targets.EXTERNAL_TARGETS)."""
    return judged_targets(metrics, shipped_default(metrics)) if Comparison.recorded(metrics) else []
