"""How fast brain-mri-predict answers: one image in fresh processes as a user runs it (`python -m
helpers.experiments.benchmark prediction-command`), and a folder: `python -m helpers.experiments.throughput` (`make
bench-folder`) times predict_files on the first 100 and 400 files of a folder, decoding on one thread and on the default
number, in one process, and writes reports/prediction_throughput.json (wall and CPU seconds, images per second, the
ratio)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from helpers import commands, config, interrupts
from helpers.files import write_atomically
from helpers.provenance import cpu_seconds, machine_key, provenance

THROUGHPUT_FILE = "prediction_throughput.json"
COUNTS = (100, 400)
PREDICTION_COMMAND_CALLS = 5  # fresh processes per backend; the first is reported apart (files not yet cached)


def time_prediction_command(image: Path, model: Path | None = None,
                            calls: int = PREDICTION_COMMAND_CALLS) -> dict[str, Any]:
    """Time brain-mri-predict on one image as a user runs it: fresh processes on its default (NumPy) backend and on
    TensorFlow's, taking turns; then the warm cost of one more image in a process that has the model loaded."""
    import subprocess
    import sys

    from helpers.modeling import predict

    command = [sys.executable, "-m", "helpers.modeling.predict", str(image), "--json",
               *(["--model", str(model)] if model else [])]
    seconds: dict[str, list[float]] = {"numpy": [], "tensorflow": []}
    children_cpu: dict[str, list[float]] = {"numpy": [], "tensorflow": []}
    probabilities: dict[str, list[float]] = {}
    for _ in range(calls):
        for backend in seconds:
            environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
            start, start_cpu = time.perf_counter(), cpu_seconds(include_self=False)
            finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
            seconds[backend].append(time.perf_counter() - start)
            children_cpu[backend].append(cpu_seconds(include_self=False) - start_cpu)
            if finished.returncode != 0:
                raise RuntimeError(f"brain-mri-predict on {image} failed ({backend}): {finished.stderr.strip()}")
            probabilities[backend] = list(json.loads(finished.stdout)["predictions"][0]["probabilities"].values())
    saved = predict.load_saved_model(model)
    predict.predict_files([image], saved)
    start = time.perf_counter()
    predict.predict_files([image], saved)
    warm = time.perf_counter() - start
    details = provenance()
    return {"machine": machine_key(details), "provenance": details, "image": image.name, "model": saved.name,
            "calls": calls, "seconds": seconds,
            "median_seconds": {backend: steady_median(values) for backend, values in seconds.items()},
            "first_call_seconds": {backend: values[0] for backend, values in seconds.items()},
            "cpu_seconds": children_cpu,
            "median_cpu_seconds": {backend: steady_median(values) for backend, values in children_cpu.items()},
            "warm_seconds_per_image": warm,
            "largest_probability_difference": float(np.max(np.abs(np.subtract(probabilities["numpy"],
                                                                              probabilities["tensorflow"]))))}


def steady_median(values: list[float]) -> float:
    """Return the median of the measurements after the first (warm-up, tracing), or the only one when there is one."""
    return statistics.median(values[1:] or values)


def phantom_image(folder: Path) -> Path:
    """Write a 512x512 glioma phantom (the dataset's commonest size) as a JPEG and return its path."""
    from PIL import Image

    from helpers.inputs.synthetic import make_phantom_image

    path = folder / "phantom-glioma.jpg"
    Image.fromarray(make_phantom_image("glioma", 512, 512, np.random.default_rng(config.DEFAULT_SEED))).save(path)
    return path


def image_files(folder: Path, count: int) -> list[Path]:
    """Return up to count image files under a folder (sorted, one class folder after another, taken in turn)."""
    groups = [sorted(path for path in sub.rglob("*") if path.suffix.lower() in config.IMAGE_EXTENSIONS)
              for sub in sorted(folder.iterdir()) if sub.is_dir()] or [
        sorted(path for path in folder.iterdir() if path.suffix.lower() in config.IMAGE_EXTENSIONS)]
    taken = [file for row in zip(*groups) for file in row] if len(groups) > 1 else groups[0]
    return taken[:count]


def time_folder(files: list[Path], model, workers: int | None) -> dict[str, float]:
    """Return the wall and CPU seconds of predicting the files once, and the images per second."""
    from helpers.modeling.predict import predict_files

    started, cpu = time.perf_counter(), time.process_time()
    results = predict_files(files, model, workers=workers)
    seconds, spent_cpu = time.perf_counter() - started, time.process_time() - cpu
    if any(result.error for result in results):
        raise ValueError(f"{next(result.error for result in results if result.error)}")
    return {"seconds": seconds, "cpu_seconds": spent_cpu, "images_per_second": len(files) / seconds}


def measure(folder: Path, model_paths: dict[str, Path | None], counts: tuple[int, ...] = COUNTS) -> list[dict]:
    """Time every model on the first `counts` files, with one decoding thread and with the default (after one
    warm-up call on all of them: the graph is built and the files are in the disk cache for both), and return one
    row per (model, files) with the ratio of the two."""
    from helpers.modeling.predict import load_saved_model

    rows = []
    for name, path in model_paths.items():
        saved = load_saved_model(path)
        time_folder(image_files(folder, max(counts)), saved, None)
        for count in counts:
            files = image_files(folder, count)
            one = time_folder(files, saved, workers=1)
            many = time_folder(files, saved, workers=None)
            rows.append({"model": name, "files": len(files), "one_thread": one, "default_threads": many,
                         "speed_up": many["images_per_second"] / one["images_per_second"]})
            print(f"{name}, {len(files)} files: {one['images_per_second']:.1f} images/s on one decoding thread, "
                  f"{many['images_per_second']:.1f} with the default ({rows[-1]['speed_up']:.2f}x)", flush=True)
    return rows


def _main(argv: list[str] | None = None) -> int:
    """Command line: time predict_files on a folder of images -> reports/prediction_throughput.json."""
    import argparse
    import json

    from helpers.inputs.data import locate_dataset
    from helpers.modeling.saved_models import MODEL_INDEX_FILE, ModelFileError, ModelNotFoundError, default_model_path
    from helpers.provenance import provenance

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.throughput", description=_main.__doc__)
    parser.add_argument("--folder", default=None, help="folder of images (default: the dataset's Testing split)")
    parser.add_argument("--models", nargs="+", default=["default", "rnn"],
                        help="published model names, or 'default' (default: default rnn)")
    arguments = parser.parse_args(argv)
    folder = Path(arguments.folder) if arguments.folder else locate_dataset(None) / "Testing"
    if not folder.is_dir():
        return commands.failed(f"{folder}: no such folder")
    index = json.loads((config.MODELS_DIR / MODEL_INDEX_FILE).read_text())
    try:
        paths = {name: default_model_path() if name == "default" else config.MODELS_DIR / index["models"][name]["file"]
                 for name in arguments.models}
        rows = measure(folder, {f"{Path(index['default']).stem} (default)" if name == "default" else name: path
                                for name, path in paths.items()})
    except (KeyError, ModelFileError, ModelNotFoundError, ValueError) as error:
        return commands.failed(error)
    target = config.REPORTS_DIR / THROUGHPUT_FILE
    document = {"rows": rows, "provenance": provenance(), "path": "predict_files, in this process's Keras backend",
                "folder": config.shown_path(folder) if arguments.folder else "the dataset's Testing split"}
    write_atomically(target, lambda temporary: temporary.write_text(json.dumps(document, indent=2) + "\n"))
    print(f"written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
