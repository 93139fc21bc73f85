"""The speed page (reports/benchmarks.md and its HTML copy): the benchmark's tables, time to accuracy, input sizes,
repeatability and the prediction command's timings, written from the JSON files the measurements wrote."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd

from helpers import config
from helpers.experiments import backends, budget, gpu_check, levers, repeatability
from helpers.files import write_atomically, write_markdown_page
from helpers.modeling.recipes import SPECIFIED_RECIPE
from helpers.provenance import machine_name
from helpers.targets import EPOCH_SPEEDUP_TARGET, RNN_INFERENCE_TARGET

PREDICTION_COMMAND_FILE = "prediction_command.json"  # brain-mri-predict's wall times, one entry per machine
SPEED_PAGE = "benchmarks.md"  # reports/benchmarks.md: the tables a reader looks at, written from the JSON file
SPECIFIED_BATCH_SIZE = SPECIFIED_RECIPE.batch_size
ACCURACY_SEED = 42  # the seed shown beside the mean over the seeds both recipes trained


def prediction_command_markdown(timing: dict) -> str:
    """Return the speed page's paragraph on brain-mri-predict for one machine."""
    median, first = timing["median_seconds"], timing["first_call_seconds"]
    cpu = timing.get("median_cpu_seconds")  # timings written before CPU time was measured have none
    device = timing["provenance"].get("device", {})
    return (f"`brain-mri-predict` on one image (`{timing['model']}` model), machine `{timing['machine']}`"
            + (f" ({machine_name(device)})" if "cpu_model" in device else "")
            + f", commit `{timing['provenance']['git_commit'][:10]}`: **{median['numpy']:.2f} s** per call"
            + (f" ({cpu['numpy']:.2f} CPU-s)" if cpu else "") + " on its default "
            f"(NumPy) backend against {median['tensorflow']:.2f} s"
            + (f" ({cpu['tensorflow']:.2f} CPU-s)" if cpu else "") + " on TensorFlow's "
            f"({median['tensorflow'] / median['numpy']:.1f}x; medians of {timing['calls'] - 1} fresh processes after "
            f"a first one of {first['numpy']:.2f} s and {first['tensorflow']:.2f} s, taking turns); "
            f"{timing['warm_seconds_per_image'] * 1000:.0f} ms for one more image once the model is loaded. "
            f"The two backends' probabilities differ by at most {timing['largest_probability_difference']:.1e}.")


def common_seed_means(accuracy: dict, split_name: str = "test") -> tuple[list[str], float, float] | None:
    """Return the seeds both recipes trained and each recipe's mean accuracy over them, or None if they share none."""
    specified = accuracy.get(f"specified_{split_name}_accuracy_by_seed", {})
    project = accuracy.get(f"project_{split_name}_accuracy_by_seed", {})
    seeds = sorted(set(specified) & set(project))
    if not seeds:
        return None
    return seeds, statistics.mean(specified[seed] for seed in seeds), statistics.mean(project[seed] for seed in seeds)


def summary_table(results: dict) -> pd.DataFrame:
    """Return the printed table: per model and pipeline, seconds per epoch, images/s and the speed-up."""
    table = pd.DataFrame(results["training"])[["model", "pipeline", "augmentation", "precision", "batch_size",
                                               "seconds_per_epoch", "training_images_per_second"]]
    inference = pd.DataFrame(results["inference"]).set_index("model")
    table["inference_images_per_second"] = table["model"].map(inference["inference_images_per_second"])
    table["single_image_latency_ms"] = table["model"].map(inference["single_image_latency_milliseconds"])
    return table


def accuracy_table(results: dict) -> pd.DataFrame:
    """Return per model each recipe's seed-42 validation and test accuracy and test mean over the shared seeds."""
    rows = []
    for model_name, accuracy in results["accuracy"].items():
        row = {"model": model_name, **{key: value for key, value in accuracy.items() if not key.endswith("_by_seed")}}
        means = common_seed_means(accuracy)
        row["seeds_both_trained"] = len(means[0]) if means else 0
        row["specified_mean_test_accuracy"], row["project_mean_test_accuracy"] = means[1:] if means else (None, None)
        rows.append(row)
    return pd.DataFrame(rows)


