"""Speed benchmark: data loading, training epochs and inference, the project's pipeline against the specified one."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from helpers import commands, config, interrupts
from helpers.experiments import budget, throughput
from helpers.experiments.speed_report import (
    PREDICTION_COMMAND_FILE,
    SPEED_PAGE,
    accuracy_table,
    is_recipe_default,
    prediction_command_markdown,
    stored_command_timings,
    summary_table,
    write_speed_page,
)
from helpers.files import write_atomically
from helpers.inputs.data import MRIDataset, load_dataset, split_validation
from helpers.inputs.images import DataError
from helpers.modeling.callbacks import EpochTimer
from helpers.modeling.models import AUGMENTATIONS, MODEL_BUILDERS, build_model
from helpers.modeling.recipes import PRECISIONS, PROJECT_RECIPE, SPECIFIED_RECIPE, TrainingSettings, recipe
from helpers.modeling.training import precision_policy, set_seeds
from helpers.provenance import machine_key as provenance_machine_key
from helpers.provenance import provenance

BENCHMARK_FILE = "benchmarks.json"
SPECIFIED_BATCH_SIZE = SPECIFIED_RECIPE.batch_size
# The model the specified pipeline trains for each project model. The specification gives no CNN layers, so its
# CNN is this project's first 1.5M-parameter design (cnn_wide); the project's cnn does a quarter of its convolutions.
SPECIFIED_MODELS = {"rnn": "rnn", "hybrid": "hybrid", "cnn": "cnn_wide"}
# Where the accuracy columns come from: the run folders of the specified recipe (make reference-runs) and of the full
# study, one per study seed; the verdict compares the mean over the seeds both recipes trained, and seed 42 (for long
# the only reference run) is shown beside it.
ACCURACY_SEEDS = config.PROFILES["full"].seeds
ACCURACY_SEED = 42
INFERENCE_BATCH_SIZE = 256
# Inference throughput is the median of several timed passes over the test images, after one untimed pass that
# traces every batch shape (the last batch is partial): one pass lasts well under a second on 2 cores, and a single
# timed pass that includes the partial batch's tracing halved the rnn's figure.
INFERENCE_PASSES = 5
LATENCY_CALLS = 50


def time_data_loading(data_dir: str | os.PathLike | None, image_size: int) -> dict[str, float]:
    """Return the seconds of a first load (empty cache: hash and decode every file) and of a cached load."""
    previous = os.environ.get(config.CACHE_DIR_VARIABLE)
    with tempfile.TemporaryDirectory() as empty_cache:
        os.environ[config.CACHE_DIR_VARIABLE] = empty_cache
        try:
            first = load_dataset(data_dir, image_size, progress=False)
            cached = load_dataset(data_dir, image_size, progress=False)
        finally:
            if previous is None:
                os.environ.pop(config.CACHE_DIR_VARIABLE, None)
            else:
                os.environ[config.CACHE_DIR_VARIABLE] = previous
    return {"first_load_seconds": first.load_seconds, "cached_load_seconds": cached.load_seconds,
            "images": len(first.training) + len(first.testing)}


def specified_datasets(root: Path, image_size: int, batch_size: int = SPECIFIED_BATCH_SIZE, seed: int = 42):
    """Return the specification's input pipeline: tf.data datasets that decode the Training JPEGs on every epoch."""
    return keras.utils.image_dataset_from_directory(
        root / "Training", labels="inferred", label_mode="int", class_names=list(config.CLASS_NAMES),
        color_mode="grayscale", batch_size=batch_size, image_size=(image_size, image_size), shuffle=True, seed=seed,
        validation_split=config.DEFAULT_VALIDATION_FRACTION, subset="both", verbose=False)


