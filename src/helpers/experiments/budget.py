"""What training time buys: time-to-accuracy against the specified recipe, and validation accuracy by input size.

Both tables are read from run folders, so that they are rebuilt without training:
- time-to-accuracy (`make time-to-accuracy`): the specified recipe's runs (runs/specified, `make reference-runs`,
  every seed) set the target, their mean best validation accuracy; the study's own seed-42 run (runs/full, `make
  study`) is timed, its history logging the accuracy on the dataset's own validation images apart from the external
  ones (callbacks.DATASET_VALIDATION_METRIC). A recipe's time is the training seconds, validation passes included,
  until its validation accuracy first reaches the target. The published default's kind is also timed to
  DEFAULT_KIND_ACCURACY, every seed of the study.
- input size (`make sizes`): the study's recipe at 96 and 128 pixels (runs/sizes/<recipe>) beside its 64-pixel run (the
  study's), each scored on the dataset's own validation images by its best-on-validation checkpoint.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.analysis.selection import own_images_accuracy
from helpers.files import write_measurement
from helpers.metrics_record import Comparison
from helpers.modeling.callbacks import DATASET_VALIDATION_METRIC
from helpers.modeling.run_folders import HISTORY_FILE, PREDICTION_FILES, RUN_FILE, TIMINGS_FILE, check_run_folder
from helpers.provenance import machine_name
from helpers.reporting.published_default import default_model
from helpers.targets import FULL_PROFILE_TARGET_MINUTES, TIME_TO_ACCURACY_SPEEDUP_TARGET

TIME_TO_ACCURACY_FILE = "time_to_accuracy.json"
SIZES_FILE = "input_sizes.json"
REFERENCE_FOLDER = "specified"  # make reference-runs
SIZES_FOLDER = "sizes"  # make sizes
STUDY_FOLDER = "full"  # make study: the study's recipe, every seed
TIMED_SEED = 42
DEFAULT_KIND_ACCURACY = 0.96  # the validation accuracy the published default's kind is timed to
REFERENCE_SEEDS = config.PROFILES["full"].seeds
SIZES = (64, 96, 128)


def validation_curve(run_directory: Path) -> pd.DataFrame:
    """Return a run's epochs with their validation accuracy on the dataset's own images and the seconds so far."""
    check_run_folder(run_directory)
    history = pd.read_csv(run_directory / HISTORY_FILE)
    metric = DATASET_VALIDATION_METRIC if DATASET_VALIDATION_METRIC in history else "val_accuracy"
    if metric == "val_accuracy" and json.loads((run_directory / RUN_FILE).read_text())["settings"].get(
            "external_training"):
        raise ValueError(f"{run_directory}: its validation holds external images but its history has no "
                         f"{DATASET_VALIDATION_METRIC} column; train it again with this version")
    return pd.DataFrame({"epoch": history["epoch"], "accuracy": history[metric],
                         "seconds": history["seconds"].cumsum()})


def seconds_to_reach(curve: pd.DataFrame, target: float) -> tuple[float, int] | None:
    """Return the training seconds and the epoch at which the curve first reaches the target, or None if never."""
    reached = curve[curve["accuracy"] >= target - 1e-9]  # the target is a mean of fractions: rounding aside
    if reached.empty:
        return None
    first = reached.iloc[0]
    return float(first["seconds"]), int(first["epoch"])


def run_machine(run_directory: Path) -> str:
    """Return the CPU model and core count a run folder was trained on."""
    return machine_name(json.loads((run_directory / RUN_FILE).read_text())["device"])


def meets_speedup_target(speedup: float | None) -> bool:
    """Tell whether a time-to-accuracy speed-up (None: never reached) meets today's target."""
    return speedup is not None and speedup >= TIME_TO_ACCURACY_SPEEDUP_TARGET


REFERENCE_FIELDS = ("reference_model", "target", "reference_seeds", "reference_seconds_by_seed", "reference_seconds",
                    "reference_seeds_reaching", "reference_run_seconds", "reference_machines")


def seed_runs(folder: Path, model_name: str) -> dict[int, Path]:
    """Return the run folders of a model that a folder holds, by study seed (the seeds not trained there left out)."""
    runs = {seed: folder / f"{model_name}-seed{seed}" for seed in REFERENCE_SEEDS}
    return {seed: run for seed, run in runs.items() if run.is_dir()}


