"""The run folder, the one thing a training run leaves: its files, loading it back, whether it is the run asked for,
and where an unfinished run keeps what it needs to resume. Keras is imported only to load a model."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import keras

    from helpers.modeling.recipes import TrainingSettings

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
HISTORY_FILE = "history.csv"
TIMINGS_FILE = "timings.json"
RUN_FILE = "run.json"
# The external test parts' predictions: every set's images in one file, paths prefixed with external/<set>/<part>/.
PREDICTION_FILES = {"validation": "predictions_validation.npz", "test": "predictions_test.npz",
                    "external_test": "predictions_external_test.npz"}



@dataclass
class TrainingRun:
    """A finished run folder, loaded: the best-on-validation model and everything written beside it (a published run
    of a seed that was not published keeps no model: asking for it fails naming the file)."""

    directory: Path
    class_names: tuple[str, ...]
    image_size: int
    history: pd.DataFrame
    timings: dict
    details: dict
    predictions: dict[str, dict[str, np.ndarray]]
    loaded_model: Any = None

    @property
    def model(self) -> keras.Model:
        """Return the run's best-on-validation model."""
        if self.loaded_model is None:
            raise FileNotFoundError(f"{self.directory / MODEL_FILE}: this run keeps no model (the published runs "
                                    f"keep the models of the published seeds only, see models/models.json)")
        return self.loaded_model


def write_json(path: Path, content: dict) -> None:
    """Write a dictionary as indented JSON."""
    path.write_text(json.dumps(content, indent=2, default=str) + "\n")


# Settings added after runs were published; a run folder written before them was trained with their defaults.

ADDED_SETTINGS = ("external_collections", "source_balance", "source_adversary", "outline_supervision", "ema_momentum")


def run_differences(directory: Path, model_name: str, settings: TrainingSettings, **details: object) -> list[str]:
    """Return what keeps a run folder from being this model trained with exactly these settings and the given details
    of its run.json (data fingerprints, split sizes): "no finished run", or the names that differ ([]: it matches)."""
    try:
        recorded = json.loads((directory / RUN_FILE).read_text())
        if recorded.get("settings", {}).get("image_size", 0) is None:  # "the images' size": the size it trained at
            recorded["settings"]["image_size"] = json.loads((directory / LABELS_FILE).read_text())["image_size"]
    except (OSError, ValueError, KeyError):
        return ["no finished run"]
    if isinstance(recorded.get("settings"), dict):  # a setting added after the run was written: its default
        from helpers.modeling.recipes import TrainingSettings

        defaults = json.loads(json.dumps(dataclasses.asdict(TrainingSettings())))
        recorded["settings"] = {**{name: value for name, value in defaults.items()
                                   if name in ADDED_SETTINGS}, **recorded["settings"]}
    wanted = {"model": model_name, "settings": json.loads(json.dumps(dataclasses.asdict(settings))), **details}
    differences = [key for key, value in wanted.items() if key != "settings" and recorded.get(key) != value]
    recorded_settings = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
    differences += [f"settings.{name}" for name, value in wanted["settings"].items()
                    if recorded_settings.get(name) != value]
    return differences


def run_matches(directory: Path, model_name: str, settings: TrainingSettings, **details: object) -> bool:
    """Tell whether a finished run folder holds this model trained with exactly these settings and the given details
    of its run.json (data fingerprints, split sizes)."""
    return not run_differences(directory, model_name, settings, **details)


def resume_directory(run_directory: Path) -> Path:
    """Return where an unfinished run keeps its per-epoch backup (weights, optimizer state, epoch), best checkpoint
    and history: a hidden folder beside the run folder, removed once the run folder is written."""
    return run_directory.parent / f".{run_directory.name}.resume"


class RunFolderInUseError(RuntimeError):
    """Another process is training into the same run folder."""


@contextmanager
def run_folder_lock(run_directory: Path) -> Iterator[None]:
    """Hold the run folder for this process while the block runs (a lock file beside it, released by the system when
    the process ends however it ends); fail naming the folder when another process holds it."""
    lock_path = run_directory.parent / f".{run_directory.name}.lock"
    run_directory.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise RunFolderInUseError(f"{run_directory}: run folder in use (process {holder} is training into it); "
                                      f"wait for it or choose another run folder") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _readable_history(resume: Path) -> pd.DataFrame | None:
    """Return a resume folder's history when it is whole (one header, numeric epochs); None, saying why on stderr,
    when it is damaged, and quietly when it is empty (stopped before the first epoch ended: nothing to resume)."""
    try:
        if (resume / HISTORY_FILE).stat().st_size == 0:
            return None
        history = pd.read_csv(resume / HISTORY_FILE)
        history["epoch"] = pd.to_numeric(history["epoch"], errors="raise").astype(int)
        return history
    except (OSError, ValueError, KeyError) as error:
        print(f"{resume}: damaged resume state discarded ({HISTORY_FILE}: {str(error).splitlines()[0]}); training "
              f"starts again", file=sys.stderr)
        return None


def resumable_history(resume: Path, identity: dict) -> pd.DataFrame | None:
    """Return the epochs an interrupted run of exactly this identity finished (None: nothing to resume), and make
    the resume folder ready; a backup of another model, recipe or data, or a damaged one, is discarded."""
    try:
        same = json.loads((resume / RUN_FILE).read_text()) == json.loads(json.dumps(identity, default=str))
    except (OSError, ValueError):
        same = False
    history = _readable_history(resume) if same and (resume / HISTORY_FILE).is_file() else None
    if history is not None and len(history) and (resume / "backup").is_dir() and (resume / MODEL_FILE).is_file():
        return history.drop_duplicates("epoch", keep="last")
    shutil.rmtree(resume, ignore_errors=True)
    resume.mkdir(parents=True)
    write_json(resume / RUN_FILE, identity)
    return None


def check_run_folder(run_directory: Path) -> None:
    """Fail naming the folder and the files it lacks when a run folder is incomplete (its model is optional)."""
    required = [LABELS_FILE, HISTORY_FILE, TIMINGS_FILE, RUN_FILE]
    missing = [name for name in required if not (run_directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_directory}: not a complete run folder (missing {', '.join(missing)})")


def load_run(run_directory: str | os.PathLike, with_model: bool = True) -> TrainingRun:
    """Load a run folder written by train_model, failing with the path if any part is missing (with_model=False:
    everything but the model, which is then None)."""
    run_directory = Path(run_directory)
    check_run_folder(run_directory)
    labels = json.loads((run_directory / LABELS_FILE).read_text())
    predictions = {}
    for split_name, file_name in PREDICTION_FILES.items():
        if (run_directory / file_name).is_file():
            with np.load(run_directory / file_name, allow_pickle=False) as stored:
                predictions[split_name] = {name: stored[name] for name in stored.files}
    model_file = run_directory / MODEL_FILE
    if with_model and model_file.is_file():
        import keras

        model = keras.saving.load_model(model_file)
    else:
        model = None
    return TrainingRun(directory=run_directory,
                       loaded_model=model,
                       class_names=tuple(labels["class_names"]), image_size=int(labels["image_size"]),
                       history=pd.read_csv(run_directory / HISTORY_FILE),
                       timings=json.loads((run_directory / TIMINGS_FILE).read_text()),
                       details=json.loads((run_directory / RUN_FILE).read_text()), predictions=predictions)
