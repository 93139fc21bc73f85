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
from helpers.analysis.selection import selection_score, validation_score
from helpers.evaluation import mean_with_spread, partial_label_accuracy
from helpers.files import with_marked_block, write_markdown_page, write_marked_block
from helpers.metrics_record import Comparison, ErrorAnalysis, Uncertainty
from helpers.modeling.recipes import recipes_sentence
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
from helpers.reporting.factorial_report import factorial_markdown
from helpers.reporting.model_card import model_card, results_table
from helpers.reporting.published_default import external_targets, published_run, shipped_default
from helpers.reporting.source_report import (
    external_sources,
    loso_markdown,
    loso_recipe,
    loso_rows,
    short_target_text,
    source_markdown,
)
from helpers.uncertainty.record import study_record_path
from helpers.uncertainty.report import readme_sentence

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


def _models_markdown(table: pd.DataFrame) -> list[str]:
    """Return the lines of one table of every model (a study of one recipe)."""
    lines = ["| model | parameters | test accuracy (mean ± std) | 95% CI | macro-F1 (95% CI) | clean-test accuracy | "
             "training time per run |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in table.iterrows():
        accuracy = mean_with_spread(row.accuracy, row.accuracy_std, int(row.seeds))
        lines.append(f"| {name} | {int(row.parameters):,} | {accuracy} | "
                     f"{row.accuracy_low:.2%}–{row.accuracy_high:.2%} | "
                     f"{row.macro_f1:.3f} ({row.macro_f1_low:.3f}–{row.macro_f1_high:.3f}) | "
                     f"{row.clean_test_accuracy:.2%} | {row.fit_seconds / 60:.1f} min |")
    return lines


def markdown_table(metrics: dict) -> str:
    """Return README's results block (Markdown): the models on the official split, the published default on every
    source, leave-one-source-out, and the targets, with the profile, machine and commit they came from."""
    table = results_table(metrics)
    clean_images = int(pd.DataFrame(ErrorAnalysis.read(metrics).leakage)["clean images"].iloc[0])
    factorial = factorial_markdown(metrics)
    if factorial:
        lines = [factorial, "", f"Profile `{metrics['profile']}`, official Testing split ({clean_images} of its images "
                 f"have no near duplicate in Training: the clean-test column), commit "
                 f"`{metrics['provenance']['git_commit'][:10]}`. {duration_sentence(metrics)}", ""]
    else:
        lines = [*_models_markdown(table), "", f"Profile `{metrics['profile']}`, {int(table['seeds'].iloc[0])} seeds "
                 f"per model, official Testing split ({clean_images} of its images have no near duplicate in Training: "
                 "the clean-test column; intervals: bootstrap over the test images of the mean over seeds), "
                 f"commit `{metrics['provenance']['git_commit'][:10]}`. "
                 f"{recipes_sentence(config.get_profile(metrics['profile']))} {duration_sentence(metrics)}", ""]
    benchmark = "".join(f" under `{name}`" for name in Comparison.read(metrics).recipes[:1])
    lines.append(f"Targets{benchmark} (models chosen on validation): " + "; ".join(
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
    if loso and not factorial:  # with a factorial, the frontier and the index page show it
        seeds = sorted({int(row["seed"]) for row in loso_rows(metrics, kind, loso_shown) if "seed" in row})
        lines += ["", f"A source absent from training (leave-one-source-out: the {kind}, `{loso_shown}` recipe, "
                  f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, trained without the held-out "
                  "sets; the other models, recipes and type accuracy in `reports/index.html`):", "", loso]
    external = external_targets(metrics)
    if external:
        met = [row for row in external if row["met"]]
        missed = [row for row in external if not row["met"]]
        lines += ["", f"External-validity targets for the published default ({shipped}): {len(met)} of "
                  f"{len(external)} met" + (f" ({'; '.join(short_target_text(row) for row in met)})" if met else "")
                  + (f"; {len(missed)} missed (`reports/index.html`)" if missed else "") + "."]
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
        _stage_factorial_runs(metrics, run_root, staging)
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
        # loaded below without optimizer state
        run = load_run(published_run(metrics, run_root, name, seed), with_model=False)
        if run.details["data_fingerprint"] != metrics["data_fingerprint"]:
            raise ValueError(f"{run.directory}: trained on other data than the published reports")
        model = keras.saving.load_model(run.directory / MODEL_FILE, compile=False)
        _save_unless_unchanged(model, staging / f"{name}.keras", models_dir / f"{name}.keras")
        labels = json.loads((run.directory / LABELS_FILE).read_text())
        index.setdefault("class_names", labels["class_names"])
        if labels["class_names"] != index["class_names"]:
            raise ValueError(f"{run.directory}: label order {labels['class_names']} differs from the other models'")
        labels.update({"model": name, "seed": seed, "validation_accuracy": validation_accuracy(run),
                       "validation_score": validation_score(run),
                       "parameters": int(model.count_params()), "settings": run.details["settings"],
                       **confidence_threshold(run.predictions)})
        (staging / f"{name}.json").write_text(json.dumps(labels, indent=2) + "\n")
        ensemble = shipped == ensemble_name(name)
        _stage_runs(metrics, run_root, name, summaries[name]["seeds"], seed, staging, models_dir, every_model=ensemble)
        index["models"][name] = {"file": f"{name}.keras", "seed": seed,
                                 "validation_accuracy": labels["validation_accuracy"],
                                 "validation_score": labels["validation_score"],
                                 **{key: value for key, value in labels.items() if key.startswith("confidence")}}
        if ensemble:
            index["models"][ensemble_name(name)] = _stage_ensemble(metrics, name, summaries[name]["seeds"], run_root,
                                                                   staging)
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
    copies = {published_run(metrics, staging / PUBLISHED_RUNS, name, seed) / MODEL_FILE
              for name, seed in seeds.items()}
    size = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file() and path not in copies)
    if size > MODEL_SIZE_LIMIT_BYTES:
        raise ValueError(f"models/: the models would take {size / 2**20:.1f} MB, over the "
                         f"{MODEL_SIZE_LIMIT_BYTES / 2**20:.0f} MB limit")
    return index


def _stage_ensemble(metrics: dict, name: str, seeds: list[int], run_root: Path, staging: Path) -> dict:
    """Write the label file of a model's ensemble of seeds (its members: the seeds' models in runs/) and return its
    index entry: validation accuracy and score, and confidence threshold of the averaged probabilities."""
    averaged = mean_predictions([load_run(published_run(metrics, run_root, name, seed), with_model=False)
                                 for seed in seeds])
    base = json.loads((staging / f"{name}.json").read_text())
    members = [str(published_run(metrics, Path(PUBLISHED_RUNS), name, seed) / MODEL_FILE) for seed in seeds]
    entry = {"file": f"{ensemble_name(name)}.json", "seeds": seeds, "members": members,
             "parameters": len(seeds) * base["parameters"],
             "validation_accuracy": partial_label_accuracy(averaged["validation"]["labels"],
                                                           averaged["validation"]["probabilities"]),
             "validation_score": selection_score(averaged["validation"]),
             **confidence_threshold(averaged)}
    labels = {key: base[key] for key in ("class_names", "image_size", "preprocessing", "input")}
    labels.update({"model": ensemble_name(name), "settings": base["settings"],
                   **{key: value for key, value in entry.items() if key != "file"}})
    (staging / entry["file"]).write_text(json.dumps(labels, indent=2) + "\n")
    return entry


def _copy_run_files(source: Path, target: Path) -> None:
    """Copy a run folder without its model into a new folder, its predictions compressed."""
    check_run_folder(source)  # a run of the study missing or incomplete: fail naming it, loading nothing
    target.mkdir(parents=True)
    for file in (LABELS_FILE, HISTORY_FILE, TIMINGS_FILE, RUN_FILE):
        shutil.copy2(source / file, target / file)
    for file in PREDICTION_FILES.values():  # compressed: the image paths are most of their size
        if (source / file).is_file():
            with np.load(source / file, allow_pickle=False) as stored:
                np.savez_compressed(target / file, **{name: stored[name] for name in stored.files})


def _stage_factorial_runs(metrics: dict, run_root: Path, staging: Path) -> None:
    """Copy every run of the factorial comparison (each recipe, model and seed notebook 04 read) that is not a
    published model's run into runs/<recipe>/ of the staging folder, without its model."""
    for row in Comparison.read(metrics).factorial:
        for seed in row["seeds"]:
            target = config.run_folder(staging / PUBLISHED_RUNS, row["recipe"], row["model"], seed)
            if not target.exists():
                _copy_run_files(config.run_folder(run_root, row["recipe"], row["model"], seed), target)


def _stage_runs(metrics: dict, run_root: Path, name: str, seeds: list[int], published_seed: int, staging: Path,
                models_dir: Path, every_model: bool = False) -> None:
    """Copy every seed's run folder without its model (history, timings, predictions, labels, run.json) into
    runs/ of the staging folder, with the published seed's model (every seed's, without optimizer state, for the
    default's ensemble), so notebooks opened without parameters read them."""
    for seed in seeds:
        source = published_run(metrics, run_root, name, seed)
        target = published_run(metrics, staging / PUBLISHED_RUNS, name, seed)
        _copy_run_files(source, target)
        if seed == published_seed:
            shutil.copy2(staging / f"{name}.keras", target / MODEL_FILE)
        elif every_model:
            import keras

            _save_unless_unchanged(keras.saving.load_model(source / MODEL_FILE, compile=False), target / MODEL_FILE,
                                   published_run(metrics, models_dir / PUBLISHED_RUNS, name, seed) / MODEL_FILE)


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
