"""Do training runs repeat bit for bit, and across CPUs? Each setting of TensorFlow's oneDNN kernels trains the same
seed twice in fresh processes; capping oneDNN's instruction set (ONEDNN_MAX_CPU_ISA) stands in for an older CPU on
one machine, and the fingerprints recorded per CPU model (reports/repeatability.json, merged across machines) compare
real ones. Run with `make repeatability`; its table is a section of reports/benchmarks.md."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from helpers import commands, config, interrupts
from helpers.files import write_atomically
from helpers.inputs.images import DataError

REPEATABILITY_FILE = "repeatability.json"
# The oneDNN settings compared. TF_ENABLE_ONEDNN_OPTS=0 routes TensorFlow's CPU kernels back to Eigen; the cap makes
# oneDNN choose the kernels it would choose on a CPU without AVX-512 (most older servers and laptops).
SETTINGS: dict[str, dict[str, str]] = {
    "oneDNN (default)": {},
    "oneDNN, capped at AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "oneDNN off, capped at AVX2": {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
DEFAULT_SETTING = "oneDNN (default)"
COUNTERPARTS = {"oneDNN (default)": "oneDNN, capped at AVX2", "oneDNN, capped at AVX2": "oneDNN (default)",
                "oneDNN off": "oneDNN off, capped at AVX2", "oneDNN off, capped at AVX2": "oneDNN off"}
REPEATS = 2
EPOCHS = 3
IMAGES_PER_CLASS = 300  # a seeded subset of the training images keeps each run to seconds


def weights_fingerprint(model) -> str:
    """Return the SHA-256 of a model's weights, byte for byte."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(weights.tobytes())
    return digest.hexdigest()


