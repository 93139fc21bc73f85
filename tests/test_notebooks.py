"""The notebooks: committed clean, those with checked outputs under nbval in the smoke profile, the whole pipeline."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbconvert import HTMLExporter
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from helpers import config, provenance
from helpers.reporting.pipeline import (
    CARRIED_FILES,
    INDEX_FILE,
    METRICS_FILE,
    NOTEBOOKS,
    PipelineError,
    executed_directory,
    export_html,
    failed_directory,
    run_pipeline,
)

CHECKED_OUTPUTS = json.loads((Path(__file__).parent / "data" / "notebook_checked_outputs.json").read_text())
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def _notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(config.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_follows_the_layout(name):
    notebook = _notebook(name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), f"{name} has outputs"
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    assert "**Question.**" in notebook.cells[0].source
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is notebook.cells[1], f"{name}: one parameters cell, right after the title"
    assert all(line.split("#")[1].strip() for line in tagged[0].source.splitlines()), "every parameter has a comment"
    assert notebook.cells[-2].source == "## Conclusion" and "Markdown(" in notebook.cells[-1].source
    assert max(len(cell.source.splitlines()) for cell in code) <= 16, f"{name}: keep cells short"


# The checked notebooks nbval executes (docs/decisions.md, "`make test` executes each notebook once").
NBVAL_NOTEBOOKS = ("01_explore_data",)


def _checked_output(notebook: nbformat.NotebookNode) -> str | None:
    """Return the printed text of a notebook's NBVAL_CHECK_OUTPUT cell, or None when it has no such cell."""
    checked = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.startswith(CHECK_MARK)]
    assert len(checked) <= 1
    if not checked:
        return None
    return "".join(output.get("text", "") for output in checked[0].outputs
                   if output.output_type == "stream" and output.name == "stdout")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebook_marks_a_checked_output_exactly_when_one_is_expected(name):
    assert (_checked_output(_notebook(name)) is not None) == (name in CHECKED_OUTPUTS)


@pytest.mark.realdata
@pytest.mark.slow
def test_the_data_notebook_passes_nbval_in_the_smoke_profile(real_data_root, tmp_path):
    for name in NBVAL_NOTEBOOKS:
        original = load_notebook_node(str(config.NOTEBOOKS_DIR / f"{name}.ipynb"))
        notebook = parameterize_notebook(original, {"profile": "smoke", "data_dir": str(real_data_root),
                                                    "run_root": str(tmp_path / "runs"),
                                                    "metrics_dir": str(tmp_path / "metrics")})
        for cell in notebook.cells:
            if cell.source.startswith(CHECK_MARK):
                cell.execution_count = 1  # nbval compares only cells that ran in the reference
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=CHECKED_OUTPUTS[name])]
        nbformat.write(notebook, tmp_path / f"{name}.ipynb")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                             *[str(tmp_path / f"{name}.ipynb") for name in NBVAL_NOTEBOOKS]],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.realdata
