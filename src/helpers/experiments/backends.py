"""The Keras backends side by side: seconds an epoch of each model on TensorFlow and on JAX, the two taking turns epoch
by epoch in two worker processes, and the validation accuracy each reaches after the same epochs (`make
bench-backends` -> reports/backends.json). A worker trains as helpers.modeling.training does: seeded batches, the
recipe's augmentation in the input pipeline, the recipe's optimizer and loss."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from helpers import commands, config, interrupts
from helpers.files import write_atomically, write_measured_rows

BACKENDS = ("tensorflow", "jax")
BACKENDS_FILE = "backends.json"
RECIPE = "dataset-only"
MODELS = config.STUDY_MODELS
RESULT_PREFIX = "RESULT "
SEED = config.DEFAULT_SEED


def export_arrays(path: Path, data_dir: str | os.PathLike | None = None, recipe_name: str = RECIPE,
                  image_size: int = config.DEFAULT_IMAGE_SIZE) -> Path:
    """Write the dataset's training and validation images and labels (the study's split, the recipe's preprocessing)
    to one .npz file a worker or a GPU machine reads without the images or their decoder."""
    from helpers.inputs.data import load_dataset, split_validation
    from helpers.modeling.recipes import recipe

    dataset = load_dataset(data_dir, image_size=image_size, preprocessing=recipe(recipe_name).preprocessing,
                           progress=False)
    training, validation = split_validation(dataset.training, seed=config.DEFAULT_SEED)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, training_images=training.images, training_labels=training.labels,
                     validation_images=validation.images, validation_labels=validation.labels,
                     fingerprint=np.array(dataset.fingerprint))

    write_atomically(path, write)
    return path


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Return the arrays export_arrays wrote, by name."""
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


class EpochTrainer:
    """One model compiled with a recipe and trained one epoch at a time as helpers.modeling.training trains it,
    each epoch timed (wall and CPU seconds)."""

    def __init__(self, model_name: str, arrays: dict[str, np.ndarray], recipe_name: str = RECIPE,
                 seed: int = SEED, batch_size: int | None = None, augmentation: str | None = None) -> None:
        from helpers.modeling.models import build_model
        from helpers.modeling.recipes import recipe
        from helpers.modeling.seeded_batches import BatchAugmentation, EpochSeeds, SeededBatches
        from helpers.modeling.training import compile_model, set_seeds

        changes = {"seed": seed, **({"batch_size": batch_size} if batch_size else {}),
                   **({"augmentation": augmentation} if augmentation else {})}
        self.settings = recipe(recipe_name, model_name, **changes)
        self.validation = (arrays["validation_images"][..., np.newaxis], np.asarray(arrays["validation_labels"]))
        images, labels = arrays["training_images"][..., np.newaxis], np.asarray(arrays["training_labels"])
        set_seeds(seed)
        self.model = build_model(model_name, image_size=images.shape[1], augmentation="none", seed=seed)
        compile_model(self.model, self.settings, steps_per_epoch=int(np.ceil(len(labels) / self.settings.batch_size)))
        self.batches = SeededBatches(images, labels, None, self.settings.batch_size, seed,
                                     augmentation=BatchAugmentation(self.settings.augmentation, seed))
        self.callbacks = [EpochSeeds(self.batches)]
        self.epochs_run = 0

    def epoch(self) -> dict[str, float]:
        """Train one more epoch; return its wall and CPU seconds."""
        started, cpu_started = time.perf_counter(), time.process_time()
        self.model.fit(self.batches, initial_epoch=self.epochs_run, epochs=self.epochs_run + 1,
                       callbacks=self.callbacks, shuffle=False, verbose=0)
        self.epochs_run += 1
        return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}

    def validation_accuracy(self) -> float:
        """Return the accuracy on the validation images after the epochs run so far."""
        probabilities = self.model.predict(self.validation[0], batch_size=256, verbose=0)
        return float(np.mean(np.argmax(probabilities, axis=1) == self.validation[1]))


