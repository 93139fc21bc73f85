"""Publishing the full study: README's results table, the best model of each kind in models/, and its model card."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import commands, config, interrupts
from helpers.analysis.run_summaries import ENSEMBLE_SUFFIX, ensemble_name, mean_predictions, validation_accuracy
from helpers.config import OFFICIAL_TESTING
from helpers.evaluation import mean_with_spread, partial_label_accuracy
from helpers.files import with_marked_block, write_markdown_page, write_marked_block
from helpers.metrics_record import Comparison, ErrorAnalysis, Exploration, ExternalValidity, Uncertainty
from helpers.modeling.recipes import recipes_sentence, training_data_sentence
from helpers.modeling.run_folders import (
    HISTORY_FILE,
    LABELS_FILE,
    MODEL_FILE,
    PREDICTION_FILES,
    RUN_FILE,
    TIMINGS_FILE,
    check_run_folder,
    load_run,
)
from helpers.modeling.saved_models import MODEL_INDEX_FILE
from helpers.provenance import duration_sentence
from helpers.reporting.published_default import DEFAULT_RULE, cheap_accuracy_row, external_targets, shipped_default
from helpers.reporting.source_report import (
    external_sources,
    loso_markdown,
    loso_recipe,
    short_target_text,
    source_figures,
    source_markdown,
    target_text,
)
from helpers.uncertainty.record import study_record_path
from helpers.uncertainty.report import input_checks_markdown, readme_sentence

README_START = "<!-- results:start (written by `make publish` from reports/metrics.json; do not edit) -->"
README_END = "<!-- results:end -->"
MODEL_CARD_FILE = "MODEL_CARD.md"
# What models/ may take, byte copies aside: five models (20.7 MB) and the default's two more seeds as its ensemble.
MODEL_SIZE_LIMIT_BYTES = 35 * 1024 * 1024
PUBLISHED_RUNS = config.PUBLISHED_RUNS_DIR.name  # models/runs


def load_metrics(reports_dir: Path = config.REPORTS_DIR) -> dict:
    """Read a published reports/metrics.json, failing with its path when the study has not been published."""
    path = reports_dir / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no published study; run `make study` first")
    return json.loads(path.read_text())


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


def markdown_table(metrics: dict) -> str:
    """Return README's results block (Markdown): the models on the official split, the published default on every
    source, leave-one-source-out, and the targets, with the profile, machine and commit they came from."""
    table = results_table(metrics)
    clean_images = int(pd.DataFrame(ErrorAnalysis.read(metrics).leakage)["clean images"].iloc[0])
    lines = ["| model | parameters | test accuracy (mean ± std) | 95% CI | macro-F1 (95% CI) | clean-test accuracy | "
             "training time per run |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in table.iterrows():
        accuracy = mean_with_spread(row.accuracy, row.accuracy_std, int(row.seeds))
        lines.append(f"| {name} | {int(row.parameters):,} | {accuracy} | "
                     f"{row.accuracy_low:.2%}–{row.accuracy_high:.2%} | "
                     f"{row.macro_f1:.3f} ({row.macro_f1_low:.3f}–{row.macro_f1_high:.3f}) | "
                     f"{row.clean_test_accuracy:.2%} | {row.fit_seconds / 60:.1f} min |")
    lines += ["", f"Profile `{metrics['profile']}`, {int(table['seeds'].iloc[0])} seeds per model, official Testing "
              f"split ({clean_images} of its images have no near duplicate in Training: the clean-test column; "
              f"intervals: bootstrap over the test images of the mean over seeds), "
              f"commit `{metrics['provenance']['git_commit'][:10]}`. "
              f"{recipes_sentence(config.get_profile(metrics['profile']))} {duration_sentence(metrics)}", ""]
    lines.append("Targets (models chosen on validation): " + "; ".join(
        f"{row['target']} ({row['model']}) >= {row['required'] * 100:g}%: {row['measured']:.2%}, "
        f"{'met' if row['met'] else 'missed'}" for row in Comparison.read(metrics).targets) + ".")
    shipped = shipped_default(metrics)
    if external_sources(metrics):
        lines += ["", f"The published default (`{shipped}`) on both sides of every source (external *test* parts; "
                  "tumour sensitivity: share of tumour images not called no tumour; specificity: share of tumour-free "
                  "images called no tumour; 95% bootstrap intervals):", ""]
    lines += [source_markdown(metrics, shipped)]
    kind = shipped.removesuffix(ENSEMBLE_SUFFIX)
    loso_shown = loso_recipe(metrics, kind, config.FULL_PROFILE.recipe)
    loso = loso_markdown(metrics, columns=("tumour sensitivity", "specificity", "balanced accuracy"),
                         recipe=loso_shown, model_name=kind)
    if loso:
        lines += ["", f"A source absent from training (leave-one-source-out: the {kind}, `{loso_shown}` recipe, one "
                  "seed, trained without the held-out sets; the other models, recipes and type accuracy in "
                  "`reports/index.html`):", "", loso]
    external = external_targets(metrics)
    if external:
        met = [row for row in external if row["met"]]
        missed = [row for row in external if not row["met"]]
        lines += ["", f"External-validity targets for the published default ({shipped}): {len(met)} of "
                  f"{len(external)} met" + (f" ({'; '.join(short_target_text(row) for row in met)})" if met else "")
                  + (f"; missed: {'; '.join(short_target_text(row) for row in missed)}" if missed else "") + "."]
    uncertainty = readme_sentence(metrics, shipped)
    if uncertainty:
        lines += ["", uncertainty]
    return "\n".join(lines)


def readme_with_results(readme: str, metrics: dict) -> str:
    """Return README text with the block between the results markers replaced by the current table."""
    return with_marked_block(readme, README_START, README_END, markdown_table(metrics), "README.md")


def write_readme_results(readme_path: Path, metrics: dict) -> bool:
    """Rewrite README's results block from metrics.json; return whether anything changed."""
    return write_marked_block(readme_path, README_START, README_END, markdown_table(metrics))


