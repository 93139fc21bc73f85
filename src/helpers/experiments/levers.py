"""Compute and recipe levers: each one trained on the study's own recipe and data, every seed, beside the study's runs.

`python -m helpers.experiments.levers` (`make levers`) trains, for each model and lever below and each study seed, the
full profile's recipe of that model with one change (a setting, or an environment variable read by a fresh process),
reusing a run folder trained with the same settings and data, and writes reports/levers.json: per run its epoch time
(median of the epochs after the first), training time and validation accuracy on the dataset's own images and on the
whole validation split. The study's own runs (runs/full) are the "as the study trains" rows; a lever the study has
adopted for a model (its recipe already holds the setting) has no row of its own there. A lever holds when its mean
validation accuracy over the seeds is no lower than the study's mean less the study seeds' standard deviation. Its
table is a section of reports/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from helpers import commands, config, interrupts
from helpers.files import read_measured_rows, write_measured_rows
from helpers.modeling.run_folders import HISTORY_FILE, PREDICTION_FILES, RUN_FILE, TIMINGS_FILE, check_run_folder

if TYPE_CHECKING:
    from helpers.modeling.recipes import TrainingSettings

LEVERS_FILE = "levers.json"
STUDY_LEVER = "as the study trains"
# Each lever: (changes to the model's training settings, environment variables of the process that trains it). XLA and
# the JAX backend are not among them (docs/decisions.md, "Compute levers").
COMPUTE_LEVERS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "float32": ({"precision": "float32"}, {}),
    "mixed_bfloat16": ({"precision": "mixed_bfloat16"}, {}),
    "batch 128": ({"batch_size": 128}, {}),
    "one inter-op thread": ({}, {"TF_NUM_INTEROP_THREADS": "1"}),
}
# Shorter schedules, a moving average of the weights and a higher peak (docs/decisions.md, "Recipe levers"). Each sets
# all three, so that its meaning does not move when the study's recipe of a model adopts one of them.
def _schedule(epochs: int, average: bool = False, peak: float = 2e-3) -> tuple[dict[str, Any], dict[str, str]]:
    """Return a recipe lever's settings: its epochs, its weight average's momentum (0: none) and its peak rate."""
    return {"epochs": epochs, "ema_momentum": 0.99 if average else 0.0, "learning_rate": peak}, {}


RECIPE_LEVERS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "40 epochs": _schedule(40),
    "20 epochs": _schedule(20),
    "20 epochs, weight average": _schedule(20, average=True),
    "20 epochs, weight average, peak 4e-3": _schedule(20, average=True, peak=4e-3),
    "30 epochs": _schedule(30),
    "30 epochs, weight average": _schedule(30, average=True),
    "30 epochs, weight average, peak 4e-3": _schedule(30, average=True, peak=4e-3),
}
LEVERS = {STUDY_LEVER: ({}, {}), **COMPUTE_LEVERS, **RECIPE_LEVERS}
AVERAGE_LEVER = "20 epochs, weight average"
# What `make levers` trains by default, per kind: the compute levers on the two specified models (the fastest to train
# on 2 CPU cores), every study seed; the recipe levers on the published default's kind, one seed first.
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = {
    "compute": (tuple(COMPUTE_LEVERS), ("rnn", "hybrid"), config.FULL_PROFILE.seeds),
    "recipe": (tuple(RECIPE_LEVERS), ("sequencer",), config.FULL_PROFILE.seeds[:1]),
}
PATIENCES = (3, 5, 8)  # the early stops on a validation plateau read from each run's history


def study_recipe(model_name: str) -> TrainingSettings:
    """Return the full profile's recipe of a model, its own departures included (helpers.modeling.recipes)."""
    from helpers.modeling.recipes import recipe

    return recipe(config.FULL_PROFILE.recipe_name(model_name), model_name)