def _worker(arguments: argparse.Namespace) -> int:
    """Serve one trainer over stdin/stdout: 'epoch' trains one epoch, 'accuracy' measures, 'quit' ends."""
    import keras

    trainer = EpochTrainer(arguments.model, load_arrays(arguments.arrays), arguments.recipe, arguments.seed,
                           augmentation=arguments.augmentation)
    print(RESULT_PREFIX + json.dumps({"backend": keras.backend.backend()}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        answer: dict[str, Any] = (trainer.epoch() if command == "epoch"
                                  else {"validation_accuracy": trainer.validation_accuracy()})
        print(RESULT_PREFIX + json.dumps(answer), flush=True)
    return 0


class _Worker:
    """A worker process on one backend, driven line by line."""

    def __init__(self, backend: str, model_name: str, arrays: Path, recipe_name: str, seed: int,
                 augmentation: str) -> None:
        environment = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
                       "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.backend = backend
        self.process = subprocess.Popen(
            [sys.executable, "-m", "helpers.experiments.backends", "worker", "--model", model_name, "--arrays",
             str(arrays), "--recipe", recipe_name, "--seed", str(seed), "--augmentation", augmentation],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment)
        started = self._answer()
        if started.get("backend") != backend:
            raise RuntimeError(f"{backend} worker started on {started.get('backend')}")

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX):])
        raise RuntimeError(f"the {self.backend} worker ended (exit {self.process.wait()}) without answering")

    def ask(self, command: str) -> dict[str, Any]:
        """Send one command and return the worker's answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        """End the worker."""
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, RuntimeError):
                self.ask("quit")
            self.process.kill()
        self.process.wait()


def compare_backends(model_name: str, arrays: Path, epochs: int, recipe_name: str = RECIPE, seed: int = SEED,
                     backends: tuple[str, ...] = BACKENDS, augmentation: str | None = None) -> list[dict[str, Any]]:
    """Train one model on each backend, the backends taking turns epoch by epoch (the order alternating); return one
    row per backend: the first epoch's seconds (tracing included), the later epochs' median, CPU seconds and the
    validation accuracy after the epochs."""
    from helpers.modeling.recipes import recipe

    augmentation = augmentation or recipe(recipe_name, model_name).augmentation
    workers = [_Worker(backend, model_name, arrays, recipe_name, seed, augmentation) for backend in backends]
    timed: dict[str, list[dict[str, float]]] = {backend: [] for backend in backends}
    try:
        for epoch in range(epochs):
            for worker in (workers if epoch % 2 == 0 else workers[::-1]):
                timed[worker.backend].append(worker.ask("epoch"))
                print(f"{model_name} epoch {epoch + 1}/{epochs} {worker.backend}: "
                      f"{timed[worker.backend][-1]['seconds']:.1f} s", flush=True)
        accuracy = {worker.backend: worker.ask("accuracy")["validation_accuracy"] for worker in workers}
    finally:
        for worker in workers:
            worker.close()
    rows = []
    for backend in backends:
        later = timed[backend][1:] or timed[backend]
        rows.append({"model": model_name, "backend": backend, "recipe": recipe_name, "augmentation": augmentation,
                     "seed": seed, "epochs": epochs,
                     "first_epoch_seconds": timed[backend][0]["seconds"],
                     "seconds_per_epoch": statistics.median(row["seconds"] for row in later),
                     "cpu_seconds_per_epoch": statistics.median(row["cpu_seconds"] for row in later),
                     "validation_accuracy": accuracy[backend]})
    return rows


def _compared(row: dict[str, Any]) -> tuple:
    """Return what the backends of one comparison share: model, recipe, augmentation and epochs."""
    return row["model"], row["recipe"], row["augmentation"], row["epochs"]


def backend_table(rows: list[dict[str, Any]]) -> str:
    """Return the rows as a Markdown table, each model's JAX epoch also as a multiple of its TensorFlow epoch
    measured in the same comparison."""
    reference = {_compared(row): row["seconds_per_epoch"] for row in rows if row["backend"] == "tensorflow"}
    lines = ["| model | augmentation | backend | epochs | first epoch (s) | s/epoch | CPU s/epoch | x TensorFlow "
             "| validation accuracy | machine |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        tensorflow = reference.get(_compared(row))
        ratio = f"{row['seconds_per_epoch'] / tensorflow:.2f}" if tensorflow else ""
        lines.append(f"| {row['model']} | {row['augmentation']} | {row['backend']} | {row['epochs']} | "
                     f"{row['first_epoch_seconds']:.1f} | "
                     f"{row['seconds_per_epoch']:.1f} | {row['cpu_seconds_per_epoch']:.1f} | {ratio} | "
                     f"{row['validation_accuracy']:.2%} | {row.get('machine', '')} |")
    return "\n".join(lines)


def stored_section(folder: Path = config.REPORTS_DIR) -> str:
    """Return the backends section of reports/benchmarks.md ('' before the first measurement)."""
    from helpers.provenance import machine_name

    path = folder / BACKENDS_FILE
    document = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    # rows written before each recorded its machine: the file's own record of it
    rows = [{"machine": machine_name(document["provenance"]["device"]), **row} for row in document["rows"]]
    section = ("## Backends\n\nEvery model on TensorFlow and on JAX (`make bench-backends`, `reports/backends.json`): "
               "two worker processes take turns epoch by epoch, the recipe's augmentation in the input pipeline; "
               "s/epoch is the median of the epochs after the first, which traces.\n\n" + backend_table(rows)
               if rows else "")
    return section


def _parser() -> argparse.ArgumentParser:
    """Return the command's parser: run (the comparison) or worker (one backend's trainer)."""
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.backends", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="compare the backends -> reports/backends.json")
    run.add_argument("--data-dir", default=None, help="the dataset (default: $BRAIN_MRI_DATA_DIR)")
    run.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    run.add_argument("--epochs", type=int, default=3, help="epochs per model and backend (the first traces)")
    run.add_argument("--recipe", default=RECIPE)
    run.add_argument("--augmentation", default=None, help="another augmentation than the recipe's (e.g. none)")
    run.add_argument("--output", type=Path, default=None, help="default: reports/backends.json")
    worker = verbs.add_parser("worker", help="(internal) one backend's trainer, driven over stdin")
    worker.add_argument("--model", required=True)
    worker.add_argument("--arrays", type=Path, required=True)
    worker.add_argument("--recipe", default=RECIPE)
    worker.add_argument("--seed", type=int, default=SEED)
    worker.add_argument("--augmentation", default=None)
    return parser


def _main(argv: list[str] | None = None) -> int:
    """Command line: compare the backends (run), or serve one backend's trainer (worker)."""
    interrupts.command_started()
    arguments = _parser().parse_args(argv)
    if arguments.verb == "worker":
        return _worker(arguments)
    try:
        return _compare(arguments)
    except KeyboardInterrupt:
        return commands.stopped("reports/backends.json is as it was")


def _compare(arguments: argparse.Namespace) -> int:
    """Compare the backends for the models asked and merge the rows into reports/backends.json."""
    import tempfile

    from helpers.provenance import machine_name, provenance

    output = arguments.output or config.REPORTS_DIR / BACKENDS_FILE
    record = provenance()
    with tempfile.TemporaryDirectory() as folder:
        arrays = export_arrays(Path(folder) / "arrays.npz", arguments.data_dir, arguments.recipe)
        rows = [row for model_name in arguments.models
                for row in compare_backends(model_name, arrays, arguments.epochs, arguments.recipe,
                                            augmentation=arguments.augmentation)]
    rows = [{**row, "machine": machine_name(record["device"])} for row in rows]
    write_measured_rows(output, rows, ("model", "backend", "recipe", "augmentation", "epochs"), config.PROJECT_ROOT,
                        provenance=record,
                        note="the backends take turns epoch by epoch in two worker processes; seconds_per_epoch: "
                             "median of the epochs after the first (which traces)")
    print(backend_table(json.loads(output.read_text())["rows"]))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
