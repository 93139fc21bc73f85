"""The study's shared steps for the notebooks: a profile's data, each model's recipe, runs per seed, metric records."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.data import ImageSplit, MRIDataset, load_dataset, split_validation, take_per_class
from helpers.duplicates import DuplicateAudit, audit_duplicates
from helpers.evaluation import classification_summary, mean_with_spread, multi_seed_summary, partial_label_accuracy
from helpers.external import ExternalImages, add_external_training, external_fingerprint, load_external_sets
from helpers.files import write_atomically
from helpers.synthetic import make_phantom_dataset, make_phantom_external_sets
from helpers.training import TrainingRun, TrainingSettings, load_run, recipe, run_differences, train_model

# The notebooks show the study's output: TensorFlow's advice on retracing (many prediction calls of different sizes,
# as saliency makes) is not part of it.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

# Per-class sizes of the generated dataset the `demo` profile trains on (and `smoke` when no real data is given).
PHANTOM_TRAINING_PER_CLASS = 300
PHANTOM_TESTING_PER_CLASS = 60
PHANTOM_SEED = 2024
PHANTOM_EXTERNAL_PER_PART = 40

# The study's targets: mean test accuracy over seeds, the best models chosen on validation only.
RECURRENT_MODELS = ("rnn", "hybrid", "crnn", "sequencer")
RECURRENT_PARAMETER_LIMIT = 1_500_000
# The accuracy targets (3-seed means on the official Testing split, models chosen on validation). The
# earlier ones were 90%, 95%, 97% and 98%.
TARGETS = {"rnn as specified": 0.93, "best recurrent model (<= 1.5M parameters)": 0.97, "best model overall": 0.985,
           "best model's tumour sensitivity": 0.99}


@dataclass
class StudyData:
    """The splits every notebook of one study run works on: the same images for every model and seed."""

    dataset: MRIDataset
    training: ImageSplit  # with the external train parts' training images when the recipe trains on them
    validation: ImageSplit  # likewise with their held-out images (paths starting with external/)
    testing: ImageSplit
    external: dict[str, ExternalImages] = dataclasses.field(default_factory=dict)  # every external set found
    collections: tuple[str, ...] | None = None  # the external collections whose train parts joined training

    @property
    def external_fingerprint(self) -> str | None:
        """Return the fingerprint of the external collections trained on, or None when there are none."""
        return external_fingerprint(self.external, self.collections)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Return the label order."""
        return self.dataset.class_names

    def split_table(self) -> pd.DataFrame:
        """Return the number of images per class (rows) in each split used for training and evaluation (columns);
        external tumours of a type not given form their own row."""
        names = [*self.class_names, "tumour, type not given (external)"]
        table = pd.DataFrame({name: dict(zip(names, np.bincount(split.labels, minlength=len(names)).tolist()))
                              for name, split in (("training", self.training), ("validation", self.validation),
                                                  ("test", self.testing))})
        return table.loc[(table.sum(axis=1) > 0) | table.index.isin(self.class_names)]


def phantom_dataset_root() -> Path:
    """Return the generated demo dataset, creating it in the cache folder on first use."""
    root = config.cache_dir() / f"phantoms-{PHANTOM_TRAINING_PER_CLASS}-{PHANTOM_TESTING_PER_CLASS}-{PHANTOM_SEED}"
    if not root.is_dir():
        make_phantom_dataset(root, PHANTOM_TRAINING_PER_CLASS, PHANTOM_TESTING_PER_CLASS, seed=PHANTOM_SEED)
    return root


