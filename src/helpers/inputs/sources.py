"""Image sources: which source each image comes from, both sides of every source, and per-source figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from helpers import config
from helpers.config import OFFICIAL_TESTING
from helpers.evaluation import both_sides_summary
from helpers.inputs.external import PATH_PREFIX, ExternalImages

# The source of the dataset's own images (its official Testing split is config.OFFICIAL_TESTING's row).
DATASET_SOURCE = "dataset"
# What the Br35H source's tumour-free side is: its "no" images are the dataset's own notumor class.
SHARED_NO_TUMOUR_NOTE = {"Br35H": "Br35H's 'no' images are the dataset's own notumor class (official Testing row)"}


def collection_sources(sets: tuple[config.ExternalSet, ...] = (*config.EXTERNAL_SETS,
                                                                 *config.PHANTOM_EXTERNAL_SETS)) -> dict[str, str]:
    """Return {collection: source name} for the configured external sets."""
    return {spec.collection: spec.source_name or spec.collection for spec in sets}


def image_sources(paths: np.ndarray) -> np.ndarray:
    """Return the source name of every training or validation image path (DATASET_SOURCE for the dataset's own)."""
    known = collection_sources()
    sources = []
    for path in np.asarray(paths).astype(str):
        if path.startswith(PATH_PREFIX):
            collection = path[len(PATH_PREFIX):].split("/")[0]
            sources.append(known.get(collection, collection))
        else:
            sources.append(DATASET_SOURCE)
    return np.array(sources)


def source_balance_weights(paths: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return per-image weights (mean 1) under which, within every source, the tumour images and the tumour-free
    images weigh the same in the loss, so that no source tells the side of the decision; each source keeps its share
    of the whole (a source with one side only keeps weight 1)."""
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    origins = image_sources(paths)
    free = np.asarray(labels) == no_tumour
    weights = np.ones(len(origins), dtype=np.float64)
    for source in np.unique(origins):
        members = origins == source
        sides = [members & free, members & ~free]
        if all(side.any() for side in sides):
            for side in sides:
                weights[side] = members.sum() / (2 * side.sum())
    return (weights / weights.mean()).astype(np.float32)


@dataclass
class SourceSides:
    """The external sets of one source and part: the images that show a tumour and those that show none."""

    source: str
    tumour: ExternalImages | None
    tumour_free: ExternalImages | None

    @property
    def truth(self) -> str:
        """Return the tumour side's truth: a class name, or ANY_TUMOUR when the type is not given."""
        return self.tumour.spec.truth if self.tumour is not None else config.ANY_TUMOUR


def source_sides(external: dict[str, ExternalImages], part: str = "test") -> dict[str, SourceSides]:
    """Group the external sets of a part by source: each source's tumour side and tumour-free side."""
    sides: dict[str, SourceSides] = {}
    for images in external.values():
        if images.spec.part != part:
            continue
        name = images.spec.source_name or images.spec.collection
        entry = sides.setdefault(name, SourceSides(name, None, None))
        if images.spec.shows_tumour:
            entry.tumour = images
        else:
            entry.tumour_free = images
    return sides


def official_sides(labels: np.ndarray, probabilities_per_seed: list[np.ndarray]) -> dict[str, Any]:
    """Return the official Testing split as a source with both sides: figures as both_sides_summary gives them."""
    labels = np.asarray(labels)
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    tumour = labels != no_tumour
    return both_sides_summary([probabilities[tumour] for probabilities in probabilities_per_seed],
                              [probabilities[~tumour] for probabilities in probabilities_per_seed],
                              truth=labels[tumour])


def predict_sets(runs_per_model: dict, external: dict[str, ExternalImages],
                 part: str = "test") -> dict[str, dict[str, list[np.ndarray]]]:
    """Return every model's probabilities on each external set of a part, per seed: {model: {set: [per seed]}}."""
    return {name: {set_name: [run.model.predict(images.images[..., np.newaxis], batch_size=256, verbose=0)
                              for run in runs]
                   for set_name, images in external.items() if images.spec.part == part}
            for name, runs in runs_per_model.items()}


def source_evaluation(predictions: dict[str, dict[str, list[np.ndarray]]], external: dict[str, ExternalImages],
                      official: dict[str, list[np.ndarray]] | None = None, official_labels: np.ndarray | None = None,
                      part: str = "test") -> dict[str, dict[str, dict]]:
    """Return {model: {source: both-sides summary}}: the official Testing split first (when given), then each
    external source of a part with the sensitivity on its tumour side and the specificity on its tumour-free side."""
    sides = source_sides(external, part)
    evaluation = {}
    for model_name, per_set in predictions.items():
        rows = {}
        if official is not None and official_labels is not None and model_name in official:
            rows[OFFICIAL_TESTING] = official_sides(official_labels, official[model_name])
        for source, side in sides.items():
            tumour = per_set[side.tumour.spec.name] if side.tumour is not None else None
            free = per_set[side.tumour_free.spec.name] if side.tumour_free is not None else None
            rows[source] = both_sides_summary(tumour, free, truth=side.truth)
        evaluation[model_name] = rows
    return evaluation


FIGURES = {"sensitivity": "tumour sensitivity", "specificity": "specificity", "type_accuracy": "type accuracy",
           "balanced_accuracy": "balanced accuracy"}


def source_table(evaluation: dict[str, dict[str, dict]]) -> pd.DataFrame:
    """Flatten source_evaluation() into one row per model and source: each figure with its 95% interval."""
    rows = []
    for model_name, sources in evaluation.items():
        for source, summary in sources.items():
            row: dict[str, Any] = {"model": model_name, "source": source, "seeds": summary["seeds"],
                                      "tumour images": summary["tumour_images"],
                                      "tumour-free images": summary["tumour_free_images"]}
            for key, header in FIGURES.items():
                figure = summary.get(key)
                row[header] = figure["mean"] if figure else np.nan
                row[f"{header} low"] = figure["ci"][0] if figure else np.nan
                row[f"{header} high"] = figure["ci"][1] if figure else np.nan
            row["note"] = SHARED_NO_TUMOUR_NOTE.get(source, "")
            rows.append(row)
    return pd.DataFrame(rows)


def readable_source_table(table: pd.DataFrame) -> pd.DataFrame:
    """Return the per-source table as a reader sees it: percentages with their 95% intervals, '—' where a source
    has no such side."""
    def cell(row: pd.Series, header: str) -> str:
        value = row[header]
        if pd.isna(value):
            return "—"
        return f"{value:.1%} ({row[f'{header} low']:.1%}–{row[f'{header} high']:.1%})"

    shown = pd.DataFrame({header: table.apply(cell, axis=1, header=header) for header in FIGURES.values()})
    shown.insert(0, "seeds", table["seeds"].astype(int))
    shown.insert(1, "images (tumour / none)", table["tumour images"].astype(int).astype(str) + " / "
                 + table["tumour-free images"].astype(int).astype(str))
    shown.index = pd.MultiIndex.from_frame(table[["model", "source"]])
    return shown


def both_sides_sentence(table: pd.DataFrame, pointing: pd.DataFrame) -> str:
    """Return the conclusion's sentence on the external sources: the range of balanced accuracy and of specificity
    on sources with both sides, against the official split, and where the saliency peaks fall."""
    external = table[table["source"] != OFFICIAL_TESTING]
    official = table[table["source"] == OFFICIAL_TESTING]
    both = external.dropna(subset=["balanced accuracy"])
    if not len(both):
        return (f"The external sources found give one side each: tumour sensitivity ranges "
                f"{external['tumour sensitivity'].min():.1%}–{external['tumour sensitivity'].max():.1%}.")
    worst, best = both.loc[both["balanced accuracy"].idxmin()], both.loc[both["balanced accuracy"].idxmax()]
    text = (f"On the external sources with both sides, balanced accuracy ranges from "
            f"**{worst['balanced accuracy']:.1%}** ({worst['model']}, {worst['source']}: tumours kept "
            f"{worst['tumour sensitivity']:.1%}, tumour-free slices called 'no tumour' {worst['specificity']:.1%}) to "
            f"**{best['balanced accuracy']:.1%}** ({best['model']}, {best['source']}). Specificity on tumour-free "
            f"external slices spans {both['specificity'].min():.1%}–{both['specificity'].max():.1%}, against "
            f"{official['specificity'].min():.1%}–{official['specificity'].max():.1%} on the official Testing split.")
    if len(pointing):
        by_model = pointing.groupby("model")["pointing_score"].mean()
        text += (f" Saliency peaks fall inside the tumour for {by_model.min():.0%} ({by_model.idxmin()}) to "
                 f"{by_model.max():.0%} ({by_model.idxmax()}) of outlined images (chance "
                 f"{pointing['chance'].mean():.0%}).")
    return text