def _compiled(model_name: str, image_size: int, settings: TrainingSettings) -> keras.Model:
    """Build and compile a model the way training does with the given recipe."""
    with precision_policy(settings.precision):
        model = build_model(model_name, image_size=image_size, augmentation=settings.augmentation, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return model


@dataclass
class TimedPipeline:
    """One training pipeline under test: what it is (model, pipeline, batch size, ...) and how to train one epoch."""

    description: dict
    train_one_epoch: Callable[[int, EpochTimer], None]
    model: keras.Model | None = None


def specified_pipeline(model_name: str, root: Path, image_size: int) -> TimedPipeline:
    """Return the specified pipeline: tf.data from the folders (decoding every epoch), augmentation in the model,
    batch 32."""
    training, validation = specified_datasets(root, image_size)
    set_seeds(0)
    model = _compiled(SPECIFIED_MODELS.get(model_name, model_name), image_size, SPECIFIED_RECIPE)

    def train_one_epoch(epoch: int, timer: EpochTimer) -> None:
        # image_dataset_from_directory already reshuffles every epoch
        model.fit(training, validation_data=validation, initial_epoch=epoch, epochs=epoch + 1, callbacks=[timer],
                  shuffle=False, verbose=0)

    return TimedPipeline({"model": model_name, "pipeline": "specified", "batch_size": SPECIFIED_BATCH_SIZE,
                          "augmentation": SPECIFIED_RECIPE.augmentation, "precision": SPECIFIED_RECIPE.precision,
                          "image_size": image_size,
                          "images": len(training.file_paths)}, train_one_epoch, model)


def project_pipeline(model_name: str, dataset: MRIDataset, settings: TrainingSettings) -> TimedPipeline:
    """Return the project's pipeline: decoded arrays in memory, the recipe's batch size and augmentation."""
    training, validation = split_validation(dataset.training)
    set_seeds(0)
    model = _compiled(model_name, dataset.image_size, settings)

    def train_one_epoch(epoch: int, timer: EpochTimer) -> None:
        model.fit(training.images[..., np.newaxis], training.labels, batch_size=settings.batch_size,
                  initial_epoch=epoch, epochs=epoch + 1, callbacks=[timer], verbose=0,
                  validation_data=(validation.images[..., np.newaxis], validation.labels))

    return TimedPipeline({"model": model_name, "pipeline": "project", "batch_size": settings.batch_size,
                          "augmentation": settings.augmentation, "precision": settings.precision,
                          "image_size": dataset.image_size,
                          "images": len(training)}, train_one_epoch, model)


# Levers measured on 2 CPU cores and not kept (rnn, project recipe, epochs taking turns, medians in s/epoch):
# augmentation moved out of the model into a parallel, prefetched tf.data map 2.82 against 2.49 in the model (the
# training step already keeps both cores busy, so there is nothing to overlap with); one intra-op thread 2.56-2.65 and
# one inter-op thread 4.24-4.77 against 2.39-2.41 with TensorFlow's defaults; batch 256 2.52 and 512 2.25 against
# 2.51 at 128; TensorFlow's fused BlockLSTMV2 kernel took 45 ms for one LSTM direction's forward and backward pass
# at batch 128 against 21 ms for Keras' LSTM.
def compute_floor_pipeline(model_name: str, dataset: MRIDataset, settings: TrainingSettings) -> TimedPipeline:
    """Return the model's bare training steps: the project pipeline without its augmentation and validation.

    What is left is fitting the in-memory training arrays at the recipe's batch size and precision, which no input
    pipeline can avoid; so the specified pipeline's epoch over this one bounds the speed-up that changes to the
    pipeline alone can reach.
    """
    training, _ = split_validation(dataset.training)
    set_seeds(0)
    model = _compiled(model_name, dataset.image_size, dataclasses.replace(settings, augmentation="none"))

    def train_one_epoch(epoch: int, timer: EpochTimer) -> None:
        model.fit(training.images[..., np.newaxis], training.labels, batch_size=settings.batch_size,
                  initial_epoch=epoch, epochs=epoch + 1, callbacks=[timer], verbose=0)

    return TimedPipeline({"model": model_name, "pipeline": "floor", "batch_size": settings.batch_size,
                          "augmentation": "none", "precision": settings.precision, "image_size": dataset.image_size,
                          "images": len(training)}, train_one_epoch, model)


def time_interleaved(pipelines: list[TimedPipeline], epochs: int) -> list[dict]:
    """Train the pipelines one epoch each in turn, epochs times; return one row per pipeline.

    On a shared machine speed comes and goes in spells (the same epoch takes 5 s or 10 s); taking turns puts every
    pipeline through the same spells, so their ratio does not depend on which one happened to run in a slow one.
    """
    timers = [EpochTimer() for _ in pipelines]
    for epoch in range(epochs):
        for pipeline, timer in zip(pipelines, timers):
            pipeline.train_one_epoch(epoch, timer)
    return [_epoch_row(pipeline.description, timer.seconds) for pipeline, timer in zip(pipelines, timers)]


def _epoch_row(description: dict, seconds: list[float]) -> dict:
    """Return one training row: the pipeline's description, epoch times, steady seconds per epoch and images/s.

    Steady state is the median of the epochs after the first (which traces the graph): single epochs of the same
    run vary by up to 2x, and the median does not follow one slow epoch.
    """
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    row = {key: value for key, value in description.items() if key != "images"}
    return {**row, "epoch_seconds": seconds, "seconds_per_epoch": steady,
            "training_images_per_second": description["images"] / steady}


def time_inference(model_name: str, images: np.ndarray, augmentation: str = "none", precision: str = "float32") -> dict:
    """Return inference images/s at batch 256 over the given images (first pass and the median of the steady passes)
    and the median single-image latency."""
    with precision_policy(precision):
        model = build_model(model_name, image_size=images.shape[1], augmentation=augmentation, seed=0)
    batch = images[..., np.newaxis]
    passes = []
    for _ in range(1 + INFERENCE_PASSES):
        started = time.perf_counter()
        model.predict(batch, batch_size=INFERENCE_BATCH_SIZE, verbose=0)
        passes.append(time.perf_counter() - started)
    throughput = len(batch) / statistics.median(passes[1:])
    single = batch[:1]
    model.predict_on_batch(single)
    latencies = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        model.predict_on_batch(single)
        latencies.append(time.perf_counter() - started)
    return {"model": model_name, "image_size": int(images.shape[1]), "inference_images_per_second": throughput,
            "first_pass_images_per_second": len(batch) / passes[0],
            "single_image_latency_milliseconds": 1000 * statistics.median(latencies)}


def recipe_accuracies(model_name: str, runs_root: Path, seeds: tuple[int, ...] = ACCURACY_SEEDS) -> dict:
    """Return per recipe and split the accuracy of each seed run found (by seed) and of seed 42 (None: untrained)."""
    specified_model = SPECIFIED_MODELS.get(model_name, model_name)
    accuracies: dict = {}
    for recipe_name, runs_folder, run_name in (("specified", "specified", specified_model),
                                               ("project", "full", model_name)):
        for split_name in ("validation", "test"):
            by_seed = {}
            for seed in seeds:
                folder = (runs_root / runs_folder / f"{run_name}-seed{seed}" if recipe_name == "specified" else
                          config.study_run(runs_root / runs_folder, run_name, seed))
                path = folder / f"predictions_{split_name}.npz"
                if path.is_file():
                    by_seed[str(seed)] = budget.dataset_accuracy(path)
            accuracies[f"{recipe_name}_{split_name}_accuracy"] = by_seed.get(str(ACCURACY_SEED))
            accuracies[f"{recipe_name}_{split_name}_accuracy_by_seed"] = by_seed
    return accuracies


def run_benchmark(data_dir: str | os.PathLike | None = None, models: tuple[str, ...] = ("rnn", "hybrid", "cnn"),
                  epochs: int = 5, project_batch_sizes: tuple[int, ...] = (PROJECT_RECIPE.batch_size,),
                  include_specified: bool = True, image_size: int = config.DEFAULT_IMAGE_SIZE,
                  runs_root: Path | None = None, other_augmentations: tuple[str, ...] = (),
                  other_precisions: tuple[str, ...] = ()) -> dict:
    """Measure loading, training and inference; return the results with the machine, backend and device.

    The speed-up compares the specified pipeline with the project recipe as it trains (its own batch size and
    augmentation and precision); rows for other batch sizes, augmentations and precisions are measured levers and
    take no part in it. The floor row times the recipe's bare training steps (compute_floor_pipeline); the
    specified epoch over it is the speed-up bound.
    """
    loading = time_data_loading(data_dir, image_size)
    dataset = load_dataset(data_dir, image_size, progress=False)
    training_rows, inference_rows = [], []
    for model_name in models:
        default = recipe("project", model_name)
        batch_sizes = list(dict.fromkeys([default.batch_size, *project_batch_sizes]))  # the recipe's own first
        variants: list[dict[str, Any]] = [{"batch_size": batch_size} for batch_size in batch_sizes]
        variants += [{"augmentation": augmentation} for augmentation in other_augmentations
                     if augmentation != default.augmentation]
        variants += [{"precision": precision} for precision in other_precisions if precision != default.precision]
        pipelines = [specified_pipeline(model_name, dataset.root, image_size)] if include_specified else []
        for changes in variants:
            settings = recipe("project", model_name, **changes)
            pipeline = project_pipeline(model_name, dataset, settings)
            pipeline.description["recipe_default"] = settings == default
            pipelines.append(pipeline)
        pipelines.append(compute_floor_pipeline(model_name, dataset, default))
        print(f"{model_name}: {len(pipelines)} pipelines, {epochs} epochs each, taking turns", flush=True)
        for row in time_interleaved(pipelines, epochs):
            training_rows.append(row)
            print(_describe(row), flush=True)
        inference_rows.append(time_inference(model_name, dataset.testing.images, default.augmentation,
                                             default.precision))
    table = pd.DataFrame(training_rows)
    speedups, bounds = {}, {}
    if include_specified:
        for model_name in models:
            rows = table[table["model"] == model_name]
            specified = rows.loc[rows["pipeline"] == "specified", "seconds_per_epoch"].iloc[0]
            project = rows.loc[is_recipe_default(rows), "seconds_per_epoch"].iloc[0]
            floor = rows.loc[rows["pipeline"] == "floor", "seconds_per_epoch"].iloc[0]
            speedups[model_name] = float(specified / project)
            bounds[model_name] = float(specified / floor)
    details = provenance()
    runs_root = runs_root or config.runs_dir()
    accuracy = {model_name: recipe_accuracies(model_name, runs_root) for model_name in models}
    return {"machine": provenance_machine_key(details), "provenance": details, "data_fingerprint": dataset.fingerprint,
            "epochs_timed": epochs, "specified_models": {name: SPECIFIED_MODELS.get(name, name) for name in models},
            "data_loading": loading, "training": training_rows, "speedup_over_specified": speedups,
            "speedup_bound": bounds,
            "inference": inference_rows, "accuracy": accuracy}


def _describe(row: dict) -> str:
    """Return one progress line for a timed training row."""
    return (f"{row['model']:7s} {row['pipeline']:9s} {row['augmentation']:6s} {row['precision']:14s} "
            f"batch {row['batch_size']:4d}: "
            f"{row['seconds_per_epoch']:6.2f} s/epoch, {row['training_images_per_second']:7.0f} images/s")


def save_benchmark(results: dict, path: Path) -> None:
    """Merge one machine's results into the benchmark file (other machines' entries are kept)."""
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored[results["machine"]] = results
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(stored, indent=2) + "\n"))