@pytest.mark.slow
def test_pipeline_publishes_every_report_with_index_and_metrics(real_data_root, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "benchmarks.json").write_text("{}")
    (tmp_path / "reports" / "old.html").write_text("stale")
    reports = run_pipeline("smoke", real_data_root, tmp_path / "reports", tmp_path / "runs", progress=False)
    assert (reports / "benchmarks.json").read_text() == "{}" and not (reports / "old.html").exists()
    assert not list(reports.glob("*.ipynb")), "one copy of each report: the HTML page"
    for name in NOTEBOOKS:
        executed = nbformat.read(executed_directory(tmp_path / "runs") / f"{name}.ipynb", as_version=4)
        assert not any(output.output_type == "error" for cell in executed.cells for output in cell.get("outputs", []))
        warned = [output.text for cell in executed.cells for output in cell.get("outputs", [])
                  if output.get("name") == "stderr" and re.search(r"Warning|absl|oneDNN|cuda", output.text)]
        assert not warned, f"{name} shows library warnings or backend start-up lines: {warned}"
        page = (reports / f"{name}.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64" in page
        assert not unmeasured_placeholders(page), name
        assert not re.search(r'<script[^>]*src="https?://', page), f"{name}.html loads a script from the network"
        assert not re.search(r"<script[^>]*>(?:(?!</script>).)*https?://", page, re.DOTALL), f"{name}.html imports one"
        if name in CHECKED_OUTPUTS:
            assert _checked_output(executed) == CHECKED_OUTPUTS[name], f"{name}: the checked output changed"
    metrics = json.loads((reports / METRICS_FILE).read_text())
    assert metrics["profile"] == "smoke" and list(metrics["notebooks"]) == list(NOTEBOOKS)
    assert len(metrics["data_fingerprint"]) == 64 and metrics["provenance"]["git_commit"]
    assert set(metrics["timings"]["notebook_seconds"]) == set(NOTEBOOKS)
    models = {row["model"]: row for row in metrics["notebooks"]["04_compare_cnn"]["models"]}
    assert set(models) == set(config.STUDY_MODELS) and models["rnn"]["parameters"] == 235_140
    targets = {row["target"]: row for row in metrics["notebooks"]["04_compare_cnn"]["targets"]}
    assert targets["rnn as specified"]["model"] == "rnn" and len(targets) == 5
    comparison = metrics["notebooks"]["04_compare_cnn"]  # every model under both recipes, compared within each
    recipes = config.get_profile("smoke").compared_recipes
    assert comparison["recipes"] == list(recipes) == ["dataset-only", "outlined"]
    assert sorted((row["recipe"], row["model"]) for row in comparison["factorial"]) == sorted(
        (recipe, model) for recipe in recipes for model in config.STUDY_MODELS)
    assert {row["recipe"] for row in comparison["mcnemar"]} == set(recipes) and len(comparison["mcnemar"]) == 20
    assert len(comparison["frontier"]) == 10 and set(comparison["published_recipes"]) == set(config.STUDY_MODELS)
    assert comparison["factorial_cost"]["runs"] == 10
    assert all(0.0 <= row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"] <= 1.0 for row in models.values())
    assert metrics["notebooks"]["01_explore_data"]["test_images"] == 1311
    index = (reports / INDEX_FILE).read_text()
    assert all(f'href="{name}.html"' in index for name in NOTEBOOKS) and "hybrid" in index
    assert "<th>clean test</th>" in index and "<h2>Targets</h2>" in index and "<th>index</th>" not in index
    assert "The published default model" in index
    assert "on both sides of every source" in index and "<td>TCGA FLAIR</td>" in index, "every source, both sides"
    record = metrics["notebooks"]["06_external_validity"]
    assert record["sources"]["rnn"]["TCGA post-contrast"]["tumour_free_images"] == 40
    timings = metrics["timings"]
    assert sorted(timings["trained_runs"]) == sorted(f"{recipe}/{name}-seed42" for recipe in recipes for name in models)
    assert not timings["reused_runs"]
    assert timings["from_scratch_seconds"] >= timings["total_seconds"]
    assert timings["cpu_seconds"] > 0, "the kernels' CPU time is counted beside the wall time"
    assert "from scratch" not in index, "a run that trained everything says no more than its duration"
    assert not any(path.name.startswith(".") for path in reports.iterdir()), "no staging leftovers"


@pytest.mark.slow
def test_failed_pipeline_names_the_notebook_keeps_it_and_leaves_reports_untouched(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(config.RUNS_DIR_VARIABLE, str(tmp_path / "runs"))
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.html").write_text("published before")
    with pytest.raises(PipelineError, match=r"01_explore_data\.ipynb failed at cell \d+: DatasetNotFoundError.*"
                                            r"kernel messages in .*pipeline-smoke-kernels\.log"):
        run_pipeline("smoke", tmp_path / "no-such-dataset", reports, tmp_path / "runs", progress=True)
    console = capfd.readouterr().err
    assert "smoke profile" in console, "the progress bar still shows"
    for noise in ("IPKernelApp", "absl", "oneDNN", "cuInit", "cudart"):
        assert noise not in console, f"kernel or backend noise on the console: {noise}"
    assert (tmp_path / "runs" / "logs" / "pipeline-smoke-kernels.log").is_file()
    assert (reports / "index.html").read_text() == "published before"
    assert sorted(path.name for path in reports.iterdir()) == ["index.html"]
    partial = nbformat.read(failed_directory(reports) / "01_explore_data.ipynb", as_version=4)
    assert any(output.output_type == "error" for cell in partial.cells for output in cell.get("outputs", []))
    assert not list(tmp_path.glob(".reports*")), "the staging folder is removed"


def test_published_notebooks_hold_no_backend_noise_nor_machine_paths(tmp_path):
    from helpers.reporting.pipeline import tidy_notebook

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('run_root = "/home/me/project/runs/full"\nmetrics_dir = "/tmp/x/.metrics"',
                                  metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(1)", outputs=[
            nbformat.v4.new_output("stream", name="stderr", text=(
                "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                "I0000 00:00:1795784635.467853   10312 port.cc:153] oneDNN custom operations are on.\n")),
            nbformat.v4.new_output("stream", name="stderr", text="I0000 00:00:17 x\nreal warning\n"),
            nbformat.v4.new_output("stream", name="stdout", text="1\n")])])
    notebook.metadata["papermill"] = {"input_path": "/home/me/project/notebooks/n.ipynb",
                                      "output_path": "/tmp/x/n.ipynb", "parameters": {"metrics_dir": "/tmp/x/.metrics"}}
    path = tmp_path / "n.ipynb"
    nbformat.write(notebook, path)
    tidy_notebook(path, {"/tmp/x/.metrics": "", "/tmp/x": "reports", "/home/me/project/": ""})
    tidied = nbformat.read(path, as_version=4)
    assert tidied.cells[0].source == 'run_root = "runs/full"\nmetrics_dir = ""'
    assert [output.get("text") for output in tidied.cells[1].outputs] == ["real warning\n", "1\n"]
    assert tidied.metadata["papermill"] == {"input_path": "notebooks/n.ipynb", "output_path": "reports/n.ipynb",
                                            "parameters": {"metrics_dir": ""}}


# What no published file may hold: a machine's folders, the pipeline's temporary folders, a placeholder parameter, or
# a script fetched from the network.
MACHINE_PATH = re.compile(r"""(?:^|[\s"'(=>])/(?:home|Users|tmp|work|root|mnt|private)/""", re.MULTILINE)
PUBLISHED_LEAKS = (MACHINE_PATH, re.compile(r"\.partial\b"), re.compile(r"temporary record folder"),
                   re.compile(r"<script[^>]*\ssrc=[\"']https?://"), re.compile(r"import[^;\n]*[\"']https?://"))


class _VisibleText(HTMLParser):
    """Collect the text a reader of a page sees (no styles, scripts, attributes or embedded images)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("style", "script")

    def handle_endtag(self, tag):
        self.hidden -= tag in ("style", "script")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


CODE_BLOCK = re.compile(r'<div class="highlight[^"]*">.*?</pre>\s*</div>', re.DOTALL)


def unmeasured_placeholders(page: str) -> list[str]:
    """Return each "nan", "NaN" or "{}" a reader of an HTML page would see outside the code, with a little of its
    context."""
    parser = _VisibleText()
    parser.feed(CODE_BLOCK.sub("", page))
    text = " ".join(parser.parts)
    return [" ".join(text[max(0, found.start() - 60):found.end()].split())
            for found in re.finditer(r"\bnan\b|\{\}", text, re.IGNORECASE)]


def test_the_placeholder_scan_finds_what_a_reader_would_see():
    page = ("<style>p {}</style><p>accuracy nan%</p><td>NaN</td><img src='data:image/png;base64,NaN{}'>"
            "<p>nanometre</p><div class=\"highlight hl-ipython3\"><pre>seen = {}</pre></div><p>near copies: {}</p>")
    assert [found.split()[-1] for found in unmeasured_placeholders(page)] == ["nan", "NaN", "{}"]


def test_a_report_keeps_one_image_per_figure_with_its_alt_text(tmp_path):
    from helpers.reporting.pipeline import tidy_notebook

    pixel = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    figure = nbformat.v4.new_output("display_data", data={"image/jpeg": "/9j/4AAQ", "image/png": pixel},
                                    metadata={"image/jpeg": {"alt": "One row of random images per source."}})
    chart = nbformat.v4.new_output("display_data", data={"image/png": pixel},
                                   metadata={"image/png": {"alt": "Bars of <images> per class."}})
    cell = nbformat.v4.new_code_cell("plots.figure()", outputs=[figure, chart])
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "report.ipynb")
    tidy_notebook(tmp_path / "report.ipynb", {})
    page = export_html(tmp_path / "report.ipynb").read_text()
    images = re.findall(r"<img [^>]*>", page)
    assert len(images) == 2 and 'data:image/jpeg' in images[0] and 'data:image/png' in images[1]
    assert 'alt="One row of random images per source."' in images[0]
    assert 'alt="Bars of &lt;images&gt; per class."' in images[1]


def test_no_published_report_shows_nan_or_an_empty_mapping():
    pages = sorted((config.PROJECT_ROOT / "reports").glob("*.html")) + [config.PROJECT_ROOT / "models/MODEL_CARD.html"]
    found = {path.name: unmeasured_placeholders(path.read_text(encoding="utf-8")) for path in pages}
    assert not {name: places for name, places in found.items() if places}


@pytest.mark.parametrize("folder", ["reports", "models"])
def test_published_files_hold_no_machine_paths_placeholders_nor_remote_scripts(folder):
    published = [path for path in (config.PROJECT_ROOT / folder).rglob("*")
                 if path.suffix in (".html", ".ipynb", ".json", ".md")]
    assert published, f"nothing published in {folder}/"
    found = [f"{path.relative_to(config.PROJECT_ROOT)}: {pattern.pattern}" for path in published
             for pattern in PUBLISHED_LEAKS if pattern.search(path.read_text(encoding="utf-8"))]
    assert not found


def test_an_exported_report_fetches_nothing_from_the_network(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A report"),
                                               nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(notebook, tmp_path / "report.ipynb")
    remote = re.compile(r"<script[^>]*>(?:(?!</script>).)*https?://", re.DOTALL)
    assert remote.search(HTMLExporter().from_notebook_node(notebook)[0]), "nbconvert's page imports from a CDN"
    page = export_html(tmp_path / "report.ipynb").read_text()
    assert "A report" in page and not remote.search(page)
    assert not re.search(r'<script[^>]*src="https?://', page)


@pytest.mark.realdata
@pytest.mark.slow
def test_a_notebook_opens_on_the_published_runs_with_only_the_dataset(real_data_root, tmp_path):
    import papermill

    environment = {name: value for name, value in os.environ.items() if name != config.EXTERNAL_DIR_VARIABLE}
    environment.update({"TF_CPP_MIN_LOG_LEVEL": "3", config.DATA_DIR_VARIABLE: str(real_data_root)})
    output = tmp_path / "02_train_rnn.ipynb"
    script = (f"import papermill; papermill.execute_notebook({str(config.NOTEBOOKS_DIR / '02_train_rnn.ipynb')!r}, "
              f"{str(output)!r}, parameters={{'metrics_dir': {str(tmp_path / 'metrics')!r}}}, "
              f"cwd={str(config.NOTEBOOKS_DIR)!r}, progress_bar=False)")
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    executed = nbformat.read(output, as_version=4)
    shown = "".join(output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
    assert all(f"rnn seed 42: reusing models/runs/{name}/rnn-seed42" in shown for name in ("dataset-only", "outlined"))
    assert papermill


def test_the_metrics_record_the_commit_the_run_began_at_and_the_one_it_ended_at_when_they_differ(
        tmp_path, monkeypatch, capsys):
    from helpers.reporting import pipeline

    (tmp_path / "01_explore_data.json").write_text(json.dumps({"data_fingerprint": "abc"}))
    origin = {"git_commit": "a" * 40, "created": "the start"}
    monkeypatch.setattr(pipeline, "git_commit", lambda: "a" * 40)
    same = pipeline._collect_metrics(tmp_path, "demo", {"01_explore_data": 1.0}, 1.0, origin)
    assert same["provenance"] == origin and same["data_fingerprint"] == "abc"
    monkeypatch.setattr(pipeline, "git_commit", lambda: "b" * 40)
    moved = pipeline._collect_metrics(tmp_path, "demo", {"01_explore_data": 1.0}, 1.0, origin)
    assert moved["provenance"] == {**origin, "git_commit_at_end": "b" * 40}
    assert "the code changed while the notebooks ran (aaaaaaaaaa -> bbbbbbbbbb)" in capsys.readouterr().err


def test_the_training_accounting_passes_over_a_run_still_training(tmp_path):
    from datetime import datetime, timedelta

    from helpers.modeling.run_folders import RUN_FILE, TIMINGS_FILE
    from helpers.reporting import pipeline

    started = datetime.now()
    for folder, created in (("old-seed42", started - timedelta(days=1)), ("new-seed42", started)):
        (tmp_path / "recipe" / folder).mkdir(parents=True)
        (tmp_path / "recipe" / folder / RUN_FILE).write_text(json.dumps({"created": created.isoformat()}))
        (tmp_path / "recipe" / folder / TIMINGS_FILE).write_text(json.dumps(
            {"fit_seconds": 10.0, "prediction_seconds": {"test": 2.0}}))
    resume = tmp_path / "recipe" / ".rnn-seed44.resume"  # a run still training: its resume state, no "created"
    resume.mkdir()
    (resume / RUN_FILE).write_text(json.dumps({"epochs": 100}))
    counted = pipeline.training_accounting({"timings": {"total_seconds": 5.0}}, tmp_path, started)
    assert counted == {"trained_runs": ["recipe/new-seed42"], "reused_runs": ["recipe/old-seed42"],
                       "reused_training_seconds": 12.0, "from_scratch_seconds": 17.0}


def test_a_failure_after_the_notebooks_ran_keeps_their_reports_and_leaves_the_published_ones(tmp_path, monkeypatch):
    from helpers.reporting import pipeline

    def execute(name, output, parameters):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}")]), output)
        Path(parameters["metrics_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(parameters["metrics_dir"]) / f"{name}.json").write_text(json.dumps({"data_fingerprint": "abc"}))

    def fail(*arguments):
        raise KeyError("created")

    monkeypatch.setattr(pipeline, "_execute", execute)
    monkeypatch.setattr(pipeline, "training_accounting", fail)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.html").write_text("the published reports")
    with pytest.raises(pipeline.PipelineError, match=r"the notebooks ran but publishing failed \(KeyError"):
        pipeline.run_pipeline("demo", reports_dir=reports, run_root=tmp_path / "runs", notebooks=("01_explore_data",),
                              progress=False)
    assert [file.name for file in reports.iterdir()] == ["index.html"]
    assert (reports / "index.html").read_text() == "the published reports"
    assert (pipeline.failed_directory(reports) / "01_explore_data.html").is_file()



def test_a_run_of_some_notebooks_keeps_the_published_reports_of_the_others(tmp_path, monkeypatch, capsys):
    from helpers.metrics_record import NOTEBOOKS
    from helpers.reporting import pipeline

    fingerprint = {"value": "abc"}

    def execute(name, output, parameters):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}")]), output)
        Path(parameters["metrics_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(parameters["metrics_dir"]) / f"{name}.json").write_text(
            json.dumps({"data_fingerprint": fingerprint["value"]}))

    monkeypatch.setattr(pipeline, "_execute", execute)
    monkeypatch.setattr(pipeline, "write_index", lambda staging, metrics: None)
    reports = tmp_path / "reports"
    pipeline.run_pipeline("demo", reports_dir=reports, run_root=tmp_path / "runs", progress=False)
    first = json.loads((reports / "metrics.json").read_text())
    pipeline.run_pipeline("demo", reports_dir=reports, run_root=tmp_path / "runs", notebooks=(NOTEBOOKS[-1],),
                          progress=False)
    merged = json.loads((reports / "metrics.json").read_text())
    assert list(merged["notebooks"]) == list(NOTEBOOKS) and merged["carried"]["notebooks"] == list(NOTEBOOKS[:-1])
    assert merged["carried"]["provenance"] == first["provenance"]
    assert list(merged["timings"]["notebook_seconds"]) == list(NOTEBOOKS)
    assert all((reports / f"{name}.html").is_file() for name in NOTEBOOKS)
    assert f"re-ran {NOTEBOOKS[-1]} in" in provenance.duration_sentence(merged)
    fingerprint["value"] = "another dataset"
    pipeline.run_pipeline("demo", reports_dir=reports, run_root=tmp_path / "runs", notebooks=(NOTEBOOKS[0],),
                          progress=False)
    assert "comes from another profile or dataset" in capsys.readouterr().err
    assert sorted(file.name for file in reports.glob("*.html")) == [f"{NOTEBOOKS[0]}.html"]

def test_a_pipeline_run_carries_over_every_file_the_other_commands_write_into_reports():
    import importlib
    import pkgutil

    import helpers.experiments
    from helpers.modeling import run_folders

    run_files = {value for value in vars(run_folders).values() if isinstance(value, str)}  # imported by name
    written = {value for info in pkgutil.iter_modules(helpers.experiments.__path__)
               for name, value in vars(importlib.import_module(f"helpers.experiments.{info.name}")).items()
               if name.endswith("_FILE") and isinstance(value, str) and value.endswith(".json")} - run_files
    assert {"levers.json", "time_to_accuracy.json"} <= written
    assert written <= set(CARRIED_FILES), f"a study run would delete {sorted(written - set(CARRIED_FILES))}"
