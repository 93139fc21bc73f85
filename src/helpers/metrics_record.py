"""The metrics record: one typed section per notebook, written by the notebooks (`Study.record`) and read back from
metrics.json by publishing through the same types; the only place that names a notebook's file."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

# A table is a DataFrame where a notebook writes it and a list of row dicts where publishing reads it back.
Table = Any
RecordSection = TypeVar("RecordSection", bound="Section")


@dataclass
class Section:
    """What one notebook records; subclasses name the notebook and the figures it writes."""

    NOTEBOOK: ClassVar[str]
    TITLE: ClassVar[str]

    def figures(self) -> dict[str, Any]:
        """Return the recorded figures by name, as the notebook's record file stores them."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def recorded(cls, metrics: dict) -> bool:
        """Return whether the study's metrics hold this notebook's record (the notebook ran)."""
        return bool(metrics.get("notebooks", {}).get(cls.NOTEBOOK))

    @classmethod
    def read(cls: type[RecordSection], metrics: dict) -> RecordSection:
        """Return this notebook's record from the study's metrics; a figure it did not record (or recorded as null)
        takes its default, an empty table or None."""
        stored = metrics.get("notebooks", {}).get(cls.NOTEBOOK) or {}
        return cls(**{item.name: stored[item.name] for item in fields(cls) if stored.get(item.name) is not None})


@dataclass
class Exploration(Section):
    """The dataset's counts, sizes, colour modes and duplicates (notebook 01)."""

    NOTEBOOK: ClassVar[str] = "01_explore_data"
    TITLE: ClassVar[str] = "Exploring the data"
    data_fingerprint: str | None = None
    dataset_counts: dict = field(default_factory=dict)
    split_table: Table = field(default_factory=list)
    load_seconds: float | None = None
    distinct_sizes: int | None = None
    modes: dict = field(default_factory=dict)
    duplicate_summary: Table = field(default_factory=list)
    near_duplicate_threshold: int | None = None
    clean_test_images: int | None = None
    test_images: int | None = None


@dataclass
class RnnTraining(Section):
    """The specified RNN's seeds (notebook 02)."""

    NOTEBOOK: ClassVar[str] = "02_train_rnn"
    TITLE: ClassVar[str] = "The specified RNN (Conv1D + BiLSTM over rows)"
    data_fingerprint: str | None = None
    summary: dict = field(default_factory=dict)  # under the benchmark protocol
    summaries_by_recipe: dict = field(default_factory=dict)


@dataclass
class HybridTraining(Section):
    """The hybrids' and the project's recurrent models' seeds (notebook 03)."""

    NOTEBOOK: ClassVar[str] = "03_train_hybrid"
    TITLE: ClassVar[str] = "The specified hybrid and the project's other recurrent models"
    data_fingerprint: str | None = None
    summaries: dict = field(default_factory=dict)  # under the benchmark protocol
    summaries_by_recipe: dict = field(default_factory=dict)  # recipe -> model -> summary


@dataclass
class Comparison(Section):
    """Every model under every recipe: the factorial table, paired tests and verdicts within a recipe, each model's
    recipe effect, the frontier, the targets per protocol; per-model summaries of the published runs and cheap
    accuracy (notebook 04)."""

    NOTEBOOK: ClassVar[str] = "04_compare_cnn"
    TITLE: ClassVar[str] = "The CNN baseline and the comparison of all models"
    data_fingerprint: str | None = None
    summaries: dict = field(default_factory=dict)
    models: Table = field(default_factory=list)
    mcnemar: Table = field(default_factory=list)
    targets: Table = field(default_factory=list)
    cheap_accuracy: Table = field(default_factory=list)
    recipes: list = field(default_factory=list)  # the recipes compared within, the benchmark protocol first
    factorial: Table = field(default_factory=list)  # one row per (recipe, model)
    recipe_effect: Table = field(default_factory=list)
    frontier: Table = field(default_factory=list)
    frontier_source: str | None = None
    front: list = field(default_factory=list)
    verdicts: Table = field(default_factory=list)
    published_recipes: dict = field(default_factory=dict)  # model -> the recipe it is published with (SELECTION_RULE)
    factorial_cost: dict = field(default_factory=dict)  # runs, wall and CPU minutes, machines


@dataclass
class ErrorAnalysis(Section):
    """Where the models fail, and the leakage between the official splits (notebook 05)."""

    NOTEBOOK: ClassVar[str] = "05_error_analysis"
    TITLE: ClassVar[str] = "Where the models fail"
    data_fingerprint: str | None = None
    best_model_on_validation: str | None = None
    representative_seeds: dict = field(default_factory=dict)
    tumour_called_no_tumour: Table = field(default_factory=list)
    leakage: Table = field(default_factory=list)
    clean_test_accuracy_per_seed: dict = field(default_factory=dict)
    errors_shared_by_all_models: int | None = None
    rnn_row_importance_by_class: Table = field(default_factory=list)


@dataclass
class ExternalValidity(Section):
    """Every source on both sides, slice planes, saliency, the mitigation ladder and leave-one-source-out
    (notebook 06)."""

    NOTEBOOK: ClassVar[str] = "06_external_validity"
    TITLE: ClassVar[str] = "External validity: tumours from other sources, slice planes, saliency, mitigations"
    data_fingerprint: str | None = None
    evaluated: bool = False
    sources: dict = field(default_factory=dict)
    source_seeds: dict = field(default_factory=dict)
    source_table: Table = field(default_factory=list)
    source_table_without_near_copies: Table = field(default_factory=list)
    external_near_copies: dict = field(default_factory=dict)
    official_accuracy: dict = field(default_factory=dict)
    tumour_visibility: Table = field(default_factory=list)
    planes: Table = field(default_factory=list)
    known_axial_agreement: float | None = None
    accuracy_per_plane: Table = field(default_factory=list)
    source_probe: dict = field(default_factory=dict)
    pointing: Table = field(default_factory=list)
    mitigations: Table = field(default_factory=list)
    loso: Table = field(default_factory=list)


@dataclass
class Uncertainty(Section):
    """Calibration, prediction sets and the unfamiliar-input flag of each shipped model (notebook 07)."""

    NOTEBOOK: ClassVar[str] = "07_uncertainty"
    TITLE: ClassVar[str] = "Knowing when not to trust an answer: calibration, prediction sets, unfamiliar inputs"
    default: str | None = None
    level: float | None = None
    models: dict = field(default_factory=dict)
    model_table: Table = field(default_factory=list)
    targets: Table = field(default_factory=list)


SECTIONS: tuple[type[Section], ...] = (Exploration, RnnTraining, HybridTraining, Comparison, ErrorAnalysis,
                                       ExternalValidity, Uncertainty)
NOTEBOOKS: tuple[str, ...] = tuple(section.NOTEBOOK for section in SECTIONS)
NOTEBOOK_TITLES: dict[str, str] = {section.NOTEBOOK: section.TITLE for section in SECTIONS}
