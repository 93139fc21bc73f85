"""helpers.commands: every command reports a problem as one line on standard error and exits with EXIT_FAILED."""

from __future__ import annotations

import importlib

import pytest

from helpers import commands


@pytest.mark.parametrize(("module", "arguments"), [
    ("inputs.data", ["check", "--data-dir", "{nowhere}"]),
    ("inputs.duplicates", ["--data-dir", "{nowhere}"]),
    ("modeling.training", ["--model", "rnn", "--data-dir", "{nowhere}", "--run-dir", "{tmp}/run"]),
    ("experiments.loso", ["--models", "rnn", "--data-dir", "{nowhere}", "--hold-outs", "Br35H"]),
    ("experiments.mitigations", ["--models", "rnn", "--data-dir", "{nowhere}"]),
    ("experiments.benchmark", ["run", "--models", "rnn", "--data-dir", "{nowhere}"]),
    ("experiments.throughput", ["--folder", "{nowhere}"]),
    ("experiments.cluster", ["--data-dir", "{nowhere}"]),
])
def test_a_missing_folder_is_one_line_on_standard_error_and_exit_status_one(module, arguments, tmp_path, capsys):
    nowhere = tmp_path / "no-such-dataset"
    filled = [argument.format(nowhere=nowhere, tmp=tmp_path) for argument in arguments]
    status = importlib.import_module(f"helpers.{module}")._main(filled)
    printed = capsys.readouterr()
    lines = printed.err.strip().splitlines()
    assert status == commands.EXIT_FAILED
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(nowhere) in lines[0], printed.err
    assert "error" not in printed.out


def test_failed_joins_a_message_into_one_line_and_stopped_names_what_was_kept(capsys):
    assert commands.failed(ValueError("first line\n  second line")) == commands.EXIT_FAILED
    assert commands.stopped("finished runs are kept") == commands.EXIT_STOPPED == 130
    assert capsys.readouterr().err.splitlines() == ["error: first line second line",
                                                    "interrupted: finished runs are kept"]
