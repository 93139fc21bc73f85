"""Seeding, callbacks, fitting, timing; a run folder (model, label order, history, predictions) is saved whole."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from helpers import commands, config, interrupts
from helpers.files import staged_directory
from helpers.inputs.data import ImageSplit
from helpers.inputs.external import ExternalImages, dataset_rows
from helpers.inputs.sources import source_balance_weights
from helpers.modeling import invariance
from helpers.modeling.callbacks import (
    DATASET_VALIDATION_METRIC,
    AveragedWeights,
    DatasetValidationAccuracy,
    EpochTimer,
    RaiseWhenInterrupted,
)
from helpers.modeling.losses import PartialLabelCrossentropy, partial_label_metric
from helpers.modeling.models import AUGMENTATIONS, MODEL_BUILDERS, build_model, shipped_model
from helpers.modeling.recipes import PRECISIONS, RECIPES, SPECIFIED_RECIPE, TrainingSettings, check_precision, recipe
from helpers.modeling.run_folders import (
    HISTORY_FILE,
    LABELS_FILE,
    MODEL_FILE,
    PREDICTION_FILES,
    RUN_FILE,
    TIMINGS_FILE,
    RunFolderInUseError,
    TrainingRun,
    resumable_history,
    resume_directory,
    run_folder_lock,
    write_json,
)
from helpers.modeling.seeded_batches import BatchAugmentation, EpochSeeds, SeededBatches
from helpers.provenance import provenance


@contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build and train inside this block with the given dtype policy (one of PRECISIONS); the old one is restored."""
    check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


DATA_PARALLEL_VARIABLE = "BRAIN_MRI_DATA_PARALLEL"
# Where a run's training images are augmented; a resume state saved by a run that augmented inside the model (before
# session 28) holds another model and starts again.
AUGMENTED_BY = "input pipeline"


def enable_data_parallel() -> int:
    """Train on every accelerator (or virtual device) at once: Keras' DataParallel distribution splits each batch
    across the devices and keeps the weights in step. Needs a backend with the distribution API (JAX); returns the
    number of devices. Set $BRAIN_MRI_DATA_PARALLEL=1 (or pass --data-parallel) to have train_model do it."""
    if keras.backend.backend() != "jax":
        raise RuntimeError(f"data-parallel training needs KERAS_BACKEND=jax, not {keras.backend.backend()}")
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and the backend, and make TensorFlow ops deterministic, so equal seeds give equal weights."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def training_callbacks(settings: TrainingSettings, checkpoint_path: Path,
                       best_so_far: float | None = None) -> list[keras.callbacks.Callback]:
    """Return early stopping on the recipe's metric, learning-rate reduction on validation loss, and a
    best-on-validation checkpoint (which, in a resumed run, must beat the best before the interruption)."""
    def mode(metric: str) -> str:
        return "min" if metric.endswith("loss") else "max"

    checkpoint = keras.callbacks.ModelCheckpoint(str(checkpoint_path), monitor=settings.checkpoint_metric,
                                                 mode=mode(settings.checkpoint_metric), save_best_only=True,
                                                 initial_value_threshold=best_so_far)
    if settings.schedule == "cosine":  # the schedule sets the learning rate and the run trains every epoch
        return [checkpoint]
    return [
        keras.callbacks.EarlyStopping(monitor=settings.early_stopping_metric, mode=mode(settings.early_stopping_metric),
                                      patience=settings.early_stopping_patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=settings.reduce_learning_rate_factor,
                                          patience=settings.reduce_learning_rate_patience,
                                          min_lr=settings.minimum_learning_rate),
        checkpoint,
    ]