def adopted(model_name: str, lever: str) -> bool:
    """Tell whether the study's recipe of a model already holds a lever's settings (so it is the study's own row)."""
    changes, environment = LEVERS[lever]
    settings = study_recipe(model_name)
    return lever != STUDY_LEVER and not environment and all(
        getattr(settings, name) == value for name, value in changes.items())


def chosen(model_name: str, lever: str) -> bool:
    """Tell whether the study adopted a lever for a model as a departure from the study's recipe (a change of
    recipes.MODEL_CHANGES or a recipe of the model's own)."""
    from helpers.modeling.recipes import RECIPES

    base = RECIPES[config.FULL_PROFILE.recipe]
    return adopted(model_name, lever) and any(getattr(base, name) != value for name, value in LEVERS[lever][0].items())


def lever_directory(model_name: str, lever: str, seed: int) -> Path:
    """Return the run folder of a model under a lever (the study's own run for STUDY_LEVER)."""
    if lever == STUDY_LEVER:
        return config.study_run(config.runs_dir() / "full", model_name, seed)
    return config.runs_dir() / "levers" / config.folder_name(lever) / f"{model_name}-seed{seed}"


def train_lever(model_name: str, lever: str, seed: int, data_dir: str = "", external_dir: str = "") -> Path:
    """Train (or reuse) one model, lever and seed with the full profile's data in this process; return its folder."""
    from helpers.analysis.study import Study

    study = Study.from_parameters(profile="full", data_dir=data_dir, external_dir=external_dir)
    data = study.load_data(progress=False)
    settings = dataclasses.replace(study.settings(model_name, seed), **LEVERS[lever][0])
    directory = lever_directory(model_name, lever, seed)
    if study.reusable(directory, model_name, settings, data):
        print(f"{model_name}, {lever}, seed {seed}: reusing {config.shown_path(directory)}")
        return directory
    print(f"{model_name}, {lever}, seed {seed}: training into {config.shown_path(directory)}", flush=True)
    study.train_run(model_name, settings, directory, data)
    return directory


def run_in_process(model_name: str, lever: str, seed: int, folders: dict[str, str]) -> Path:
    """Train one lever's run in a fresh process with the lever's environment; return its folder."""
    environment = {**os.environ, **LEVERS[lever][1]}
    command = [sys.executable, "-m", "helpers.experiments.levers", "--train-one", model_name, lever, str(seed),
               *[f"--{name.replace('_', '-')}={value}" for name, value in folders.items() if value]]
    subprocess.run(command, env=environment, check=True)
    return lever_directory(model_name, lever, seed)


def measure(directory: Path, model_name: str, lever: str) -> dict[str, Any]:
    """Return one run's row: epoch time, training time and validation accuracy (own images and whole split)."""
    from helpers.evaluation import partial_label_accuracy
    from helpers.experiments.budget import dataset_accuracy, run_machine, validation_curve
    from helpers.experiments.throughput import steady_median

    check_run_folder(directory)
    timings = json.loads((directory / TIMINGS_FILE).read_text())
    details = json.loads((directory / RUN_FILE).read_text())
    monitored = pd.read_csv(directory / HISTORY_FILE)[details["settings"].get("checkpoint_metric", "val_accuracy")]
    curve = validation_curve(directory)
    with np.load(directory / PREDICTION_FILES["validation"]) as stored:
        whole = partial_label_accuracy(stored["labels"], stored["probabilities"])
    return {"model": model_name, "lever": lever, "seed": details["settings"]["seed"], "run": str(directory),
            "backend": details["device"]["backend"], "seconds_per_epoch": steady_median(timings["epoch_seconds"]),
            "fit_seconds": timings["fit_seconds"], "epochs": timings["epochs_run"],
            "validation_accuracy": dataset_accuracy(directory / PREDICTION_FILES["validation"]),
            "whole_validation_accuracy": whole, "machine": run_machine(directory),
            "git_commit": details["git_commit"], "early_stop": {
                str(patience): {"epochs": stop, "seconds": float(curve["seconds"].iloc[stop - 1]),
                                "share_of_time": float(curve["seconds"].iloc[stop - 1] / curve["seconds"].iloc[-1]),
                                "validation_accuracy": float(curve["accuracy"].iloc[best - 1])}
                for patience in PATIENCES for stop, best in [plateau_stop(list(monitored), patience)]}}


