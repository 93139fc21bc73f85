"""The mitigation table: each step against the source shortcut trained and measured on validation data.

`python -m helpers.experiments.mitigations` (`make mitigations`) trains every (model, variant) run of the ladder below
with one seed, reusing a run folder trained with the same settings and data (the full study's runs included), and writes
reports/mitigations.json: official test and clean-test accuracy, no-tumour specificity, and per external source the
tumour sensitivity, specificity and balanced accuracy on the validation images held out of its train parts, and the
pointing score. External *test* parts play no part. Rows measured before a column existed keep it empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from helpers import commands, config, interrupts
from helpers.files import read_measured_rows, write_measured_rows
from helpers.modeling.recipes import TrainingSettings, recipe
from helpers.modeling.run_folders import MODEL_FILE, load_run, run_matches
from helpers.modeling.training import train_model

MITIGATIONS_FILE = "mitigations.json"
SEED = config.DEFAULT_SEED
# The ladder: each variant adds one mitigation to the one before it, up to "+ every source on both sides"; the rungs
# after it each add one step to that one (docs/decisions.md).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "before (project recipe)": ("project", {}),
    "cosine recipe": ("robust", {"preprocessing": "resize", "augmentation": "layers", "external_training": False}),
    "+ head crop and intensity standardisation": ("robust", {"augmentation": "layers", "external_training": False}),
    "+ source-breaking augmentation": ("robust", {"external_training": False}),
    "+ mixed-source training (robust recipe)": ("robust", {}),
    "+ every source on both sides": ("robust", {"external_collections": config.ALL_COLLECTIONS}),
    "+ source-balanced sampling (both-sides recipe)": ("both-sides", {}),
    "both sides + source adversary": ("robust", {"external_collections": config.ALL_COLLECTIONS,
                                                 "source_adversary": 0.3}),
    "both sides + outline supervision": ("robust", {"external_collections": config.ALL_COLLECTIONS,
                                                    "outline_supervision": 1.0}),
    "both sides + appearance augmentation": ("robust", {"external_collections": config.ALL_COLLECTIONS,
                                                        "augmentation": "appearance"}),
}
# Which variants each model trains: the whole ladder for the two fastest models, before and after for the others (on
# 2 CPU cores the ladder of every model would take longer than the study itself).
BEFORE_AND_AFTER = ("before (project recipe)", "+ mixed-source training (robust recipe)")
LADDER = {"rnn": tuple(VARIANTS), "cnn": tuple(VARIANTS)[:5], "hybrid": BEFORE_AND_AFTER, "crnn": BEFORE_AND_AFTER,
          "sequencer": tuple(VARIANTS)[4:7]}
# Images per external validation part that the pointing score is measured on (occlusion costs 225 predictions each).
POINTING_IMAGES = 100


def variant_settings(model_name: str, variant: str, image_size: int = config.DEFAULT_IMAGE_SIZE,
                     seed: int = SEED) -> TrainingSettings:
    """Return the training settings of one rung of the ladder for a model."""
    recipe_name, changes = VARIANTS[variant]
    full_length = recipe_name in ("robust", "both-sides")
    epochs = config.get_profile("full").epochs if full_length else recipe(recipe_name).epochs
    return recipe(recipe_name, model_name, image_size=image_size, seed=seed, epochs=epochs, **changes)


def variant_directory(model_name: str, variant: str, seed: int = SEED) -> Path:
    """Return the run folder of one rung (runs/mitigations/<variant slug>/<model>-seed<seed>)."""
    return config.runs_dir() / "mitigations" / config.folder_name(variant) / f"{model_name}-seed{seed}"


def find_or_train(model_name: str, variant: str, data_dir: str | None, external_dir: str | None,
                  image_size: int = config.DEFAULT_IMAGE_SIZE, seed: int = SEED) -> Path:
    """Return the run folder of a rung, training it unless it (or the full study's same run) already exists."""
    from helpers.inputs.external import load_training_data

    settings = variant_settings(model_name, variant, image_size, seed)
    loaded = load_training_data(data_dir, image_size, settings.preprocessing, settings.external_training,
                                external_dir, progress=False, collections=settings.external_collections)
    candidates = [variant_directory(model_name, variant, seed),
                  config.study_run(config.runs_dir() / "full", model_name, seed)]
    for directory in candidates:  # a published run folder may keep no model: it cannot be measured again
        if (directory / MODEL_FILE).is_file() and run_matches(directory, model_name, settings,
                                                              data_fingerprint=loaded.dataset.fingerprint):
            print(f"{model_name}, {variant}: reusing {config.shown_path(directory)}")
            return directory
    print(f"{model_name}, {variant}: training into {config.shown_path(candidates[0])}", flush=True)
    train_model(model_name, loaded.training, loaded.validation, loaded.dataset.testing, candidates[0], settings,
                data_fingerprint=loaded.dataset.fingerprint, overwrite=True,
                external_fingerprint=loaded.external_fingerprint if settings.external_training else None,
                external=loaded.external)
    return candidates[0]


def evaluate_run(directory: Path, external_dir: str | None, data_dir: str | None = None) -> dict[str, Any]:
    """Return one run's row of the mitigation table: official test and clean-test accuracy, no-tumour specificity,
    tumour sensitivity on the external validation images (held out of the train parts), and the pointing score."""
    from helpers.analysis.explain import occlusion_maps, pointing_score
    from helpers.analysis.run_summaries import validation_accuracy
    from helpers.evaluation import notumor_specificity
    from helpers.inputs.data import load_dataset
    from helpers.inputs.duplicates import audit_duplicates
    from helpers.inputs.external import load_external_sets, split_external
    from helpers.inputs.sources import predict_sets, source_evaluation

    run = load_run(directory)
    settings = run.details["settings"]
    test = run.predictions["test"]
    predicted = test["probabilities"].argmax(axis=1)
    dataset = load_dataset(data_dir, run.image_size, progress=False)  # the duplicate audit reads the plain arrays
    clean = audit_duplicates(dataset).clean_test_flags(test["paths"])
    row: dict[str, Any] = {
        "model": run.details["model"], "run": str(directory), "seed": settings["seed"],
        "validation_accuracy": validation_accuracy(run),
        "official_test_accuracy": float((predicted == test["labels"]).mean()),
        "clean_test_accuracy": float((predicted[clean] == test["labels"][clean]).mean()),
        "notumor_specificity": notumor_specificity(test["labels"], predicted)}
    external = load_external_sets(external_dir, run.image_size, settings["preprocessing"], parts=("train",))
    held_out = {name: split_external(images)[1] for name, images in external.items()}
    predictions = predict_sets({"run": [run]}, held_out, part="train")
    for source, summary in source_evaluation(predictions, held_out, part="train")["run"].items():
        for key in ("sensitivity", "specificity", "balanced_accuracy"):
            if key in summary:
                row[f"{source} validation {key.replace('_', ' ')}"] = summary[key]["mean"]
    for name, images in held_out.items():
        if not images.masks.any():
            continue
        sample = images.take(np.arange(min(POINTING_IMAGES, len(images))))
        maps = occlusion_maps(lambda batch: run.model.predict(batch, batch_size=1024, verbose=0), sample.images)
        row[f"{name} validation pointing score"] = pointing_score(maps, sample.masks)["pointing_score"]
    return row


def build_table(data_dir: str | None = None, external_dir: str | None = None, train: bool = True,
                models: tuple[str, ...] | None = None, variants: tuple[str, ...] | None = None,
                seed: int = SEED) -> list[dict]:
    """Train (or reuse) the rungs of the ladder (all, or the given models and variants) with one seed and return one
    evaluated row per (model, variant)."""
    rows = []
    for model_name, ladder in LADDER.items():
        if models and model_name not in models:
            continue
        for variant in ladder:
            if variants and variant not in variants:
                continue
            if train:
                directory = find_or_train(model_name, variant, data_dir, external_dir, seed=seed)
            else:
                directory = variant_directory(model_name, variant, seed)
            rows.append({"variant": variant, **evaluate_run(directory, external_dir, data_dir)})
    return rows


def write_table(rows: list[dict], reports_dir: Path = config.REPORTS_DIR) -> Path:
    """Write the mitigation table with its provenance to reports/mitigations.json (atomically), keeping the rows of
    (model, variant) pairs that were not measured again, in the ladder's order."""
    from helpers.provenance import provenance

    order = {(model, variant): index for index, (model, variant) in
             enumerate((model, variant) for model, ladder in LADDER.items() for variant in ladder)}
    return write_measured_rows(reports_dir / MITIGATIONS_FILE, rows, ("model", "variant", "seed"),
                               config.PROJECT_ROOT,
                               order=lambda row: (order.get((row["model"], row["variant"]), len(order)), row["seed"]),
                               seed=SEED, provenance=provenance(),
                               note=f"seed {SEED} for every rung, further seeds where a row says so; external figures "
                                    "are on the validation images held out of the train parts")


def load_table(reports_dir: Path = config.REPORTS_DIR):
    """Return the mitigation table (a DataFrame indexed by model and variant, each figure the mean over the rung's
    seeds, "seeds" naming them), or None when it was never measured."""
    import pandas as pd

    rows = read_measured_rows(reports_dir / MITIGATIONS_FILE)
    if rows is None:
        return None
    frame = pd.DataFrame(rows).drop(columns=["run"])
    grouped = frame.groupby(["model", "variant"], sort=False)
    table = grouped.mean(numeric_only=True).drop(columns=["seed"])
    table.insert(0, "seeds", grouped["seed"].apply(lambda seeds: " ".join(str(seed) for seed in sorted(seeds))))
    return table


def _main(argv: list[str] | None = None) -> int:
    """Command line: train and measure the mitigation ladder, writing reports/mitigations.json."""
    import argparse

    from helpers.inputs.images import DataError

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.mitigations", description=_main.__doc__)
    commands.add_data_arguments(parser, external=True)
    parser.add_argument("--evaluate-only", action="store_true", help="measure the existing run folders, train none")
    parser.add_argument("--models", nargs="+", default=None, choices=list(LADDER), help="default: every model")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS), help="default: every rung")
    parser.add_argument("--seeds", nargs="+", type=int, default=[SEED], help="default: %(default)s")
    arguments = parser.parse_args(argv)
    try:
        for seed in arguments.seeds:  # the table grows seed by seed, so that an interruption loses no finished row
            rows = build_table(arguments.data_dir, arguments.external_dir, train=not arguments.evaluate_only,
                               models=tuple(arguments.models or ()), variants=tuple(arguments.variants or ()),
                               seed=seed)
            print(f"mitigation table (seed {seed}) written to {write_table(rows)}", flush=True)
    except (DataError, FileNotFoundError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped(commands.RUNS_KEPT)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
