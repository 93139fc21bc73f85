"""Paths, class names, environment-variable overrides and run profiles: the one place that owns configuration."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def _find_project_root() -> Path:
    """Return the repository root (the folder holding pyproject.toml), or the working directory."""
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd()


PROJECT_ROOT = Path(os.environ.get("BRAIN_MRI_PROJECT_ROOT", _find_project_root())).resolve()

# Environment variables a user can set to relocate things.
DATA_DIR_VARIABLE = "BRAIN_MRI_DATA_DIR"
CACHE_DIR_VARIABLE = "BRAIN_MRI_CACHE_DIR"
RUNS_DIR_VARIABLE = "BRAIN_MRI_RUNS_DIR"
EXTERNAL_DIR_VARIABLE = "BRAIN_MRI_EXTERNAL_DIR"

# Default (git-ignored) locations inside the repository.
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "brain-tumor-mri"
DEFAULT_EXTERNAL_DIR = PROJECT_ROOT / "data" / "external"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
REPORTS_DIR = PROJECT_ROOT / "reports"
MODELS_DIR = PROJECT_ROOT / "models"
# The published study's run folders (`make publish`): every seed's history and predictions; the models of the
# published seeds only.
PUBLISHED_RUNS_DIR = MODELS_DIR / "runs"

KAGGLE_DATASET = "masoudnickparvar/brain-tumor-mri-dataset"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_DATASET}"

# Label index order everywhere: the dataset's (alphabetical) folder order.
CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")
NO_TUMOUR_CLASS = "notumor"
SPLIT_NAMES: tuple[str, ...] = ("Training", "Testing")
# The row of the official Testing split in the per-source tables and targets.
OFFICIAL_TESTING = "official Testing"
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})

# Every model reads 64x64 images, as specified (why not smaller: docs/decisions.md, "Input size and augmentation").
DEFAULT_IMAGE_SIZE = 64
DEFAULT_SEED = 42
DEFAULT_VALIDATION_FRACTION = 0.15

# Truth of an external set whose images all show a tumour of a type not given, and its label index in training
# (one past the classes: the loss asks only that the tumour classes together be likely, helpers.modeling.training).
ANY_TUMOUR = "tumour"
ANY_TUMOUR_LABEL = len(CLASS_NAMES)


@dataclass(frozen=True)
class ExternalSet:
    """An independent set of slices: its folder, truth (a class name or ANY_TUMOUR), part, outlines and source."""

    name: str  # e.g. "br35h-tumour/test"
    folder: str  # the images, relative to the external-data folder
    truth: str  # a class name, or ANY_TUMOUR when only "a tumour" is known
    part: str  # "train": may be used for training and selection; "test": final figures only
    annotations: str  # tumour outlines: a VGG Image Annotator .json of polygons, a folder of PNG masks, or "" (none)
    source: str  # where the images come from, for the reports
    source_name: str = ""  # the source as the per-source tables name it; sets sharing it are its two sides
    origin: str = ""  # the collection it was drawn from, as leave-one-source-out holds it out
    sequence: str = ""  # the MRI sequence, where a collection gives it in several

    def __post_init__(self) -> None:
        if self.part not in ("train", "test"):
            raise ValueError(f"external set {self.name}: part must be 'train' or 'test', not {self.part!r}")
        if self.truth != ANY_TUMOUR and self.truth not in CLASS_NAMES:
            raise ValueError(f"external set {self.name}: truth must be {ANY_TUMOUR!r} or a class name, not "
                             f"{self.truth!r}")

    @property
    def collection(self) -> str:
        """Return the collection folder the set is a part of (its name without /train or /test)."""
        return self.name.split("/")[0]

    @property
    def shows_tumour(self) -> bool:
        """Return whether every image of the set shows a tumour (else none does)."""
        return self.truth != NO_TUMOUR_CLASS


def _external_pair(set_name: str, truth: str, annotations: str, source: str, source_name: str, origin: str,
                   sequence: str = "") -> tuple[ExternalSet, ...]:
    """Return the train and test parts of one external collection laid out as <set>/{train,test}/."""
    return tuple(ExternalSet(f"{set_name}/{part}", f"{set_name}/{part}", truth, part,
                             annotations.format(part=part), source, source_name, origin, sequence)
                 for part in ("train", "test"))


_TCGA = "TCGA lower-grade glioma collection (Buda et al. 2019)"
# The independent sets the study evaluates (and, train parts only, may train on): Br35H "yes" slices with tumour
# outlines; TCGA lower-grade glioma slices with tumour masks and the tumour-free slices of the same patients, each in
# the post-contrast and the FLAIR sequence. All are axial.
EXTERNAL_SETS: tuple[ExternalSet, ...] = (
    *_external_pair("br35h-tumour", ANY_TUMOUR, "br35h-tumour/annotations/{part}.json",
                    "Br35H :: Brain Tumor Detection 2020, tumour images", "Br35H", "br35h"),
    *_external_pair("tcga-lgg-glioma", "glioma", "tcga-lgg-glioma/masks", f"{_TCGA}, post-contrast slices",
                    "TCGA post-contrast", "tcga", "post-contrast"),
    *_external_pair("tcga-lgg-tumour-free", NO_TUMOUR_CLASS, "",
                    f"{_TCGA}, tumour-free post-contrast slices of the same patients", "TCGA post-contrast", "tcga",
                    "post-contrast"),
    *_external_pair("tcga-lgg-flair-glioma", "glioma", "tcga-lgg-glioma/masks", f"{_TCGA}, FLAIR slices",
                    "TCGA FLAIR", "tcga", "FLAIR"),
    *_external_pair("tcga-lgg-flair-tumour-free", NO_TUMOUR_CLASS, "",
                    f"{_TCGA}, tumour-free FLAIR slices of the same patients", "TCGA FLAIR", "tcga", "FLAIR"),
)
# The demo's generated stand-ins, in the same layout (helpers.inputs.synthetic.make_phantom_external_sets): a second
# "scanner" with outlined tumours of every kind, and gliomas and tumour-free slices of its "patients" in two sequences.
_PHANTOM = "generated phantoms of another 'scanner'"
PHANTOM_EXTERNAL_SETS: tuple[ExternalSet, ...] = (
    *_external_pair("phantom-tumour", ANY_TUMOUR, "phantom-tumour/annotations/{part}.json", _PHANTOM,
                    "phantom outlines", "phantom-outlines"),
    *_external_pair("phantom-glioma", "glioma", "phantom-glioma/masks", _PHANTOM, "phantom scanner",
                    "phantom-scanner", "first"),
    *_external_pair("phantom-tumour-free", NO_TUMOUR_CLASS, "", _PHANTOM, "phantom scanner", "phantom-scanner",
                    "first"),
    *_external_pair("phantom-second-glioma", "glioma", "phantom-glioma/masks", _PHANTOM, "phantom second sequence",
                    "phantom-scanner", "second"),
    *_external_pair("phantom-second-tumour-free", NO_TUMOUR_CLASS, "", _PHANTOM, "phantom second sequence",
                    "phantom-scanner", "second"),
)
# The collections the robust recipe mixes into training: tumour images only (the study before both sides).
TUMOUR_COLLECTIONS: tuple[str, ...] = ("br35h-tumour", "tcga-lgg-glioma", "phantom-tumour", "phantom-glioma")
# Every collection, on both sides of the decision: the both-sides recipe's.
ALL_COLLECTIONS: tuple[str, ...] = tuple(dict.fromkeys(spec.collection
                                                       for spec in (*EXTERNAL_SETS, *PHANTOM_EXTERNAL_SETS)))


def cache_dir() -> Path:
    """Return the folder for decoded-array caches ($BRAIN_MRI_CACHE_DIR or .cache/ in the repository)."""
    return Path(os.environ.get(CACHE_DIR_VARIABLE, PROJECT_ROOT / ".cache")).expanduser().resolve()


def runs_dir() -> Path:
    """Return the folder that holds training run folders ($BRAIN_MRI_RUNS_DIR or runs/ in the repository)."""
    return Path(os.environ.get(RUNS_DIR_VARIABLE, PROJECT_ROOT / "runs")).expanduser().resolve()


# The models of the study, in the order the reports show them: the two specified recurrent models, the project's
# recurrent models, then the CNN baseline (helpers.modeling.models.MODEL_BUILDERS holds their builders).
STUDY_MODELS = ("rnn", "hybrid", "crnn", "sequencer", "cnn")
# The model the specified recipe trains as each model's reference. The specification gives no CNN layers (its CNN is
# the project's first 1.5M-parameter design, cnn_wide); the project's own recurrent models, crnn and sequencer, are
# measured against the specified hybrid, the specification's CNN + LSTM.
REFERENCE_MODELS = {"rnn": "rnn", "hybrid": "hybrid", "cnn": "cnn_wide", "crnn": "hybrid", "sequencer": "hybrid"}


@dataclass(frozen=True)
class Profile:
    """Settings of one way of running the study (how much data, how long to train)."""

    name: str
    epochs: int
    images_per_class: int | None  # None: every image; otherwise a per-class, per-split subset
    synthetic: bool  # True: a generated phantom dataset instead of the real one
    seeds: tuple[int, ...]  # one training run per seed and model
    description: str
    batch_size: int | None = None  # None: the training recipe's batch size
    recipe: str = "outlined"  # a name in helpers.modeling.recipes.RECIPES
    external_sets: tuple[ExternalSet, ...] = EXTERNAL_SETS  # the independent sets evaluated (and trained on)
    external_per_set: int | None = None  # None: every image of each external set; otherwise the first ones
    reads_published: bool = False  # True: never trains; reads the published study's run folders (models/runs)
    models: tuple[str, ...] = STUDY_MODELS  # the models its notebooks train and compare
    saliency_images: int = 60  # external test images per outlined set on which saliency (occlusion) is measured
    model_recipes: tuple[tuple[str, str], ...] = ()  # (model, recipe name) for a model published with another recipe
    # The recipes every model trains under, the architectures compared within each (the first: the benchmark
    # protocol); empty: the profile's recipe alone.
    recipes: tuple[str, ...] = ()
    # (model, recipe, seeds) where the study's budget trains fewer seeds than the profile's, none at all where empty
    # (stated in notebooks 03 and 04).
    fewer_seeds: tuple[tuple[str, str, tuple[int, ...]], ...] = ()

    def recipe_name(self, model_name: str) -> str:
        """Return the name of the recipe of a model's published runs in this profile: its own, else the profile's."""
        return dict(self.model_recipes).get(model_name, self.recipe)

    @property
    def compared_recipes(self) -> tuple[str, ...]:
        """Return the recipes the models are compared within (the profile's recipe alone when it names none)."""
        return self.recipes or (self.recipe,)

    def seeds_of(self, model_name: str, recipe_name: str, seeds: tuple[int, ...]) -> tuple[int, ...]:
        """Return the seeds a model trains under a recipe: the study's, or fewer where the budget says so."""
        fewer = {(model, name): chosen for model, name, chosen in self.fewer_seeds}
        return tuple(seed for seed in seeds if seed in fewer.get((model_name, recipe_name), seeds))


# The rnn as specified trains with a recipe of its own, on the dataset's images only (docs/decisions.md, "Recipes").
FULL_PROFILE = Profile("full", epochs=40, images_per_class=None, synthetic=False, seeds=(42, 43, 44),
                       description="real data, full training, three seeds", model_recipes=(("rnn", "dataset-only"),),
                       recipes=("dataset-only", "outlined"))
PROFILES: dict[str, Profile] = {
    "full": FULL_PROFILE,
    # What a notebook opened without parameters shows: the published study's runs, read from models/runs (the
    # full profile's settings, so a run is used only where its recipe and data match), without training.
    "published": dataclasses.replace(FULL_PROFILE, name="published", reads_published=True,
                                     description="the published study's runs (models/runs) on the real data, "
                                                 "no training"),
    "smoke": Profile("smoke", epochs=1, images_per_class=40, synthetic=False, seeds=(42,), external_per_set=40,
                     recipes=("dataset-only", "outlined"),
                     saliency_images=4,
                     description="a small subset of the real data, one epoch (for tests)"),
    # The demo recipe (helpers.modeling.recipes.DEMO_RECIPE): the robust recipe scaled to the small phantom set.
    # It trains the two specified models and the CNN baseline, and measures saliency on 12 images a set, to stay
    # within five minutes (docs/decisions.md, "`make demo` in about five minutes").
    "demo": Profile("demo", epochs=12, images_per_class=None, synthetic=True, seeds=(42,), recipe="demo",
                    recipes=("demo-dataset-only", "demo"),
                    external_sets=PHANTOM_EXTERNAL_SETS, models=("rnn", "hybrid", "cnn"), saliency_images=12,
                    description="a generated phantom dataset, offline: shows the pipeline, not the study's results"),
}


def shown_path(path: Path) -> str:
    """Return a path as a report should print it: relative to the project when inside it, else as given."""
    path = Path(path)
    inside = path.is_absolute() and path.is_relative_to(PROJECT_ROOT)
    return str(path.relative_to(PROJECT_ROOT)) if inside else str(path)


def run_folder(run_root: Path, recipe_name: str, model_name: str, seed: int) -> Path:
    """Return the run folder of a model and seed under a recipe: <run_root>/<recipe>/<model>-seed<seed>."""
    return Path(run_root) / recipe_name / f"{model_name}-seed{seed}"


def study_run(run_root: Path, model_name: str, seed: int) -> Path:
    """Return the full study's run folder of a model's seed under the recipe its published runs have."""
    return run_folder(run_root, FULL_PROFILE.recipe_name(model_name), model_name, seed)


def default_run_root(profile: Profile) -> Path:
    """Return where a profile's run folders are: the published runs (models/runs) or runs/<profile>."""
    return PUBLISHED_RUNS_DIR if profile.reads_published else runs_dir() / profile.name


def folder_name(text: str) -> str:
    """Return a name as a folder name: lower case, every run of other characters than letters and digits one hyphen
    ("+ every source on both sides" -> "every-source-on-both-sides")."""
    name = "".join(character if character.isalnum() else "-" for character in text.lower()).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    return name


def check_choice(kind: str, value: object, choices: Iterable[str]) -> None:
    """Fail in one line naming the known values unless value is one of them (every option given by name)."""
    known = list(choices)
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {', '.join(known)}")


def get_profile(name: str) -> Profile:
    """Return the named profile or fail with the list of known ones."""
    check_choice("profile", name, PROFILES)
    return PROFILES[name]
