"""How fast brain-mri-predict's Python path answers a folder: `python -m helpers.throughput` (`make bench-folder`)
times predict_files on the first 100 and 400 files of a folder, decoding on one thread and on the default number,
in one process, and writes reports/prediction_throughput.json (wall and CPU seconds, images per second, the ratio)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from helpers import config, interrupts
from helpers.files import write_atomically

THROUGHPUT_FILE = "prediction_throughput.json"
COUNTS = (100, 400)


def image_files(folder: Path, count: int) -> list[Path]:
    """Return up to count image files under a folder (sorted, one class folder after another, taken in turn)."""
    groups = [sorted(path for path in sub.rglob("*") if path.suffix.lower() in config.IMAGE_EXTENSIONS)
              for sub in sorted(folder.iterdir()) if sub.is_dir()] or [
        sorted(path for path in folder.iterdir() if path.suffix.lower() in config.IMAGE_EXTENSIONS)]
    taken = [file for row in zip(*groups) for file in row] if len(groups) > 1 else groups[0]
    return taken[:count]


def time_folder(files: list[Path], model, workers: int | None) -> dict[str, float]:
    """Return the wall and CPU seconds of predicting the files once, and the images per second."""
    from helpers.predict import predict_files

    started, cpu = time.perf_counter(), time.process_time()
    results = predict_files(files, model, workers=workers)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    if any(result.error for result in results):
        raise ValueError(f"{next(result.error for result in results if result.error)}")
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "images_per_second": len(files) / seconds}


def measure(folder: Path, model_paths: dict[str, Path | None], counts: tuple[int, ...] = COUNTS) -> list[dict]:
    """Time every model on the first `counts` files, with one decoding thread and with the default (after one
    warm-up call on all of them: the graph is built and the files are in the disk cache for both), and return one
    row per (model, files) with the ratio of the two."""
    from helpers.predict import load_saved_model

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

    from helpers.data import locate_dataset
    from helpers.provenance import provenance
    from helpers.saved_models import MODEL_INDEX_FILE, ModelFileError, ModelNotFoundError, default_model_path

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.throughput", description=_main.__doc__)
    parser.add_argument("--folder", default=None, help="folder of images (default: the dataset's Testing split)")
    parser.add_argument("--models", nargs="+", default=["default", "rnn"],
                        help="published model names, or 'default' (default: default rnn)")
    arguments = parser.parse_args(argv)
    folder = Path(arguments.folder) if arguments.folder else locate_dataset(None) / "Testing"
    if not folder.is_dir():
        print(f"error: {folder}: no such folder", file=sys.stderr)
        return 1
    index = json.loads((config.MODELS_DIR / MODEL_INDEX_FILE).read_text())
    try:
        paths = {name: default_model_path() if name == "default" else config.MODELS_DIR / index["models"][name]["file"]
                 for name in arguments.models}
        rows = measure(folder, {f"{Path(index['default']).stem} (default)" if name == "default" else name: path
                                for name, path in paths.items()})
    except (KeyError, ModelFileError, ModelNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    target = config.REPORTS_DIR / THROUGHPUT_FILE
    document = {"rows": rows, "provenance": provenance(), "path": "predict_files, in this process's Keras backend",
                "folder": config.shown_path(folder) if arguments.folder else "the dataset's Testing split"}
    write_atomically(target, lambda temporary: temporary.write_text(json.dumps(document, indent=2) + "\n"))
    print(f"written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
