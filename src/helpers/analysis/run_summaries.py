"""A model's runs summarised: the representative seed, ensembles of seeds, per-seed and clean-test accuracies,
and the study's tables and targets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.analysis.selection import own_images_accuracy, selection_score, validation_score
from helpers.analysis.study import StudyData
from helpers.evaluation import (
    classification_summary,
    mean_with_spread,
    multi_seed_summary,
    partial_label_accuracy,
)
from helpers.modeling.run_folders import TrainingRun
from helpers.targets import ACCURACY_TARGETS, RECURRENT_MODELS, RECURRENT_PARAMETER_LIMIT


def representative_run(runs: list[TrainingRun]) -> TrainingRun:
    """Return the run with the best validation score (selection_score, the rule that also picks the recipe and the
    default; ties: the first seed); the test split plays no part (docs/decisions.md, "Like with like")."""
    return runs[int(np.argmax([validation_score(run) for run in runs]))]


ENSEMBLE_SUFFIX = "-ensemble"


def ensemble_name(model_name: str) -> str:
    """Return the name of the ensemble of a model's seeds."""
    return f"{model_name}{ENSEMBLE_SUFFIX}"


def mean_predictions(runs: list[TrainingRun]) -> dict[str, dict[str, np.ndarray]]:
    """Return the stored predictions of a model's seeds with each split's probabilities averaged over the seeds (the
    splits every seed kept predictions of)."""
    first = runs[0]
    return {split: {**first.predictions[split],
                    "probabilities": np.mean([run.predictions[split]["probabilities"] for run in runs], axis=0)}
            for split in first.predictions if all(split in run.predictions for run in runs)}


def ensemble_run(model_name: str, runs: list[TrainingRun]) -> TrainingRun:
    """Return a model's seeds as one run: the mean of their probabilities, stored and predicted (build_ensemble)."""
    from helpers.modeling.models import build_ensemble

    first = runs[0]
    seeds = [int(run.details["settings"]["seed"]) for run in runs]
    return TrainingRun(directory=first.directory.parent / ensemble_name(model_name), class_names=first.class_names,
                       image_size=first.image_size, history=pd.DataFrame(), timings={},
                       details={**first.details, "model": ensemble_name(model_name), "seeds": seeds},
                       predictions=mean_predictions(runs),
                       loaded_model=build_ensemble([run.model for run in runs], ensemble_name(model_name)))


def default_ensemble(runs_per_model: dict[str, list[TrainingRun]]) -> dict[str, list[TrainingRun]]:
    """Return {ensemble name: [ensemble run]} for the best-on-validation model's seeds, the candidate published
    default; {} when it has one seed, or when its seeds keep no models (published runs without a shipped ensemble)."""
    name = best_on_validation(runs_per_model)
    runs = runs_per_model[name]
    if len(runs) < 2 or any(run.loaded_model is None for run in runs):
        return {}
    return {ensemble_name(name): [ensemble_run(name, runs)]}


def best_on_validation(runs_per_model: dict[str, list[TrainingRun]]) -> str:
    """Return the name of the model with the best mean validation score over its seeds."""
    return max(runs_per_model, key=lambda name: np.mean([validation_score(run) for run in runs_per_model[name]]))


def target_table(summaries: dict[str, dict], clean_accuracy: dict[str, float] | None = None) -> pd.DataFrame:
    """Return the study's targets beside the measured figures (clean-test accuracy from clean_accuracy by model); the
    models they judge are chosen on the dataset's own validation images (the whole split in an older record)."""
    def by_validation(names: list[str]) -> str | None:
        return max(names, key=lambda name: np.mean(summaries[name].get("dataset_validation_accuracy",
                                                                       summaries[name]["validation_accuracy"]))
                   ) if names else None

    recurrent = by_validation([name for name in RECURRENT_MODELS if name in summaries
                               and summaries[name]["parameters"] <= RECURRENT_PARAMETER_LIMIT])
    overall = by_validation(list(summaries))
    judged = {"rnn as specified": "rnn" if "rnn" in summaries else None,
              "best recurrent model (<= 1.5M parameters)": recurrent, "best model overall": overall,
              "best model's tumour sensitivity": overall, "best model's clean-test accuracy": overall}
    rows = []
    for target, required in ACCURACY_TARGETS.items():
        name = judged[target]
        if name is None:
            measured = np.nan
        elif target.endswith("tumour sensitivity"):
            measured = summaries[name]["representative"]["tumour_sensitivity"]
        elif target.endswith("clean-test accuracy"):
            measured = (clean_accuracy or {}).get(name, np.nan)
        else:
            measured = summaries[name]["test_accuracy"]["mean"]
        rows.append({"target": target, "model": name, "required": required, "measured": measured,
                     "met": bool(measured >= required)})
    return pd.DataFrame(rows).set_index("target")