def _speed_targets(results: dict, inference: pd.DataFrame, bounds: dict) -> list[str]:
    """Return the speed page's targets, each met or missed: epoch speed-ups, accuracy kept, rnn inference."""
    targets = []
    if results["speedup_over_specified"]:
        targets.append(f"every epoch >= {EPOCH_SPEEDUP_TARGET:.0f}x faster than the specified pipeline's: " + ", ".join(
            f"{name} {ratio:.1f}x ({'met' if ratio >= EPOCH_SPEEDUP_TARGET else 'missed'}"
            + (f"; its bare training steps allow at most {bounds[name]:.1f}x" if name in bounds else "") + ")"
            for name, ratio in results["speedup_over_specified"].items()))
    verdicts = []
    for name, accuracy in results["accuracy"].items():
        means = common_seed_means(accuracy)
        if means is None:
            continue
        seeds, specified_mean, project_mean = means
        verdict = (f"{name} {'met' if project_mean >= specified_mean else 'missed'} "
                   f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
        if len(seeds) > 1 and str(ACCURACY_SEED) in seeds:
            seed_alone = accuracy["project_test_accuracy"] >= accuracy["specified_test_accuracy"]
            verdict += f"; seed {ACCURACY_SEED} alone {'met' if seed_alone else 'missed'}"
        verdicts.append(verdict + ")")
    if verdicts:
        targets.append("test accuracy equal or better than the specified recipe's, mean over the seeds both "
                       "trained: " + ", ".join(verdicts))
    if "rnn" in inference.index:
        rnn_speed = inference.loc["rnn", "inference_images_per_second"]
        targets.append(f"rnn inference >= {RNN_INFERENCE_TARGET:,} images/s: {rnn_speed:,.0f} "
                       f"({'met' if rnn_speed >= RNN_INFERENCE_TARGET else 'missed'})")
    return targets


def speed_markdown(results: dict) -> str:
    """Return README's speed table for one machine's results, with its provenance and the targets met or missed."""
    training = pd.DataFrame(results["training"])
    if "precision" not in training:  # benchmark files written before precision was a setting
        training["precision"] = "float32"
    inference = pd.DataFrame(results["inference"]).set_index("model")
    bounds = results.get("speedup_bound", {})  # benchmark files written before the floor was timed have none
    lines = ["| model | specified pipeline | project pipeline | speed-up | bare training steps (speed-up bound) | "
             "levers, not the default (s/epoch) | inference (batch 256) | single-image latency | "
             "test accuracy, specified → project: seed 42; mean over the seeds both trained |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for model_name in inference.index:
        rows = training[training["model"] == model_name]
        default_rows = is_recipe_default(rows)
        project = rows[default_rows].iloc[0]
        levers = "; ".join(f"{_difference(row, project)} {row.seconds_per_epoch:.2f}"
                           for _, row in rows[~default_rows & (rows["pipeline"] == "project")].iterrows()) or "–"
        specified_rows = rows[rows["pipeline"] == "specified"]
        specified = (f"{specified_rows['seconds_per_epoch'].iloc[0]:.2f} s/epoch "
                     f"({results['specified_models'][model_name]}, batch {SPECIFIED_BATCH_SIZE})"
                     if len(specified_rows) else "not timed")
        speedup = results["speedup_over_specified"].get(model_name)
        floor_rows = rows[rows["pipeline"] == "floor"]
        floor = (f"{floor_rows['seconds_per_epoch'].iloc[0]:.2f} s/epoch"
                 + (f" ({bounds[model_name]:.1f}x)" if model_name in bounds else "")) if len(floor_rows) else "–"
        accuracy = results["accuracy"].get(model_name, {})
        lines.append(
            f"| {model_name} | {specified} | {project['seconds_per_epoch']:.2f} s/epoch (batch "
            f"{project['batch_size']}, {project['precision']}) | {f'{speedup:.1f}x' if speedup else '–'} | {floor} | "
            f"{levers} | "
            f"{inference.loc[model_name, 'inference_images_per_second']:,.0f} images/s | "
            f"{inference.loc[model_name, 'single_image_latency_milliseconds']:.2f} ms | "
            f"{_percent(accuracy.get('specified_test_accuracy'))} → "
            f"{_percent(accuracy.get('project_test_accuracy'))}{_mean_comparison(accuracy)} |")
    loading = results["data_loading"]
    lines.append("")
    lines.append(
        f"Machine `{results['machine']}`, commit `{results['provenance']['git_commit'][:10]}`: medians of training "
        f"epochs 2 to {results['epochs_timed']}, the pipelines of a model taking turns epoch by epoch. Loading "
        f"{loading['images']} images: {loading['first_load_seconds']:.1f} s the first time, "
        f"{loading['cached_load_seconds']:.2f} s from the cache.")
    targets = _speed_targets(results, inference, bounds)
    if targets:
        lines += ["", "Targets: " + "; ".join(targets) + "."]
    return "\n".join(lines)


def speed_page(stored: dict, command_timings: dict | None = None, budget_sections: str = "") -> str:
    """Return reports/benchmarks.md: what the benchmark times, one table per machine in the benchmark file, the
    prediction command's times, then time-to-accuracy and input size (helpers.experiments.budget)."""
    tables = "\n\n".join(speed_markdown(results) for results in stored.values())
    command = "\n\n".join(prediction_command_markdown(timing) for timing in (command_timings or {}).values())
    if command:
        tables += f"\n\n## The prediction command\n\n{command}"
    if budget_sections:
        tables += f"\n\n{budget_sections}"
    own_recipes = "".join(f"(the {model}: `{name}`) " for model, name in config.FULL_PROFILE.model_recipes)
    return f"""# Speed: the project's training pipeline against the specified one

Written by `python -m helpers.experiments.benchmark` from the JSON files beside it (`make bench`: `benchmarks.json`;
`make bench-predict`, `make time-to-accuracy`, `make sizes`, `make repeatability`: the sections of the same names); do
not edit.

The benchmark times data loading, training epochs and inference of each model in the project's pipeline against a
faithful copy of the specified one, each figure a median over epochs taken in turn (the pipelines of a model alternate
epoch by epoch, so a busy spell of a shared machine slows both). "Bare training steps" time an epoch without
augmentation or callbacks: the specified epoch over it bounds what any pipeline change can gain. The method is the
module's docstring.

The "project pipeline" is the earlier project recipe (`helpers.modeling.recipes.PROJECT_RECIPE`: batch 128, Adam 2e-3,
early stopping on validation accuracy); the study now trains with the `{config.FULL_PROFILE.recipe}` recipe
{own_recipes}(`helpers.modeling.recipes.RECIPES`), whose runs the time-to-accuracy section reads.

{tables}
"""


def is_recipe_default(rows: pd.DataFrame) -> pd.Series:
    """Return which training rows time the project recipe as it trains (not a lever, not the specified pipeline)."""
    return (rows["pipeline"] == "project") & rows["recipe_default"].eq(True)


def _difference(row: pd.Series, default: pd.Series) -> str:
    """Return how a lever's row departs from the recipe's own (batch size, augmentation, precision)."""
    changes = [f"batch {row.batch_size}" if row.batch_size != default.batch_size else "",
               row.augmentation if row.augmentation != default.augmentation else "",
               row.precision if row.precision != default.precision else ""]
    return ", ".join(change for change in changes if change) + ":"


def _mean_comparison(accuracy: dict) -> str:
    """Return '; A → B (mean of N seeds)' when both recipes trained more than one seed, else nothing."""
    means = common_seed_means(accuracy)
    if means is None or len(means[0]) < 2:
        return ""
    return f"; {_percent(means[1])} → {_percent(means[2])} (mean of {len(means[0])} seeds)"


def _percent(value: float | None) -> str:
    """Return a fraction as a percentage, or a dash where it was not measured."""
    return "–" if value is None else f"{value:.2%}"


def stored_command_timings(folder: Path = config.REPORTS_DIR) -> dict:
    """Return the stored brain-mri-predict timings (one entry per machine; {} before the first)."""
    path = folder / PREDICTION_COMMAND_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def stored_speed_page(benchmark_file: Path) -> str:
    """Return reports/benchmarks.md as the JSON files beside the benchmark file make it."""
    folder = benchmark_file.parent
    sections = [budget.stored_sections(folder), levers.stored_section(folder), repeatability.stored_section(folder),
                backends.stored_section(folder), gpu_check.stored_section(folder)]
    return speed_page(json.loads(benchmark_file.read_text()), stored_command_timings(folder),
                      "\n\n".join(section for section in sections if section))


def write_speed_page(page: Path, benchmark_file: Path) -> None:
    """Rewrite reports/benchmarks.md from a benchmark file and say whether it changed."""
    text = stored_speed_page(benchmark_file)
    changed = not page.is_file() or page.read_text() != text
    if changed:
        write_atomically(page, lambda temporary: temporary.write_text(text))
    if changed or not page.with_suffix(".html").is_file():
        write_markdown_page(page)
    print(f"{page.name} " + ("updated" if changed else "already current"))