def compile_model(model: keras.Model, settings: TrainingSettings, steps_per_epoch: int) -> None:
    """Compile with the recipe's optimizer and loss: Adam and plain cross-entropy as specified, or AdamW on a
    warm-up + cosine schedule with the partial-label loss; either keeps a moving average of the weights when the
    recipe asks for one (AveragedWeights validates and saves it)."""
    averaging: dict[str, Any] = ({"use_ema": True, "ema_momentum": settings.ema_momentum} if settings.ema_momentum
                                 else {})
    if settings.schedule == "cosine":
        total = settings.epochs * steps_per_epoch
        warmup = max(1, int(round(settings.warmup_fraction * total)))
        schedule = keras.optimizers.schedules.CosineDecay(
            settings.learning_rate * 0.01, decay_steps=max(1, total - warmup), alpha=0.01,
            warmup_target=settings.learning_rate, warmup_steps=warmup)
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=settings.weight_decay, clipnorm=settings.clipnorm,
                                           **averaging)
    else:
        optimizer = keras.optimizers.Adam(settings.learning_rate, clipnorm=settings.clipnorm, **averaging)
    loss: PartialLabelCrossentropy | str
    if settings.external_training or settings.label_smoothing:
        loss = PartialLabelCrossentropy(settings.label_smoothing)
        metrics = [keras.metrics.MeanMetricWrapper(partial_label_metric, name="accuracy")]
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


def _as_model_input(split: ImageSplit) -> np.ndarray:
    """Return a split's images with the channel axis the models expect (uint8; the model rescales)."""
    return split.images[..., np.newaxis]


def _training_model(model_name: str, image_size: int, settings: TrainingSettings, training: ImageSplit,
                    validation: ImageSplit, external: dict[str, ExternalImages] | None
                    ) -> tuple[keras.Model, keras.Model | None, tuple[Any, Any]]:
    """Return the model to fit (built without augmentation: the input pipeline augments), the classifier inside it
    (None: the model itself) and the fit's training and validation inputs: the plain model on images, or
    helpers.modeling.invariance's wrapper on its named inputs."""
    if not (settings.source_adversary or settings.outline_supervision):
        model = build_model(model_name, image_size=image_size, augmentation="none", seed=settings.seed)
        return model, None, (_as_model_input(training), _as_model_input(validation))
    sources = invariance.training_sources(training.paths)
    model, classifier = invariance.build_training_model(
        model_name, image_size, settings.seed, len(sources), settings.source_adversary, settings.outline_supervision)
    return model, classifier, (invariance.training_inputs(training, external or {}, sources),
                               invariance.training_inputs(validation, external or {}, sources))


def _checked_image_size(model_name: str, training: ImageSplit, run_directory: Path, settings: TrainingSettings,
                        overwrite: bool) -> int:
    """Return the images' size, failing when the run folder exists (without overwrite) or the recipe wants another."""
    if run_directory.exists() and not overwrite:
        raise FileExistsError(f"{run_directory}: run folder already exists; pass --overwrite on the command "
                              "line (overwrite=True from Python) or choose another run folder")
    image_size = training.images.shape[1]
    if settings.image_size is not None and settings.image_size != image_size:
        raise ValueError(f"{model_name}: the recipe trains at {settings.image_size}x{settings.image_size} pixels but "
                         f"the images given are {image_size}x{image_size}; load the data at the recipe's size")
    return image_size


def _fit(model_name: str, image_size: int, settings: TrainingSettings, training: ImageSplit, validation: ImageSplit,
         external: dict[str, ExternalImages] | None, resume: Path, earlier: pd.DataFrame | None,
         callbacks: list[keras.callbacks.Callback]) -> tuple[keras.Model | None, float]:
    """Build and fit the model, checkpointing into the resume folder; return the classifier inside the fitted model
    (None: the model itself) and the fit's seconds, the interrupted attempts' included."""
    best_so_far = None
    if earlier is not None:
        monitored = earlier[settings.checkpoint_metric]
        best_so_far = float(monitored.min() if settings.checkpoint_metric.endswith("loss") else monitored.max())
    set_seeds(settings.seed)
    model, classifier, inputs = _training_model(model_name, image_size, settings, training, validation, external)
    compile_model(model, settings, steps_per_epoch=int(np.ceil(len(training) / settings.batch_size)))
    own = dataset_rows(validation.paths)
    dataset_validation = ([DatasetValidationAccuracy(_as_model_input(validation)[own], validation.labels[own],
                                                     classifier)]
                          if len(own) < len(validation) or settings.checkpoint_metric == DATASET_VALIDATION_METRIC
                          else [])
    started = time.perf_counter()
    weights = source_balance_weights(training.paths, training.labels) if settings.source_balance else None
    batches = SeededBatches(inputs[0], training.labels, weights, settings.batch_size, settings.seed,
                            first_epoch=0 if earlier is None else int(earlier["epoch"].max()) + 1,
                            augmentation=BatchAugmentation(settings.augmentation, settings.seed))
    averaged = [AveragedWeights()] if settings.ema_momentum else []
    model.fit(batches, epochs=settings.epochs, validation_data=(inputs[1], validation.labels),
              callbacks=[RaiseWhenInterrupted(), EpochSeeds(batches), EpochTimer(), *averaged, *dataset_validation,
                         *training_callbacks(settings, resume / MODEL_FILE, best_so_far),
                         keras.callbacks.CSVLogger(str(resume / HISTORY_FILE), append=True),
                         *[average.raw_weights_back() for average in averaged],
                         keras.callbacks.BackupAndRestore(str(resume / "backup"), delete_checkpoint=False),
                         *callbacks],
              shuffle=False, verbose=settings.verbose)  # the batches shuffle themselves, by seed and epoch
    fit_seconds = time.perf_counter() - started
    return classifier, fit_seconds + (float(earlier["seconds"].sum()) if earlier is not None else 0.0)


