"""The quick start's commands timed as a new user runs them, and README's line of measured times.

`python -m helpers.experiments.command_times` (`make command-times`) runs `make test-fast`, `make demo` and `make test`
once each, as a user would after `make install`, each from scratch: with an empty folder for run folders and another for
the decoded-array cache, both removed afterwards. It records per command the wall time, the CPU-seconds of every process
the command started (a busy machine stretches wall time, not CPU time), the notebooks' own time where it ran them (from
the run's metrics), the machine (CPU model, cores) and the commit into reports/command_times.json, a row per machine
and command, then rewrites README's block of measured times from it and from reports/prediction_command.json (`make
bench-predict`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpers import commands, config, interrupts
from helpers.experiments.speed_report import stored_command_timings
from helpers.files import read_measured_rows, write_marked_block, write_measured_rows
from helpers.provenance import cpu_model, cpu_seconds, git_commit, machine_name
from helpers.reporting import index_page

COMMAND_TIMES_FILE = "command_times.json"
QUICK_START_COMMANDS = ("make test-fast", "make demo", "make test")
README_START = "<!-- command-times:start (make command-times; do not edit) -->"
README_END = "<!-- command-times:end -->"


def time_command(command: str, root: Path = config.PROJECT_ROOT, commit: str = "") -> dict[str, Any]:
    """Run one command in root from scratch (fresh run and cache folders) and return its row, with the commit given
    (else the current one); fail naming the command and the end of its output when it fails."""
    with tempfile.TemporaryDirectory(prefix="command-times-") as scratch:
        environment = {**os.environ, config.RUNS_DIR_VARIABLE: str(Path(scratch) / "runs"),
                       config.CACHE_DIR_VARIABLE: str(Path(scratch) / "cache")}
        print(f"{command}: running from scratch", flush=True)
        start, start_cpu = time.perf_counter(), cpu_seconds(include_self=False)
        finished = subprocess.run(command.split(), cwd=root, env=environment, capture_output=True, text=True,
                                  check=False)
        wall, cpu = time.perf_counter() - start, cpu_seconds(include_self=False) - start_cpu
        notebooks = notebook_times(Path(scratch) / "runs")
    if finished.returncode != 0:
        raise RuntimeError(f"{command} failed (exit status {finished.returncode}): "
                           f"{(finished.stdout + finished.stderr).strip()[-2000:]}")
    print(f"{command}: {wall / 60:.1f} min ({cpu / 60:.1f} CPU-min)", flush=True)
    machine = machine_name({"cpu_model": cpu_model(), "cpu_count": os.cpu_count()})
    return {"command": command, "machine": machine, "wall_seconds": wall, "cpu_seconds": cpu, **notebooks,
            "git_commit": commit or git_commit(), "measured": datetime.now(UTC).isoformat(timespec="seconds")}


def notebook_times(runs: Path) -> dict[str, float]:
    """Return the notebooks' wall and CPU seconds a pipeline run under runs wrote in its metrics, or nothing when none
    ran (the notebook time apart from setting up, e.g. generating the demo's phantoms)."""
    written = sorted(runs.glob(f"*/reports/{index_page.METRICS_FILE}"))
    if len(written) != 1:
        return {}
    timings = json.loads(written[0].read_text())["timings"]
    return {"notebook_seconds": timings["total_seconds"], "notebook_cpu_seconds": timings["cpu_seconds"]}


def _minutes(row: dict[str, Any]) -> str:
    """Return a row's wall and CPU time in words, with the notebooks' share when it ran notebooks."""
    notebooks = f", notebooks {row['notebook_seconds'] / 60:.1f} min" if "notebook_seconds" in row else ""
    return f"{row['wall_seconds'] / 60:.1f} min ({row['cpu_seconds'] / 60:.1f} CPU-min{notebooks})"


def readme_times(rows: list[dict[str, Any]], prediction: dict[str, Any] | None) -> str:
    """Return README's line of measured times: the quick start's commands on the machine measured last, and one
    prediction (its median over fresh processes)."""
    parts = []
    if rows:
        machine = max(rows, key=lambda row: row["measured"])["machine"]
        timed = {row["command"]: row for row in rows if row["machine"] == machine}
        listed = [f"`{command}` {_minutes(timed[command])}" for command in QUICK_START_COMMANDS if command in timed]
        parts.append(f"Measured from scratch once installed, on {machine} (`reports/{COMMAND_TIMES_FILE}`): "
                     f"{'; '.join(listed)}.")
    for timing in (prediction or {}).values():
        parts.append(f"One image with `brain-mri-predict`: {timing['median_seconds']['numpy']:.1f} s "
                     f"({timing['median_cpu_seconds']['numpy']:.1f} CPU-s) on "
                     f"{machine_name(timing['provenance']['device'])} (`make bench-predict`).")
    return " ".join(parts) or "Not measured yet: `make command-times`."


def write_readme(readme: Path = config.PROJECT_ROOT / "README.md", folder: Path = config.REPORTS_DIR) -> bool:
    """Rewrite README's block of measured times from the stored files; return whether it changed."""
    return write_marked_block(readme, README_START, README_END, readme_times(
        read_measured_rows(folder / COMMAND_TIMES_FILE) or [], stored_command_timings(folder)))


def time_commands(names: list[str], folder: Path = config.REPORTS_DIR,
                  readme: Path = config.PROJECT_ROOT / "README.md") -> bool:
    """Time each command, keeping its row as soon as measured and README's block in step with the stored rows, from
    before the first command on (so that `make test`, timed here, finds them agreeing); every row names the commit
    measured, taken before README changes. Return whether README changed."""
    commit = git_commit()
    rewritten = write_readme(readme, folder)
    for name in names:
        write_measured_rows(folder / COMMAND_TIMES_FILE, [time_command(name, commit=commit)], ("machine", "command"),
                            config.PROJECT_ROOT)
        rewritten |= write_readme(readme, folder)
    return rewritten


def _main(argv: list[str] | None = None) -> int:
    """Command line: time the quick start's commands from scratch, write reports/command_times.json and README's
    measured times."""
    import argparse

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.command_times", description=_main.__doc__)
    parser.add_argument("--commands", nargs="+", default=list(QUICK_START_COMMANDS), choices=QUICK_START_COMMANDS)
    parser.add_argument("--readme-only", action="store_true", help="rewrite README's block from the stored files")
    arguments = parser.parse_args(argv)
    try:
        rewritten = time_commands([] if arguments.readme_only else arguments.commands)
    except RuntimeError as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped("the commands measured so far are kept")
    print(f"README.md: {'measured times rewritten' if rewritten else 'measured times unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
