"""One short check for a GPU machine (`make gpu-check`; docs/decisions.md, "Augmentation in the input pipeline"):
offline, on the JAX backend, train the rnn, the hybrid and the published default's kind for a few epochs from the
exported arrays, and write the seconds an epoch, the devices and the validation accuracy to gpu-check.json in the
folder given. On a machine without a GPU it runs the same on the CPU (its test does).

    python -m helpers.experiments.gpu_check export --to gpu-check/arrays.npz    # here, with the data
    KERAS_BACKEND=jax python -m helpers.experiments.gpu_check run --arrays gpu-check/arrays.npz --output OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from helpers import commands, config, interrupts
from helpers.experiments.backends import RECIPE, EpochTrainer, export_arrays, load_arrays
from helpers.files import write_measurement
from helpers.provenance import cpu_model, machine_name

CHECK_FILE = "gpu-check.json"
SPECIFIED_MODELS = ("rnn", "hybrid")
EPOCHS = 3
# The check stops starting models once this many seconds have passed, so that it ends inside a GPU lease's command.
DEADLINE_SECONDS = 420


def default_kind() -> str | None:
    """Return the published default's kind (reports/metrics.json), or None where nothing is published."""
    from helpers.reporting.published_default import default_model

    metrics = config.REPORTS_DIR / "metrics.json"
    return default_model(json.loads(metrics.read_text())) if metrics.is_file() else None


def devices() -> list[dict[str, str]]:
    """Return the devices the backend trains on: platform and kind (a GPU's model name)."""
    import keras

    if keras.backend.backend() != "jax":
        return [{"platform": keras.backend.backend(), "kind": "unknown"}]
    import jax

    return [{"platform": device.platform, "kind": device.device_kind} for device in jax.devices()]


def check(arrays_path: Path, models: tuple[str, ...], epochs: int = EPOCHS, batch_size: int | None = None,
          deadline_seconds: float = DEADLINE_SECONDS) -> dict[str, Any]:
    """Train each model for a few epochs on the exported arrays; return its seconds an epoch (the first, which
    compiles, apart) and validation accuracy, with the devices, the backend and the arrays' fingerprint."""
    import keras

    started = time.perf_counter()
    arrays = load_arrays(arrays_path)
    rows, skipped = [], []
    for model_name in models:
        if time.perf_counter() - started > deadline_seconds:
            skipped.append(model_name)
            continue
        trainer = EpochTrainer(model_name, arrays, RECIPE, batch_size=batch_size)
        seconds = [trainer.epoch()["seconds"] for _ in range(epochs)]
        rows.append({"model": model_name, "recipe": RECIPE, "batch_size": trainer.settings.batch_size,
                     "epochs": epochs, "first_epoch_seconds": seconds[0],
                     "seconds_per_epoch": statistics.median(seconds[1:] or seconds),
                     "validation_accuracy": trainer.validation_accuracy()})
        print(f"{model_name}: {rows[-1]['seconds_per_epoch']:.2f} s an epoch, validation accuracy "
              f"{rows[-1]['validation_accuracy']:.1%}", flush=True)
    return {"backend": keras.backend.backend(), "devices": devices(),
            "cpu": machine_name({"cpu_model": cpu_model(), "cpu_count": os.cpu_count()}),
            "data_fingerprint": str(arrays.get("fingerprint", "")), "training_images": len(arrays["training_labels"]),
            "rows": rows, "skipped_for_time": skipped, "seconds": time.perf_counter() - started}


def check_table(result: dict[str, Any]) -> str:
    """Return a GPU check's figures as a Markdown section (reports/benchmarks.md)."""
    device = ", ".join(sorted({entry["kind"] for entry in result["devices"]}))
    lines = [f"### GPU check ({result['backend']} on {device}; `make gpu-check`, `reports/{CHECK_FILE}`)", "",
             "| model | batch | epochs | first epoch (s) | s/epoch | validation accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['model']} | {row['batch_size']} | {row['epochs']} | {row['first_epoch_seconds']:.1f} | "
              f"{row['seconds_per_epoch']:.2f} | {row['validation_accuracy']:.2%} |" for row in result["rows"]]
    return "\n".join(lines)


def stored_section(folder: Path = config.REPORTS_DIR) -> str:
    """Return a GPU machine's check for reports/benchmarks.md, copied into reports/ ('' where none was recorded)."""
    path = folder / CHECK_FILE
    return check_table(json.loads(path.read_text())) if path.is_file() else ""


def _parser() -> argparse.ArgumentParser:
    """Return the command's parser: export (here) and run (on the GPU machine)."""
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    export = verbs.add_parser("export", help="write the training and validation arrays to one .npz file")
    export.add_argument("--to", type=Path, required=True)
    export.add_argument("--data-dir", default=None, help="the dataset (default: $BRAIN_MRI_DATA_DIR)")
    run = verbs.add_parser("run", help="train a few epochs per model -> OUTPUT/gpu-check.json")
    run.add_argument("--arrays", type=Path, required=True)
    run.add_argument("--output", type=Path, required=True, help="the folder the JSON file is written to")
    run.add_argument("--models", nargs="+", default=None, help="default: rnn, hybrid and the published default's kind")
    run.add_argument("--epochs", type=int, default=EPOCHS)
    run.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    return parser


def _main(argv: list[str] | None = None) -> int:
    """Command line: export the arrays (here), or run the check (on the GPU machine)."""
    interrupts.command_started()
    arguments = _parser().parse_args(argv)
    if arguments.verb == "export":
        print(f"wrote {export_arrays(arguments.to, arguments.data_dir)}")
        return 0
    if not arguments.arrays.is_file():
        raise SystemExit(f"{arguments.arrays}: no such arrays file (make one with `... gpu_check export --to FILE`)")
    kind = default_kind()
    models = tuple(arguments.models or dict.fromkeys([*SPECIFIED_MODELS, *([kind] if kind else [])]))
    try:
        result = check(arguments.arrays, models, arguments.epochs, arguments.batch_size)
    except KeyboardInterrupt:
        return commands.stopped("nothing was written")
    path = arguments.output / CHECK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_measurement(path, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