def _predict_splits(model: keras.Model, splits: dict[str, ImageSplit | None], staging: Path
                    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float], dict[str, float]]:
    """Predict each split given with the best model, write its predictions file; return the predictions, the seconds
    and the milliseconds per image of each split."""
    predictions, prediction_seconds, milliseconds_per_image = {}, {}, {}
    for split_name, split in splits.items():
        if split is None:
            continue
        started = time.perf_counter()
        probabilities = model.predict(_as_model_input(split), batch_size=256, verbose=0)
        prediction_seconds[split_name] = time.perf_counter() - started
        milliseconds_per_image[split_name] = 1000 * prediction_seconds[split_name] / len(split)
        predictions[split_name] = {"probabilities": probabilities.astype(np.float32),
                                   "labels": split.labels.astype(np.int64), "paths": split.paths.astype(str)}
        np.savez(staging / PREDICTION_FILES[split_name], **predictions[split_name])
    return predictions, prediction_seconds, milliseconds_per_image


def _run_history(resume: Path) -> pd.DataFrame:
    """Return the history the run folder keeps: one row per epoch (counted from 1), the epoch's seconds last."""
    history = pd.read_csv(resume / HISTORY_FILE).drop_duplicates("epoch", keep="last")
    history = history.assign(epoch=history["epoch"] + 1)  # Keras counts epochs from 0, the run folder from 1
    timed = [name for name in ("cpu_seconds", "seconds") if name in history]
    return history[["epoch", *[name for name in history.columns if name not in ("epoch", *timed)],
                    *timed]].reset_index(drop=True)


def _label_file(class_names: tuple[str, ...], image_size: int, settings: TrainingSettings) -> dict[str, Any]:
    """Return what a model needs beside it to be used: its class order, input size and preprocessing."""
    return {"class_names": list(class_names), "image_size": image_size, "preprocessing": settings.preprocessing,
            "input": "greyscale uint8 (N, size, size, 1) made by helpers.inputs.images.prepare_image with this "
                     "preprocessing; the model rescales to [0, 1] itself"}