# Share of validation images flagged as "unlike the training images" by brain-mri-predict's confidence threshold.
CONFIDENCE_FLAG_RATE = 0.01


def confidence_threshold(predictions: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Return the top-class confidence under which brain-mri-predict flags an input (the validation images' 1st
    percentile), with the share of validation and Testing images it flags."""
    validation = predictions["validation"]["probabilities"].max(axis=1)
    threshold = float(np.quantile(validation, CONFIDENCE_FLAG_RATE))
    rates = {"confidence_threshold": threshold,
             "confidence_flag_rate_validation": float((validation < threshold).mean())}
    if "test" in predictions:
        test = predictions["test"]["probabilities"].max(axis=1)
        rates["confidence_flag_rate_test"] = float((test < threshold).mean())
    return rates


def publish_models(metrics: dict, run_root: Path, models_dir: Path = config.MODELS_DIR) -> dict:
    """Copy each model's best-on-validation run (without optimizer state) into models/, with labels and an index."""
    if not run_root.is_dir():
        raise FileNotFoundError(f"{run_root}: no study run folders to publish from; run `make study` first")
    seeds = {name: row["representative_seed"]
             for name, row in Comparison.read(metrics).summaries.items()}
    staging = models_dir.with_name(models_dir.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        index = _stage_models(metrics, seeds, run_root, staging, models_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if models_dir.exists():
        shutil.rmtree(models_dir)
    os.replace(staging, models_dir)
    return index


def _save_unless_unchanged(model, path: Path, published: Path) -> None:
    """Save a model, or copy the published file when its weights are identical (publishing again changes no bytes)."""
    import keras

    if published.is_file():
        try:
            same = all(np.array_equal(old, new) for old, new in zip(
                keras.saving.load_model(published, compile=False).get_weights(), model.get_weights(), strict=True))
        except (ValueError, OSError):  # another architecture, or a damaged file: replace it
            same = False
        if same:
            shutil.copy2(published, path)
            return
    model.save(path)


def _stage_models(metrics: dict, seeds: dict[str, int], run_root: Path, staging: Path, models_dir: Path) -> dict:
    """Write each model, its label file, the index and the model card into the staging folder."""
    import keras

    index = {"models": {}, "data_fingerprint": metrics["data_fingerprint"],
             "git_commit": metrics["provenance"]["git_commit"]}
    summaries = Comparison.read(metrics).summaries
    shipped = shipped_default(metrics)
    for name, seed in seeds.items():
        run = load_run(run_root / f"{name}-seed{seed}", with_model=False)  # loaded below without optimizer state
        if run.details["data_fingerprint"] != metrics["data_fingerprint"]:
            raise ValueError(f"{run.directory}: trained on other data than the published reports")
        model = keras.saving.load_model(run.directory / MODEL_FILE, compile=False)
        _save_unless_unchanged(model, staging / f"{name}.keras", models_dir / f"{name}.keras")
        labels = json.loads((run.directory / LABELS_FILE).read_text())
        index.setdefault("class_names", labels["class_names"])
        if labels["class_names"] != index["class_names"]:
            raise ValueError(f"{run.directory}: label order {labels['class_names']} differs from the other models'")
        labels.update({"model": name, "seed": seed, "validation_accuracy": validation_accuracy(run),
                       "parameters": int(model.count_params()), "settings": run.details["settings"],
                       **confidence_threshold(run.predictions)})
        (staging / f"{name}.json").write_text(json.dumps(labels, indent=2) + "\n")
        ensemble = shipped == ensemble_name(name)
        _stage_runs(run_root, name, summaries[name]["seeds"], seed, staging, models_dir, every_model=ensemble)
        index["models"][name] = {"file": f"{name}.keras", "seed": seed,
                                 "validation_accuracy": labels["validation_accuracy"],
                                 **{key: value for key, value in labels.items() if key.startswith("confidence")}}
        if ensemble:
            index["models"][ensemble_name(name)] = _stage_ensemble(name, summaries[name]["seeds"], run_root, staging)
    index["default"] = index["models"][shipped]["file"]
    recorded = set(Uncertainty.read(metrics).models)
    for name, entry in index["models"].items():  # notebook 07's uncertainty records, beside their models
        record = study_record_path(run_root, name)
        if record.is_file():
            shutil.copy2(record, staging / record.name)
            entry["uncertainty"] = record.name
        elif name in recorded:
            raise FileNotFoundError(f"{record}: the uncertainty record notebook 07 reported for {name} is missing "
                                    f"(publish from the run folder of the study that wrote the reports)")
    (staging / MODEL_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    default_labels = json.loads((staging / f"{Path(index['default']).stem}.json").read_text())
    (staging / MODEL_CARD_FILE).write_text(model_card(metrics, index, default_labels["settings"]))
    write_markdown_page(staging / MODEL_CARD_FILE)
    # The published seeds' model.keras in runs/ are byte copies of the models above: git stores each once.
    copies = {staging / PUBLISHED_RUNS / f"{name}-seed{seed}" / MODEL_FILE for name, seed in seeds.items()}
    size = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file() and path not in copies)
    if size > MODEL_SIZE_LIMIT_BYTES:
        raise ValueError(f"models/: the models would take {size / 2**20:.1f} MB, over the "
                         f"{MODEL_SIZE_LIMIT_BYTES / 2**20:.0f} MB limit")
    return index


def _stage_ensemble(name: str, seeds: list[int], run_root: Path, staging: Path) -> dict:
    """Write the label file of a model's ensemble of seeds (its members: the seeds' models in runs/) and return its
    index entry: validation accuracy and confidence threshold of the averaged probabilities."""
    averaged = mean_predictions([load_run(run_root / f"{name}-seed{seed}", with_model=False) for seed in seeds])
    base = json.loads((staging / f"{name}.json").read_text())
    members = [f"{PUBLISHED_RUNS}/{name}-seed{seed}/{MODEL_FILE}" for seed in seeds]
    entry = {"file": f"{ensemble_name(name)}.json", "seeds": seeds, "members": members,
             "parameters": len(seeds) * base["parameters"],
             "validation_accuracy": partial_label_accuracy(averaged["validation"]["labels"],
                                                           averaged["validation"]["probabilities"]),
             **confidence_threshold(averaged)}
    labels = {key: base[key] for key in ("class_names", "image_size", "preprocessing", "input")}
    labels.update({"model": ensemble_name(name), "settings": base["settings"],
                   **{key: value for key, value in entry.items() if key != "file"}})
    (staging / entry["file"]).write_text(json.dumps(labels, indent=2) + "\n")
    return entry


def _stage_runs(run_root: Path, name: str, seeds: list[int], published_seed: int, staging: Path,
                models_dir: Path, every_model: bool = False) -> None:
    """Copy every seed's run folder without its model (history, timings, predictions, labels, run.json) into
    runs/ of the staging folder, with the published seed's model (every seed's, without optimizer state, for the
    default's ensemble), so notebooks opened without parameters read them."""
    for seed in seeds:
        source, target = run_root / f"{name}-seed{seed}", staging / PUBLISHED_RUNS / f"{name}-seed{seed}"
        check_run_folder(source)  # a run of the study missing or incomplete: fail naming it, loading nothing
        target.mkdir(parents=True)
        for file in (LABELS_FILE, HISTORY_FILE, TIMINGS_FILE, RUN_FILE):
            shutil.copy2(source / file, target / file)
        for file in PREDICTION_FILES.values():  # compressed: the image paths are most of their size
            if (source / file).is_file():
                with np.load(source / file, allow_pickle=False) as stored:
                    np.savez_compressed(target / file, **{name: stored[name] for name in stored.files})
        if seed == published_seed:
            shutil.copy2(staging / f"{name}.keras", target / MODEL_FILE)
        elif every_model:
            import keras

            _save_unless_unchanged(keras.saving.load_model(source / MODEL_FILE, compile=False), target / MODEL_FILE,
                                   models_dir / PUBLISHED_RUNS / target.name / MODEL_FILE)


def _card_models(metrics: dict, index: dict, default: str) -> tuple[str, str, str]:
    """Return the model card's sentence on the shipped ensemble, and its models table's header and rows."""
    table = results_table(metrics)
    external_headers = source_cells(metrics, default)[0]
    rows = "\n".join(
        f"| `{entry['file']}` | {entry.get('parameters') or int(table.loc[name, 'parameters']):,} | "
        f"{', '.join(map(str, entry.get('seeds', [entry.get('seed')])))} | {entry['validation_accuracy']:.2%} | "
        + " | ".join(ensemble_cells(metrics, name.removesuffix(ENSEMBLE_SUFFIX)) if "members" in entry
                     else shipped_cells(metrics, name, entry["seed"])) + " |"
        for name, entry in index["models"].items())
    ensembles = [name for name, entry in index["models"].items() if "members" in entry]
    ensemble_sentence = "" if not ensembles else (
        f"\n`{ensembles[0]}.json` is the ensemble of `{ensembles[0].removesuffix(ENSEMBLE_SUFFIX)}`: it names the "
        f"seeds' models in `runs/`, and `brain-mri-predict` averages their probabilities "
        f"({len(index['models'][ensembles[0]]['seeds'])} network passes per image); its figures are its own.")
    header = ("| file | parameters | seed | validation accuracy | official test accuracy | clean-test accuracy | "
              f"tumour sensitivity (official test) | {' | '.join(external_headers)} |\n|---|---:|---:|---:|---:|---:|"
              "---:|" + "---:|" * len(external_headers))
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
Each `.keras` file is the best-on-validation seed of its kind from the full study. Every figure is the shipped file's
own, with the mean over the study's seeds in brackets (± the seeds' standard deviation for official test accuracy);
the external columns are independent sources' test parts (tumours kept / tumour-free slices called no tumour; — where a
source gives one side only).{ensemble_sentence}
Inputs are 64x64 greyscale images: `brain-mri-predict` turns any image
into one with the function used in training (greyscale, cropped to the head, intensities standardised, resized); the
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


def _main(argv: list[str] | None = None) -> int:
    """Command line: write README's results table and publish models/ from reports/metrics.json (or --check)."""
    import argparse

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.reporting.results", description=_main.__doc__)
    parser.add_argument("--check", action="store_true", help="only check that README matches metrics.json")
    parser.add_argument("--readme-only", action="store_true", help="do not copy models")
    parser.add_argument("--run-root", default=str(config.runs_dir() / "full"))
    arguments = parser.parse_args(argv)
    readme = config.PROJECT_ROOT / "README.md"
    try:
        metrics = load_metrics()
        if arguments.check:
            matches = readme_with_results(readme.read_text(), metrics) == readme.read_text()
            if not matches:
                return commands.failed("README.md: its results are stale against reports/metrics.json; make publish")
            print("README results match reports/metrics.json")
            return commands.EXIT_DONE
        if not arguments.readme_only:  # models first: README never names models that failed to publish
            index = publish_models(metrics, Path(arguments.run_root))
            print(f"models/: {', '.join(index['models'])}; default {index['default']}")
        print("README.md results " + ("updated" if write_readme_results(readme, metrics) else "already current"))
    except (FileNotFoundError, ValueError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped("README.md and models/ were left as they were")
    return commands.EXIT_DONE


if __name__ == "__main__":
    raise SystemExit(_main())