def refresh_accuracy(path: Path, runs_root: Path) -> None:
    """Reread every stored machine's recipe accuracies from the run folders (they change when runs are retrained,
    the timings do not), recording when and at which commit."""
    stored = json.loads(path.read_text())
    details = provenance()
    for results in stored.values():
        models = results["specified_models"]
        results["accuracy"] = {model_name: recipe_accuracies(model_name, runs_root) for model_name in models}
        results["accuracy_read"] = {"created": details["created"], "git_commit": details["git_commit"]}
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(stored, indent=2) + "\n"))


def _parser():
    """Return the command line: one subcommand per job, `run` (the timing) when none is named."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.benchmark", description=_main.__doc__)
    jobs = parser.add_subparsers(dest="job", metavar="{run,page,refresh-accuracy,prediction-command,time-to-accuracy,"
                                                   "input-sizes}")
    run = jobs.add_parser("run", help="time loading, training epochs and inference (the default)")
    commands.add_data_arguments(run)
    run.add_argument("--models", nargs="+", default=["rnn", "hybrid", "cnn"], choices=list(MODEL_BUILDERS))
    run.add_argument("--epochs", type=int, default=5,
                     help="epochs per model and pipeline; the median of all but the first is reported")
    run.add_argument("--batch-sizes", type=int, nargs="+", default=[PROJECT_RECIPE.batch_size],
                     help="project batch sizes to time (at the project recipe's learning rate)")
    run.add_argument("--other-augmentations", nargs="*", default=[], choices=list(AUGMENTATIONS),
                     help="also time the project recipe with these augmentations (levers, not in the speed-up)")
    run.add_argument("--other-precisions", nargs="*", default=[], choices=PRECISIONS,
                     help="also time the project recipe at these precisions (levers, not in the speed-up)")
    run.add_argument("--no-specified", action="store_true", help="skip the specified tf.data pipeline")
    run.add_argument("--output", default=str(config.REPORTS_DIR / BENCHMARK_FILE))
    jobs.add_parser("page", help="only rewrite reports/benchmarks.md from the stored JSON files (no timing)")
    jobs.add_parser("refresh-accuracy", help="only reread the recipes' accuracies from the run folders into "
                                             "reports/benchmarks.json and reports/benchmarks.md (no timing)")
    command = jobs.add_parser("prediction-command",
                              help="only time brain-mri-predict on one image in fresh processes, NumPy against "
                                   "TensorFlow, into reports/prediction_command.json and reports/benchmarks.md")
    command.add_argument("image", nargs="?", default=None, help="default: a generated 512x512 phantom")
    jobs.add_parser("time-to-accuracy", help="only read the time-to-accuracy table from runs/specified (else the "
                                             "stored file's rows) and the study's runs/full into "
                                             "reports/time_to_accuracy.json and reports/benchmarks.md")
    jobs.add_parser("input-sizes", help="only read the input-size table from the runs at 64, 96 and 128 pixels "
                                        "(make sizes) into reports/input_sizes.json and reports/benchmarks.md")
    return parser, run


def _time_pipelines(arguments, page: Path, published: Path) -> None:
    """Run the timing benchmark, save it, and print its tables."""
    results = run_benchmark(arguments.data_dir, tuple(arguments.models), arguments.epochs,
                            tuple(arguments.batch_sizes), not arguments.no_specified,
                            other_augmentations=tuple(arguments.other_augmentations),
                            other_precisions=tuple(arguments.other_precisions))
    output = Path(arguments.output)
    save_benchmark(results, output)
    if output.resolve() == published.resolve():
        write_speed_page(page, output)
    loading = results["data_loading"]
    print(f"\n{results['machine']}: first load {loading['first_load_seconds']:.2f} s, "
          f"cached {loading['cached_load_seconds']:.2f} s ({loading['images']} images)")
    print(summary_table(results).to_string(index=False, float_format=lambda value: f"{value:.2f}"))
    for model_name, ratio in results["speedup_over_specified"].items():
        print(f"{model_name}: the project recipe's epoch is {ratio:.1f}x faster than the specified pipeline's "
              f"({results['specified_models'][model_name]} at batch {SPECIFIED_BATCH_SIZE})")
    print("\naccuracy of the runs (runs/specified from make reference-runs, runs/full from make study; empty where "
          "not trained):")
    print(accuracy_table(results).to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    print(f"written to {arguments.output}")


def _run_job(arguments, page: Path, published: Path) -> None:
    """Do the job a subcommand names; every job ends by rewriting the speed page."""
    if arguments.job == "time-to-accuracy":
        stored_file = config.REPORTS_DIR / budget.TIME_TO_ACCURACY_FILE
        stored = json.loads(stored_file.read_text()) if stored_file.is_file() else None
        results = budget.time_to_accuracy(config.runs_dir(), stored=stored)
        budget.save(results, stored_file)
        print(budget.time_to_accuracy_table(results).to_string(index=False))
    elif arguments.job == "input-sizes":
        results = budget.input_sizes(config.runs_dir())
        budget.save(results, config.REPORTS_DIR / budget.SIZES_FILE)
        print(budget.input_sizes_table(results).to_string(index=False))
    elif arguments.job == "prediction-command":
        timing = throughput.time_prediction_command(Path(arguments.image) if arguments.image
                                                    else throughput.phantom_image(Path(tempfile.mkdtemp())))
        stored = {**stored_command_timings(), timing["machine"]: timing}
        write_atomically(config.REPORTS_DIR / PREDICTION_COMMAND_FILE,
                         lambda temporary: temporary.write_text(json.dumps(stored, indent=2) + "\n"))
        print(prediction_command_markdown(timing))
    elif arguments.job == "refresh-accuracy":
        refresh_accuracy(published, config.runs_dir())
    elif arguments.job == "run":
        _time_pipelines(arguments, page, published)
        return
    write_speed_page(page, published)


def _main(argv: list[str] | None = None) -> int:
    """Command line: time the pipelines (run), or one of the jobs that read stored runs and timings into
    reports/benchmarks.md."""
    interrupts.command_started()
    parser, run = _parser()
    arguments = parser.parse_args(argv)
    if arguments.job is None:
        arguments = run.parse_args([], namespace=arguments)
        arguments.job = "run"
    try:
        _run_job(arguments, config.REPORTS_DIR / SPEED_PAGE, config.REPORTS_DIR / BENCHMARK_FILE)
    except (DataError, FileNotFoundError, RuntimeError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped("the reports were left as they were")
    return commands.EXIT_DONE


if __name__ == "__main__":
    raise SystemExit(_main())