def reference_times(model_name: str, runs_root: Path) -> dict | None:
    """Return the specified recipe's side of a model's row from its runs (runs/specified): the target, each seed's
    time to it; None when none of its seeds was trained here."""
    reference_name = config.REFERENCE_MODELS[model_name]
    references = seed_runs(runs_root / REFERENCE_FOLDER, reference_name)
    if not references:
        return None
    curves = {seed: validation_curve(folder) for seed, folder in references.items()}
    target = statistics.mean(float(curve["accuracy"].max()) for curve in curves.values())
    by_seed = {str(seed): seconds_to_reach(curve, target) for seed, curve in curves.items()}
    reached = [found[0] for found in by_seed.values() if found is not None]
    return {"reference_model": reference_name, "target": target, "reference_seeds": sorted(by_seed),
            "reference_seconds_by_seed": by_seed, "reference_seconds": statistics.mean(reached) if reached else None,
            "reference_seeds_reaching": len(reached),
            "reference_run_seconds": statistics.mean(float(curve["seconds"].iloc[-1]) for curve in curves.values()),
            "reference_machines": sorted({run_machine(folder) for folder in references.values()})}


def stored_reference(model_name: str, stored: dict | None) -> dict | None:
    """Return the specified recipe's side of a model's row as an earlier time-to-accuracy file recorded it (its runs
    need not be on this machine); None when it holds no row of this model's reference."""
    for row in (stored or {}).get("rows", []):
        if row["model"] == model_name and row["reference_model"] == config.REFERENCE_MODELS[model_name]:
            return {"reference_machines": row["machines"], **{name: row[name] for name in REFERENCE_FIELDS
                                                               if name in row}}
    return None


def model_time_to_accuracy(model_name: str, runs_root: Path, stored: dict | None = None) -> dict | None:
    """Return one model's row: the target, each specified seed's time to it (from runs/specified, else from the stored
    file's row), the study recipe's seed-42 time; None if either side is missing."""
    reference = reference_times(model_name, runs_root) or stored_reference(model_name, stored)
    timed = config.study_run(runs_root / STUDY_FOLDER, model_name, TIMED_SEED)
    if reference is None or not timed.is_dir():
        return None
    timed_curve = validation_curve(timed)
    timed_found = seconds_to_reach(timed_curve, reference["target"])
    reference_seconds = reference["reference_seconds"]
    speedup = reference_seconds / timed_found[0] if reference_seconds is not None and timed_found else None
    return {"model": model_name, **reference,
            "timed_seed": TIMED_SEED, "timed_seconds": timed_found[0] if timed_found else None,
            "timed_epoch": timed_found[1] if timed_found else None,
            "timed_run_seconds": float(timed_curve["seconds"].iloc[-1]),
            "timed_best_accuracy": float(timed_curve["accuracy"].max()),
            "speedup": speedup, "meets_target": meets_speedup_target(speedup),
            "machines": sorted({*reference["reference_machines"], run_machine(timed)})}


def time_to_accuracy(runs_root: Path, models: tuple[str, ...] = tuple(config.REFERENCE_MODELS),
                     study_metrics: Path = config.REPORTS_DIR / "metrics.json", stored: dict | None = None) -> dict:
    """Return the time-to-accuracy rows of every model trained both ways, and the full profile's time from scratch;
    the specified recipe's side of a row whose runs are not here is the stored file's (stored: its content)."""
    rows = [row for row in (model_time_to_accuracy(name, runs_root, stored) for name in models) if row is not None]
    if not rows:
        raise FileNotFoundError(f"{runs_root}: no model has both its specified-recipe runs ({REFERENCE_FOLDER}/, or a "
                                f"stored row) and the study's seed-{TIMED_SEED} run ({STUDY_FOLDER}/); run make "
                                f"reference-runs and make study, then make time-to-accuracy")
    full_profile, training_seconds, default_kind = None, {}, None
    if study_metrics.is_file():
        metrics = json.loads(study_metrics.read_text())
        timings = metrics["timings"]
        full_profile = timings.get("from_scratch_seconds", timings["total_seconds"])
        training_seconds = {row["model"]: row["seeds"] * row["fit_seconds"]
                            for row in Comparison.read(metrics).models}
        default_kind = default_kind_time(runs_root, default_model(metrics))
    from helpers.provenance import provenance
    return {"provenance": provenance(), "speedup_target": TIME_TO_ACCURACY_SPEEDUP_TARGET, "rows": rows,
            "full_profile_from_scratch_seconds": full_profile, "full_profile_training_seconds": training_seconds,
            "full_profile_target_minutes": FULL_PROFILE_TARGET_MINUTES, "default_kind": default_kind}


