"""The model card of the published models (models/MODEL_CARD.md): intended use, each file's figures and recipe,
external validity, input checks, data and limits, written from metrics.json by `make publish`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.analysis.run_summaries import ENSEMBLE_SUFFIX, ensemble_name
from helpers.config import OFFICIAL_TESTING
from helpers.evaluation import mean_with_spread
from helpers.metrics_record import Comparison, ErrorAnalysis, Exploration, ExternalValidity, Uncertainty
from helpers.modeling.recipes import training_data_sentence
from helpers.reporting.published_default import DEFAULT_RULE, cheap_accuracy_row, external_targets, published_recipe
from helpers.reporting.source_report import (
    external_sources,
    loso_markdown,
    source_figures,
    source_markdown,
    target_text,
)
from helpers.uncertainty.report import input_checks_markdown


def results_table(metrics: dict) -> pd.DataFrame:
    """Return one row per model: parameters, test accuracy mean and std, macro-F1, clean-test accuracy, fit time."""
    models = pd.DataFrame(Comparison.read(metrics).models).set_index("model")
    leakage = pd.DataFrame(ErrorAnalysis.read(metrics).leakage).set_index("index")
    return pd.DataFrame({
        "parameters": models["parameters"], "seeds": models["seeds"], "accuracy": models["accuracy"],
        "accuracy_std": models["accuracy_std"], "accuracy_low": models["accuracy_low"],
        "accuracy_high": models["accuracy_high"], "macro_f1": models["macro_f1"],
        "macro_f1_low": models["macro_f1_low"], "macro_f1_high": models["macro_f1_high"],
        "clean_test_accuracy": leakage["clean test images"].reindex(models.index),
        "fit_seconds": models["fit_seconds"]})


def source_cells(metrics: dict, name: str, seed: int | None = None) -> tuple[list[str], list[str]]:
    """Return the model card's external column headers and one file's cells: per external source, tumour sensitivity
    / specificity of its own seed or, for an ensemble (seed None), its own (— where a source lacks a side; "not
    evaluated" without external sets or where that seed was not evaluated)."""
    sources = external_sources(metrics)
    if not sources:
        return ["external sources"], ["not evaluated"]
    figures = source_figures(metrics).get(name, {})
    evaluated_seeds = ExternalValidity.read(metrics).source_seeds.get(name, [])
    position = evaluated_seeds.index(seed) if seed in evaluated_seeds else None
    headers = [f"{source}: tumours kept / tumour-free called no tumour" for source in sources]
    if seed is not None and position is None:
        return headers, ["not evaluated"] * len(sources)

    def own(summary: dict | None, key: str) -> str:
        figure = (summary or {}).get(key)
        if not figure:
            return "—"
        return f"{figure['per_seed'][position] if position is not None else figure['mean']:.1%}"

    return headers, [f"{own(figures.get(source), 'sensitivity')} / {own(figures.get(source), 'specificity')}"
                     for source in sources]


def shipped_cells(metrics: dict, name: str, seed: int) -> list[str]:
    """Return the model card's cells for one published file: its own seed's figure, then the mean over the study's
    seeds in brackets (official test, clean test, tumour sensitivity), then its own per-source figures."""
    summary = Comparison.read(metrics).summaries[name]
    position = summary["seeds"].index(seed)
    accuracy = summary["test_accuracy"]
    clean = ErrorAnalysis.read(metrics).clean_test_accuracy_per_seed.get(name, {})
    clean_mean = float(np.mean(list(clean.values()))) if clean else None
    cells = [f"{accuracy['per_seed'][position]:.2%} "
             f"({mean_with_spread(accuracy['mean'], accuracy['std'], len(accuracy['per_seed']))})",
             f"{clean[str(seed)]:.2%} ({clean_mean:.2%})" if clean else "not recorded",
             f"{summary['representative']['tumour_sensitivity']:.2%}" if seed == summary["representative_seed"]
             else "not recorded"]
    return [*cells, *source_cells(metrics, name, seed)[1]]


def ensemble_cells(metrics: dict, name: str) -> list[str]:
    """Return the model card's cells for a model's ensemble of seeds: official test and clean-test accuracy (notebook
    04's cheap-accuracy row), tumour sensitivity and the per-source figures (notebook 06), "not recorded" if absent."""
    row = cheap_accuracy_row(metrics, name, "ensemble of")
    official = source_figures(metrics).get(ensemble_name(name), {}).get(OFFICIAL_TESTING, {}).get("sensitivity")
    cells = [f"{row['test accuracy']:.2%}" if row else "not recorded",
             f"{row['clean-test accuracy']:.2%}" if row else "not recorded",
             f"{official['mean']:.2%}" if official else "not recorded"]
    return [*cells, *source_cells(metrics, ensemble_name(name))[1]]


def _card_models(metrics: dict, index: dict, default: str) -> tuple[str, str, str]:
    """Return the model card's sentence on the shipped ensemble, and its models table's header and rows."""
    table = results_table(metrics)
    external_headers = source_cells(metrics, default)[0]
    rows = "\n".join(
        f"| `{entry['file']}` | `{published_recipe(metrics, name)}` | "
        f"{entry.get('parameters') or int(table.loc[name, 'parameters']):,} | "
        f"{', '.join(map(str, entry.get('seeds', [entry.get('seed')])))} | {entry['validation_score']:.2%} | "
        + " | ".join(ensemble_cells(metrics, name.removesuffix(ENSEMBLE_SUFFIX)) if "members" in entry
                     else shipped_cells(metrics, name, entry["seed"])) + " |"
        for name, entry in index["models"].items())
    ensembles = [name for name, entry in index["models"].items() if "members" in entry]
    ensemble_sentence = "" if not ensembles else (
        f"`{ensembles[0]}.json` is the ensemble of `{ensembles[0].removesuffix(ENSEMBLE_SUFFIX)}`: it names the "
        f"seeds' models in `runs/`, and `brain-mri-predict` averages their probabilities "
        f"({len(index['models'][ensembles[0]]['seeds'])} network passes per image); its figures are its own.\n")
    header = ("| file | recipe | parameters | seed | validation score | official test accuracy | "
              f"clean-test accuracy | tumour sensitivity (official test) | {' | '.join(external_headers)} |\n"
              "|---|---|---:|---:|---:|---:|"
              "---:|---:|" + "---:|" * len(external_headers))
    return ensemble_sentence, header, rows


def model_card(metrics: dict, index: dict, settings: dict) -> str:
    """Return the model card (Markdown): intended use, metrics per model, data (the default's settings), limits."""
    origin = metrics["provenance"]
    default = Path(index["default"]).stem
    trained, tested = (sum(Exploration.read(metrics).dataset_counts.get(split, {}).values())
                       for split in ("training", "testing"))
    ensemble_sentence, header, rows = _card_models(metrics, index, default)
    targets = "\n".join(f"- {target_text(row)}" for row in external_targets(metrics)) or (
        "- not evaluated: no external sets were found when the study ran")
    return f"""# Model card: brain-tumour MRI slice classifiers

Generated by `make publish` from `reports/metrics.json` (commit `{origin['git_commit'][:10]}`); do not edit.

## Intended use
Research and teaching only: comparing recurrent and convolutional classifiers of brain MRI slices. **Not a medical
device**; not validated for diagnosis, screening or any clinical decision.

## Models
Each `.keras` file is the seed of its kind with the best validation score (the rule below) under the recipe its row
names (`dataset-only`: the dataset's images; `outlined`: external train parts too). Each figure is the file's own, the
mean over the study's seeds in brackets (± the seeds' std for official test accuracy); external columns: independent
sources' test parts (tumours kept / tumour-free called no tumour; — where a source gives one side only).
{ensemble_sentence}Inputs are 64x64 greyscale images: `brain-mri-predict` turns any image into one with the function
used in training (greyscale, cropped to the head, intensities standardised, resized); the
model rescales to [0, 1] itself. Outputs are probabilities in the label order saved beside each model:
{", ".join(index["class_names"])}. The default model of `brain-mri-predict` is `{default}`: {DEFAULT_RULE}.

{header}
{rows}

## External validity (default model as shipped, external test parts)
{source_markdown(metrics, Path(index["default"]).stem)}

{loso_markdown(metrics) or "Leave-one-source-out: not measured (`make loso`)."}

Targets:
{targets}

## Input checks
{input_checks_markdown(metrics, default)}

## Data
The Kaggle "Brain Tumor MRI Dataset" (glioma, meningioma, no tumour, pituitary; {trained} Training and {tested} Testing
images, data fingerprint `{metrics['data_fingerprint'][:16]}`). Validation is a fixed stratified 15% of Training;
every selection used validation only. Testing was used once, for the figures above.
{training_data_sentence(settings)}

## Limits
- Many Testing images have exact or near duplicates in Training; the clean-test column is the honest figure of
  generalisation.
- The dataset entangles class with source: its no-tumour images come from one collection (Br35H), most tumours from
  another (figshare). The models are trained to resist this (head crop, intensity standardisation and the training
  data above), yet a source seen in training on one side only is learned as that side: read every sensitivity above
  beside the specificity on the same source. The figure for a hospital absent
  from training is the leave-one-source-out table. See `reports/{ExternalValidity.NOTEBOOK}.html`.
- Single 2-D slices at 64x64 pixels; no patient-level information, no 3-D context, no tumour grading.
- The collection's sources and labelling process are not documented in detail; label noise is possible.
- Calibrated probabilities and the coverage of the prediction sets hold for images like the validation images (the
  official split); on other sources neither is guaranteed (`reports/{Uncertainty.NOTEBOOK}.html`).
"""
