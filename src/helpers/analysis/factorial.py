"""The factorial comparison: every model under each recipe, figures per (recipe, model), architectures compared
within a recipe, each model's recipe effect, and the frontier between the official split and a source held out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers import config
from helpers.analysis.run_summaries import (
    dataset_validation_accuracy,
    representative_run,
    test_accuracy_per_seed,
    validation_accuracy,
)
from helpers.evaluation import both_sides_summary, mcnemar_table, mean_with_spread
from helpers.inputs.external import PATH_PREFIX as EXTERNAL_PATH_PREFIX
from helpers.inputs.sources import FIGURES
from helpers.modeling.recipes import RECIPES
from helpers.modeling.run_folders import TrainingRun

# The figures per source of the recipe-effect table, as both_sides_summary names them.
SOURCE_FIGURES = tuple(FIGURES)
# The frontier's vertical axis: balanced accuracy on this source while it is held out of training.
FRONTIER_SOURCE = "TCGA FLAIR"


def frontier_source(sets: tuple[config.ExternalSet, ...]) -> str:
    """Return the source the frontier holds out: FRONTIER_SOURCE where the sets hold it, else the last source with
    images on both sides (the demo's phantoms)."""
    sources = [spec.source_name for spec in sets if spec.part == "test"]
    if FRONTIER_SOURCE in sources:
        return FRONTIER_SOURCE
    both = [source for source in dict.fromkeys(sources)
            if {spec.shows_tumour for spec in sets if spec.source_name == source} == {True, False}]
    return both[-1] if both else sources[-1]


def run_minutes(run: TrainingRun) -> tuple[float, float | None]:
    """Return a run's training minutes: wall clock, and CPU (every thread; None for a run that did not record it)."""
    cpu = run.timings.get("fit_cpu_seconds")
    return run.timings["fit_seconds"] / 60, (cpu / 60 if cpu is not None else None)


def factorial_cost(runs: dict[str, dict[str, list[TrainingRun]]]) -> dict[str, Any]:
    """Return what the factorial's runs cost to train, from their own records: how many, their wall-clock minutes, the
    CPU minutes of those that recorded them, and the machines (CPU model, cores) they trained on."""
    every = [run for models in runs.values() for model_runs in models.values() for run in model_runs]
    minutes = [run_minutes(run) for run in every]
    machines = sorted({f"{run.details.get('device', {}).get('cpu_model') or 'unknown CPU'}, "
                       f"{run.details.get('device', {}).get('cpu_count', '?')} cores" for run in every})
    return {"runs": len(every), "wall_minutes": float(sum(wall for wall, _ in minutes)),
            "cpu_minutes": float(sum(cpu for _, cpu in minutes if cpu is not None)),
            "runs_with_cpu_time": sum(cpu is not None for _, cpu in minutes), "machines": machines}


def cost_sentence(cost: dict[str, Any]) -> str:
    """Return the factorial's cost in words."""
    cpu = (f" ({cost['cpu_minutes']:.0f} CPU-minutes over the {cost['runs_with_cpu_time']} runs that recorded them)"
           if cost["runs_with_cpu_time"] else "")
    hours = cost["wall_minutes"] / 60
    return f"The factorial's {cost['runs']} runs trained for {hours:.1f} hours of wall clock{cpu}, on " \
           f"{'; '.join(cost['machines'])}."


def external_set_names(paths: np.ndarray) -> np.ndarray:
    """Return the external set of every path of an external prediction file (external/<collection>/<part>/...)."""
    parts = np.char.split(np.char.replace(np.asarray(paths).astype(str), EXTERNAL_PATH_PREFIX, "", count=1), "/")
    return np.array(["/".join(part[:2]) for part in parts])


def source_summaries(runs: list[TrainingRun], sets: tuple[config.ExternalSet, ...]) -> dict[str, dict[str, Any]]:
    """Return both sides of every external source's test parts over a model's seeds ({} when a run kept no external
    predictions): sensitivity, specificity, type accuracy and balanced accuracy, each per seed and as a mean."""
    stored = [run.predictions["external_test"] for run in runs if "external_test" in run.predictions]
    if not stored:
        return {}
    names = external_set_names(stored[0]["paths"])
    found: dict[str, dict[str, Any]] = {}
    for source in dict.fromkeys(spec.source_name for spec in sets if spec.part == "test"):
        members = [spec for spec in sets if spec.part == "test" and spec.source_name == source]
        sides: dict[bool, list[np.ndarray] | None] = {}
        truth = config.ANY_TUMOUR
        for shows_tumour in (True, False):
            chosen = np.isin(names, [spec.name for spec in members if spec.shows_tumour == shows_tumour])
            sides[shows_tumour] = [item["probabilities"][chosen] for item in stored] if chosen.any() else None
            if shows_tumour and chosen.any():
                truths = {spec.truth for spec in members if spec.shows_tumour}
                truth = truths.pop() if len(truths) == 1 else config.ANY_TUMOUR
        if sides[True] is not None or sides[False] is not None:
            found[source] = both_sides_summary(sides[True], sides[False], truth)
    return found


def factorial_rows(runs: dict[str, dict[str, list[TrainingRun]]], clean: np.ndarray,
                   sets: tuple[config.ExternalSet, ...]) -> list[dict[str, Any]]:
    """Return one row per (recipe, model) of runs[recipe][model]: seeds, official and clean-test accuracy (mean and
    std over seeds), validation accuracy on the dataset's own images and on the whole split, training minutes, and
    both sides of every external source."""
    rows = []
    for recipe_name, models in runs.items():
        for model_name, model_runs in models.items():
            if not model_runs:
                continue
            official = list(test_accuracy_per_seed(model_runs, np.ones(len(clean), dtype=bool)).values())
            clean_accuracy = list(test_accuracy_per_seed(model_runs, clean).values())
            minutes = [run_minutes(run) for run in model_runs]
            cpu = [cpu for _, cpu in minutes if cpu is not None]
            row: dict[str, Any] = {
                "recipe": recipe_name, "model": model_name, "parameters": int(model_runs[0].details["parameters"]),
                "seeds": [int(run.details["settings"]["seed"]) for run in model_runs],
                "official_accuracy": float(np.mean(official)), "official_accuracy_std": float(np.std(official)),
                "official_accuracy_per_seed": official, "clean_test_accuracy": float(np.mean(clean_accuracy)),
                "dataset_validation_accuracy": float(np.mean([dataset_validation_accuracy(run)
                                                              for run in model_runs])),
                "validation_accuracy": float(np.mean([validation_accuracy(run) for run in model_runs])),
                "wall_minutes": float(np.mean([wall for wall, _ in minutes])),
                "cpu_minutes": float(np.mean(cpu)) if len(cpu) == len(minutes) else None}
            row["external_seeds"] = sum("external_test" in run.predictions for run in model_runs)
            for source, summary in source_summaries(model_runs, sets).items():
                for figure in SOURCE_FIGURES:
                    if figure in summary:
                        row[f"{source}: {figure}"] = summary[figure]["mean"]
                        row[f"{source}: {figure} per seed"] = summary[figure]["per_seed"]
            rows.append(row)
    return rows


def readable_factorial(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Return the factorial table as a reader sees it: one row per (recipe, model), percentages, empty where a figure
    was not measured."""
    table = pd.DataFrame(rows).set_index(["recipe", "model"])
    shown = [column for column in table.columns if not column.endswith("per seed") and column not in
             ("official_accuracy_per_seed", "parameters", "seeds", "official_accuracy_std")]
    readable = table[shown].map(lambda value: "" if value is None or (isinstance(value, float) and np.isnan(value))
                                else f"{value:.1%}" if isinstance(value, float) else value)
    readable.insert(0, "seeds", table["seeds"].map(len))
    readable["official_accuracy"] = [mean_with_spread(row.official_accuracy, row.official_accuracy_std,
                                                      len(row.seeds)) for row in table.itertuples()]
    readable["wall_minutes"] = table["wall_minutes"].map("{:.1f}".format)
    readable["cpu_minutes"] = table["cpu_minutes"].map(lambda value: "" if value is None or np.isnan(value)
                                                       else f"{value:.1f}")
    return readable.rename(columns=lambda name: name.replace("_", " "))


def within_recipe_mcnemar(labels: np.ndarray, runs: dict[str, dict[str, list[TrainingRun]]]) -> pd.DataFrame:
    """Return McNemar's exact test for every pair of models within each recipe (each model's representative run,
    best on validation), one row per (recipe, pair); never a pair across recipes."""
    tables = []
    for recipe_name, models in runs.items():
        predicted = {name: representative_run(model_runs).predictions["test"]["probabilities"].argmax(axis=1)
                     for name, model_runs in models.items() if model_runs}
        if len(predicted) > 1:
            tables.append(mcnemar_table(labels, predicted).assign(recipe=recipe_name))
    if not tables:
        return pd.DataFrame(columns=["recipe", "first", "second", "only_first_correct", "only_second_correct",
                                     "p_value"])
    table = pd.concat(tables, ignore_index=True)
    return table[["recipe", *[column for column in table.columns if column != "recipe"]]]


def recipe_effect(rows: list[dict[str, Any]], first: str, second: str, points: pd.DataFrame | None = None,
                  source: str = FRONTIER_SOURCE) -> pd.DataFrame:
    """Return per model the change of every figure from one recipe to another (second minus first, in points of
    percentage), for the models trained under both; with the frontier's points, the change of the balanced accuracy
    on the source held out of training too (NaN where either side was not measured)."""
    table = pd.DataFrame(rows).set_index(["recipe", "model"])
    if points is not None and len(points):
        table[f"{source} held out: balanced_accuracy"] = points.set_index(["recipe", "model"])[
            "held_out_balanced_accuracy"].reindex(table.index)
    figures = [column for column in table.columns if column in ("official_accuracy", "clean_test_accuracy",
                                                                "dataset_validation_accuracy")
               or (":" in column and not column.endswith("per seed"))]
    both = [model for model in table.loc[first].index if model in table.loc[second].index] if (
        first in table.index.get_level_values(0) and second in table.index.get_level_values(0)) else []
    changes = {model: {figure: 100 * (table.loc[(second, model), figure] - table.loc[(first, model), figure])
                       for figure in figures} for model in both}
    return pd.DataFrame(changes).T.astype(float).round(1).rename(columns=lambda name: name.replace("_", " "))


def loso_rows(profile: config.Profile, measured: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Return the leave-one-source-out rows (reports/loso.json, as measured) a profile's frontier may use: those of
    the whole real dataset trained the full profile's epochs ([] for a profile on a subset, fewer epochs or generated
    data)."""
    whole = not profile.synthetic and profile.images_per_class is None and profile.epochs == config.FULL_PROFILE.epochs
    return list(measured or []) if whole else []


def held_out_figure(row: dict[str, Any], loso: list[dict[str, Any]], source: str = FRONTIER_SOURCE,
                    sets: tuple[config.ExternalSet, ...] = config.EXTERNAL_SETS) -> list[float]:
    """Return a (recipe, model) row's balanced accuracy per seed on a source held out of its training: its own
    external figure when its recipe trains on no external image, else the leave-one-source-out rows of that model
    and recipe with the source's whole origin held out ([] when not measured)."""
    if not RECIPES[row["recipe"]].external_training:
        return list(row.get(f"{source}: balanced_accuracy per seed", []))
    origins = {spec.origin for spec in sets if spec.source_name == source}
    whole = {spec.source_name for spec in sets if spec.origin in origins}
    return [float(measured["balanced accuracy"]) for measured in loso
            if measured["model"] == row["model"] and measured["recipe"] == row["recipe"]
            and measured["source"] == source and set(measured["held out"].split(" + ")) == whole
            and measured.get("balanced accuracy") is not None]


def frontier_points(rows: list[dict[str, Any]], loso: list[dict[str, Any]], source: str = FRONTIER_SOURCE,
                    sets: tuple[config.ExternalSet, ...] = config.EXTERNAL_SETS) -> pd.DataFrame:
    """Return the frontier's points, one per (recipe, model): official accuracy (mean, std over seeds), balanced
    accuracy on the source held out of training (mean, std, how many seeds; NaN where not measured) and the
    training minutes."""
    points = []
    for row in rows:
        held_out = held_out_figure(row, loso, source, sets)
        points.append({"recipe": row["recipe"], "model": row["model"], "official_accuracy": row["official_accuracy"],
                       "official_accuracy_std": row["official_accuracy_std"],
                       "held_out_balanced_accuracy": float(np.mean(held_out)) if held_out else float("nan"),
                       "held_out_balanced_accuracy_std": float(np.std(held_out)) if held_out else float("nan"),
                       "held_out_seeds": len(held_out), "wall_minutes": row["wall_minutes"],
                       "cpu_minutes": row["cpu_minutes"]})
    return pd.DataFrame(points)


def pareto_front(points: pd.DataFrame) -> list[tuple[str, str]]:
    """Return the (recipe, model) points that no other point beats on both axes (official accuracy and held-out
    balanced accuracy), in order of official accuracy."""
    measured = points.dropna(subset=["held_out_balanced_accuracy"])
    front = []
    for point in measured.itertuples():
        dominated = ((measured["official_accuracy"] >= point.official_accuracy)
                     & (measured["held_out_balanced_accuracy"] >= point.held_out_balanced_accuracy)
                     & ((measured["official_accuracy"] > point.official_accuracy)
                        | (measured["held_out_balanced_accuracy"] > point.held_out_balanced_accuracy))).any()
        if not dominated:
            front.append((point.official_accuracy, (point.recipe, point.model)))
    return [key for _, key in sorted(front)]


def architecture_verdicts(rows: list[dict[str, Any]], mcnemar: pd.DataFrame, baseline: str = "cnn"
                          ) -> list[dict[str, Any]]:
    """Return, per recipe, how each recurrent model stands against the baseline on the official split: the mean
    accuracies over seeds and their difference in points, McNemar's test of the pair's best-on-validation seeds (its
    p-value, the images each alone got right) and the winner: the model McNemar favours at p < 0.05 when the means
    agree with it, else neither."""
    verdicts = []
    for recipe_name in dict.fromkeys(row["recipe"] for row in rows):
        within = {row["model"]: row for row in rows if row["recipe"] == recipe_name}
        if baseline not in within:
            continue
        for model_name, row in within.items():
            if model_name == baseline:
                continue
            pair = mcnemar[(mcnemar["recipe"] == recipe_name) & (mcnemar["first"].isin([model_name, baseline]))
                           & (mcnemar["second"].isin([model_name, baseline]))]
            if not len(pair):
                continue
            tested = pair.iloc[0]
            alone = {tested["first"]: int(tested["only_first_correct"]),
                     tested["second"]: int(tested["only_second_correct"])}
            difference = row["official_accuracy"] - within[baseline]["official_accuracy"]
            favoured = model_name if alone[model_name] > alone[baseline] else baseline
            agrees = (difference > 0) == (favoured == model_name) and difference != 0
            winner = favoured if float(tested["p_value"]) < 0.05 and agrees else "neither"
            verdicts.append({"recipe": recipe_name, "model": model_name, "baseline": baseline,
                             "model_accuracy": row["official_accuracy"],
                             "baseline_accuracy": within[baseline]["official_accuracy"],
                             "difference_points": 100 * difference, "p_value": float(tested["p_value"]),
                             "model_alone_right": alone[model_name], "baseline_alone_right": alone[baseline],
                             "winner": winner})
    return verdicts


def verdict_sentence(verdict: dict[str, Any]) -> str:
    """Return one verdict in words: who wins under which recipe, by how much, with the test that says so."""
    comparison = (f"{verdict['model']} {verdict['model_accuracy']:.2%} against {verdict['baseline']} "
                  f"{verdict['baseline_accuracy']:.2%} ({verdict['difference_points']:+.1f} points; McNemar "
                  f"p = {verdict['p_value']:.2g}, {verdict['model_alone_right']} against "
                  f"{verdict['baseline_alone_right']} images right alone)")
    if _seeds_disagree(verdict):
        return (f"under `{verdict['recipe']}`, {comparison}: no winner, the seeds disagree (the means favour "
                f"{_ahead_on_average(verdict)}, the best-on-validation seeds {_ahead_in_test(verdict)})")
    if verdict["winner"] == "neither":
        return f"under `{verdict['recipe']}`, {comparison}: no significant difference"
    return f"under `{verdict['recipe']}`, **{verdict['winner']}** wins: {comparison}"


def _seeds_disagree(verdict: dict[str, Any]) -> bool:
    """Tell whether a verdict has no winner although McNemar's test is significant (the means favour the other)."""
    return verdict["winner"] == "neither" and verdict["p_value"] < 0.05


def _ahead_on_average(verdict: dict[str, Any]) -> str:
    """Return the model of a verdict whose mean accuracy over seeds is higher."""
    return verdict["model"] if verdict["difference_points"] > 0 else verdict["baseline"]


def _ahead_in_test(verdict: dict[str, Any]) -> str:
    """Return the model of a verdict whose best-on-validation seed got more images right alone."""
    return verdict["model"] if verdict["model_alone_right"] > verdict["baseline_alone_right"] else verdict["baseline"]


def _compact_winner(verdict: dict[str, Any]) -> str:
    """Return a verdict's winner in one word: its name, "=" for none, or "=" with the seeds' disagreement."""
    if _seeds_disagree(verdict):
        return f"= as the best seeds favour {_ahead_in_test(verdict)}"
    return "=" if verdict["winner"] == "neither" else verdict["winner"]


def compact_verdicts(verdicts: list[dict[str, Any]]) -> str:
    """Return the verdicts in few words, grouped by recipe: each model's points against the baseline, McNemar's p and
    the winner ("=" where neither wins, saying so where the best seeds' test and the means disagree)."""
    recipes = dict.fromkeys(verdict["recipe"] for verdict in verdicts)
    return "; ".join(f"`{recipe_name}`: " + ", ".join(
        f"{verdict['model']} {verdict['difference_points']:+.1f} (p = {verdict['p_value']:.2g}, "
        f"{_compact_winner(verdict)})"
        for verdict in verdicts if verdict["recipe"] == recipe_name) for recipe_name in recipes)


def conclusion(summaries_by_recipe: dict[str, dict[str, dict]], verdicts: list[dict[str, Any]], effect: pd.DataFrame,
               front: list[tuple[str, str]], source: str) -> str:
    """Return notebook 04's conclusion: the most accurate model within each recipe, each recurrent model against the
    baseline within a recipe, each model's move from the first recipe to the second, and the frontier's front."""
    from helpers.modeling.recipes import described

    best = " ".join(f"Under {described(recipe_name)} the most accurate model is **{name}** "
                    f"({models[name]['test_accuracy']['mean']:.2%} mean test accuracy)."
                    for recipe_name, models in summaries_by_recipe.items() if models
                    for name in [max(models, key=lambda model: models[model]["test_accuracy"]["mean"])])
    against = "; ".join(verdict_sentence(verdict) for verdict in verdicts)
    column = f"{source} held out: balanced accuracy"
    moves = "; ".join(f"{model} moves {row['official accuracy']:+.1f} points on the official split"
                      + (f" and {row[column]:+.1f} on {source}'s balanced accuracy held out of training"
                         if pd.notna(row.get(column)) else "") for model, row in effect.iterrows())
    front_text = ", ".join(f"{model} (`{recipe_name}`)" for recipe_name, model in front)
    return (best + (f" Each recurrent model against the cnn, within a recipe: {against}." if against else "")
            + (f" From the first recipe to the second, {moves}." if moves else "")
            + (f" The front (no point better on both axes): {front_text}." if front_text else ""))