def study_rows(model_name: str) -> list[dict[str, Any]]:
    """Return the rows of a model's study runs that are on this machine; a seed whose run is not (runs/ is local)
    keeps its stored row in reports/levers.json, and the note says so."""
    rows = []
    for seed in config.FULL_PROFILE.seeds:
        directory = lever_directory(model_name, STUDY_LEVER, seed)
        try:
            rows.append(measure(directory, model_name, STUDY_LEVER))
        except FileNotFoundError as error:
            print(f"{model_name}, {STUDY_LEVER}, seed {seed}: the stored row stays ({error})", flush=True)
    return rows


def plateau_stop(monitored: list[float], patience: int) -> tuple[int, int]:
    """Return the epoch at which early stopping with this patience ends a run whose monitored accuracy went this way,
    and the best epoch until then (both counted from 1): exact from a finished run, whose earlier epochs stopping
    would not have changed."""
    best = 0
    for index, value in enumerate(monitored):
        if value > monitored[best]:
            best = index
        elif index - best >= patience:
            return index + 1, best + 1
    return len(monitored), best + 1


def early_stop_table(rows: list[dict]) -> pd.DataFrame:
    """Return per model, lever and patience where early stopping on the checkpoint's metric would have ended the runs,
    their training time against the whole runs' and the dataset's validation accuracy at the best epoch until then."""
    table = []
    for (model_name, lever), seeds in groupby_rows([row for row in rows if "early_stop" in row]):
        for patience in PATIENCES:
            stops = [row["early_stop"][str(patience)] for row in seeds]
            accuracies = [stop["validation_accuracy"] for stop in stops]
            table.append({"model": model_name, "lever": lever, "patience": patience,
                          "stops after (epochs, per seed)": " / ".join(str(stop["epochs"]) for stop in stops),
                          "× the whole runs' time": f"{np.mean([stop['share_of_time'] for stop in stops]):.2f}x",
                          "validation, dataset's images": f"{np.mean(accuracies):.2%}" + (
                              f" ± {np.std(accuracies, ddof=1):.2%}" if len(stops) > 1 else "")})
    return pd.DataFrame(table)


def groupby_rows(rows: list[dict]) -> list[tuple[tuple[str, str], list[dict]]]:
    """Return the rows grouped by model and lever, in their order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["lever"]), []).append(row)
    return list(groups.items())


def levers_table(rows: list[dict]) -> pd.DataFrame:
    """Return the readable table: per model and lever, epoch time against the study's and accuracy over the seeds."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    grouped = frame.groupby(["model", "lever"], sort=False)
    summary = grouped.agg(seeds=("seed", "count"), epoch=("seconds_per_epoch", "median"),
                          fit=("fit_seconds", "mean"), accuracy=("validation_accuracy", "mean"),
                          spread=("validation_accuracy", "std"), whole=("whole_validation_accuracy", "mean"))
    table = []
    for (model_name, lever), row in summary.iterrows():
        base = summary.loc[(model_name, STUDY_LEVER)] if (model_name, STUDY_LEVER) in summary.index else None
        holds = "–" if base is None or lever == STUDY_LEVER else (
            "holds" if row.accuracy >= base.accuracy - (0 if np.isnan(base.spread) else base.spread) else "lost")
        table.append({"model": model_name, "lever": lever, "seeds": int(row.seeds),
                      "s / epoch": f"{row.epoch:.2f}",
                      "× study time": "–" if base is None else f"{row.epoch / base.epoch:.2f}x",
                      "training (mean)": f"{row.fit / 60:.1f} min",
                      "× study training": "–" if base is None else f"{row.fit / base.fit:.2f}x",
                      "validation, dataset's images": f"{row.accuracy:.2%}" + (
                          f" ± {row.spread:.2%}" if row.seeds > 1 else ""),
                      "validation, whole split": f"{row.whole:.2%}", "accuracy": holds})
    return pd.DataFrame(table)


