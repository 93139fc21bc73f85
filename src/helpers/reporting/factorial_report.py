"""The factorial comparison as README and the index page show it: one table per recipe (never a row beside another
recipe's), the verdicts within each recipe and the frontier's front, from notebook 04's record."""

from __future__ import annotations

import html

import pandas as pd

from helpers.analysis.factorial import compact_verdicts, cost_sentence, verdict_sentence
from helpers.evaluation import mean_with_spread
from helpers.metrics_record import Comparison
from helpers.modeling.recipes import RECIPES, described


def shown_sources(rows: list[dict], frontier_source: str | None) -> list[tuple[str, str, str]]:
    """Return the external figures a recipe's table shows (source, figure, title): the frontier source's balanced
    accuracy, and the tumours kept of the first source that gives tumours only."""
    figures = [key for row in rows for key in row if ": " in key and not key.endswith("per seed")]
    shown = [(frontier_source, "balanced_accuracy", f"{frontier_source} balanced accuracy")] if (
        frontier_source and f"{frontier_source}: balanced_accuracy" in figures) else []
    tumours_only = [key.split(": ")[0] for key in dict.fromkeys(figures) if key.endswith(": sensitivity")
                    and key.replace(": sensitivity", ": specificity") not in figures]
    return shown + [(tumours_only[0], "sensitivity", f"{tumours_only[0]} tumours kept")] if tumours_only else shown


def _percent(value: object) -> str:
    """Return a share as a percentage, or an empty cell where it was not measured."""
    return "" if value is None or pd.isna(value) else f"{value:.1%}"


def recipe_table(rows: list[dict], recipe_name: str, frontier_source: str | None = None) -> pd.DataFrame:
    """Return one recipe's rows as a reader sees them: official accuracy over seeds, clean test, validation on the
    dataset's own images, two external figures (said to be trained on or held out), training minutes."""
    trained_on = RECIPES[recipe_name].external_training
    sources = shown_sources(rows, frontier_source)
    shown = []
    for row in rows:
        if row["recipe"] != recipe_name:
            continue
        seeds = len(row["seeds"])
        cells = {"model": row["model"], "parameters": f"{row['parameters']:,}", "seeds": seeds,
                 "official test (mean ± std)": mean_with_spread(row["official_accuracy"],
                                                                row["official_accuracy_std"], seeds),
                 "clean test": f"{row['clean_test_accuracy']:.2%}",
                 "validation (the dataset's images)": f"{row['dataset_validation_accuracy']:.2%}"}
        for source, figure, title in sources:
            external_seeds, value = row.get("external_seeds", 0), row.get(f"{source}: {figure}")
            note = "" if value is None or external_seeds == seeds else f" ({external_seeds} of {seeds} seeds)"
            cells[f"{title} ({'trained on' if trained_on else 'never trained on'})"] = _percent(value) + note
        cells["minutes per run"] = f"{row['wall_minutes']:.1f}"
        shown.append(cells)
    return pd.DataFrame(shown)


def _markdown(table: pd.DataFrame) -> str:
    """Return a table as Markdown, numbers right-aligned."""
    header = "| " + " | ".join(table.columns) + " |"
    align = "|" + "|".join("---" if column == "model" else "---:" for column in table.columns) + "|"
    body = ["| " + " | ".join(str(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, align, *body])


def recipe_tables(comparison: Comparison) -> list[tuple[str, str, pd.DataFrame]]:
    """Return, per recipe compared, its kind (the benchmark protocol first), its name and its table."""
    return [("The benchmark protocol" if number == 0 else "The external recipe", recipe_name,
             recipe_table(comparison.factorial, recipe_name, comparison.frontier_source))
            for number, recipe_name in enumerate(comparison.recipes)]


def factorial_markdown(metrics: dict) -> str:
    """Return the factorial block: a table per recipe, the verdicts within each recipe and the frontier's front
    ("" when notebook 04 recorded no factorial)."""
    comparison = Comparison.read(metrics)
    if not comparison.factorial:
        return ""
    blocks = []
    for kind, recipe_name, table in recipe_tables(comparison):
        blocks += [f"**{kind}**, {described(recipe_name)}:", "", _markdown(table), ""]
    if comparison.factorial_cost:
        blocks += [cost_sentence(comparison.factorial_cost), ""]
    if comparison.verdicts:
        baseline = comparison.verdicts[0]["baseline"]
        blocks.append(f"Points of official test accuracy against the {baseline} within each recipe (McNemar's exact "
                      f"test on the best-on-validation seeds; the winner at p < 0.05, = for none): "
                      + compact_verdicts(comparison.verdicts) + ".")
    if comparison.front:
        blocks += ["", f"The frontier between the official split and {comparison.frontier_source} held out of training "
                   f"(`reports/{Comparison.NOTEBOOK}.html`): no other model and recipe beats "
                   + ", ".join(f"{model} (`{recipe_name}`)" for recipe_name, model in comparison.front)
                   + " on both."]
    return "\n".join(blocks)


def factorial_html(metrics: dict) -> str:
    """Return the index page's factorial section: a table per recipe, the verdicts and the front ("" without one)."""
    comparison = Comparison.read(metrics)
    if not comparison.factorial:
        return ""
    parts = [f"<h3>{kind}: {html.escape(described(recipe_name))}</h3>" + table.to_html(index=False, border=0)
             for kind, recipe_name, table in recipe_tables(comparison)]
    if comparison.verdicts:
        parts.append("<p>Recurrent models against the cnn, within a recipe (McNemar's exact test):</p><ul>"
                     + "".join(f"<li>{html.escape(verdict_sentence(verdict).replace('**', '').replace('`', ''))}</li>"
                               for verdict in comparison.verdicts) + "</ul>")
    if comparison.front:
        parts.append(f"<p>The frontier between the official split and {html.escape(comparison.frontier_source or '')} "
                     "held out of training (notebook 04): no other model and recipe beats "
                     + html.escape(", ".join(f"{model} ({recipe_name})" for recipe_name, model in comparison.front))
                     + " on both.</p>")
    return "".join(parts)
