"""The study's shared steps for the notebooks: a profile's data, each model's recipe, runs per seed, metric records."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers import config
from helpers.analysis.selection import chosen_recipe
from helpers.analysis.shown_figures import draw_each_figure_once
from helpers.files import write_atomically
from helpers.inputs.data import ImageSplit, MRIDataset, load_dataset, split_validation, take_per_class
from helpers.inputs.duplicates import DuplicateAudit, audit_duplicates
from helpers.inputs.external import (
    ExternalImages,
    add_external_training,
    external_fingerprint,
    join_splits,
    load_external_sets,
)
from helpers.inputs.synthetic import make_phantom_dataset, make_phantom_external_sets
from helpers.metrics_record import Section
from helpers.modeling.recipes import TrainingSettings, recipe
from helpers.modeling.run_folders import TrainingRun, load_run, run_differences
from helpers.modeling.training import train_model
from helpers.notebook_display import display_formatter, leave_missing_cells_empty

# Per-class sizes of the generated dataset the `demo` profile trains on (and `smoke` when no real data is given).
PHANTOM_TRAINING_PER_CLASS = 300
PHANTOM_TESTING_PER_CLASS = 60
PHANTOM_SEED = 2024
PHANTOM_EXTERNAL_PER_PART = 40

@dataclass
class StudyData:
    """The splits every notebook of one study run works on: the same images for every model and seed."""

    dataset: MRIDataset
    training: ImageSplit  # with the external train parts' training images when the recipe trains on them
    validation: ImageSplit  # likewise with their held-out images (paths starting with external/)
    testing: ImageSplit
    external: dict[str, ExternalImages] = dataclasses.field(default_factory=dict)  # every external set found
    collections: tuple[str, ...] | None = None  # the external collections whose train parts joined training
    own_training: ImageSplit | None = None  # the dataset's training images alone (None: training is that already)

    def training_for(self, settings: TrainingSettings) -> ImageSplit:
        """Return the training images of a recipe: with the external train parts only when it trains on them."""
        if settings.external_training or self.own_training is None:
            return self.training
        return self.own_training

    @property
    def external_fingerprint(self) -> str | None:
        """Return the fingerprint of the external collections trained on, or None when there are none."""
        return external_fingerprint(self.external, self.collections)

    @property
    def external_test(self) -> ImageSplit | None:
        """Return the external sets' test parts as one split (paths external/<set>/test/...), None when there are
        none."""
        parts = [images.as_split() for images in self.external.values() if images.spec.part == "test"]
        return join_splits(*parts) if parts else None

    @property
    def class_names(self) -> tuple[str, ...]:
        """Return the label order."""
        return self.dataset.class_names

    def split_table(self, settings: TrainingSettings | None = None) -> pd.DataFrame:
        """Return the number of images per class (rows) in each split a recipe (default: the study's) trains and is
        evaluated on (columns); external tumours of a type not given form their own row."""
        names = [*self.class_names, "tumour, type not given (external)"]
        training = self.training_for(settings) if settings else self.training
        table = pd.DataFrame({name: dict(zip(names, np.bincount(split.labels, minlength=len(names)).tolist()))
                              for name, split in (("training", training), ("validation", self.validation),
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


def _json_ready(value: object) -> Any:
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
        """Resolve a notebook's parameters cell: empty or zero values take the profile's defaults. A notebook shows
        the study's output: TensorFlow's advice on retracing (saliency makes many calls of different sizes) is muted,
        a table's cells not measured are left empty, and each figure is drawn once (as its own image)."""
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        formatter = display_formatter()
        if formatter is not None:  # in a notebook
            leave_missing_cells_empty(formatter)
            draw_each_figure_once(formatter)
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
    def written_root(self) -> Path:
        """Return where the notebooks write what they fit (uncertainty records): the run root, or runs/<profile> for
        a profile that reads the published runs (models/ is written by `make publish` only)."""
        return config.runs_dir() / self.profile.name if self.profile.reads_published else self.run_root

    @property
    def preprocessing(self) -> str:
        """Return the preprocessing of the profile's recipe (every model of a study reads the same arrays)."""
        return recipe(self.profile.recipe).preprocessing

    def load_external(self) -> dict[str, ExternalImages]:
        """Load the profile's external sets that are present ({} when none: "not evaluated")."""
        root = phantom_external_root() if self.profile.synthetic else self.external_dir
        return load_external_sets(root, self.image_size, self.preprocessing, sets=self.profile.external_sets,
                                  first=self.profile.external_per_set)

    def load_data(self, progress: bool = True) -> StudyData:
        """Load the profile's dataset and split it: a fixed validation split, a per-class subset for quick profiles,
        and the external sets (their train parts joining training and validation where the recipe says so)."""
        root = phantom_dataset_root() if self.profile.synthetic else self.data_dir
        dataset = load_dataset(root, self.image_size, progress=progress, preprocessing=self.preprocessing)
        return self.assemble(dataset, self.load_external())

    def assemble(self, dataset: MRIDataset, external: dict[str, ExternalImages]) -> StudyData:
        """Return the study's splits of a loaded dataset and the profile's loaded external sets (load_data's second
        half: helpers.experiments.cluster trains from arrays sent to Ray tasks)."""
        training, validation = split_validation(dataset.training, seed=config.DEFAULT_SEED)
        testing = dataset.testing
        if self.profile.images_per_class:
            count = self.profile.images_per_class
            training = take_per_class(training, count)
            validation = take_per_class(validation, max(count // 2, 1))
            testing = take_per_class(testing, count)
        settings, own_training = recipe(self.profile.recipe), training
        if settings.external_training:
            training, validation = add_external_training(training, validation, external,
                                                         collections=settings.external_collections)
        return StudyData(dataset, training, validation, testing, external, settings.external_collections,
                         own_training=own_training)

    def source_images(self, preprocessing: str | None = None, part: str = "train") -> dict[str, np.ndarray]:
        """Return images per source with a preprocessing (default: the recipe's): the dataset's Training images of
        each class, then each external set's images of a part (as many as the profile takes of each)."""
        preprocessing = preprocessing or self.preprocessing
        root = phantom_dataset_root() if self.profile.synthetic else self.data_dir
        training = load_dataset(root, self.image_size, progress=False, preprocessing=preprocessing).training
        if self.profile.images_per_class:
            training = take_per_class(training, self.profile.images_per_class)
        sources = {f"dataset {name}": training.images[training.labels == index]
                   for index, name in enumerate(config.CLASS_NAMES)}
        external_root = phantom_external_root() if self.profile.synthetic else self.external_dir
        external = load_external_sets(external_root, self.image_size, preprocessing, sets=self.profile.external_sets,
                                      parts=(part,), first=self.profile.external_per_set)
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

    def settings(self, model_name: str, seed: int, recipe_name: str | None = None) -> TrainingSettings:
        """Return a model's training recipe in this profile for one seed (default recipe: the model's own, else the
        profile's), with this study's image size and batch size. The profile's recipe trains the profile's epochs and
        another recipe its own, scaled as the profile's are to the profile recipe's (full: 40 and 100; smoke: 1 and
        2); epochs given in the parameters hold for every recipe. Every recipe of a study reads the same preprocessed
        images."""
        name = recipe_name or self.profile.recipe_name(model_name)
        epochs = self.epochs
        if name != self.profile.recipe and self.epochs == self.profile.epochs:
            epochs = max(1, round(recipe(name).epochs * self.epochs / recipe(self.profile.recipe).epochs))
        settings = recipe(name, model_name, seed=seed, image_size=self.image_size, epochs=epochs)
        if settings.preprocessing != self.preprocessing:
            raise ValueError(f"profile {self.profile.name}: the {name} recipe of {model_name} preprocesses "
                             f"{settings.preprocessing!r}, the study's images are {self.preprocessing!r}")
        return dataclasses.replace(settings, batch_size=self.batch_size) if self.batch_size else settings

    def seeds_of(self, model_name: str, recipe_name: str | None = None) -> tuple[int, ...]:
        """Return the seeds a model trains under a recipe (default: its own) in this study."""
        return self.profile.seeds_of(model_name, recipe_name or self.profile.recipe_name(model_name), self.seeds)

    def run_directory(self, model_name: str, seed: int, recipe_name: str | None = None) -> Path:
        """Return the run folder of a model and seed under a recipe (default: the model's own in this profile)."""
        return config.run_folder(self.run_root, recipe_name or self.profile.recipe_name(model_name), model_name, seed)

    def _differences(self, directory: Path, model_name: str, settings: TrainingSettings, data: StudyData
                     ) -> list[str]:
        """Return what keeps a run folder from being this model trained with this recipe and data ([]: reusable).
        A published run is read without the external sets it trained or was validated with when this machine has
        none: its stored predictions stand, and the external figures come from the published record."""
        details: dict[str, Any] = {"data_fingerprint": data.dataset.fingerprint}
        if not (self.profile.reads_published and not data.external):
            details["external_fingerprint"] = data.external_fingerprint if settings.external_training else None
            details["split_sizes"] = {"training": len(data.training_for(settings)), "validation": len(data.validation),
                                      "test": len(data.testing)}
        return run_differences(directory, model_name, settings, **details)

    def reusable(self, directory: Path, model_name: str, settings: TrainingSettings, data: StudyData) -> bool:
        """Tell whether a finished run folder was trained with exactly this model, recipe and data."""
        return not self._differences(directory, model_name, settings, data)

    def train(self, model_name: str, data: StudyData, recipe_name: str | None = None) -> list[TrainingRun]:
        """Train a model once per seed under a recipe (default: its own), reusing any run folder already trained with
        the same model, recipe and data."""
        runs = []
        for seed in self.seeds_of(model_name, recipe_name):
            settings = self.settings(model_name, seed, recipe_name)
            directory = self.run_directory(model_name, seed, recipe_name)
            if self.reusable(directory, model_name, settings, data):
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
            runs.append(self.train_run(model_name, settings, directory, data))
        return runs

    @staticmethod
    def train_run(model_name: str, settings: TrainingSettings, directory: Path, data: StudyData) -> TrainingRun:
        """Train one run of a model with these settings on the study's data into a run folder (replacing it), with
        its predictions on the external test parts."""
        return train_model(model_name, data.training_for(settings), data.validation, data.testing, directory, settings,
                           class_names=data.class_names, data_fingerprint=data.dataset.fingerprint, overwrite=True,
                           external=data.external,
                           external_fingerprint=data.external_fingerprint if settings.external_training else None,
                           external_test=data.external_test)

    def finished_runs(self, model_name: str, data: StudyData, recipe_name: str) -> list[TrainingRun]:
        """Return a model's finished runs under a recipe (its seeds that this study holds), without their models."""
        return [load_run(self.run_directory(model_name, seed, recipe_name), with_model=False)
                for seed in self.seeds_of(model_name, recipe_name)
                if self.reusable(self.run_directory(model_name, seed, recipe_name), model_name,
                                 self.settings(model_name, seed, recipe_name), data)]

    def published_recipe(self, model_name: str, data: StudyData) -> str:
        """Return the recipe a model is published with: of the compared recipes it has runs of, the one with the best
        mean validation score (helpers.analysis.run_summaries.SELECTION_RULE)."""
        found = {name: self.finished_runs(model_name, data, name) for name in self.profile.compared_recipes}
        if not any(found.values()):
            raise FileNotFoundError(f"{self.run_root}: no finished {model_name} run under any of the recipes "
                                    f"{', '.join(self.profile.compared_recipes)}; run notebooks 02-04 first")
        return chosen_recipe(found)

    def load_runs(self, model_name: str, data: StudyData, recipe_name: str | None = None) -> list[TrainingRun]:
        """Load a model's finished runs under a recipe (default: its own), one per seed; fail naming the notebook to
        run when one is missing or stale."""
        runs = []
        for seed in self.seeds_of(model_name, recipe_name):
            directory = self.run_directory(model_name, seed, recipe_name)
            if not self.reusable(directory, model_name, self.settings(model_name, seed, recipe_name), data):
                raise FileNotFoundError(f"{directory}: no finished {model_name} run for seed {seed} with this "
                                        f"profile's recipe and data; run the {model_name} training notebook first")
            runs.append(load_run(directory))
        return runs

    def record(self, section: Section) -> Path:
        """Write the figures a notebook quotes to <metrics_dir>/<notebook>.json, where the pipeline collects them."""
        path = self.metrics_dir / f"{section.NOTEBOOK}.json"
        content = {"notebook": section.NOTEBOOK, "profile": self.profile.name, **_json_ready(section.figures())}
        write_atomically(path, lambda temporary: temporary.write_text(json.dumps(content, indent=2) + "\n"))
        return path
