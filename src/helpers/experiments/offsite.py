"""Train the study's runs on another machine (a GPU host, say) that has the code but not the images.

`python -m helpers.experiments.offsite export` writes the full profile's loaded arrays (the dataset and every external
set, preprocessed as the recipe says, with their fingerprints) to one file; `... train --bundle FILE` trains, from that
file, every study and leave-one-source-out run that is not already finished, several at once, into the same run
folders (runs/full, runs/loso) that `make study` and `make loso` then reuse: a run's identity is its model, settings and
data fingerprints, and its run.json records the machine, backend and devices it trained on. A run stopped by the
deadline keeps its resume state, and the same command continues it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import commands, config, interrupts
from helpers.files import read_measured_rows, write_atomically

BUNDLE_FORMAT = 1
DEFAULT_BUNDLE = Path(".offsite") / "study-arrays.pkl.gz"
# What a child training process gets unless the caller's environment says otherwise (the backend is the caller's):
# JAX takes GPU memory as needed, so that several runs share one device.
CHILD_ENVIRONMENT = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
STOP_GRACE_SECONDS = 90


@dataclass(frozen=True)
class Job:
    """One run to train: a study run (model, seed) or a leave-one-source-out run (model, hold-out name)."""

    kind: str  # "study" or "loso"
    model: str
    seed: int = config.DEFAULT_SEED
    hold_out: str = ""
    epochs: int = 0  # 0: the full profile's

    @property
    def name(self) -> str:
        """Return the job's name, used for its log file."""
        if self.kind == "study":
            return f"study-{self.model}-seed{self.seed}"
        return f"loso-{self.model}-{config.folder_name(self.hold_out)}"

    def arguments(self) -> list[str]:
        """Return the `job` subcommand's arguments that train this run."""
        return ["--kind", self.kind, "--model", self.model, "--seed", str(self.seed), "--hold-out", self.hold_out,
                "--epochs", str(self.epochs)]


def export_bundle(output: Path, data_dir: str | None, external_dir: str | None) -> dict[str, Any]:
    """Load the full profile's dataset and every external set at the study's size and preprocessing and write them
    to one compressed file (atomically); return what it holds."""
    from helpers.inputs.data import load_dataset
    from helpers.inputs.external import load_external_sets

    study = _study()
    dataset = load_dataset(data_dir, study.image_size, preprocessing=study.preprocessing)
    external = load_external_sets(external_dir, study.image_size, study.preprocessing, sets=config.EXTERNAL_SETS)
    bundle = {"format": BUNDLE_FORMAT, "recipe": config.FULL_PROFILE.recipe, "dataset": dataset, "external": external}

    def write(path: Path) -> None:
        with gzip.open(path, "wb", compresslevel=6) as stream:
            pickle.dump(bundle, stream, protocol=pickle.HIGHEST_PROTOCOL)

    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(output, write)
    return {"dataset_fingerprint": dataset.fingerprint, "external_sets": len(external), "bytes": output.stat().st_size}


def load_bundle(path: Path) -> tuple[Any, dict]:
    """Return the dataset and external sets of a bundle this project wrote (a pickle: read only your own files)."""
    try:
        with gzip.open(path, "rb") as stream:
            bundle = pickle.load(stream)
    except (OSError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path}: not a readable bundle ({error})") from error
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path}: not a bundle of format {BUNDLE_FORMAT}; export it again")
    if bundle["recipe"] != config.FULL_PROFILE.recipe:
        raise ValueError(f"{path}: exported for the {bundle['recipe']} recipe, but the full profile trains with "
                         f"{config.FULL_PROFILE.recipe}; export it again")
    return bundle["dataset"], bundle["external"]


def _study(seed: int | None = None, epochs: int = 0):
    """Return the full profile's study (for one seed when given; epochs 0: the profile's)."""
    from helpers.analysis.study import Study

    return Study.from_parameters("full", seeds=[seed] if seed is not None else [], epochs=epochs)


def _study_data(study, dataset, external: dict):
    """Return the study's splits of the bundle's arrays, with the profile's external sets."""
    names = {spec.name for spec in study.profile.external_sets}
    return study.assemble(dataset, {name: images for name, images in external.items() if name in names})


def run_job(job: Job, dataset, external: dict) -> Path:
    """Train one job's run from the bundle's arrays (or find it finished); return its run folder."""
    from helpers.experiments import loso

    if job.kind == "study":
        study = _study(job.seed, job.epochs)
        return study.train(job.model, _study_data(study, dataset, external))[0].directory
    hold_out = next(item for item in loso.hold_outs() if item.name == job.hold_out)
    return loso.find_or_train(job.model, hold_out, None, None, epochs=job.epochs or None, arrays=(dataset, external))


