"""The commands' one convention (`python -m helpers.<command>`, `brain-mri-predict`): results go to standard output, a
problem to standard error as one line, and the exit status says which (docs/architecture.md, "Commands")."""

from __future__ import annotations

import argparse
import sys

from helpers import config
from helpers.interrupts import EXIT_INTERRUPTED

EXIT_DONE = 0
EXIT_FAILED = 1  # bad input, a missing or unreadable file or folder: the line names it
EXIT_USAGE = 2  # a wrong command line (argparse's own status)
EXIT_STOPPED = EXIT_INTERRUPTED  # Ctrl-C: what was finished is kept, nothing is half-written
# What a Ctrl-C leaves of a command that trains run after run (each resumable).
RUNS_KEPT = "finished runs are kept, the unfinished one resumes next time"


def failed(error: BaseException | str) -> int:
    """Write the problem as one line on standard error and return EXIT_FAILED."""
    text = " ".join(str(error).split())
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()
    return EXIT_FAILED


def stopped(what_was_kept: str) -> int:
    """Write what a Ctrl-C left behind as one line on standard error and return EXIT_STOPPED."""
    sys.stderr.write(f"interrupted: {what_was_kept}\n")
    sys.stderr.flush()
    return EXIT_STOPPED


def add_data_arguments(parser: argparse.ArgumentParser, external: bool = False) -> None:
    """Add --data-dir (and with external, --external-dir): where a command finds the dataset and the external sets."""
    parser.add_argument("--data-dir", default=None,
                        help=f"dataset folder (default: ${config.DATA_DIR_VARIABLE} or data/brain-tumor-mri)")
    if external:
        parser.add_argument("--external-dir", default=None,
                            help=f"external sets folder (default: ${config.EXTERNAL_DIR_VARIABLE} or data/external)")