def levers_markdown(results: dict) -> str:
    """Return the levers section of reports/benchmarks.md."""
    machines = sorted({row["machine"] for row in results["rows"]})
    models = dict.fromkeys(row["model"] for row in results["rows"])
    taken = [f"the {model_name}'s {lever}" for model_name in models for lever in LEVERS if chosen(model_name, lever)]
    adoption = (f" The study has adopted {' and '.join(taken)}: those rows are the study's own, and the setting it "
                "replaced is the lever." if taken else "")
    momentum = LEVERS[AVERAGE_LEVER][0]["ema_momentum"]
    return f"""## Compute and recipe levers

Each lever changes one thing in the study's recipe of a model, or one thing more than another lever (`make levers`), on
the study's data; "as the study trains" are the study's own runs. A compute lever changes how an epoch runs, a recipe
lever how many epochs run and which weights are judged ("{AVERAGE_LEVER}": the optimizer's moving average of the
weights, momentum {momentum:g}, is validated and saved). Epoch time is the median over the epochs after the first,
training time the whole fit's; validation accuracy on the dataset's own validation images (the checkpoint's), mean ±
standard deviation over the seeds, and on the whole validation split (held-out external images included). A lever's
accuracy holds when its mean is no lower than the study's less the study seeds' standard deviation. The study's runs
trained when the study ran and the levers' later, so a busy spell of the machine slows one side only: the epoch ratio is
indicative (`make bench` interleaves epochs for a clean one).{adoption} Machines: {'; '.join(machines)}.

{levers_table(results["rows"]).to_markdown(index=False)}
{early_stop_section(results["rows"])}"""


def early_stop_section(rows: list[dict]) -> str:
    """Return the early-stopping part of the levers section ('' when no row records it)."""
    table = early_stop_table(rows)
    if table.empty:
        return ""
    return f"""
### Early stop on a validation plateau

Where early stopping on the checkpoint's metric would have ended each run above, with a patience of
{', '.join(map(str, PATIENCES))} epochs without a better epoch, read from the runs' histories: exact, since stopping
changes none of the epochs before it. Time is the share of the whole runs' epochs; accuracy on the dataset's own
validation images at the best epoch until the stop (mean ± standard deviation over the seeds).

{table.to_markdown(index=False)}"""


def ensemble_sizes(runs_root: Path, models: tuple[str, ...] = config.STUDY_MODELS,
                   seeds: tuple[int, ...] = config.FULL_PROFILE.seeds) -> pd.DataFrame:
    """Return per model and number of seeds the validation accuracy on the dataset's own images of their averaged
    probabilities (mean, lowest and highest over every choice of that many seeds) and the training time they take."""
    from itertools import combinations

    from helpers.analysis.selection import own_images_accuracy

    table = []
    for model_name in models:
        folders = {seed: config.study_run(runs_root, model_name, seed) for seed in seeds}
        if not all((folder / PREDICTION_FILES["validation"]).is_file() for folder in folders.values()):
            continue
        stored = {}
        for seed, folder in folders.items():
            with np.load(folder / PREDICTION_FILES["validation"]) as predictions:
                stored[seed] = dict(predictions)
        minutes = np.mean([json.loads((folder / TIMINGS_FILE).read_text())["fit_seconds"] / 60
                           for folder in folders.values()])
        labels, paths = stored[seeds[0]]["labels"], stored[seeds[0]]["paths"]
        for count in range(1, len(seeds) + 1):
            accuracies = [own_images_accuracy(np.mean([stored[seed]["probabilities"] for seed in chosen_seeds], axis=0),
                                              labels, paths) for chosen_seeds in combinations(seeds, count)]
            table.append({"model": model_name, "seeds averaged": count,
                          "validation, dataset's images": f"{np.mean(accuracies):.2%}" + (
                              f" ({min(accuracies):.2%}–{max(accuracies):.2%})" if len(accuracies) > 1 else ""),
                          "training (sum of the seeds' runs)": f"{count * minutes:.1f} min"})
    return pd.DataFrame(table)


