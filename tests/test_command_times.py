"""helpers.experiments.command_times: a command timed from scratch (fresh run and cache folders, removed afterwards),
its failure named, and README's line of measured times written from the stored rows."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers import config
from helpers.experiments import command_times, speed_report

SCRIPT = """import os, sys, pathlib
pathlib.Path(sys.argv[1]).write_text(os.environ["{runs}"] + "\\n" + os.environ["{cache}"])
sum(index * index for index in range(2_000_000))
raise SystemExit(int(sys.argv[2]))
"""


def test_a_command_runs_with_fresh_run_and_cache_folders_that_are_removed_and_its_cpu_time_is_counted(tmp_path):
    script = tmp_path / "work.py"
    script.write_text(SCRIPT.format(runs=config.RUNS_DIR_VARIABLE, cache=config.CACHE_DIR_VARIABLE))
    row = command_times.time_command(f"{sys.executable} {script} {tmp_path / 'seen.txt'} 0", root=tmp_path)
    runs, cache = (tmp_path / "seen.txt").read_text().splitlines()
    assert runs != str(config.runs_dir()) and cache != str(config.cache_dir())
    assert runs.endswith("runs") and cache.endswith("cache")
    assert not Path(runs).parent.exists(), "the scratch folders are removed"
    assert row["cpu_seconds"] > 0.0 and row["wall_seconds"] > 0.0 and row["machine"].endswith("cores")
    with pytest.raises(RuntimeError, match="exit status 3"):
        command_times.time_command(f"{sys.executable} {script} {tmp_path / 'seen.txt'} 3", root=tmp_path)


def test_the_notebooks_own_time_is_read_from_the_pipeline_runs_metrics(tmp_path):
    assert command_times.notebook_times(tmp_path / "runs") == {}, "a command that ran no notebooks"
    reports = tmp_path / "runs" / "demo" / "reports"
    reports.mkdir(parents=True)
    (reports / "metrics.json").write_text(json.dumps({"timings": {"total_seconds": 250.5, "cpu_seconds": 290.0}}))
    assert command_times.notebook_times(tmp_path / "runs") == {"notebook_seconds": 250.5, "notebook_cpu_seconds": 290.0}


def prediction(seconds):
    """Return a stored prediction-command timing of this many seconds (median), on a 2-core AMD EPYC."""
    device = {"cpu_model": "AMD EPYC", "cpu_count": 2}
    return {"tensorflow-cpu-2cores": {"median_seconds": {"numpy": seconds},
                                      "median_cpu_seconds": {"numpy": seconds + 1}, "provenance": {"device": device}}}


def test_readme_shows_the_machine_measured_last_in_the_quick_starts_order_and_the_prediction_time(tmp_path):
    def row(command, machine, measured, minutes):
        return {"command": command, "machine": machine, "measured": measured, "wall_seconds": minutes * 60,
                "cpu_seconds": minutes * 90}

    rows = [row("make test", "Intel Xeon, 2 cores", "2026-12-01T00:00:00+00:00", 30.0),
            row("make test", "AMD EPYC, 2 cores", "2026-12-07T00:00:00+00:00", 15.0),
            {**row("make demo", "AMD EPYC, 2 cores", "2026-12-07T01:00:00+00:00", 4.0), "notebook_seconds": 201}]
    line = command_times.readme_times(rows, prediction(3.82))
    assert "on AMD EPYC, 2 cores (`reports/command_times.json`)" in line and "Intel" not in line
    demo, test = "`make demo` 4.0 min (6.0 CPU-min, notebooks 3.4 min)", "`make test` 15.0 min (22.5 CPU-min)"
    assert line.index(demo) < line.index(test)
    assert "One image with `brain-mri-predict`: 3.8 s (4.8 CPU-s) on AMD EPYC, 2 cores" in line
    (tmp_path / command_times.COMMAND_TIMES_FILE).write_text(json.dumps({"rows": rows}))
    (tmp_path / speed_report.PREDICTION_COMMAND_FILE).write_text(json.dumps(prediction(3.82)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{command_times.README_START}\nold\n{command_times.README_END}\nrest\n")
    assert command_times.write_readme(readme, tmp_path) and line in readme.read_text()
    assert not command_times.write_readme(readme, tmp_path), "writing the same again changes nothing"
    assert command_times.readme_times([], None) == "Not measured yet: `make command-times`."


def test_readmes_measured_times_are_the_stored_files(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(config.PROJECT_ROOT / "README.md", readme)
    assert not command_times.write_readme(readme, config.REPORTS_DIR), "run make command-times"


def test_readme_follows_each_measured_row_and_every_row_names_the_commit_measured(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{command_times.README_START}\nold\n{command_times.README_END}\n")  # out of step
    seen = []

    def fake_time_command(name, commit=""):
        seen.append((name, commit, command_times.write_readme(readme, tmp_path)))  # False: README agrees already
        return {"command": name, "machine": "AMD EPYC, 2 cores", "wall_seconds": 60.0, "cpu_seconds": 90.0,
                "git_commit": commit, "measured": f"2026-12-07T0{len(seen)}:00:00+00:00"}

    monkeypatch.setattr(command_times, "time_command", fake_time_command)
    monkeypatch.setattr(command_times, "git_commit", lambda: "c" * 40)
    assert command_times.time_commands(["make test-fast", "make test"], tmp_path, readme)
    assert seen == [("make test-fast", "c" * 40, False), ("make test", "c" * 40, False)]
    assert "`make test-fast` 1.0 min (1.5 CPU-min); `make test` 1.0 min" in readme.read_text()
    assert not command_times.time_commands([], tmp_path, readme), "nothing measured, README unchanged"