def validation_accuracy(run: TrainingRun) -> float:
    """Return a run's accuracy on the validation split (an external "some tumour" image counts right as any tumour)."""
    validation = run.predictions["validation"]
    return partial_label_accuracy(validation["labels"], validation["probabilities"])


def dataset_validation_accuracy(run: TrainingRun) -> float:
    """Return a run's accuracy on the dataset's own validation images (the external ones left out)."""
    validation = run.predictions["validation"]
    return own_images_accuracy(validation["probabilities"], validation["labels"], validation["paths"])


def masked_accuracy(probabilities: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    """Return the accuracy of class probabilities on the images a boolean mask selects."""
    return float((probabilities.argmax(axis=1)[mask] == labels[mask]).mean())


def test_accuracy_per_seed(runs: list[TrainingRun], mask: np.ndarray) -> dict[int, float]:
    """Return each seed's accuracy on the official Testing images a boolean mask selects (e.g. the clean test)."""
    return {int(run.details["settings"]["seed"]): masked_accuracy(run.predictions["test"]["probabilities"],
                                                                  run.predictions["test"]["labels"], mask)
            for run in runs}


def clean_test_table(runs_per_model: dict[str, list[TrainingRun]], clean: np.ndarray) -> pd.DataFrame:
    """Return each model's mean accuracy over seeds on all test images, the clean ones (no near duplicate in
    Training) and the others, with the number of clean images."""
    table = pd.DataFrame({name: {column: float(np.mean(list(test_accuracy_per_seed(runs, mask).values())))
                                 for column, mask in (("all test images", np.ones_like(clean)),
                                                      ("clean test images", clean),
                                                      ("with a near duplicate in Training", ~clean))}
                          for name, runs in runs_per_model.items()}).T
    table["clean images"] = int(clean.sum())
    return table


def summarise_runs(model_name: str, runs: list[TrainingRun]) -> dict[str, Any]:
    """Return a model's test metrics over seeds (mean, std, CI), its representative run's details, and its costs."""
    labels = runs[0].predictions["test"]["labels"]
    over_seeds = multi_seed_summary(labels, [run.predictions["test"]["probabilities"] for run in runs])
    representative = representative_run(runs)
    detail = classification_summary(labels, representative.predictions["test"]["probabilities"],
                                    representative.class_names)
    return {
        "model": model_name, "parameters": int(representative.details["parameters"]),
        "seeds": [int(run.details["settings"]["seed"]) for run in runs],
        "representative_seed": int(representative.details["settings"]["seed"]),
        "test_accuracy": over_seeds["accuracy"], "test_macro_f1": over_seeds["macro_f1"],
        "validation_accuracy": [validation_accuracy(run) for run in runs],
        "dataset_validation_accuracy": [dataset_validation_accuracy(run) for run in runs],
        "validation_score": [validation_score(run) for run in runs],
        "representative": {name: detail[name] for name in ("accuracy", "macro_f1", "weighted_f1",
                                                           "tumour_sensitivity", "expected_calibration_error",
                                                           "roc_auc_ovr_macro")},
        "per_class": detail["per_class"], "confusion_matrix": detail["confusion_matrix"],
        "epochs_run": [int(run.timings["epochs_run"]) for run in runs],
        "best_epoch": [int(run.timings["best_epoch"]) for run in runs],
        "seconds_per_epoch": float(np.mean([run.timings["seconds_per_epoch"] for run in runs])),
        "fit_seconds": float(np.mean([run.timings["fit_seconds"] for run in runs])),
        "inference_milliseconds_per_image": float(np.mean(
            [run.timings["prediction_milliseconds_per_image"]["test"] for run in runs])),
    }


def summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    """Flatten summarise_runs() into one row of the model comparison table."""
    accuracy, macro = summary["test_accuracy"], summary["test_macro_f1"]
    return {"model": summary["model"], "parameters": summary["parameters"], "seeds": len(summary["seeds"]),
            "accuracy": accuracy["mean"], "accuracy_std": accuracy["std"],
            "accuracy_low": accuracy["ci"][0], "accuracy_high": accuracy["ci"][1],
            "macro_f1": macro["mean"], "macro_f1_low": macro["ci"][0], "macro_f1_high": macro["ci"][1],
            "validation_accuracy": float(np.mean(summary["validation_accuracy"])),
            "dataset_validation_accuracy": float(np.mean(summary.get("dataset_validation_accuracy",
                                                                     summary["validation_accuracy"]))),
            "validation_score": float(np.mean(summary.get("validation_score", summary["validation_accuracy"]))),
            "seconds_per_epoch": summary["seconds_per_epoch"], "fit_seconds": summary["fit_seconds"],
            "inference_milliseconds_per_image": summary["inference_milliseconds_per_image"]}


def flip_averaged_probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Return a model's class probabilities averaged over each image and its left-right mirror (test-time
    augmentation with the flip the models trained with)."""
    batch = images[..., np.newaxis]
    return (model.predict(batch, batch_size=batch_size, verbose=0)
            + model.predict(batch[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2.0


def cheap_accuracy_table(runs_per_model: dict[str, list[TrainingRun]], data: StudyData,
                         clean: np.ndarray) -> pd.DataFrame:
    """Return, per model, the representative seed alone, with flip averaging, and the mean of all its seeds'
    probabilities (an ensemble): validation, official-test and clean-test accuracy, and the inference cost in
    network passes per image. Only the validation column may choose among them."""
    rows = []
    test_labels = data.testing.labels
    for name, runs in runs_per_model.items():
        chosen = representative_run(runs)
        mean_over_seeds = {split: stored["probabilities"] for split, stored in mean_predictions(runs).items()}
        variants = {
            f"one network (seed {chosen.details['settings']['seed']})":
                (1, chosen.predictions["validation"]["probabilities"], chosen.predictions["test"]["probabilities"]),
            "flip averaging": (2, flip_averaged_probabilities(chosen.model, data.validation.images),
                               flip_averaged_probabilities(chosen.model, data.testing.images)),
            f"ensemble of {len(runs)} seed{'s' if len(runs) > 1 else ''}":
                (len(runs), mean_over_seeds["validation"], mean_over_seeds["test"])}
        for variant, (passes, validation, test) in variants.items():
            rows.append({"model": name, "variant": variant, "network passes per image": passes,
                         "validation accuracy": partial_label_accuracy(data.validation.labels, validation),
                         "validation score": selection_score({"labels": data.validation.labels,
                                                              "probabilities": validation,
                                                              "paths": data.validation.paths}),
                         "test accuracy": masked_accuracy(test, test_labels, np.ones_like(clean)),
                         "clean-test accuracy": masked_accuracy(test, test_labels, clean)})
    return pd.DataFrame(rows).set_index(["model", "variant"])


def summary_sentence(summary: dict[str, Any]) -> str:
    """Return a model's test figures over seeds in words: accuracy with its spread and interval, macro-F1, validation
    accuracy on the dataset's own images and on the whole split, and the training time."""
    accuracy, macro = summary["test_accuracy"], summary["test_macro_f1"]
    seeds, interval = len(summary["seeds"]), f"{accuracy['ci'][0]:.2%}–{accuracy['ci'][1]:.2%}"
    own, whole = np.mean(summary["dataset_validation_accuracy"]), np.mean(summary["validation_accuracy"])
    return (f"**{accuracy['mean']:.2%}** test accuracy over {seeds} seed(s) (std {accuracy['std']:.2%}, 95% CI "
            f"{interval}), macro-F1 {macro['mean']:.3f}; validation accuracy {own:.2%} on the dataset's own images "
            f"({whole:.2%} on the whole split); {summary['seconds_per_epoch']:.1f} s per epoch, "
            f"{summary['fit_seconds']:.0f} s per run")


def readable_summaries(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """Return the model comparison as a reader sees it: one row per model, named columns, percentages with their
    95% intervals, times in seconds."""
    rows = []
    for summary in summaries:
        row = summary_row(summary)
        rows.append({"model": row["model"], "parameters": f"{row['parameters']:,}", "seeds": row["seeds"],
                     "validation accuracy: the dataset's own images": f"{row['dataset_validation_accuracy']:.2%}",
                     "validation accuracy: the whole split": f"{row['validation_accuracy']:.2%}",
                     "test accuracy (± std over seeds)": mean_with_spread(row["accuracy"], row["accuracy_std"],
                                                                          row["seeds"]),
                     "95% CI": f"{row['accuracy_low']:.2%}–{row['accuracy_high']:.2%}",
                     "macro-F1 (95% CI)":
                         f"{row['macro_f1']:.3f} ({row['macro_f1_low']:.3f}–{row['macro_f1_high']:.3f})",
                     "s per epoch": f"{row['seconds_per_epoch']:.1f}", "s per run": f"{row['fit_seconds']:.0f}"})
    return pd.DataFrame(rows).set_index("model")
