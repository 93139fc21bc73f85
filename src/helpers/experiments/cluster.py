"""The study's runs on many machines, as Ray tasks (`make study-ray`; docs/decisions.md, "Many machines: Ray").

Every study and leave-one-source-out run not yet finished becomes one Ray task with its share of CPUs (and GPUs). The
loaded arrays (the dataset and every external set) go once into Ray's object store; a task trains into a folder of
the machine it runs on and returns the finished run folder as an archive, which this process writes into runs/, so
no shared file system is needed. A run finished here already is reused by its identity (model, settings, data
fingerprints), as `make study` and `make loso` reuse it.

    ray start --head                      # on one machine
    ray start --address HEAD_ADDRESS:6379 # on each of the others
    make study-ray                        # on the head (without a cluster, Ray starts one on this machine)
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import commands, config, interrupts
from helpers.files import read_measured_rows, staged_directory

# What a task's process gets beside the driver's Keras backend: JAX takes GPU memory as needed, so that several runs
# share one device, and TensorFlow keeps its start-up lines to itself.
TASK_ENVIRONMENT = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
CPUS_PER_RUN = 2


@dataclass(frozen=True)
class Job:
    """One run to train: a study run (model, seed) or a leave-one-source-out run (model, hold-out name)."""

    kind: str  # "study" or "loso"
    model: str
    seed: int = config.DEFAULT_SEED
    hold_out: str = ""
    epochs: int = 0  # 0: the profile's
    profile: str = "full"

    @property
    def name(self) -> str:
        """Return the job's name, as progress lines show it."""
        if self.kind == "study":
            return f"study-{self.model}-seed{self.seed}"
        return f"loso-{self.model}-{config.folder_name(self.hold_out)}"


def _study(profile: str = "full", seed: int | None = None, epochs: int = 0):
    """Return a profile's study (for one seed when given; epochs 0: the profile's)."""
    from helpers.analysis.study import Study

    return Study.from_parameters(profile, seeds=[seed] if seed is not None else [], epochs=epochs)


def _study_data(study, dataset, external: dict):
    """Return the study's splits of loaded arrays, with the profile's external sets."""
    names = {spec.name for spec in study.profile.external_sets}
    return study.assemble(dataset, {name: images for name, images in external.items() if name in names})


def load_arrays(profile: str = "full", data_dir: str | None = None, external_dir: str | None = None):
    """Return a profile's dataset and external sets, loaded at its size and preprocessing (what the tasks share)."""
    from helpers.analysis.study import Study

    data = Study.from_parameters(profile, data_dir=data_dir or "", external_dir=external_dir or "").load_data(
        progress=False)
    return data.dataset, data.external


def run_job(job: Job, dataset, external: dict) -> Path:
    """Train one job's run from loaded arrays (or find it finished) under config.runs_dir(); return its folder."""
    from helpers.experiments import loso

    if job.kind == "study":
        study = _study(job.profile, job.seed, job.epochs)
        return study.train(job.model, _study_data(study, dataset, external))[0].directory
    hold_out = next(item for item in loso.hold_outs() if item.name == job.hold_out)
    return loso.find_or_train(job.model, hold_out, None, None, epochs=job.epochs or None, arrays=(dataset, external))


def pending_jobs(dataset, external: dict, epochs: int = 0, profile: str = "full", loso_runs: bool = True) -> list[Job]:
    """Return the study's and (loso_runs) the leave-one-source-out runs not yet finished (nor, for a hold-out,
    measured in reports/loso.json), slowest model first (epochs 0: the profile's)."""
    from helpers.experiments import loso

    study = _study(profile, epochs=epochs)
    data = _study_data(study, dataset, external)
    jobs = [Job("study", model, seed, epochs=epochs, profile=profile) for model in study.profile.models
            for seed in study.seeds
            if not study.reusable(study.run_directory(model, seed), model, study.settings(model, seed), data)]
    if loso_runs:
        measured = read_measured_rows(config.REPORTS_DIR / loso.LOSO_FILE)
        jobs += [Job("loso", model, hold_out=hold_out.name, epochs=epochs, profile=profile)
                 for model in loso.MODELS for hold_out in loso.hold_outs()
                 if not loso.is_finished(model, hold_out, (dataset, external), epochs or None, measured=measured)]
    return sorted(jobs, key=lambda job: job.model != "sequencer")