def phantom_external_root() -> Path:
    """Return the generated stand-ins of the external sets, creating them in the cache folder on first use."""
    root = config.cache_dir() / f"phantom-external-{PHANTOM_EXTERNAL_PER_PART}-{PHANTOM_SEED}"
    if not root.is_dir():
        make_phantom_external_sets(root, PHANTOM_EXTERNAL_PER_PART, seed=PHANTOM_SEED)
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
    external_dir: str | None
    image_size: int
    epochs: int
    batch_size: int | None
    seeds: tuple[int, ...]
    run_root: Path
    metrics_dir: Path

    @classmethod
    def from_parameters(cls, profile: str = "full", data_dir: str = "", image_size: int = config.DEFAULT_IMAGE_SIZE,
                        epochs: int = 0, batch_size: int = 0, seeds: list[int] | tuple[int, ...] = (),
                        run_root: str = "", metrics_dir: str = "", external_dir: str = "") -> Study:
        """Resolve a notebook's parameters cell: empty or zero values take the profile's defaults."""
        chosen = config.get_profile(profile)
        if epochs < 0 or batch_size < 0:
            raise ValueError(f"epochs and batch_size must be >= 0 (0 = the profile's), not {epochs}, {batch_size}")
        runs = Path(run_root).expanduser().resolve() if run_root else config.default_run_root(chosen)
        if not metrics_dir and chosen.reads_published:  # what a notebook records stays out of models/
            metrics_dir = str(config.runs_dir() / chosen.name / "metrics")
        return cls(profile=chosen, data_dir=data_dir or None, external_dir=external_dir or None,
                   image_size=int(image_size),
                   epochs=int(epochs) or chosen.epochs, batch_size=int(batch_size) or chosen.batch_size,
                   seeds=tuple(int(seed) for seed in seeds) or chosen.seeds, run_root=runs,
                   metrics_dir=Path(metrics_dir).expanduser().resolve() if metrics_dir else runs / "metrics")

    @property
    def preprocessing(self) -> str:
        """Return the preprocessing of the profile's recipe (every model of a study reads the same arrays)."""
        return recipe(self.profile.recipe).preprocessing

    def load_external(self) -> dict[str, ExternalImages]:
        """Load the profile's external sets that are present ({} when none: "not evaluated")."""
        root = phantom_external_root() if self.profile.synthetic else self.external_dir
        external = load_external_sets(root, self.image_size, self.preprocessing, sets=self.profile.external_sets)
        if self.profile.external_per_set:
            external = {name: images.take(np.arange(min(self.profile.external_per_set, len(images))))
                        for name, images in external.items()}
        return external

    def load_data(self, progress: bool = True) -> StudyData:
        """Load the profile's dataset and split it: a fixed validation split, a per-class subset for quick profiles,
        and the external sets (their train parts joining training and validation where the recipe says so)."""
        root = phantom_dataset_root() if self.profile.synthetic else self.data_dir
        dataset = load_dataset(root, self.image_size, progress=progress, preprocessing=self.preprocessing)
        training, validation = split_validation(dataset.training, seed=config.DEFAULT_SEED)
        testing = dataset.testing
        if self.profile.images_per_class:
            count = self.profile.images_per_class
            training = take_per_class(training, count)
            validation = take_per_class(validation, max(count // 2, 1))
            testing = take_per_class(testing, count)
        external = self.load_external()
        settings = recipe(self.profile.recipe)
        if settings.external_training:
            training, validation = add_external_training(training, validation, external,
                                                         collections=settings.external_collections)
        return StudyData(dataset, training, validation, testing, external, settings.external_collections)

    def source_images(self, preprocessing: str | None = None, part: str = "train") -> dict[str, np.ndarray]:
        """Return images per source with a preprocessing (default: the recipe's): the dataset's Training images of
        each class, then each external set's images of a part."""
        preprocessing = preprocessing or self.preprocessing
        root = phantom_dataset_root() if self.profile.synthetic else self.data_dir
        training = load_dataset(root, self.image_size, progress=False, preprocessing=preprocessing).training
        sources = {f"dataset {name}": training.images[training.labels == index]
                   for index, name in enumerate(config.CLASS_NAMES)}
        external_root = phantom_external_root() if self.profile.synthetic else self.external_dir
        external = load_external_sets(external_root, self.image_size, preprocessing, sets=self.profile.external_sets,
                                      parts=(part,))
        sources.update({name.split("/")[0]: images.images for name, images in external.items()})
        return sources

    def generated_data_note(self) -> str:
        """Return the sentence that opens a conclusion drawn on generated data ("" on the real data)."""
        if not self.profile.synthetic:
            return ""
        return ("*These figures come from generated phantom images: they show the pipeline working, not the study's "
                "results, and no study target is judged on them.* ")

    def duplicate_audit(self, data: StudyData) -> DuplicateAudit:
        """Return the duplicate audit of the dataset's files as they look (greyscale, resized), whatever the recipe's
        preprocessing, so that the clean-test images are the same for every recipe."""
        if data.dataset.preprocessing == "resize":
            return audit_duplicates(data.dataset)
        root = phantom_dataset_root() if self.profile.synthetic else self.data_dir
        return audit_duplicates(load_dataset(root, self.image_size, progress=False))

    def describe(self, data: StudyData) -> str:
        """Return three lines: the profile and seeds, the dataset (fingerprint, preprocessing), the external sets."""
        dataset = data.dataset
        external = (", ".join(f"{name} ({len(images)})" for name, images in data.external.items())
                    or "none found: not evaluated")
        return (f"profile {self.profile.name}: {self.profile.description}; seeds {list(self.seeds)}\n"
                f"dataset {dataset.root.name} (fingerprint {dataset.fingerprint[:16]}, preprocessing "
                f"{dataset.preprocessing}), {'from the cache' if dataset.from_cache else 'decoded'} in "
                f"{dataset.load_seconds:.1f} s"
                + (f"; {len(dataset.hidden)} hidden entries (names starting with '.') not read" if dataset.hidden
                   else "") + f"\nexternal sets: {external}")

    def settings(self, model_name: str, seed: int) -> TrainingSettings:
        """Return the profile's training recipe for one model and seed, with this study's epochs, image size and
        batch size."""
        settings = recipe(self.profile.recipe, model_name, epochs=self.epochs, seed=seed, image_size=self.image_size)
        return dataclasses.replace(settings, batch_size=self.batch_size) if self.batch_size else settings

    def run_directory(self, model_name: str, seed: int) -> Path:
        """Return the run folder of a model and seed."""
        return self.run_root / f"{model_name}-seed{seed}"

    def _differences(self, directory: Path, model_name: str, settings: TrainingSettings, data: StudyData
                     ) -> list[str]:
        """Return what keeps a run folder from being this model trained with this recipe and data ([]: reusable).
        A published run is read without the external sets it trained with when this machine has none: its stored
        predictions stand, and the external figures come from the published record."""
        details: dict[str, object] = {"data_fingerprint": data.dataset.fingerprint}
        if not (self.profile.reads_published and settings.external_training and not data.external):
            details["external_fingerprint"] = data.external_fingerprint if settings.external_training else None
            details["split_sizes"] = {"training": len(data.training), "validation": len(data.validation),
                                      "test": len(data.testing)}
        return run_differences(directory, model_name, settings, **details)

    def _reusable(self, directory: Path, model_name: str, settings: TrainingSettings, data: StudyData) -> bool:
        """Tell whether a finished run folder was trained with exactly this model, recipe and data."""
        return not self._differences(directory, model_name, settings, data)

    def train(self, model_name: str, data: StudyData) -> list[TrainingRun]:
        """Train a model once per seed, reusing any run folder already trained with the same model, recipe and data."""
        runs = []
        for seed in self.seeds:
            settings = self.settings(model_name, seed)
            directory = self.run_directory(model_name, seed)
            if self._reusable(directory, model_name, settings, data):
                print(f"{model_name} seed {seed}: reusing {config.shown_path(directory)}")
                runs.append(load_run(directory))
                continue
            if self.profile.reads_published:
                differences = ", ".join(self._differences(directory, model_name, settings, data))
                raise FileNotFoundError(f"{config.shown_path(directory)}: the published run of {model_name} (seed "
                                        f"{seed}) does not match this study ({differences}; this dataset's "
                                        f"fingerprint is {data.dataset.fingerprint[:16]}); set profile = \"full\" in "
                                        f"the parameters cell to train it")
            print(f"{model_name} seed {seed}: training into {config.shown_path(directory)}")
            runs.append(train_model(model_name, data.training, data.validation, data.testing, directory, settings,
                                    class_names=data.class_names, data_fingerprint=data.dataset.fingerprint,
                                    overwrite=True, external=data.external,
                                    external_fingerprint=(data.external_fingerprint
                                                          if settings.external_training else None)))
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
    return runs[int(np.argmax([validation_accuracy(run) for run in runs]))]


ENSEMBLE_SUFFIX = "-ensemble"


def ensemble_name(model_name: str) -> str:
    """Return the name of the ensemble of a model's seeds."""
    return f"{model_name}{ENSEMBLE_SUFFIX}"


def mean_predictions(runs: list[TrainingRun]) -> dict[str, dict[str, np.ndarray]]:
    """Return the stored predictions of a model's seeds with each split's probabilities averaged over the seeds."""
    first = runs[0]
    return {split: {**first.predictions[split],
                    "probabilities": np.mean([run.predictions[split]["probabilities"] for run in runs], axis=0)}
            for split in first.predictions}


def ensemble_run(model_name: str, runs: list[TrainingRun]) -> TrainingRun:
    """Return a model's seeds as one run: the mean of their probabilities, stored and predicted (build_ensemble)."""
    from helpers.models import build_ensemble

    first = runs[0]
    seeds = [int(run.details["settings"]["seed"]) for run in runs]
    return TrainingRun(directory=first.directory.parent / ensemble_name(model_name), class_names=first.class_names,
                       image_size=first.image_size, history=pd.DataFrame(), timings={},
                       details={**first.details, "model": ensemble_name(model_name), "seeds": seeds},
                       predictions=mean_predictions(runs),
                       loaded_model=build_ensemble([run.model for run in runs], ensemble_name(model_name)))


def default_ensemble(runs_per_model: dict[str, list[TrainingRun]]) -> dict[str, list[TrainingRun]]:
    """Return {ensemble name: [ensemble run]} for the best-on-validation model's seeds, the candidate published
    default; {} when it has one seed, or when its seeds keep no models (published runs without a shipped ensemble)."""
    name = best_on_validation(runs_per_model)
    runs = runs_per_model[name]
    if len(runs) < 2 or any(run.loaded_model is None for run in runs):
        return {}
    return {ensemble_name(name): [ensemble_run(name, runs)]}


def best_on_validation(runs_per_model: dict[str, list[TrainingRun]]) -> str:
    """Return the name of the model with the best mean validation accuracy over its seeds."""
    return max(runs_per_model, key=lambda name: np.mean([validation_accuracy(run) for run in runs_per_model[name]]))


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


def validation_accuracy(run: TrainingRun) -> float:
    """Return a run's accuracy on the validation split (an external "some tumour" image counts right as any tumour)."""
    validation = run.predictions["validation"]
    return partial_label_accuracy(validation["labels"], validation["probabilities"])


def masked_accuracy(probabilities: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    """Return the accuracy of class probabilities on the images a boolean mask selects."""
    return float((probabilities.argmax(axis=1)[mask] == labels[mask]).mean())


def test_accuracy_per_seed(runs: list[TrainingRun], mask: np.ndarray) -> dict[int, float]:
    """Return each seed's accuracy on the official Testing images a boolean mask selects (e.g. the clean test)."""
    return {int(run.details["settings"]["seed"]): masked_accuracy(run.predictions["test"]["probabilities"],
                                                                  run.predictions["test"]["labels"], mask)
            for run in runs}


def clean_test_table(runs_per_model: dict[str, list[TrainingRun]], clean: np.ndarray) -> pd.DataFrame:
    """Return each model's mean accuracy over seeds on all test images, the clean ones (no near duplicate in
    Training) and the others, with the number of clean images."""
    table = pd.DataFrame({name: {column: float(np.mean(list(test_accuracy_per_seed(runs, mask).values())))
                                 for column, mask in (("all test images", np.ones_like(clean)),
                                                      ("clean test images", clean),
                                                      ("with a near duplicate in Training", ~clean))}
                          for name, runs in runs_per_model.items()}).T
    table["clean images"] = int(clean.sum())
    return table


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
        "validation_accuracy": [validation_accuracy(run) for run in runs],
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


def flip_averaged_probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Return a model's class probabilities averaged over each image and its left-right mirror (test-time
    augmentation with the flip the models trained with)."""
    batch = images[..., np.newaxis]
    return (model.predict(batch, batch_size=batch_size, verbose=0)
            + model.predict(batch[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2.0


def cheap_accuracy_table(runs_per_model: dict[str, list[TrainingRun]], data: StudyData,
                         clean: np.ndarray) -> pd.DataFrame:
    """Return, per model, the representative seed alone, with flip averaging, and the mean of all its seeds'
    probabilities (an ensemble): validation, official-test and clean-test accuracy, and the inference cost in
    network passes per image. Only the validation column may choose among them."""
    rows = []
    test_labels = data.testing.labels
    for name, runs in runs_per_model.items():
        chosen = representative_run(runs)
        mean_over_seeds = {split: stored["probabilities"] for split, stored in mean_predictions(runs).items()}
        variants = {
            f"one network (seed {chosen.details['settings']['seed']})":
                (1, chosen.predictions["validation"]["probabilities"], chosen.predictions["test"]["probabilities"]),
            "flip averaging": (2, flip_averaged_probabilities(chosen.model, data.validation.images),
                               flip_averaged_probabilities(chosen.model, data.testing.images)),
            f"ensemble of {len(runs)} seed{'s' if len(runs) > 1 else ''}":
                (len(runs), mean_over_seeds["validation"], mean_over_seeds["test"])}
        for variant, (passes, validation, test) in variants.items():
            rows.append({"model": name, "variant": variant, "network passes per image": passes,
                         "validation accuracy": partial_label_accuracy(data.validation.labels, validation),
                         "test accuracy": masked_accuracy(test, test_labels, np.ones_like(clean)),
                         "clean-test accuracy": masked_accuracy(test, test_labels, clean)})
    return pd.DataFrame(rows).set_index(["model", "variant"])


def readable_summaries(summaries: list[dict[str, object]]) -> pd.DataFrame:
    """Return the model comparison as a reader sees it: one row per model, named columns, percentages with their
    95% intervals, times in seconds."""
    rows = []
    for summary in summaries:
        row = summary_row(summary)
        rows.append({"model": row["model"], "parameters": f"{row['parameters']:,}", "seeds": row["seeds"],
                     "validation accuracy": f"{row['validation_accuracy']:.2%}",
                     "test accuracy (± std over seeds)": mean_with_spread(row["accuracy"], row["accuracy_std"],
                                                                          row["seeds"]),
                     "95% CI": f"{row['accuracy_low']:.2%}–{row['accuracy_high']:.2%}",
                     "macro-F1 (95% CI)":
                         f"{row['macro_f1']:.3f} ({row['macro_f1_low']:.3f}–{row['macro_f1_high']:.3f})",
                     "s per epoch": f"{row['seconds_per_epoch']:.1f}", "s per run": f"{row['fit_seconds']:.0f}"})
    return pd.DataFrame(rows).set_index("model")
