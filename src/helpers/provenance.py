"""What produced a result: git commit, package versions, machine and device, recorded with every run and report."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from helpers import config

LOCK_FILE = config.PROJECT_ROOT / "requirements.lock"
RECORDED_PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "numpy", "scikit-learn", "pillow", "pandas",
                     "seaborn", "papermill", "nbconvert")


def git_commit() -> str:
    """Return the repository's current commit (with '-dirty' when a tracked file outside reports/, the project's own
    output, has uncommitted changes); where the checkout has no git (a copy on another machine),
    $BRAIN_MRI_GIT_COMMIT as its sender gave it, or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config.PROJECT_ROOT, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 f":(exclude){config.REPORTS_DIR.name}"], cwd=config.PROJECT_ROOT,
                                capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("BRAIN_MRI_GIT_COMMIT", "unknown")
    return commit + ("-dirty" if status else "")


def package_versions() -> dict[str, str]:
    """Return the installed version of each package that shapes the results."""
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _normalised(name: str) -> str:
    """Return a package name in its canonical form (lower case, runs of -_. as one -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock_file=LOCK_FILE) -> dict[str, str]:
    """Return the exact version of every package pinned in a pip requirements lock (name==version lines)."""
    pins = {}
    for line in Path(lock_file).read_text(encoding="utf-8").splitlines():
        found = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if found:
            pins[_normalised(found.group(1))] = found.group(3)
    return pins


def lock_status(lock_file=LOCK_FILE) -> dict[str, Any]:
    """Return whether the installed packages are exactly the lock's, with every difference (None: not installed)."""
    try:
        pins = locked_versions(lock_file)
    except OSError:
        return {"file": os.path.basename(str(lock_file)), "matches": False, "differences": {"(lock file)": "missing"}}
    differences = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differences[name] = {"locked": version, "installed": installed}
    return {"file": os.path.basename(str(lock_file)), "matches": not differences, "differences": differences}


def cpu_seconds(include_self: bool = True) -> float:
    """Return the user and system CPU seconds of this process (unless include_self is False) and of its finished
    children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF) if include_self else None
    return children.ru_utime + children.ru_stime + (own.ru_utime + own.ru_stime if own else 0.0)


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """Return the CPU's model name (from /proc/cpuinfo on Linux, else the platform's processor string or 'unknown')."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_name(device: dict[str, Any]) -> str:
    """Return a recorded device's CPU model and core count, the way every time the project prints names its machine."""
    return f"{device.get('cpu_model') or device.get('processor') or 'unknown CPU'}, {device['cpu_count']} cores"


def device_summary() -> dict[str, Any]:
    """Return the Keras backend, its accelerator devices (empty on a CPU-only machine), the CPU count and model.

    The CPU model is recorded because the math libraries pick their kernels by CPU: on one machine a seed's run
    repeats bit for bit, but on another machine with the same code, data and packages the LSTM models trained to
    different weights (the CNNs did not)."""
    import keras

    backend = keras.backend.backend()
    accelerators: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        accelerators = [device.name for device in tf.config.list_physical_devices("GPU")]
    elif backend == "jax":
        import jax

        accelerators = [str(device) for device in jax.devices() if device.platform != "cpu"]
    elif backend == "torch":
        import torch

        accelerators = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"backend": backend, "accelerators": accelerators, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "system": platform.system(), "processor": platform.processor(),
            "cpu_model": cpu_model()}


def provenance() -> dict[str, Any]:
    """Return everything a report records about how it was produced."""
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit(),
            "packages": package_versions(), "lock": lock_status(), "device": device_summary()}


def duration_sentence(metrics: dict) -> str:
    """Return how long the profile takes on this machine: the run's own time, or, when it reused earlier run
    folders, the time from scratch first and then what this run took."""
    timings = metrics["timings"]
    device = metrics["provenance"]["device"]
    accelerators = ", ".join(device["accelerators"])
    cpu = f"{device['cpu_model']}, " if device.get("cpu_model") not in (None, "", "unknown") else ""
    machine = (f"{device['cpu_count']} CPU cores ({cpu}{device['backend']} backend"
               + (f"; {accelerators})" if accelerators else ", no accelerator)"))
    cpu_minutes = f" ({timings['cpu_seconds'] / 60:.1f} CPU-minutes)" if timings.get("cpu_seconds") else ""
    reused = timings.get("reused_runs", [])
    carried = metrics.get("carried", {}).get("notebooks", [])
    if carried:
        rerun = [name for name in metrics["notebooks"] if name not in carried]
        return (f"This run re-ran {', '.join(rerun)} in {timings['total_seconds'] / 60:.1f} minutes{cpu_minutes} on "
                f"{machine}; the other reports are those published before, from commit "
                f"{metrics['carried']['provenance']['git_commit'][:10]}.")
    if not reused:
        return f"The whole sequence took {timings['total_seconds'] / 60:.1f} minutes{cpu_minutes} on {machine}."
    total = len(reused) + len(timings["trained_runs"])
    which = f"all its {total} training runs" if len(reused) == total else f"{len(reused)} of its {total} training runs"
    return (f"The profile takes about {timings['from_scratch_seconds'] / 60:.1f} minutes from scratch on {machine}; "
            f"this run took {timings['total_seconds'] / 60:.1f} minutes{cpu_minutes}, reusing {which} "
            f"({timings['reused_training_seconds'] / 60:.1f} minutes) of an earlier run.")


def machine_key(details: dict) -> str:
    """Return a short name for the machine and backend a benchmark ran on, used to keep runs apart."""
    device = details["device"]
    accelerator = device["accelerators"][0].replace(" ", "-") if device["accelerators"] else "cpu"
    return f"{device['backend']}-{accelerator}-{device['cpu_count']}cores"