def train_in_task(job: Job, dataset, external: dict) -> tuple[str, bytes]:
    """Train one job into a temporary runs folder (what a Ray task runs); return the run folder's path relative to
    the runs folder and the folder as a tar archive."""
    with tempfile.TemporaryDirectory(prefix="brain-mri-task-") as folder:
        os.environ[config.RUNS_DIR_VARIABLE] = folder
        directory = run_job(job, dataset, external)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(directory, arcname=".")
        return str(directory.relative_to(Path(folder).resolve())), buffer.getvalue()


def write_back(relative: str, archive: bytes, runs_root: Path | None = None) -> Path:
    """Write a task's run folder into the runs folder, whole or not at all; return where it went."""
    target = (runs_root or config.runs_dir()) / relative
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError(f"{relative}: a task returned a run folder outside the runs folder")
    with staged_directory(target) as staging, tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as unpacked:
        unpacked.extractall(staging, filter="data")
    return target


def train_on_ray(jobs: list[Job], dataset, external: dict, cpus_per_run: float = CPUS_PER_RUN,
                 gpus_per_run: float = 0.0, address: str | None = None, **init: Any) -> dict[str, str]:
    """Train the jobs as Ray tasks on the cluster at `address` (None: $RAY_ADDRESS, else a local one started with
    `init`'s arguments), the arrays put once into the object store; write each finished run folder back as it
    arrives; return each job's outcome."""
    import ray

    import helpers

    environment = {**TASK_ENVIRONMENT, **({"KERAS_BACKEND": os.environ["KERAS_BACKEND"]}
                                          if "KERAS_BACKEND" in os.environ else {})}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": environment, "py_modules": [helpers]}, **init)
    try:
        task = ray.remote(train_in_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        dataset_reference, external_reference = ray.put(dataset), ray.put(external)
        pending = {task.remote(job, dataset_reference, external_reference): job for job in jobs}
        outcomes: dict[str, str] = {}
        started = time.monotonic()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcomes[job.name] = f"finished: {write_back(*ray.get(done[0]))}"
            except ray.exceptions.RayError as error:
                outcomes[job.name] = f"failed: {str(error).strip().splitlines()[-1]}"
            print(f"{time.monotonic() - started:7.0f} s  {job.name} {outcomes[job.name]}", flush=True)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


def _parser():
    """Return the command's argument parser."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.cluster", description=__doc__.split("\n")[0])
    commands.add_data_arguments(parser, external=True)
    parser.add_argument("--profile", default="full", choices=list(config.PROFILES))
    parser.add_argument("--address", default=None, help="a Ray cluster's address (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--cpus-per-run", type=float, default=CPUS_PER_RUN)
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="e.g. 0.25: four runs share a GPU")
    parser.add_argument("--only", nargs="+", default=(), help="job names to train (default: every unfinished one)")
    parser.add_argument("--epochs", type=int, default=0, help="a quick check's epochs (default: the profile's)")
    parser.add_argument("--no-loso", action="store_true", help="the study's runs only")
    return parser


def _main(argv: list[str] | None = None) -> int:
    """Command line: train every unfinished run of the study (and leave-one-source-out) on a Ray cluster."""
    from helpers.inputs.images import DataError

    interrupts.command_started()
    arguments = _parser().parse_args(argv)
    try:
        dataset, external = load_arrays(arguments.profile, arguments.data_dir, arguments.external_dir)
        jobs = [job for job in pending_jobs(dataset, external, arguments.epochs, arguments.profile,
                                            loso_runs=not arguments.no_loso)
                if not arguments.only or job.name in arguments.only]
        print(f"{len(jobs)} runs to train: {', '.join(job.name for job in jobs) or 'none'}", flush=True)
        outcomes = train_on_ray(jobs, dataset, external, arguments.cpus_per_run, arguments.gpus_per_run,
                                arguments.address) if jobs else {}
    except (DataError, ValueError, FileNotFoundError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped(commands.RUNS_KEPT)
    return 0 if all(outcome.startswith("finished") for outcome in outcomes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(_main())
