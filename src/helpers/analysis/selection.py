"""How a published model, its recipe and seed, and the published default are chosen: one validation score that weighs
the dataset's own validation images and the external validation images on both sides."""

from __future__ import annotations

import numpy as np

from helpers import config
from helpers.inputs.external import dataset_rows
from helpers.modeling.run_folders import TrainingRun

# How each published model, its recipe and seed, and the published default are chosen (README, the model card, the
# index page and docs/decisions.md, "Like with like").
SELECTION_RULE = ("the best validation score: the mean of the accuracy on the dataset's own validation images and the "
                  "balanced accuracy on the external validation images (tumours kept, tumour-free slices called no "
                  "tumour), over a model's seeds, for its recipe and for the default")


def own_images_accuracy(probabilities: np.ndarray, labels: np.ndarray, paths: np.ndarray) -> float:
    """Return the accuracy of predicted probabilities on the dataset's own images (a validation split may also hold
    external images, whose "some tumour" label no argmax matches)."""
    own = dataset_rows(paths)
    return float((np.asarray(probabilities)[own].argmax(axis=1) == np.asarray(labels)[own]).mean())


def selection_score(predictions: dict[str, np.ndarray]) -> float:
    """Return the validation score SELECTION_RULE ranks by, from a validation predictions record (labels,
    probabilities, paths): the mean of the dataset's own images' accuracy and the external images' balanced accuracy
    (the accuracy alone where validation holds no external image, or external images of one side only)."""
    labels, probabilities = np.asarray(predictions["labels"]), np.asarray(predictions["probabilities"])
    own = dataset_rows(predictions["paths"])
    accuracy = own_images_accuracy(probabilities, labels, predictions["paths"])
    external = np.setdiff1d(np.arange(len(labels)), own)
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    called_free = probabilities[external].argmax(axis=1) == no_tumour
    free = labels[external] == no_tumour
    if not free.any() or free.all():
        return accuracy
    balanced = (float((~called_free[~free]).mean()) + float(called_free[free].mean())) / 2
    return (accuracy + balanced) / 2


def validation_score(run: TrainingRun) -> float:
    """Return a run's validation score (selection_score of its validation predictions)."""
    return selection_score(run.predictions["validation"])


def chosen_recipe(runs_by_recipe: dict[str, list[TrainingRun]]) -> str:
    """Return the recipe whose runs of a model have the best mean validation score (ties: the first recipe)."""
    trained = {name: runs for name, runs in runs_by_recipe.items() if runs}
    return max(trained, key=lambda name: float(np.mean([validation_score(run) for run in trained[name]])))
