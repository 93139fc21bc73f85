"""External validity as publishing shows it: per-source tables of a model, the leave-one-source-out rows, and the
external-validity targets, all read from notebook 06's record in metrics.json."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from helpers import config
from helpers.analysis.run_summaries import ENSEMBLE_SUFFIX
from helpers.config import OFFICIAL_TESTING
from helpers.inputs.sources import FIGURES, SHARED_NO_TUMOUR_NOTE
from helpers.metrics_record import ExternalValidity
from helpers.targets import EXTERNAL_TARGETS


def source_figures(metrics: dict) -> dict[str, dict[str, dict]]:
    """Return {model: {source: both-sides summary}} (the official Testing split first), {} when not recorded."""
    return ExternalValidity.read(metrics).sources


def external_sources(metrics: dict) -> list[str]:
    """Return the external sources the study evaluated, in order ([] when none was found)."""
    figures = source_figures(metrics)
    first = next(iter(figures.values()), {})
    return [source for source in first if source != OFFICIAL_TESTING]


def cell(summary: dict | None, key: str) -> str:
    """Return one figure as text with its 95% interval ("95.5% (92.5%–98.0%)"), or "—" where the source lacks it."""
    figure = (summary or {}).get(key)
    if not figure:
        return "—"
    return f"{figure['mean']:.1%} ({figure['ci'][0]:.1%}–{figure['ci'][1]:.1%})"


def source_frame(metrics: dict, model: str) -> pd.DataFrame:
    """Return one model's per-source table: images on each side and each figure with its interval."""
    rows = []
    for source, summary in source_figures(metrics).get(model, {}).items():
        row = {"source": source + (" †" if source in SHARED_NO_TUMOUR_NOTE else ""),
               "images (tumour / none)": f"{summary['tumour_images']} / {summary['tumour_free_images']}"}
        row.update({header: cell(summary, key) for key, header in FIGURES.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def compact_markdown(frame: pd.DataFrame) -> str:
    """Return a table as Markdown without padding (a page's size is its tables' bytes): text left, figures right."""
    numeric = [all(cell == "—" or cell[:1].isdigit() for cell in frame[column].astype(str)) for column in frame]
    lines = ["| " + " | ".join(str(column) for column in frame.columns) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def source_markdown(metrics: dict, model: str) -> str:
    """Return one model's per-source table as Markdown, with the note on sources whose tumour-free side is shared."""
    frame = source_frame(metrics, model)
    if not len(frame) or not external_sources(metrics):
        return "External validity: not evaluated (no external sets were found when the study ran)."
    notes = " ".join(f"† {note}." for source, note in SHARED_NO_TUMOUR_NOTE.items()
                     if source in external_sources(metrics))
    return compact_markdown(frame) + (f"\n\n{notes}" if notes else "")


def loso_rows(metrics: dict, model: str | None = None, recipe: str | None = None) -> list[dict]:
    """Return the leave-one-source-out rows recorded by notebook 06 (of one model's kind and one recipe when given)."""
    rows = ExternalValidity.read(metrics).loso
    return [row for row in rows if (model is None or row["model"] == model)
            and (recipe is None or row.get("recipe") == recipe)]


def loso_frame(metrics: dict, recipe: str | None = None, model_name: str | None = None) -> pd.DataFrame:
    """Return the leave-one-source-out rows (of one recipe and one model when given) as a reader sees them: model,
    recipe, what was held out, where it was measured, the seed, and each figure as a percentage ("—" where the source
    has no such side); empty when not measured. Records written before runs named their recipe, and the rows of one
    recipe, have no recipe column; the rows of one model have no model column."""
    rows = loso_rows(metrics, model_name, recipe=recipe)
    named = recipe is None and any("recipe" in row for row in rows)
    return pd.DataFrame([{**({} if model_name else {"model": row["model"]}),
                          **({"recipe": row.get("recipe", "—")} if named else {}),
                          "held out of training": row["held out"], "measured on": row["source"],
                          "seed": row.get("seed", "—"),
                          **{header: _percent(row.get(key.replace("_", " "))) for key, header in FIGURES.items()}}
                         for row in rows])


def loso_recipe(metrics: dict, kind: str, study_recipe: str) -> str | None:
    """Return the recipe whose leave-one-source-out rows judge a model's kind: the study's own recipe when it was
    measured, else the last one measured (the candidate recipe); None when the kind has no rows."""
    recipes = [row.get("recipe") for row in loso_rows(metrics, kind)]
    if not recipes:
        return None
    return study_recipe if study_recipe in recipes else recipes[-1]


def loso_markdown(metrics: dict, columns: tuple[str, ...] | None = None, recipe: str | None = None,
                  model_name: str | None = None) -> str:
    """Return the leave-one-source-out table as Markdown, with only the given figure columns and one recipe's and one
    model's rows when named ("" when it was not measured)."""
    frame = loso_frame(metrics, recipe, model_name)
    if columns is not None and len(frame):
        frame = frame.drop(columns=[header for header in FIGURES.values() if header not in columns])
    return compact_markdown(frame) if len(frame) else ""


def _percent(value: float | None) -> str:
    """Return a share as a percentage, or "—" when absent."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _measured(metrics: dict, shipped: str, origin: str, where: str, figure: str) -> float | None:
    """Return one target's measured figure for the shipped default (None: not measured)."""
    record = ExternalValidity.read(metrics)
    if origin == "sources":
        found = source_figures(metrics).get(shipped, {}).get(where, {}).get(figure)
        return found["mean"] if found else None
    if origin == "official":
        return record.official_accuracy.get(shipped)
    if origin == "loso":
        held_out, source = where.split("|")
        kind = shipped.removesuffix(ENSEMBLE_SUFFIX)
        chosen = loso_recipe(metrics, kind, config.FULL_PROFILE.recipe)
        found = [row for row in loso_rows(metrics, kind, chosen)
                 if row["held out"] == held_out and row["source"] == source]
        values = [float(row[figure]) for row in found if row.get(figure) is not None]
        return sum(values) / len(values) if values else None  # the mean over the seeds measured
    found = [row for row in record.pointing if row["model"] == shipped
             and row["method"] == "occlusion" and row["external set"] == where]
    return found[0][figure] if found else None


def judged_targets(metrics: dict, shipped: str) -> list[dict[str, Any]]:
    """Return the external-validity targets for the shipped default, each met, missed or not measured; a target on a
    source the study did not evaluate (generated data, a missing set) is left out."""
    sources = {OFFICIAL_TESTING, *external_sources(metrics)}
    if not source_figures(metrics):
        return []
    rows = []
    for target, origin, where, figure, required in EXTERNAL_TARGETS:
        source = where.split("|")[-1]
        if origin in ("sources", "official", "loso") and source not in sources:
            continue
        if origin == "pointing" and not any(row["external set"] == where
                                            for row in ExternalValidity.read(metrics).pointing):
            continue
        measured = _measured(metrics, shipped, origin, where, figure)
        rows.append({"target": target, "model": shipped, "required": required,
                     "measured": float("nan") if measured is None else float(measured),
                     "met": measured is not None and measured >= required})
    return rows


def short_target_text(row: dict) -> str:
    """Return one target in few words: "name 96.1% (>= 95%)" (or "name not measured")."""
    measured = "not measured" if math.isnan(row["measured"]) else f"{row['measured']:.1%}"
    return f"{row['target']} {measured} (>= {row['required'] * 100:g}%)"


def target_text(row: dict) -> str:
    """Return one target as a sentence fragment: "name >= 95%: 96.10%, met" (or "not measured, missed")."""
    measured = "not measured" if math.isnan(row["measured"]) else f"{row['measured']:.2%}"
    return f"{row['target']} >= {row['required'] * 100:g}%: {measured}, {'met' if row['met'] else 'missed'}"