def train_and_fingerprint(model_name: str, epochs: int, seed: int, data_dir: str | None) -> dict:
    """Train one model with the specified recipe on a seeded subset and return its weights' fingerprint and timing."""
    from helpers.experiments.throughput import steady_median
    from helpers.inputs.data import load_dataset, split_validation, take_per_class
    from helpers.modeling.recipes import recipe
    from helpers.modeling.training import train_model
    from helpers.provenance import device_summary

    dataset = load_dataset(data_dir, progress=False)
    training, validation = split_validation(dataset.training, seed=config.DEFAULT_SEED)
    settings = recipe("specified", model_name, epochs=epochs, seed=seed, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        run = train_model(model_name, take_per_class(training, IMAGES_PER_CLASS), validation, None,
                          Path(folder) / "run", settings, data_fingerprint=dataset.fingerprint)
        return {"fingerprint": weights_fingerprint(run.model), "data_fingerprint": dataset.fingerprint,
                "final_validation_loss": float(run.history["val_loss"].iloc[-1]),
                "seconds_per_epoch": steady_median(run.timings["epoch_seconds"]),
                "cpu_model": device_summary()["cpu_model"]}


def run_in_fresh_process(model_name: str, setting: str, epochs: int, seed: int, data_dir: str | None) -> dict:
    """Return train_and_fingerprint's result from a new Python process with the setting's environment variables
    (TensorFlow reads them once, when it loads)."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}
    environment.update(SETTINGS[setting])
    command = [sys.executable, "-m", "helpers.experiments.repeatability", "--child", model_name,
               "--epochs", str(epochs), "--seed", str(seed)] + (["--data-dir", data_dir] if data_dir else [])
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"repeatability run {model_name} ({setting}) failed: {finished.stderr.strip()[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def measure(models: tuple[str, ...] = ("rnn", "hybrid"), epochs: int = EPOCHS, repeats: int = REPEATS,
            seed: int = config.DEFAULT_SEED, data_dir: str | None = None) -> dict:
    """Train every model under every setting `repeats` times, taking turns, and return the runs per model."""
    from helpers.provenance import machine_name, provenance
    runs: dict[str, dict[str, list[dict]]] = {name: {setting: [] for setting in SETTINGS} for name in models}
    for repeat in range(repeats):
        for model_name in models:
            for setting in SETTINGS:
                result = run_in_fresh_process(model_name, setting, epochs, seed, data_dir)
                runs[model_name][setting].append(result)
                print(f"{model_name} | {setting} | run {repeat + 1}: {result['fingerprint'][:12]} "
                      f"{result['seconds_per_epoch']:.2f} s/epoch", flush=True)
    details = provenance()
    return {"cpu": machine_name(details["device"]),
            "provenance": details, "epochs": epochs, "seed": seed, "images_per_class": IMAGES_PER_CLASS,
            "runs": runs}


def summary_table(stored: dict) -> pd.DataFrame:
    """Return per CPU, model and setting: whether runs repeat, whether they match the default's weights and the
    other CPUs' and the other instruction set's, and the epoch time against the default's."""
    rows = []
    for cpu, results in stored.items():
        for model_name, settings in results["runs"].items():
            default_time = statistics.median(run["seconds_per_epoch"] for run in settings[DEFAULT_SETTING])
            for setting, runs in settings.items():
                fingerprints = {run["fingerprint"] for run in runs}
                elsewhere = {run["fingerprint"] for other_cpu, other in stored.items() if other_cpu != cpu
                             for run in other["runs"].get(model_name, {}).get(setting, [])}
                pair = {run["fingerprint"] for run in settings.get(COUNTERPARTS[setting], [])}
                seconds = statistics.median(run["seconds_per_epoch"] for run in runs)
                rows.append({
                    "CPU": cpu, "model": model_name, "setting": setting,
                    "repeats on this CPU": f"yes ({len(runs)} runs)" if len(fingerprints) == 1 else
                                           f"no ({len(fingerprints)} results in {len(runs)} runs)",
                    "same weights with and without the AVX2 cap": "yes" if pair and fingerprints == pair else "no",
                    "same weights on the other CPUs": ("not measured" if not elsewhere else
                                                       "yes" if fingerprints == elsewhere else "no"),
                    "s / epoch": f"{seconds:.2f}", "× default time": f"{seconds / default_time:.2f}x",
                })
    return pd.DataFrame(rows)


def repeatability_markdown(stored: dict) -> str:
    """Return the repeatability section of reports/benchmarks.md."""
    first = next(iter(stored.values()))
    return f"""## Repeatability across runs and CPUs

Each model trains {first['epochs']} epochs (specified recipe, seed {first['seed']}, {first['images_per_class']}
training images per class) in a fresh process per run, under each oneDNN setting (`make repeatability`). Capping
oneDNN at AVX2 stands in for a CPU without AVX-512; a second CPU model adds its own rows and fills the last column.

{summary_table(stored).to_markdown(index=False)}

{verdict(summary_table(stored))}"""


def verdict(table: pd.DataFrame) -> str:
    """Return what the table shows: which settings repeat on one CPU, and which train alike across instruction sets."""
    repeating = table["repeats on this CPU"].str.startswith("yes")
    independent = table["same weights with and without the AVX2 cap"] == "yes"
    settings = sorted(set(table.loc[independent, "setting"]))
    return (f"{int(repeating.sum())} of {len(table)} model and setting pairs repeat bit for bit on their CPU. "
            + (f"Only {' and '.join(repr(setting) for setting in settings)} trained to the same weights with and "
               "without the AVX2 cap."
               if settings else "No setting trained to the same weights with and without the AVX2 cap: turning "
               "oneDNN off does not make a run independent of the instruction set, so runs on CPUs of different "
               "instruction sets are not expected to repeat each other whatever the setting."))


def stored(folder: Path = config.REPORTS_DIR) -> dict:
    """Return the stored results, one entry per CPU ({} before the first)."""
    path = folder / REPEATABILITY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def stored_section(folder: Path = config.REPORTS_DIR) -> str:
    """Return the stored repeatability section for reports/benchmarks.md ('' before the first)."""
    results = stored(folder)
    return repeatability_markdown(results) if results else ""


def _main(argv: list[str] | None = None) -> int:
    """Command line: measure repeatability on this CPU and merge it into reports/repeatability.json."""
    import argparse

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.repeatability", description=_main.__doc__)
    parser.add_argument("--models", nargs="+", default=["rnn", "hybrid"])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--seed", type=int, default=config.DEFAULT_SEED)
    commands.add_data_arguments(parser)
    parser.add_argument("--output-dir", default=str(config.REPORTS_DIR))
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    try:
        if arguments.child:
            print(json.dumps(train_and_fingerprint(arguments.child, arguments.epochs, arguments.seed,
                                                   arguments.data_dir)))
            return commands.EXIT_DONE
        results = measure(tuple(arguments.models), arguments.epochs, arguments.repeats, arguments.seed,
                          arguments.data_dir)
    except (DataError, RuntimeError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped("reports/repeatability.json was left as it was")
    folder = Path(arguments.output_dir)
    merged = {**stored(folder), results["cpu"]: results}
    write_atomically(folder / REPEATABILITY_FILE,
                     lambda temporary: temporary.write_text(json.dumps(merged, indent=2) + "\n"))
    print(summary_table(merged).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
