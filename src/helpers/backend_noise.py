"""The lines TensorFlow prints while it loads and first lists its devices (absl start-up, CPU features, CUDA probing):
kept off the console.

TensorFlow 2.19 and later print them whatever $TF_CPP_MIN_LOG_LEVEL says once Python has started, and a notebook's
kernel shows them in its first cell. So the first `import tensorflow` runs with the process's standard error sent to a
temporary file, and every line of it that is not start-up noise is written back (docs/decisions.md, "Start-up lines").
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

BACKEND_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} \d\d:\d\d:\d\d|"
                           r"To enable the following instructions|WARNING:tensorflow:.*retracing|"
                           r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] (?:tensorflow|external)/)")
QUIETED_MODULE = "tensorflow"
_console: int | None = None  # where standard error really goes while it is being filtered


def console_descriptor() -> int:
    """Return the file descriptor of the real standard error, also while a backend's start-up is being filtered."""
    return _console if _console is not None else 2


def without_noise(text: str) -> str:
    """Return text without its backend start-up lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not BACKEND_NOISE.match(line))


@contextmanager
def standard_error_filtered() -> Iterator[None]:
    """Send this process's standard error (file descriptor 2, which C++ libraries write to) to a temporary file while
    the block runs, then write back every line that is not backend start-up noise."""
    global _console
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        _console = saved
        try:
            yield
        finally:
            sys.stderr.flush()
            _console = None
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = without_noise(captured.read().decode("utf-8", errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Load a module with its loader while standard error is filtered."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str):
        """Answer anything else (resources, source) as the wrapped loader does."""
        return getattr(self.loader, name)

    def create_module(self, spec):
        """Create the module as its own loader would."""
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        """Run the module's code, then list its physical devices (the CUDA probe prints its own lines), with the
        start-up lines filtered out."""
        with standard_error_filtered():
            self.loader.exec_module(module)
            with contextlib.suppress(Exception):  # a build without device listing simply skips the probe
                module.config.list_physical_devices()


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Find TensorFlow the usual way, once, and have it loaded quietly."""

    def find_spec(self, name, path, target=None):
        """Return TensorFlow's spec with a quiet loader; any other module is left to the other finders."""
        if name != QUIETED_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_backend_start_up() -> None:
    """Have the first `import tensorflow` of this process keep its start-up lines off standard error; does nothing
    when TensorFlow is already loaded or $TF_CPP_MIN_LOG_LEVEL asks for its messages (0)."""
    if QUIETED_MODULE in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
