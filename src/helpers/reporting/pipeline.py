"""Run the notebook sequence headlessly (papermill), export HTML (nbconvert), write index.html and metrics.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import nbformat
import papermill
from nbconvert import HTMLExporter
from tqdm.auto import tqdm

from helpers import commands, config, interrupts
from helpers.backend_noise import without_noise
from helpers.files import staged_directory, write_atomically
from helpers.metrics_record import NOTEBOOKS
from helpers.modeling.run_folders import RUN_FILE, TIMINGS_FILE
from helpers.provenance import cpu_seconds, git_commit, provenance
from helpers.reporting.index_page import INDEX_FILE, METRICS_FILE, write_index

# Files other commands publish into the reports folder; a pipeline run carries them over unchanged.
CARRIED_FILES = ("benchmarks.json", "benchmarks.md", "benchmarks.html", "prediction_command.json", "mitigations.json",
                 "loso.json", "time_to_accuracy.json", "input_sizes.json", "repeatability.json",
                 "prediction_throughput.json", "levers.json", "command_times.json", "adaptation.json",
                 "backends.json", "gpu-check.json")
CELL_TIMEOUT_SECONDS = 3600


class PipelineError(RuntimeError):
    """A notebook of the sequence failed; the message names it, the failing cell and where the partial copy is."""


def default_reports_directory(profile: str) -> Path:
    """Return where a profile publishes: reports/ for the full study, runs/<profile>/reports for the quick ones."""
    return config.REPORTS_DIR if profile == "full" else config.runs_dir() / profile / "reports"


def executed_directory(run_root: Path) -> Path:
    """Return where a run keeps the executed notebooks its HTML reports were exported from (beside its run folders:
    the reports folder keeps one copy of each report, the HTML page)."""
    return Path(run_root) / "executed-notebooks"


def failed_directory(reports_dir: Path) -> Path:
    """Return where the partly executed notebooks of a failed run are kept (beside the reports folder)."""
    return reports_dir.parent / f"{reports_dir.name}-failed"


@contextmanager
def kernel_messages_to(log_path: Path) -> Iterator[TextIO]:
    """Send what the notebook kernels print on this process's stderr (their start-up warnings, backend lines) to a log
    file, and yield a handle on the console for the progress bar; the console's stderr returns on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    console = os.dup(2)
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 2)
            with os.fdopen(os.dup(console), "w") as handle:
                yield handle
    finally:
        sys.stderr.flush()
        os.dup2(console, 2)
        os.close(console)


def kernel_log_path(profile: str) -> Path:
    """Return where a pipeline run of a profile logs its kernels' console messages (runs/logs/)."""
    return config.runs_dir() / "logs" / f"pipeline-{profile}-kernels.log"


def _execute(name: str, output: Path, parameters: dict) -> None:
    """Execute one notebook with papermill into output, turning a cell error into a one-line PipelineError."""
    try:
        papermill.execute_notebook(config.NOTEBOOKS_DIR / f"{name}.ipynb", output, parameters=parameters,
                                   cwd=str(config.NOTEBOOKS_DIR), execution_timeout=CELL_TIMEOUT_SECONDS,
                                   progress_bar=False, kernel_name="python3")
    except papermill.PapermillExecutionError as error:
        message = (error.evalue or "").splitlines()
        raise PipelineError(f"{name}.ipynb failed at cell {error.cell_index}: {error.ename}: "
                            f"{message[0] if message else ''}") from None


def _replaced(value: object, paths: dict[str, str]) -> object:
    """Return a string (or the strings inside a list or dict) with each path replaced by its stand-in, longest first."""
    if isinstance(value, str):
        for path, stand_in in sorted(paths.items(), key=lambda item: -len(item[0])):
            value = value.replace(path, stand_in)
        return value
    if isinstance(value, dict):
        return {key: _replaced(item, paths) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, paths) for item in value]
    return value


