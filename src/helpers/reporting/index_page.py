"""The reports folder's index page: the models, the published default on every source, the targets and the links to
every report, written from metrics.json (by the pipeline, after the notebooks ran)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from helpers import config
from helpers.files import PAGE_STYLE
from helpers.metrics_record import NOTEBOOK_TITLES, Comparison, ErrorAnalysis, HybridTraining
from helpers.modeling.saved_models import ModelFileError, ModelNotFoundError, default_model_path
from helpers.provenance import duration_sentence
from helpers.reporting.factorial_report import factorial_html
from helpers.reporting.published_default import DEFAULT_RULE, external_targets, shipped_default
from helpers.reporting.source_report import (
    SHARED_NO_TUMOUR_NOTE,
    external_sources,
    loso_frame,
    source_frame,
    target_text,
)

METRICS_FILE = "metrics.json"
INDEX_FILE = "index.html"


def _models_table(metrics: dict) -> pd.DataFrame:
    """Return the summary of the models from the comparison notebook's record (empty when it did not run)."""
    rows = Comparison.read(metrics).models
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    shown = pd.DataFrame({"model": table["model"], "parameters": table["parameters"].map("{:,}".format),
                          "test accuracy (95% CI)": [f"{row.accuracy:.2%} ({row.accuracy_low:.2%}–"
                                                     f"{row.accuracy_high:.2%})" for row in table.itertuples()],
                          "validation accuracy": table["validation_accuracy"].map("{:.2%}".format)})
    leakage = ErrorAnalysis.read(metrics).leakage
    clean = {row["index"]: row["clean test images"] for row in leakage}
    if clean:
        shown.insert(3, "clean-test accuracy", shown["model"].map(lambda name: f"{clean[name]:.2%}"
                                                                 if name in clean else "not measured"))
    return shown


def target_rows(metrics: dict) -> list[dict]:
    """Return the study's targets (notebook 04) and the external-validity targets of the published default model."""
    comparison = Comparison.read(metrics)
    rows = list(comparison.targets)
    if comparison.summaries:
        rows += external_targets(metrics)
    return rows


# Why a generated source can read 0% or 100% on one side: the demo's phantom sources differ from its dataset on purpose.
PHANTOM_SOURCES_NOTE = ("Generated data: each phantom source differs from the generated dataset on purpose (another "
                        "scanner, another sequence, outlines only), and the demo trains for a few minutes; a figure "
                        "such as 0.0% specificity means the model called every tumour-free slice of that source a "
                        "tumour: the source shortcut the study measures on real data, shown on phantoms")


def _sources_html(metrics: dict, default: str) -> str:
    """Return the index's external-validity section: the default on both sides of every source, and the
    leave-one-source-out table, or a line saying external validity was not evaluated."""
    sources = external_sources(metrics)
    if not sources:
        return "<p>External validity: <b>not evaluated</b> (no external sets were found).</p>"
    notes = "".join(f"<p>† {html.escape(note)}.</p>" for source, note in SHARED_NO_TUMOUR_NOTE.items()
                    if source in sources)
    if config.get_profile(metrics["profile"]).synthetic:
        notes += f"<p>{html.escape(PHANTOM_SOURCES_NOTE)}</p>"
    who = "The published default" if metrics["profile"] == config.FULL_PROFILE.name else "This run's pick"
    section = (f"<h2>{who} on both sides of every source (external test parts; 95% bootstrap CI)</h2>"
               f"{source_frame(metrics, default).to_html(index=False, border=0)}{notes}")
    loso = loso_frame(metrics)
    if len(loso):
        section += ("<h2>A source absent from training (leave-one-source-out, a row per seed)</h2>"
                    + loso.to_html(index=False, border=0))
    return section


def published_default() -> str:
    """Return the name of the published default model (models/models.json), or say that none is published."""
    try:
        return default_model_path().stem
    except (ModelNotFoundError, ModelFileError):
        return "none published yet"


def notebook_title(name: str, profile: str) -> str:
    """Return a notebook's title in the index; notebook 03's names the models the profile trains in it."""
    title = NOTEBOOK_TITLES.get(name, name)
    if name == HybridTraining.NOTEBOOK:
        trained = [model for model in config.get_profile(profile).models if model not in ("rnn", "cnn")]
        title += f" ({', '.join(trained)})"
    return title


def write_index(reports_dir: Path, metrics: dict) -> Path:
    """Write index.html: the summary table of the models, links to every report, and how the run was produced."""
    table = _models_table(metrics)
    shown = (factorial_html(metrics) or (table.to_html(index=False, border=0) if len(table) else "")
             or "<p>No model comparison in this run.</p>")
    if len(table):
        default = shipped_default(metrics)
        if metrics["profile"] == config.FULL_PROFILE.name:
            shown += (f"<p>The published default model (<code>brain-mri-predict</code>, <code>models/</code>) is "
                      f"<b>{html.escape(default)}</b>: {html.escape(DEFAULT_RULE)}.</p>")
        else:
            shown += (f"<p>By the rule that picks the published default ({html.escape(DEFAULT_RULE)}), this run would "
                      f"pick <b>{html.escape(default)}</b>. The published default model (<code>brain-mri-predict"
                      f"</code>, <code>models/</code>) comes from the full study: "
                      f"<b>{html.escape(published_default())}</b>.</p>")
        shown += _sources_html(metrics, default)
    targets = "\n".join(f"<li>{html.escape(target_text(row))} ({html.escape(str(row['model']))})</li>"
                         for row in target_rows(metrics))
    links = "\n".join(
        f'<li><a href="{name}.html">{html.escape(notebook_title(name, metrics["profile"]))}</a> '
        f'({seconds:.0f} s)</li>'
        for name, seconds in metrics["timings"]["notebook_seconds"].items())
    origin = metrics["provenance"]
    pages = ""
    if metrics["profile"] == config.FULL_PROFILE.name:  # only the full study's reports/ sits beside models/
        pages = ('<p>Also: <a href="../models/MODEL_CARD.html">the model card</a> (the published models, what they '
                 'are for and where they fail) and <a href="benchmarks.html">speed and benchmarks</a>.</p>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Brain-tumour MRI classification: reports</title>
<style>{PAGE_STYLE}td,th{{text-align:right}}th{{vertical-align:bottom}}td:first-child,th:first-child{{text-align:left}}</style>
</head><body>
<h1>Brain-tumour MRI classification with recurrent networks</h1>
<p>Profile <b>{html.escape(metrics["profile"])}</b>: {html.escape(config.get_profile(metrics["profile"]).description)}.
{html.escape(duration_sentence(metrics))}</p>
<h2>Models within each recipe (official Testing split; mean over seeds)</h2>
{shown}
<h2>Targets</h2>
<ul>
{targets or "<li>none judged in this run</li>"}
</ul>
<h2>Reports</h2>
<ol>
{links}
</ol>
{pages}
<h2>Provenance</h2>
<p>Created {html.escape(origin["created"])} from commit <code>{html.escape(origin["git_commit"])}</code>;
data fingerprint <code>{html.escape(str(metrics["data_fingerprint"]))}</code>.
Every figure is in <a href="{METRICS_FILE}">{METRICS_FILE}</a>, with package versions.</p>
</body></html>
"""
    path = reports_dir / INDEX_FILE
    path.write_text(page, encoding="utf-8")
    return path
