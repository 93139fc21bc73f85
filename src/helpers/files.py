"""Atomic writes (a file or a folder appears complete under its final name, or not at all) and generated text blocks."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary_path) then rename onto path, so that path is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside target; on success it replaces target, on failure it is deleted."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        yield staging
        previous = None
        if target.exists():
            previous = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, previous / target.name)
        os.replace(staging, target)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def with_marked_block(text: str, start: str, end: str, body: str, name: str) -> str:
    """Return text with the lines between the start and end markers replaced by body; fail naming the file if a
    marker is missing."""
    if start not in text or end not in text:
        raise ValueError(f"{name}: generated-block markers missing ({start!r} ... {end!r})")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    return f"{before}{start}\n{body}\n{end}{after}"


def write_marked_block(path: Path, start: str, end: str, body: str) -> bool:
    """Rewrite the block between the markers in a text file (atomically); return whether anything changed."""
    current = path.read_text()
    updated = with_marked_block(current, start, end, body, path.name)
    if updated != current:
        write_atomically(path, lambda temporary: temporary.write_text(updated))
    return updated != current