def ensemble_section(runs_root: Path = config.PUBLISHED_RUNS_DIR) -> str:
    """Return the part of the levers section on fewer seeds ('' without the published runs)."""
    table = ensemble_sizes(runs_root)
    if table.empty:
        return ""
    return f"""

### Fewer seeds

The published default is an ensemble: the average of its seeds' probabilities. Fewer seeds train in a fraction of the
time; what they cost, read from the published runs (`{config.shown_path(runs_root)}`): the validation accuracy of
the averaged probabilities of every choice of that many seeds (mean, and lowest–highest choice), and the mean run's
training time times the number of seeds.

{table.to_markdown(index=False)}"""


def stored_section(folder: Path = config.REPORTS_DIR) -> str:
    """Return the stored levers section for reports/benchmarks.md ('' before the first measurement)."""
    rows = read_measured_rows(folder / LEVERS_FILE)
    return levers_markdown({"rows": rows}) + ensemble_section() if rows else ""


def write_rows(rows: list[dict]) -> Path:
    """Merge measured rows into reports/levers.json (a row per model, lever and seed); `make levers` then rewrites
    the speed page (helpers.experiments.benchmark page)."""
    path = config.REPORTS_DIR / LEVERS_FILE
    write_measured_rows(path, rows, ("model", "lever", "seed"), config.PROJECT_ROOT,
                        order=lambda row: (row["model"], list(LEVERS).index(row["lever"]), row["seed"]),
                        keep=lambda row: row["lever"] in LEVERS and not adopted(row["model"], row["lever"]))
    return path


def _main(argv: list[str] | None = None) -> int:
    """Command line: measure the study's runs of each model, train it under each lever for each seed (reusing finished
    runs) and write reports/levers.json."""
    import argparse

    from helpers.inputs.images import DataError

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.levers", description=_main.__doc__)
    commands.add_data_arguments(parser, external=True)
    parser.add_argument("--kind", default="compute", choices=list(KINDS),
                        help="which levers, models and seeds to train by default (--levers, --models, --seeds choose)")
    parser.add_argument("--models", nargs="+", choices=config.STUDY_MODELS)
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS))
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--train-one", nargs=3, metavar=("MODEL", "LEVER", "SEED"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    kind_levers, kind_models, kind_seeds = KINDS[arguments.kind]
    folders = {"data_dir": arguments.data_dir or "", "external_dir": arguments.external_dir or ""}
    try:
        if arguments.train_one:
            model_name, lever, seed = arguments.train_one
            train_lever(model_name, lever, int(seed), **folders)
            return 0
        for model_name in arguments.models or kind_models:  # the table grows lever by lever: nothing finished is lost
            write_rows(study_rows(model_name))
            for lever in [name for name in arguments.levers or kind_levers
                          if name != STUDY_LEVER and not adopted(model_name, name)]:
                rows = [measure(run_in_process(model_name, lever, seed, folders), model_name, lever)
                        for seed in arguments.seeds or kind_seeds]
                print(f"{model_name}, {lever}: written to {config.shown_path(write_rows(rows))}", flush=True)
    except (DataError, FileNotFoundError, subprocess.CalledProcessError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped(commands.RUNS_KEPT)
    print(levers_table(read_measured_rows(config.REPORTS_DIR / LEVERS_FILE) or []).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