def tidy_notebook(notebook_path: Path, paths: dict[str, str]) -> None:
    """Remove backend start-up noise from an executed notebook's stderr outputs, keep one image per figure (the JPEG
    a figure of scans chose over the PNG the inline backend adds), and replace machine-specific paths
    (e.g. the author's folders, the pipeline's temporary folder) with the given stand-ins in its parameters cell and
    in papermill's record of the run, in place."""
    notebook = nbformat.read(notebook_path, as_version=4)
    if "papermill" in notebook.metadata:
        notebook.metadata["papermill"] = _replaced(notebook.metadata["papermill"], paths)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if {"image/jpeg", "image/png"} <= set(output.get("data", {})):  # the figure chose JPEG (scans)
                del output["data"]["image/png"]
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                output["text"] = without_noise(output["text"])
                if not output["text"].strip():
                    continue
            kept.append(output)
        cell["outputs"] = kept
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = _replaced(cell.source, paths)
    nbformat.write(notebook, notebook_path)


# Scripts nbconvert's page loads from a CDN (require.js for widgets, MathJax for LaTeX, mermaid for diagrams): the
# reports use none of them, and a page that fetches nothing opens the same offline.
REMOTE_SCRIPT = re.compile(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>\s*')
MATHJAX_CONFIGURATION = re.compile(r'<script type="text/x-mathjax-config">.*?</script>\s*', re.DOTALL)
REMOTE_MODULE = re.compile(r'<script type="module">(?:(?!</script>).)*?https?://(?:(?!</script>).)*</script>\s*',
                           re.DOTALL)


# nbconvert's lab page with each figure's alt text (report_template/index.html.j2).
REPORT_TEMPLATE = Path(__file__).parent / "report_template"


def export_html(notebook_path: Path) -> Path:
    """Write a self-contained HTML copy of an executed notebook beside it (no script from a CDN, every figure with
    its alt text); return its path."""
    exporter = HTMLExporter(extra_template_basedirs=[str(REPORT_TEMPLATE.parent)], template_name=REPORT_TEMPLATE.name)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    body = REMOTE_MODULE.sub("", MATHJAX_CONFIGURATION.sub("", REMOTE_SCRIPT.sub("", body)))
    target = notebook_path.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def published_paths(profile: config.Profile, run_root: Path, metrics_dir: Path, staging: Path,
                    reports_dir: Path) -> dict[str, str]:
    """Return the stand-ins of a run's machine paths in its published notebooks: the temporary record folder and a
    default run folder become "" (the parameters' own default), the staging folder the reports folder, and the
    project's and home folder's prefixes go."""
    paths = {str(metrics_dir): "", str(staging): config.shown_path(reports_dir),
             str(config.PROJECT_ROOT) + os.sep: "", str(Path.home()) + os.sep: "~/"}
    if Path(run_root).resolve() == config.default_run_root(profile).resolve():
        paths[str(run_root)] = ""
    return paths


def _collect_metrics(metrics_dir: Path, profile: str, notebook_seconds: dict[str, float],
                     total_seconds: float, origin: dict) -> dict:
    """Merge the notebooks' metric records into one document with timings and the provenance taken when the run began
    (origin), naming the commit at its end too when the code changed under it."""
    notebooks = {}
    for name in notebook_seconds:
        record = metrics_dir / f"{name}.json"
        if not record.is_file():
            raise PipelineError(f"{record}: {name}.ipynb ran but wrote no metrics record (study.record)")
        notebooks[name] = json.loads(record.read_text())
    fingerprints = {record.get("data_fingerprint") for record in notebooks.values()} - {None}
    if len(fingerprints) > 1:
        raise PipelineError(f"the notebooks saw different datasets (fingerprints {sorted(fingerprints)})")
    ended = git_commit()
    if ended != origin["git_commit"]:
        origin = {**origin, "git_commit_at_end": ended}
        print(f"warning: the code changed while the notebooks ran ({origin['git_commit'][:10]} -> {ended[:10]}); "
              "metrics.json records both", file=sys.stderr)
    return {"profile": profile, "data_fingerprint": fingerprints.pop() if fingerprints else None,
            "provenance": origin,
            "timings": {"notebook_seconds": notebook_seconds, "total_seconds": total_seconds},
            "notebooks": notebooks}


def training_accounting(metrics: dict, run_root: Path, started: datetime) -> dict:
    """Return which of the study's run folders (every recipe, model and seed) this run trained and which it reused,
    with the reused runs' seconds; the hidden folders of a run still training (its resume state) are neither."""
    trained, reused, reused_seconds = [], [], 0.0
    for record in sorted(run_root.glob(f"*/*/{RUN_FILE}")):
        directory = record.parent
        if directory.name.startswith("."):
            continue
        name = f"{directory.parent.name}/{directory.name}"
        if datetime.fromisoformat(json.loads(record.read_text())["created"]) >= started.replace(microsecond=0):
            trained.append(name)
            continue
        timings = json.loads((directory / TIMINGS_FILE).read_text())
        reused.append(name)
        reused_seconds += timings["fit_seconds"] + sum(timings["prediction_seconds"].values())
    return {"trained_runs": trained, "reused_runs": reused, "reused_training_seconds": reused_seconds,
            "from_scratch_seconds": metrics["timings"]["total_seconds"] + reused_seconds}


def with_published_notebooks(metrics: dict, reports_dir: Path, staging: Path) -> dict:
    """Return a subset run's metrics with the published notebooks it did not run (their reports copied into the
    staging folder) when the published reports come from the same profile and dataset; else this run's alone (a run
    of the whole sequence: unchanged)."""
    published = reports_dir / METRICS_FILE
    if set(metrics["notebooks"]) == set(NOTEBOOKS) or not published.is_file():
        return metrics
    earlier = json.loads(published.read_text())
    if (earlier.get("profile"), earlier.get("data_fingerprint")) != (metrics["profile"], metrics["data_fingerprint"]):
        print(f"warning: {published} comes from another profile or dataset: only this run's notebooks are published",
              file=sys.stderr)
        return metrics
    carried = [name for name in NOTEBOOKS if name not in metrics["notebooks"] and name in earlier["notebooks"]
               and (reports_dir / f"{name}.html").is_file()]
    for name in carried:
        shutil.copy2(reports_dir / f"{name}.html", staging / f"{name}.html")
    shown = [name for name in NOTEBOOKS if name in metrics["notebooks"] or name in carried]
    seconds = {**earlier["timings"]["notebook_seconds"], **metrics["timings"]["notebook_seconds"]}
    return {**metrics, "notebooks": {name: metrics["notebooks"].get(name) or earlier["notebooks"][name]
                                     for name in shown},
            "timings": {**metrics["timings"], "notebook_seconds": {name: seconds[name] for name in shown}},
            "carried": {"notebooks": carried, "provenance": earlier["provenance"]}}


def _write_metrics_and_index(staging: Path, metrics: dict) -> None:
    """Write a run's metrics.json and its index page into the staging folder."""
    write_atomically(staging / METRICS_FILE,
                     lambda temporary: temporary.write_text(json.dumps(metrics, indent=2) + "\n"))
    write_index(staging, metrics)


def _kept_after_failure(staging: Path, reports_dir: Path, error: Exception) -> PipelineError:
    """Copy the staged reports of a run whose publishing failed beside the reports folder; return the error to raise."""
    kept = failed_directory(reports_dir)
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(staging, kept)
    return PipelineError(f"the notebooks ran but publishing failed ({type(error).__name__}: {error}); their reports "
                         f"and figures are kept in {kept}; {reports_dir} left as it was")


def run_pipeline(profile: str = "full", data_dir: str | os.PathLike | None = None,
                 reports_dir: str | os.PathLike | None = None, run_root: str | os.PathLike | None = None,
                 notebooks: tuple[str, ...] = NOTEBOOKS, progress: bool = True,
                 external_dir: str | os.PathLike | None = None) -> Path:
    """Execute the notebooks in order and publish their reports (a subset keeps the published reports of the others,
    with_published_notebooks); on failure the published reports stay untouched."""
    chosen = config.get_profile(profile)
    reports_dir = Path(reports_dir).expanduser().resolve() if reports_dir else default_reports_directory(chosen.name)
    run_root = Path(run_root).expanduser().resolve() if run_root else config.default_run_root(chosen)
    unknown = [name for name in notebooks if name not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebooks {unknown}; the sequence is {', '.join(NOTEBOOKS)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the kernels inherit it: no TensorFlow info lines in reports
    started, started_cpu = time.perf_counter(), cpu_seconds()
    started_at, origin = datetime.now(UTC), provenance()
    notebook_seconds: dict[str, float] = {}
    kept_notebooks = executed_directory(run_root)
    with staged_directory(reports_dir) as staging, ExitStack() as stack:
        metrics_dir = staging / ".metrics"
        parameters = {"profile": chosen.name, "data_dir": str(data_dir or ""), "run_root": str(run_root),
                      "metrics_dir": str(metrics_dir), "external_dir": str(external_dir or "")}
        console = stack.enter_context(kernel_messages_to(kernel_log_path(chosen.name)))
        bar = tqdm(notebooks, desc=f"{chosen.name} profile", unit="notebook", disable=not progress, file=console)
        for name in bar:
            bar.set_postfix_str(name)
            output = staging / f"{name}.ipynb"
            notebook_started = time.perf_counter()
            try:
                _execute(name, output, parameters)
            except Exception as error:  # a cell error, a dead kernel or a timeout: keep what ran, then stop
                kept = failed_directory(reports_dir)
                shutil.rmtree(kept, ignore_errors=True)
                kept.mkdir(parents=True)
                if output.is_file():
                    shutil.copy2(output, kept / output.name)
                reason = str(error) if isinstance(error, PipelineError) else (
                    f"{name}.ipynb failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
                raise PipelineError(f"{reason}; partly executed notebook kept in {kept}; kernel messages in "
                                    f"{config.shown_path(kernel_log_path(chosen.name))}; {reports_dir} left as it "
                                    f"was") from None
            notebook_seconds[name] = time.perf_counter() - notebook_started
            tidy_notebook(output, published_paths(chosen, run_root, metrics_dir, staging, reports_dir))
            export_html(output)
            kept_notebooks.mkdir(parents=True, exist_ok=True)
            shutil.move(output, kept_notebooks / output.name)
        try:
            metrics = _collect_metrics(metrics_dir, chosen.name, notebook_seconds, time.perf_counter() - started,
                                       origin)
            metrics["timings"]["cpu_seconds"] = cpu_seconds() - started_cpu
            metrics["timings"].update(training_accounting(metrics, run_root, started_at))
            metrics = with_published_notebooks(metrics, reports_dir, staging)
            _write_metrics_and_index(staging, metrics)
        except Exception as error:  # every notebook ran: keep their reports and figures before the staging goes
            raise _kept_after_failure(staging, reports_dir, error) from None
        shutil.rmtree(metrics_dir)
        for name in CARRIED_FILES:
            if (reports_dir / name).is_file():
                shutil.copy2(reports_dir / name, staging / name)
    shutil.rmtree(failed_directory(reports_dir), ignore_errors=True)
    return reports_dir


def _main(argv: list[str] | None = None) -> int:
    """Command line: run the notebook sequence in one profile and publish reports/."""
    import argparse

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.reporting.pipeline", description=_main.__doc__)
    parser.add_argument("--profile", default="full", choices=sorted(config.PROFILES),
                        help="full: real data, full training; smoke: tiny real subset, 1 epoch; demo: generated data")
    commands.add_data_arguments(parser)
    parser.add_argument("--external-dir", default=None,
                        help="independent tumour sets folder (default: $BRAIN_MRI_EXTERNAL_DIR or data/external; "
                             "absent: external validity is reported as not evaluated)")
    parser.add_argument("--reports-dir", default=None,
                        help="where to publish (default: reports/ for full, else runs/<profile>/reports)")
    parser.add_argument("--run-root", default=None, help="where run folders go (default: runs/<profile>)")
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), help="a subset of the sequence, in order")
    arguments = parser.parse_args(argv)
    try:
        published = run_pipeline(arguments.profile, arguments.data_dir, arguments.reports_dir, arguments.run_root,
                                 tuple(arguments.notebooks), external_dir=arguments.external_dir)
    except PipelineError as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped("the published reports were left as they were (finished training runs are kept and "
                                "reused)")
    seconds = json.loads((published / METRICS_FILE).read_text())["timings"]["total_seconds"]
    print(f"reports published in {published} ({published / INDEX_FILE}) after {seconds / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
