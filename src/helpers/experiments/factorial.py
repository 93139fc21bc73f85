"""The factorial study: every model under each recipe of the comparison, the same seeds, one run folder each
(runs/<profile>/<recipe>/<model>-seed<seed>), resumed when interrupted and reused when finished."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from helpers import commands, config, interrupts
from helpers.analysis.study import Study, StudyData
from helpers.files import write_atomically
from helpers.modeling.run_folders import MODEL_FILE, PREDICTION_FILES, load_run

# The two protocols the study compares architectures within (docs/decisions.md, "Like with like"): the benchmark
# protocol (the dataset's own images) and the external recipe.
FACTORIAL_RECIPES = ("dataset-only", "outlined")
# The mission's comparison first (the rnn, the hybrid and the cnn, three seeds under both recipes), then the
# project's own recurrent models as the budget allows.
MISSION_MODELS = ("rnn", "hybrid", "cnn")


def planned_runs(models: tuple[str, ...], recipes: tuple[str, ...], seeds: tuple[int, ...]
                 ) -> list[tuple[str, str, int]]:
    """Return (recipe, model, seed) in training order: seed by seed the mission's models, then the others."""
    first = [model for model in models if model in MISSION_MODELS]
    rest = [model for model in models if model not in MISSION_MODELS]
    return ([(name, model, seed) for seed in seeds for name in recipes for model in first]
            + [(name, model, seed) for seed in seeds for model in rest for name in recipes])


def add_external_predictions(directory: Path, data: StudyData) -> bool:
    """Write a finished run's predictions on the external test parts when it keeps its model but not them (a run
    trained before they were recorded); return whether it wrote them."""
    target = directory / PREDICTION_FILES["external_test"]
    external_test = data.external_test
    if target.is_file() or external_test is None or not (directory / MODEL_FILE).is_file():
        return False
    model = load_run(directory).model
    probabilities = model.predict(external_test.images[..., np.newaxis], batch_size=256, verbose=0)

    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:  # a handle: np.savez would add .npz to the temporary name
            np.savez(handle, probabilities=probabilities.astype(np.float32),
                     labels=external_test.labels.astype(np.int64), paths=external_test.paths.astype(str))

    write_atomically(target, write)
    return True


def adopt_published_run(study: Study, data: StudyData, model_name: str, seed: int, recipe_name: str) -> bool:
    """Copy the published run of a planned run (models/runs) into the study's run folders when the study lacks it and
    the published one was trained with the same model, recipe and data (a new machine starts from what was
    published, not from nothing); return whether it did."""
    directory = study.run_directory(model_name, seed, recipe_name)
    published = config.run_folder(config.PUBLISHED_RUNS_DIR, recipe_name, model_name, seed)
    settings = study.settings(model_name, seed, recipe_name)
    if directory.exists() or study.run_root == config.PUBLISHED_RUNS_DIR or not study.reusable(
            published, model_name, settings, data):
        return False
    shutil.copytree(published, directory)
    return True


def run_factorial(study: Study, plan: list[tuple[str, str, int]]) -> None:
    """Train every planned run the study's run folders do not already hold (a matching published run is adopted),
    printing progress; a finished run that keeps its model gains its external test predictions where it lacks them."""
    data = study.load_data()
    started = time.perf_counter()
    for recipe_name, model_name, seed in plan:
        directory = study.run_directory(model_name, seed, recipe_name)
        if adopt_published_run(study, data, model_name, seed, recipe_name):
            print(f"{config.shown_path(directory)}: the published run adopted", flush=True)
        if study.reusable(directory, model_name, study.settings(model_name, seed, recipe_name), data) \
                and add_external_predictions(directory, data):
            print(f"{config.shown_path(directory)}: external test predictions written", flush=True)
    for number, (recipe_name, model_name, seed) in enumerate(plan, start=1):
        settings = study.settings(model_name, seed, recipe_name)
        directory = study.run_directory(model_name, seed, recipe_name)
        label = f"[{number}/{len(plan)}, {(time.perf_counter() - started) / 60:.0f} min] {recipe_name} {model_name} " \
                f"seed {seed}"
        if study.reusable(directory, model_name, settings, data):
            print(f"{label}: finished earlier ({config.shown_path(directory)})", flush=True)
            continue
        print(f"{label}: training into {config.shown_path(directory)}", flush=True)
        study.train_run(model_name, settings, directory, data)


def _main(argv: list[str] | None = None) -> int:
    """Command line: train the factorial study's runs (every model under each recipe, each seed)."""
    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.factorial", description=_main.__doc__)
    parser.add_argument("--profile", default="full", choices=list(config.PROFILES))
    parser.add_argument("--models", nargs="+", default=None, help="default: the profile's models")
    parser.add_argument("--recipes", nargs="+", default=list(FACTORIAL_RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's seeds")
    commands.add_data_arguments(parser, external=True)
    arguments = parser.parse_args(argv)
    study = Study.from_parameters(profile=arguments.profile, data_dir=arguments.data_dir or "",
                                  external_dir=arguments.external_dir or "", seeds=arguments.seeds or ())
    plan = [(recipe_name, model_name, seed) for recipe_name, model_name, seed in planned_runs(
        tuple(arguments.models or study.profile.models), tuple(arguments.recipes), study.seeds)
        if arguments.seeds or seed in study.seeds_of(model_name, recipe_name)]
    try:
        run_factorial(study, plan)
    except KeyboardInterrupt:
        return commands.stopped("the unfinished run resumes at the next call")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