def default_kind_time(runs_root: Path, model_name: str, target: float = DEFAULT_KIND_ACCURACY) -> dict:
    """Return how long each of the study's runs of one model trained until its validation accuracy on the dataset's
    own images first reached the target (None where it never did)."""
    runs = seed_runs(runs_root / STUDY_FOLDER / config.FULL_PROFILE.recipe_name(model_name), model_name)
    curves = {seed: validation_curve(folder) for seed, folder in runs.items()}
    return {"model": model_name, "target": target,
            "seconds_by_seed": {str(seed): seconds_to_reach(curve, target) for seed, curve in curves.items()},
            "best_by_seed": {str(seed): float(curve["accuracy"].max()) for seed, curve in curves.items()},
            "machines": sorted({run_machine(folder) for folder in runs.values()})}


def default_kind_sentence(results: dict) -> str:
    """Return the sentence on how long the published default's kind trained until it reached its accuracy target."""
    kind = results.get("default_kind")
    if not kind or not kind["seconds_by_seed"]:
        return ""
    times = "; ".join(f"seed {seed}: " + (f"{found[0] / 60:.1f} min (epoch {found[1]})" if found
                                         else f"not reached (best {kind['best_by_seed'][seed]:.2%})")
                      for seed, found in kind["seconds_by_seed"].items())
    return (f"\n\nThe published default's kind, {kind['model']}, reaches {kind['target']:.0%} validation accuracy on "
            f"the dataset's own images after {times} (the study's runs, {'; '.join(kind['machines'])}).")


def _minutes(seconds: float | None) -> str:
    """Return seconds as minutes with one decimal, or 'not reached'."""
    return "not reached" if seconds is None else f"{seconds / 60:.1f} min"


def time_to_accuracy_table(results: dict) -> pd.DataFrame:
    """Return the readable time-to-accuracy table: target, the specified recipe's time, the study recipe's, ratio
    (judged against today's target, whatever the one recorded when it was measured)."""
    return pd.DataFrame([{
        "model": row["model"],
        "specified recipe trains": row["reference_model"],
        "target (specified best, mean)": f"{row['target']:.2%}",
        "specified: time to target": f"{_minutes(row['reference_seconds'])} "
                                     f"({row['reference_seeds_reaching']} of {len(row['reference_seeds'])} seeds)",
        "study recipe: time to target": _minutes(row["timed_seconds"])
                                        + (f" (epoch {row['timed_epoch']})" if row["timed_epoch"] else ""),
        "study recipe: best": f"{row['timed_best_accuracy']:.2%}",
        "speed-up": "–" if row["speedup"] is None else f"{row['speedup']:.1f}x",
        f"≥ {TIME_TO_ACCURACY_SPEEDUP_TARGET:g}x": "met" if meets_speedup_target(row["speedup"]) else "missed",
    } for row in results["rows"]])


def budget_sentence(results: dict) -> str:
    """Return what the full profile's time goes to (each model's training, all seeds) and what the target buys."""
    training = results.get("full_profile_training_seconds") or {}
    if not training:
        return ""
    spent = ", ".join(f"{name} {seconds / 60:.0f}" for name, seconds in training.items())
    rest = results["full_profile_from_scratch_seconds"] - sum(training.values())
    fitting, total = [], rest
    for name, seconds in sorted(training.items(), key=lambda item: item[1]):
        if (total + seconds) / 60 <= results["full_profile_target_minutes"]:
            fitting.append(name)
            total += seconds
    left_out = [name for name in training if name not in fitting]
    timed = sum(row["timed_run_seconds"] for row in results["rows"])
    return (f"Training takes, in minutes over all seeds: {spent}; the notebooks and predictions the other "
            f"{rest / 60:.0f}. The target's {results['full_profile_target_minutes']} minutes buy "
            f"{', '.join(fitting) or 'no model'}" + (f", without {', '.join(left_out)}." if left_out else ".")
            + f" The timed runs above ({', '.join(row['model'] for row in results['rows'])}; one seed each) trained "
            f"in {timed / 60:.0f} minutes together.")


def time_to_accuracy_markdown(results: dict) -> str:
    """Return the time-to-accuracy section of reports/benchmarks.md."""
    machines = sorted({machine for row in results["rows"] for machine in row["machines"]})
    full = results["full_profile_from_scratch_seconds"]
    full_sentence = "" if full is None else (
        f"\n\nThe full profile (every model, 3 seeds, every notebook) takes {full / 60:.0f} minutes from scratch "
        f"(`reports/metrics.json`); the target is {results['full_profile_target_minutes']} minutes: "
        f"{'met' if full / 60 <= results['full_profile_target_minutes'] else 'missed'}. " + budget_sentence(results))
    return f"""## Time to accuracy

Training seconds (validation passes included) until validation accuracy on the dataset's own images first reaches
the specified recipe's best, averaged over its seeds: the specified recipe (`make reference-runs`, mean over the seeds
that reach it) against the study's recipe (its seed-{results['rows'][0]['timed_seed']} run, `make study`).
Both load data the project's way, so the ratio measures the recipe; the loader's gain is the epoch table's.
Machines: {'; '.join(machines)}.

{time_to_accuracy_table(results).to_markdown(index=False)}{default_kind_sentence(results)}{full_sentence}"""