def pending_jobs(dataset, external: dict, epochs: int = 0) -> list[Job]:
    """Return the study's and the leave-one-source-out runs not yet finished (nor, for a hold-out, measured in
    reports/loso.json), slowest model first (epochs 0: the full profile's)."""
    from helpers.experiments import loso

    study = _study(epochs=epochs)
    data = _study_data(study, dataset, external)
    measured = read_measured_rows(config.REPORTS_DIR / loso.LOSO_FILE)
    jobs = [Job("study", model, seed, epochs=epochs) for model in study.profile.models for seed in study.seeds
            if not study.reusable(study.run_directory(model, seed), model, study.settings(model, seed), data)]
    jobs += [Job("loso", model, hold_out=hold_out.name, epochs=epochs)
             for model in loso.MODELS for hold_out in loso.hold_outs()
             if not loso.is_finished(model, hold_out, (dataset, external), epochs or None, measured=measured)]
    return sorted(jobs, key=lambda job: job.model != "sequencer")


def train_all(bundle: Path, jobs: list[Job], parallel: int, deadline_seconds: float | None) -> dict[str, str]:
    """Train the jobs, `parallel` at a time, each in its own process with its log in runs/logs; at the deadline
    interrupt those still running (their resume state is kept); return each job's outcome."""
    logs = config.runs_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    environment = {**CHILD_ENVIRONMENT, **os.environ}
    started, waiting = time.monotonic(), list(jobs)
    running: dict[Job, subprocess.Popen] = {}
    outcomes: dict[str, str] = {}
    while waiting or running:
        late = deadline_seconds is not None and time.monotonic() - started > deadline_seconds
        while waiting and len(running) < parallel and not late:
            job = waiting.pop(0)
            with open(logs / f"offsite-{job.name}.log", "ab") as log:
                running[job] = subprocess.Popen(
                    [sys.executable, "-m", "helpers.experiments.offsite", "job", "--bundle", str(bundle),
                     *job.arguments()], stdout=log, stderr=subprocess.STDOUT, env=environment)
            print(f"{time.monotonic() - started:7.0f} s  started {job.name}", flush=True)
        if late:
            _stop(running)
        for job, process in list(running.items()):
            if process.poll() is not None:
                outcomes[job.name] = "finished" if process.returncode == 0 else f"stopped (status {process.returncode})"
                print(f"{time.monotonic() - started:7.0f} s  {outcomes[job.name]}: {job.name}", flush=True)
                del running[job]
        if late:
            outcomes.update({job.name: "not started (deadline)" for job in waiting})
            waiting.clear()
        if waiting or running:
            time.sleep(2)
    return outcomes


def _stop(running: dict[Job, subprocess.Popen]) -> None:
    """Interrupt running jobs as Ctrl-C would, and kill those that have not stopped after the grace period."""
    for process in running.values():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    ends = time.monotonic() + STOP_GRACE_SECONDS
    for process in running.values():
        try:
            process.wait(timeout=max(1.0, ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def _parser():
    """Return the command's argument parser."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.offsite", description=__doc__.split("\n")[0])
    subcommands = parser.add_subparsers(dest="command", required=True)
    export = subcommands.add_parser("export", help="write the full profile's arrays to one file")
    commands.add_data_arguments(export, external=True)
    export.add_argument("--output", type=Path, default=DEFAULT_BUNDLE)
    train = subcommands.add_parser("train", help="train every unfinished study and LOSO run from a bundle")
    train.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    train.add_argument("--parallel", type=int, default=4, help="runs trained at once (default: %(default)s)")
    train.add_argument("--deadline", type=float, default=None, help="seconds after which running runs are stopped")
    train.add_argument("--only", nargs="+", default=(), help="job names to train (default: every unfinished one)")
    train.add_argument("--epochs", type=int, default=0, help="a quick check's epochs (default: the profile's)")
    job = subcommands.add_parser("job", help="train one run from a bundle (what train runs in each process)")
    job.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    job.add_argument("--kind", choices=("study", "loso"), required=True)
    job.add_argument("--model", required=True)
    job.add_argument("--seed", type=int, default=config.DEFAULT_SEED)
    job.add_argument("--hold-out", default="")
    job.add_argument("--epochs", type=int, default=0)
    return parser


def _main(argv: list[str] | None = None) -> int:
    """Command line: export the arrays, or train the unfinished runs from them."""
    from helpers.inputs.images import DataError

    interrupts.command_started()
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "export":
            print(export_bundle(arguments.output, arguments.data_dir, arguments.external_dir))
            return 0
        dataset, external = load_bundle(arguments.bundle)
        if arguments.command == "job":
            job = Job(arguments.kind, arguments.model, arguments.seed, arguments.hold_out, arguments.epochs)
            print(f"finished: {run_job(job, dataset, external)}")
            return 0
        jobs = [job for job in pending_jobs(dataset, external, arguments.epochs)
                if not arguments.only or job.name in arguments.only]
        print(f"{len(jobs)} runs to train: {', '.join(job.name for job in jobs) or 'none'}", flush=True)
        outcomes = train_all(arguments.bundle, jobs, arguments.parallel, arguments.deadline)
    except (DataError, ValueError, FileNotFoundError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped(commands.RUNS_KEPT)
    return 0 if all(outcome == "finished" for outcome in outcomes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(_main())