def _skipped_record(skipped_files: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Return run.json's record of the dataset's undecodable files left out ({} when none was)."""
    if not skipped_files:
        return {}
    return {"skipped_files": {"count": len(skipped_files),
                              "files": [{"path": path, "reason": reason} for path, reason in skipped_files]}}


class RunFolderWriteError(OSError):
    """A run could not be written (a read-only folder, a full disk); the message names the folder and the reason."""


def train_model(model_name: str, training: ImageSplit, validation: ImageSplit, testing: ImageSplit | None,
                run_directory: str | os.PathLike, settings: TrainingSettings = SPECIFIED_RECIPE,
                class_names: tuple[str, ...] = config.CLASS_NAMES, data_fingerprint: str = "unknown",
                overwrite: bool = False, external_fingerprint: str | None = None,
                callbacks: list[keras.callbacks.Callback] | None = None,
                external: dict[str, ExternalImages] | None = None,
                skipped_files: tuple[tuple[str, str], ...] = (), external_test: ImageSplit | None = None
                ) -> TrainingRun:
    """Train a registered model and write its run folder; the folder appears only once everything is written.

    A recipe with a source adversary or outline supervision trains through helpers.modeling.invariance's wrapper (it
    reads the external sets' outlines). An interrupted run resumes at its next call from the last finished epoch with
    its optimizer state and schedule (resume_directory). skipped_files (path, reason) are recorded in run.json;
    external_test (the external test parts as one split) is predicted beside the test split."""
    run_directory = Path(run_directory).resolve()
    image_size = _checked_image_size(model_name, training, run_directory, settings, overwrite)
    split_sizes = {"training": len(training), "validation": len(validation),
                   "test": len(testing) if testing is not None else 0}
    resume = resume_directory(run_directory)
    with run_folder_lock(run_directory):
        earlier = resumable_history(resume, {"model": model_name, "settings": dataclasses.asdict(settings),
                                              "data_fingerprint": data_fingerprint,
                                              "external_fingerprint": external_fingerprint, "split_sizes": split_sizes,
                                              "augmented_by": AUGMENTED_BY})
        if earlier is not None:
            print(f"{run_directory.name}: resuming after epoch {int(earlier['epoch'].max()) + 1} of {settings.epochs} "
                  f"from {resume}")
        if os.environ.get(DATA_PARALLEL_VARIABLE, "") not in ("", "0"):
            enable_data_parallel()
        try:
            return _train_into(model_name, training, validation, testing, run_directory, settings, class_names,
                               data_fingerprint, external_fingerprint, callbacks, external, skipped_files,
                               external_test, image_size, split_sizes, resume, earlier)
        except OSError as error:  # a folder not writable, a full disk: no half-written checkpoint is kept either
            shutil.rmtree(resume, ignore_errors=True)
            raise RunFolderWriteError(f"{run_directory}: cannot write the run ({error.strerror or error}"
                                      f"{f': {error.filename}' if error.filename else ''}); nothing was kept") from None


def _train_into(model_name: str, training: ImageSplit, validation: ImageSplit, testing: ImageSplit | None,
                run_directory: Path, settings: TrainingSettings, class_names: tuple[str, ...], data_fingerprint: str,
                external_fingerprint: str | None, callbacks: list[keras.callbacks.Callback] | None,
                external: dict[str, ExternalImages] | None, skipped_files: tuple[tuple[str, str], ...],
                external_test: ImageSplit | None, image_size: int, split_sizes: dict[str, int], resume: Path,
                earlier: pd.DataFrame | None) -> TrainingRun:
    """Fit, predict and write the run folder through a staging folder (train_model's work once the folder is held)."""
    with staged_directory(run_directory) as staging, precision_policy(settings.precision):
        classifier, fit_seconds = _fit(model_name, image_size, settings, training, validation, external, resume,
                                       earlier, callbacks or [])
        shipping = invariance.shipped_model if classifier is not None else shipped_model
        shipping(keras.saving.load_model(resume / MODEL_FILE), model_name, image_size, settings.augmentation,
                 settings.seed).save(staging / MODEL_FILE)
        best_model = keras.saving.load_model(staging / MODEL_FILE)
        predictions, prediction_seconds, milliseconds_per_image = _predict_splits(
            best_model, {"validation": validation, "test": testing, "external_test": external_test}, staging)
        history = _run_history(resume)
        history.to_csv(staging / HISTORY_FILE, index=False)
        monitored = history[settings.checkpoint_metric]
        best_epoch = int(history["epoch"][monitored.idxmin() if settings.checkpoint_metric.endswith("loss")
                                          else monitored.idxmax()])
        timings = {"fit_seconds": fit_seconds, "epochs_run": len(history), "best_epoch": best_epoch,
                   "fit_cpu_seconds": float(history["cpu_seconds"].sum()) if "cpu_seconds" in history else None,
                   "seconds_per_epoch": float(history["seconds"].mean()),
                   "epoch_seconds": history["seconds"].tolist(), "resumed": earlier is not None,
                   "prediction_seconds": prediction_seconds,
                   "prediction_milliseconds_per_image": milliseconds_per_image}
        details = {"model": model_name, "parameters": int(best_model.count_params()),
                   "settings": dataclasses.asdict(settings), "data_fingerprint": data_fingerprint,
                   "external_fingerprint": external_fingerprint, "split_sizes": split_sizes,
                   "augmented_by": AUGMENTED_BY, **provenance(),
                   **_skipped_record(skipped_files)}
        for name, content in ((LABELS_FILE, _label_file(class_names, image_size, settings)),
                              (TIMINGS_FILE, timings), (RUN_FILE, details)):
            write_json(staging / name, content)
    shutil.rmtree(resume, ignore_errors=True)
    return TrainingRun(directory=run_directory, loaded_model=best_model, class_names=tuple(class_names),
                       image_size=image_size, history=history, timings=timings, details=details,
                       predictions=predictions)


def _parser():
    """Return the training command's argument parser."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.modeling.training", description=_main.__doc__)
    parser.add_argument("--model", default="rnn", choices=list(MODEL_BUILDERS), help="registered model name")
    parser.add_argument("--recipe", default="project", choices=list(RECIPES),
                        help="training recipe; --epochs, --batch-size and --learning-rate override its values")
    commands.add_data_arguments(parser, external=True)
    parser.add_argument("--run-dir", default=None, help="run folder (default: runs/<recipe>/<model>-seed<seed>)")
    parser.add_argument("--image-size", type=int, default=None, help="input pixels per side (default: the recipe's)")
    parser.add_argument("--augmentation", default=None, choices=list(AUGMENTATIONS), help="default: the recipe's")
    parser.add_argument("--precision", default=None, choices=PRECISIONS, help="default: the recipe's")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=config.DEFAULT_SEED)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--skip-corrupt", action="store_true",
                        help="leave undecodable images out (named on stderr and in run.json) instead of stopping")
    parser.add_argument("--data-parallel", action="store_true",
                        help="split each batch across every device (KERAS_BACKEND=jax; several GPUs, for example)")
    return parser


def _main(argv: list[str] | None = None) -> int:
    """Command line: train one model on a dataset with a named recipe and print its validation and test metrics."""
    from helpers.evaluation import classification_summary, partial_label_accuracy
    from helpers.inputs.external import load_training_data
    from helpers.inputs.images import DataError

    interrupts.command_started()
    parser = _parser()
    arguments = parser.parse_args(argv)
    names = ("image_size", "augmentation", "precision", "epochs", "batch_size", "learning_rate")
    overrides = {name: getattr(arguments, name) for name in names if getattr(arguments, name) is not None}
    settings = recipe(arguments.recipe, arguments.model, seed=arguments.seed, **overrides)
    if arguments.data_parallel:
        os.environ[DATA_PARALLEL_VARIABLE] = "1"
    try:
        loaded = load_training_data(arguments.data_dir, settings.image_size or config.DEFAULT_IMAGE_SIZE,
                                    settings.preprocessing, settings.external_training, arguments.external_dir,
                                    collections=settings.external_collections,
                                    on_error="skip" if arguments.skip_corrupt else "raise")
    except DataError as error:
        return commands.failed(error)
    for _, reason in loaded.dataset.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    run_directory = Path(arguments.run_dir or config.runs_dir() / arguments.recipe
                         / f"{arguments.model}-seed{arguments.seed}")
    try:
        run = train_model(arguments.model, loaded.training, loaded.validation, loaded.dataset.testing, run_directory,
                          settings, data_fingerprint=loaded.dataset.fingerprint, overwrite=arguments.overwrite,
                          external_fingerprint=loaded.external_fingerprint if settings.external_training else None,
                          external=loaded.external, skipped_files=tuple(loaded.dataset.skipped))
    except (FileExistsError, RunFolderInUseError, RunFolderWriteError) as error:
        return commands.failed(error)
    except OSError as error:  # before the run folder is held: its parent cannot be created or entered
        return commands.failed(f"{run_directory}: cannot write the run ({error.strerror or error})")
    except KeyboardInterrupt:
        return commands.stopped(f"{run_directory} was not written")
    validation = run.predictions["validation"]
    print(f"validation accuracy {partial_label_accuracy(validation['labels'], validation['probabilities']):.4f}")
    test = classification_summary(run.predictions["test"]["labels"], run.predictions["test"]["probabilities"],
                                  run.class_names)
    print(f"test       accuracy {test['accuracy']:.4f}  macro-F1 {test['macro_f1']:.4f}")
    print(f"{run.timings['epochs_run']} epochs, {run.timings['seconds_per_epoch']:.1f} s/epoch, "
          f"best epoch {run.timings['best_epoch']}; run folder {run.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
