"""TensorFlow's start-up lines stay off the console and out of notebooks; every other line on standard error is kept."""

from __future__ import annotations

import os
import sys

import nbformat
import pytest

from helpers import backend_noise
from helpers.backend_noise import BACKEND_NOISE, standard_error_filtered, without_noise

NOISE = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
         "I0000 00:00:1796652992.639551     832 port.cc:153] oneDNN custom operations are on.\n"
         "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda "
         "drivers on your machine, GPU will not be used.\n")


def test_only_the_start_up_lines_are_removed():
    assert without_noise(NOISE + "ValueError: a real problem\n") == "ValueError: a real problem\n"
    assert without_noise("Epoch 1/3 I0000 is not at the start\n") == "Epoch 1/3 I0000 is not at the start\n"


def test_what_a_library_writes_to_file_descriptor_2_comes_back_without_the_noise(capfd):
    with standard_error_filtered():
        os.write(2, (NOISE + "a real warning from C++\n").encode())
        sys.stderr.write("a Python warning\n")
    assert sorted(capfd.readouterr().err.splitlines()) == ["a Python warning", "a real warning from C++"]


def test_the_quiet_import_is_installed_once_and_not_when_messages_are_asked_for(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [finder for finder in sys.meta_path
                                           if not isinstance(finder, backend_noise._QuietFinder)])
    monkeypatch.delitem(sys.modules, backend_noise.QUIETED_MODULE, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    backend_noise.quiet_backend_start_up()
    assert not any(isinstance(finder, backend_noise._QuietFinder) for finder in sys.meta_path)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    backend_noise.quiet_backend_start_up()
    backend_noise.quiet_backend_start_up()
    assert sum(isinstance(finder, backend_noise._QuietFinder) for finder in sys.meta_path) == 1


@pytest.mark.slow
def test_a_notebook_run_by_a_user_shows_no_backend_start_up_lines(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # as in a user's shell
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # else the kernel does not show what C++ code prints
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import helpers\nimport keras"),
                                               nbformat.v4.new_code_cell("print(keras.backend.backend())")])
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    shown = "".join(output.get("text", "") for cell in notebook.cells for output in cell.outputs)
    assert "tensorflow" in shown and not any(BACKEND_NOISE.match(line) for line in shown.splitlines()), shown
