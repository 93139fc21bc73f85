"""helpers.files: a file or folder appears complete or not at all, and a failure keeps what was there."""

from __future__ import annotations

import os

import pytest

from helpers.files import staged_directory, write_atomically


def test_staged_directory_replaces_the_target_only_on_success(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert [path.name for path in tmp_path.iterdir()] == ["run"]
    assert (target / "old.txt").read_text() == "old"
    with staged_directory(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [path.name for path in target.iterdir()] == ["new.txt"]
    assert [path.name for path in tmp_path.iterdir()] == ["run"]


def test_write_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "table.json"
    target.write_text("old")

    def failing(temporary):
        temporary.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, failing)
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["table.json"]
    write_atomically(target, lambda temporary: temporary.write_text("new"))
    assert target.read_text() == "new"


def test_staging_left_by_a_killed_process_is_removed_and_a_live_one_kept(tmp_path, capsys):
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale = tmp_path / f".run.{dead_pid}.abc.partial"
    live = tmp_path / f".run.{os.getpid()}.def.partial"
    other = tmp_path / ".other.1.x.partial"
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "model.keras").write_bytes(b"x" * 10)
    with staged_directory(tmp_path / "run") as staging:
        (staging / "done").write_text("yes")
    assert not stale.exists() and live.exists() and other.exists() and (tmp_path / "run" / "done").is_file()
    assert f".run.{dead_pid}.abc.partial" in capsys.readouterr().err


def test_measured_rows_merge_with_the_earlier_table_and_keep_runs_relative(tmp_path):
    from helpers.files import read_measured_rows, write_measured_rows

    path = tmp_path / "table.json"
    assert read_measured_rows(path) is None
    write_measured_rows(path, [{"model": "a", "step": 1, "run": str(tmp_path / "runs" / "a")},
                               {"model": "b", "step": 1, "run": "/elsewhere/b"}], ("model", "step"), tmp_path, seed=1)
    write_measured_rows(path, [{"model": "a", "step": 1, "run": "again"}], ("model", "step"), tmp_path,
                        order=lambda row: row["model"], seed=2)
    assert read_measured_rows(path) == [{"model": "a", "step": 1, "run": "again"},
                                        {"model": "b", "step": 1, "run": "/elsewhere/b"}]
    write_measured_rows(path, [{"model": "c", "step": 2, "run": str(tmp_path / "runs" / "c")}], ("model", "step"),
                        tmp_path)
    assert read_measured_rows(path)[-1]["run"] == "runs/c"
    written = path.read_text()
    write_measured_rows(path, read_measured_rows(path)[1:], ("model", "step"), tmp_path, provenance={"created": "now"})
    assert path.read_text() == written  # rows reused as they were: the file and its provenance stay


def test_a_measurement_is_rewritten_only_when_more_than_its_provenance_changes(tmp_path):
    from helpers.files import write_measurement

    path = tmp_path / "timing.json"
    assert write_measurement(path, {"rows": [1.5], "provenance": {"created": "monday"}})
    assert not write_measurement(path, {"rows": [1.5], "provenance": {"created": "tuesday"}})
    assert "monday" in path.read_text()
    assert write_measurement(path, {"rows": [1.25], "provenance": {"created": "tuesday"}})
    assert "tuesday" in path.read_text()


def test_a_markdown_page_gets_an_html_copy_with_its_tables_rendered(tmp_path):
    from helpers.files import write_markdown_page

    page = tmp_path / "benchmarks.md"
    page.write_text("# Speed\n\n| model | s |\n|---|---:|\n| rnn | 2.5 |\n\nSee `make bench`.\n")
    shown = write_markdown_page(page)
    text = shown.read_text()
    assert shown == tmp_path / "benchmarks.html" and "<title>Speed</title>" in text
    assert "<table>" in text and "<td>rnn</td>" in text and "<code>make bench</code>" in text
    assert "http" not in text