def dataset_accuracy(predictions_file: Path) -> float:
    """Return the accuracy stored in a run's predictions file on the dataset's own images."""
    with np.load(predictions_file) as stored:
        return own_images_accuracy(stored["probabilities"], stored["labels"], stored["paths"])


def size_folder(runs_root: Path, model_name: str, size: int) -> Path:
    """Return the run folder of a model trained with the study's recipe at one input size (64 pixels: the study's
    run, unless the model trains with a recipe of its own there)."""
    if size == config.DEFAULT_IMAGE_SIZE and config.FULL_PROFILE.recipe_name(model_name) == config.FULL_PROFILE.recipe:
        return config.study_run(runs_root / STUDY_FOLDER, model_name, TIMED_SEED)
    return runs_root / SIZES_FOLDER / config.FULL_PROFILE.recipe / f"{model_name}-{size}px-seed{TIMED_SEED}"


def input_sizes(runs_root: Path, models: tuple[str, ...] = config.STUDY_MODELS) -> dict:
    """Return, per model and input size trained, the validation accuracy and the training time."""
    rows = []
    for model_name in models:
        for size in SIZES:
            folder = size_folder(runs_root, model_name, size)
            if not folder.is_dir():
                continue
            check_run_folder(folder)
            timings = json.loads((folder / TIMINGS_FILE).read_text())
            rows.append({"model": model_name, "image_size": size, "seed": TIMED_SEED,
                         "validation_accuracy": dataset_accuracy(folder / PREDICTION_FILES["validation"]),
                         "seconds_per_epoch": timings["seconds_per_epoch"], "fit_seconds": timings["fit_seconds"],
                         "epochs": timings["epochs_run"], "machine": run_machine(folder)})
    from helpers.provenance import provenance
    return {"provenance": provenance(), "recipe": config.FULL_PROFILE.recipe, "rows": rows}


def input_sizes_table(results: dict) -> pd.DataFrame:
    """Return the readable input-size table: validation accuracy and time against the model's 64-pixel run."""
    table = pd.DataFrame(results["rows"])
    if table.empty:
        return table
    base = table[table["image_size"] == config.DEFAULT_IMAGE_SIZE].set_index("model")["fit_seconds"]
    return pd.DataFrame({
        "model": table["model"], "pixels": table["image_size"],
        "validation accuracy": table["validation_accuracy"].map("{:.2%}".format),
        "s / epoch": table["seconds_per_epoch"].map("{:.1f}".format),
        "training": table["fit_seconds"].map(lambda seconds: f"{seconds / 60:.1f} min"),
        "× 64 px time": [f"{seconds / base[model]:.1f}x" if model in base else "–"
                         for model, seconds in zip(table["model"], table["fit_seconds"])]})


def input_sizes_markdown(results: dict) -> str:
    """Return the input-size section of reports/benchmarks.md."""
    machines = sorted({row["machine"] for row in results["rows"]})
    recipe = (f"The {results['recipe']} recipe" if "recipe" in results else
              f"The study's recipe at commit {results['provenance']['git_commit'][:10]}")
    return f"""## Input size

{recipe} at each input size, seed {TIMED_SEED}, scored on the dataset's own validation images by its
best-on-validation checkpoint (`make sizes`). Machines: {'; '.join(machines)}.

{input_sizes_table(results).to_markdown(index=False)}"""


def save(results: dict, path: Path) -> None:
    """Write results as JSON atomically, unless only their provenance would change."""
    write_measurement(path, results)


def stored_sections(folder: Path = config.REPORTS_DIR) -> str:
    """Return the stored time-to-accuracy and input-size sections for reports/benchmarks.md ('' before the first)."""
    sections = []
    for name, markdown in ((TIME_TO_ACCURACY_FILE, time_to_accuracy_markdown), (SIZES_FILE, input_sizes_markdown)):
        path = folder / name
        if path.is_file():
            sections.append(markdown(json.loads(path.read_text())))
    return "\n\n".join(sections)
