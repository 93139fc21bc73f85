"""Ctrl-C in the project's commands: one line and exit status 130 at any moment, never swallowed.

While a command (`python -m helpers.<command>`) is still importing its libraries, Ctrl-C ends it at once with one line
(nothing has been written yet). Once its `_main` runs, Ctrl-C raises KeyboardInterrupt as usual and is remembered, so
that one swallowed by a library's callback (TensorFlow's garbage-collection hook ignores exceptions) is raised again
at the next training step (RaiseWhenInterrupted)."""

from __future__ import annotations

import os
import signal
import sys
import threading

REQUESTED = threading.Event()
EXIT_INTERRUPTED = 130
CONSOLE_SCRIPTS = ("brain-mri-predict",)  # pyproject.toml's [project.scripts]


def _exit_at_once(line: str) -> None:
    """Write the line to the console (even while a backend's start-up lines are being filtered) and end the process
    with EXIT_INTERRUPTED without running any library's clean-up."""
    from helpers.backend_noise import console_descriptor

    sys.stderr.flush()
    os.write(console_descriptor(), f"{line}\n".encode())
    os._exit(EXIT_INTERRUPTED)


def _exit_at_start_up(signum, frame) -> None:
    """End the process at once: it is still importing, so nothing is half-written."""
    _exit_at_once("interrupted while starting: nothing was written")


def _remember_and_raise(signum, frame) -> None:
    """Remember the request, then raise KeyboardInterrupt where Python is."""
    REQUESTED.set()
    raise KeyboardInterrupt


def guard_start_up() -> None:
    """When this process runs a command (`python -m helpers.<command>` or a console script), end it at once on Ctrl-C
    until it starts."""
    command = sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") in CONSOLE_SCRIPTS
    if command and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _exit_at_start_up)


def command_started() -> None:
    """From now on Ctrl-C raises KeyboardInterrupt, and is remembered (see RaiseWhenInterrupted)."""
    REQUESTED.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _remember_and_raise)


def until_output(nothing_written: str) -> None:
    """For a command that writes nothing until its results: from now until command_started() is called again, Ctrl-C
    ends it at once with one line (a KeyboardInterrupt raised inside a library's callback would be printed and
    swallowed)."""
    REQUESTED.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda signum, frame: _exit_at_once(f"interrupted: {nothing_written}"))
