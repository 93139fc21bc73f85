"""The study's shared steps for the notebooks: a profile's data, each model's recipe, runs per seed, metric records."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.data import ImageSplit, MRIDataset, load_dataset, split_validation, take_per_class
from helpers.evaluation import classification_summary, multi_seed_summary
from helpers.files import write_atomically
from helpers.synthetic import make_phantom_dataset
from helpers.training import RUN_FILE, TrainingRun, TrainingSettings, load_run, recipe, train_model

# Per-class sizes of the generated dataset the `demo` profile trains on (and `smoke` when no real data is given).
PHANTOM_TRAINING_PER_CLASS = 300
PHANTOM_TESTING_PER_CLASS = 60
PHANTOM_SEED = 2024

# The study's targets (issue 5): mean test accuracy over seeds, the best models chosen on validation only.
RECURRENT_MODELS = ("rnn", "hybrid", "crnn")
RECURRENT_PARAMETER_LIMIT = 1_500_000
TARGETS = {"rnn as specified": 0.90, "best recurrent model (<= 1.5M parameters)": 0.95, "best model overall": 0.97,
           "best model's tumour sensitivity": 0.98}


@dataclass
class StudyData:
    """The splits every notebook of one study run works on: the same images for every model and seed."""

    dataset: MRIDataset
    training: ImageSplit
    validation: ImageSplit
    testing: ImageSplit

    @property
    def class_names(self) -> tuple[str, ...]:
        """Return the label order."""
        return self.dataset.class_names

    def split_table(self) -> pd.DataFrame:
        """Return the number of images per class (rows) in each split used for training and evaluation (columns)."""
        return pd.DataFrame({name: split.class_counts(self.class_names) for name, split in
                             (("training", self.training), ("validation", self.validation),
                              ("test", self.testing))})


def phantom_dataset_root() -> Path:
    """Return the generated demo dataset, creating it in the cache folder on first use."""
    root = config.cache_dir() / f"phantoms-{PHANTOM_TRAINING_PER_CLASS}-{PHANTOM_TESTING_PER_CLASS}-{PHANTOM_SEED}"
    if not root.is_dir():
        make_phantom_dataset(root, PHANTOM_TRAINING_PER_CLASS, PHANTOM_TESTING_PER_CLASS, seed=PHANTOM_SEED)
    return root


def _json_ready(value: object) -> object:
    """Convert NumPy, pandas and path values inside nested containers to plain JSON types."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, pd.Series):
        return _json_ready(value.to_dict())
    if isinstance(value, pd.DataFrame):
        return _json_ready(value.reset_index().to_dict(orient="records"))
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class Study:
    """One notebook's resolved parameters: the profile, where data, runs and metric records live, the seeds."""

    profile: config.Profile
    data_dir: str | None
    image_size: int
    epochs: int
    batch_size: int | None
    seeds: tuple[int, ...]
    run_root: Path
    metrics_dir: Path

    @classmethod
    def from_parameters(cls, profile: str = "full", data_dir: str = "", image_size: int = config.DEFAULT_IMAGE_SIZE,
                        epochs: int = 0, batch_size: int = 0, seeds: list[int] | tuple[int, ...] = (),
                        run_root: str = "", metrics_dir: str = "") -> Study:
        """Resolve a notebook's parameters cell: empty or zero values take the profile's defaults."""
        chosen = config.get_profile(profile)
        if epochs < 0 or batch_size < 0:
            raise ValueError(f"epochs and batch_size must be >= 0 (0 = the profile's), not {epochs}, {batch_size}")
        runs = Path(run_root).expanduser().resolve() if run_root else config.runs_dir() / chosen.name
        return cls(profile=chosen, data_dir=data_dir or None, image_size=int(image_size),
                   epochs=int(epochs) or chosen.epochs, batch_size=int(batch_size) or chosen.batch_size,
                   seeds=tuple(int(seed) for seed in seeds) or chosen.seeds, run_root=runs,
                   metrics_dir=Path(metrics_dir).expanduser().resolve() if metrics_dir else runs / "metrics")

    def load_data(self, progress: bool = True) -> StudyData:
        """Load the profile's dataset and split it: a fixed validation split, a per-class subset for quick profiles."""
        root = phantom_dataset_root() if self.profile.synthetic else self.data_dir
        dataset = load_dataset(root, self.image_size, progress=progress)
        training, validation = split_validation(dataset.training, seed=config.DEFAULT_SEED)
        testing = dataset.testing
        if self.profile.images_per_class:
            count = self.profile.images_per_class
            training = take_per_class(training, count)
            validation = take_per_class(validation, max(count // 2, 1))
            testing = take_per_class(testing, count)
        return StudyData(dataset, training, validation, testing)

    def describe(self, data: StudyData) -> str:
        """Return two lines naming the profile, seeds, dataset, its fingerprint and how it was loaded."""
        dataset = data.dataset
        return (f"profile {self.profile.name}: {self.profile.description}; seeds {list(self.seeds)}\n"
                f"dataset {dataset.root} (fingerprint {dataset.fingerprint[:16]}), "
                f"{'from the cache' if dataset.from_cache else 'decoded'} in {dataset.load_seconds:.1f} s")

    def settings(self, model_name: str, seed: int) -> TrainingSettings:
        """Return the profile's training recipe for one model and seed, with this study's epochs, image size and
        batch size."""
        settings = recipe(self.profile.recipe, model_name, epochs=self.epochs, seed=seed, image_size=self.image_size)
        return dataclasses.replace(settings, batch_size=self.batch_size) if self.batch_size else settings

    def run_directory(self, model_name: str, seed: int) -> Path:
        """Return the run folder of a model and seed."""
        return self.run_root / f"{model_name}-seed{seed}"

    def _reusable(self, directory: Path, model_name: str, settings: TrainingSettings, data: StudyData) -> bool:
        """Tell whether a finished run folder was trained with exactly this model, recipe and data."""
        try:
            details = json.loads((directory / RUN_FILE).read_text())
        except (OSError, ValueError):
            return False
        wanted_settings = json.loads(json.dumps(dataclasses.asdict(settings)))
        return (details.get("model") == model_name and details.get("settings") == wanted_settings
                and details.get("data_fingerprint") == data.dataset.fingerprint
                and details.get("split_sizes") == {"training": len(data.training),
                                                   "validation": len(data.validation), "test": len(data.testing)})

    def train(self, model_name: str, data: StudyData) -> list[TrainingRun]:
        """Train a model once per seed, reusing any run folder already trained with the same model, recipe and data."""
        runs = []
        for seed in self.seeds:
            settings = self.settings(model_name, seed)
            directory = self.run_directory(model_name, seed)
            if self._reusable(directory, model_name, settings, data):
                print(f"{model_name} seed {seed}: reusing {directory}")
                runs.append(load_run(directory))
                continue
            print(f"{model_name} seed {seed}: training into {directory}")
            runs.append(train_model(model_name, data.training, data.validation, data.testing, directory, settings,
                                    class_names=data.class_names, data_fingerprint=data.dataset.fingerprint,
                                    overwrite=True))
        return runs

    def load_runs(self, model_name: str, data: StudyData) -> list[TrainingRun]:
        """Load a model's finished runs (one per seed); fail naming the notebook to run when one is missing or stale."""
        runs = []
        for seed in self.seeds:
            directory = self.run_directory(model_name, seed)
            if not self._reusable(directory, model_name, self.settings(model_name, seed), data):
                raise FileNotFoundError(f"{directory}: no finished {model_name} run for seed {seed} with this "
                                        f"profile's recipe and data; run the {model_name} training notebook first")
            runs.append(load_run(directory))
        return runs

    def record(self, notebook: str, figures: dict) -> Path:
        """Write the figures a notebook quotes to <metrics_dir>/<notebook>.json, where the pipeline collects them."""
        path = self.metrics_dir / f"{notebook}.json"
        content = {"notebook": notebook, "profile": self.profile.name, **_json_ready(figures)}
        write_atomically(path, lambda temporary: temporary.write_text(json.dumps(content, indent=2) + "\n"))
        return path


def representative_run(runs: list[TrainingRun]) -> TrainingRun:
    """Return the run with the best validation accuracy (ties: the first seed); the test split plays no part."""
    return runs[int(np.argmax([_validation_accuracy(run) for run in runs]))]


def best_on_validation(runs_per_model: dict[str, list[TrainingRun]]) -> str:
    """Return the name of the model with the best mean validation accuracy over its seeds."""
    return max(runs_per_model, key=lambda name: np.mean([_validation_accuracy(run) for run in runs_per_model[name]]))


def target_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Return the study's targets beside the measured figures; the models they judge are chosen on validation."""
    def by_validation(names: list[str]) -> str | None:
        return max(names, key=lambda name: np.mean(summaries[name]["validation_accuracy"])) if names else None

    recurrent = by_validation([name for name in RECURRENT_MODELS if name in summaries
                               and summaries[name]["parameters"] <= RECURRENT_PARAMETER_LIMIT])
    overall = by_validation(list(summaries))
    judged = {"rnn as specified": "rnn" if "rnn" in summaries else None,
              "best recurrent model (<= 1.5M parameters)": recurrent, "best model overall": overall,
              "best model's tumour sensitivity": overall}
    rows = []
    for target, required in TARGETS.items():
        name = judged[target]
        if name is None:
            measured = np.nan
        elif target.endswith("tumour sensitivity"):
            measured = summaries[name]["representative"]["tumour_sensitivity"]
        else:
            measured = summaries[name]["test_accuracy"]["mean"]
        rows.append({"target": target, "model": name, "required": required, "measured": measured,
                     "met": bool(measured >= required)})
    return pd.DataFrame(rows).set_index("target")


def _validation_accuracy(run: TrainingRun) -> float:
    """Return a run's accuracy on the validation split."""
    validation = run.predictions["validation"]
    return float((validation["probabilities"].argmax(axis=1) == validation["labels"]).mean())


def summarise_runs(model_name: str, runs: list[TrainingRun]) -> dict[str, object]:
    """Return a model's test metrics over seeds (mean, std, CI), its representative run's details, and its costs."""
    labels = runs[0].predictions["test"]["labels"]
    over_seeds = multi_seed_summary(labels, [run.predictions["test"]["probabilities"] for run in runs])
    representative = representative_run(runs)
    detail = classification_summary(labels, representative.predictions["test"]["probabilities"],
                                    representative.class_names)
    return {
        "model": model_name, "parameters": int(representative.details["parameters"]),
        "seeds": [int(run.details["settings"]["seed"]) for run in runs],
        "representative_seed": int(representative.details["settings"]["seed"]),
        "test_accuracy": over_seeds["accuracy"], "test_macro_f1": over_seeds["macro_f1"],
        "validation_accuracy": [_validation_accuracy(run) for run in runs],
        "representative": {name: detail[name] for name in ("accuracy", "macro_f1", "weighted_f1",
                                                           "tumour_sensitivity", "expected_calibration_error",
                                                           "roc_auc_ovr_macro")},
        "per_class": detail["per_class"], "confusion_matrix": detail["confusion_matrix"],
        "epochs_run": [int(run.timings["epochs_run"]) for run in runs],
        "best_epoch": [int(run.timings["best_epoch"]) for run in runs],
        "seconds_per_epoch": float(np.mean([run.timings["seconds_per_epoch"] for run in runs])),
        "fit_seconds": float(np.mean([run.timings["fit_seconds"] for run in runs])),
        "inference_milliseconds_per_image": float(np.mean(
            [run.timings["prediction_milliseconds_per_image"]["test"] for run in runs])),
    }


def summary_row(summary: dict[str, object]) -> dict[str, object]:
    """Flatten summarise_runs() into one row of the model comparison table."""
    accuracy, macro = summary["test_accuracy"], summary["test_macro_f1"]
    return {"model": summary["model"], "parameters": summary["parameters"], "seeds": len(summary["seeds"]),
            "accuracy": accuracy["mean"], "accuracy_std": accuracy["std"],
            "accuracy_low": accuracy["ci"][0], "accuracy_high": accuracy["ci"][1],
            "macro_f1": macro["mean"], "macro_f1_low": macro["ci"][0], "macro_f1_high": macro["ci"][1],
            "validation_accuracy": float(np.mean(summary["validation_accuracy"])),
            "seconds_per_epoch": summary["seconds_per_epoch"], "fit_seconds": summary["fit_seconds"],
            "inference_milliseconds_per_image": summary["inference_milliseconds_per_image"]}
