"""Atomic writes (a file or a folder appears complete under its final name, or not at all) and generated text blocks."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
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


def _process_alive(pid: int) -> bool:
    """Tell whether a process with this id is running (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete the staging folders a killed process left beside target (named .<target>.<pid>.<random>.partial, their
    process gone) and say so on stderr; return them. Folders of a running process are kept."""
    removed = []
    for partial in sorted(Path(target).parent.glob(f".{Path(target).name}.*.partial")):
        owner = partial.name[len(Path(target).name) + 2:].split(".")[0]
        if owner.isdigit() and not _process_alive(int(owner)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    if removed:
        print(f"removed {len(removed)} unfinished staging folder(s) left by a killed run: "
              f"{', '.join(path.name for path in removed)}", file=sys.stderr)
    return removed


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside target; on success it replaces target, on failure it is deleted.

    A staging folder that a killed process left beside target is removed first (remove_stale_staging)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".partial"))
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


def write_measured_rows(path: Path, rows: list[dict], key: tuple[str, ...], root: Path,
                        order: Callable[[dict], Any] | None = None, keep: Callable[[dict], bool] | None = None,
                        **content: object) -> Path:
    """Write a table of measured rows as JSON (atomically): the earlier rows whose key was not measured again (and
    that keep accepts, when given), then the new ones (sorted by order when given), every "run" path relative to root;
    content adds top-level fields. A table that would stay as it is but for its provenance is left untouched
    (write_measurement)."""
    import json

    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    earlier = [row for row in earlier if keep is None or keep(row)]
    measured = {tuple(row[name] for name in key) for row in rows}
    merged = [*[row for row in earlier if tuple(row[name] for name in key) not in measured], *rows]
    if order is not None:
        merged.sort(key=order)
    for row in merged:
        run = Path(row.get("run", ""))
        if run.is_absolute() and run.is_relative_to(root):
            row["run"] = str(run.relative_to(root))
    write_measurement(path, {"rows": merged, **content})
    return path


def write_measurement(path: Path, document: dict) -> bool:
    """Write a measured document as JSON (atomically) unless the stored one holds the same but its provenance (so
    that reading the same runs again changes no file and keeps when and where they were measured); return whether it
    wrote."""
    import json

    stored = json.loads(path.read_text()) if path.is_file() else None
    if stored is not None and _without_provenance(stored) == _without_provenance(json.loads(json.dumps(document))):
        return False
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(document, indent=2) + "\n"))
    return True


def _without_provenance(document: dict) -> dict:
    """Return a document's fields but its provenance."""
    return {name: value for name, value in document.items() if name != "provenance"}


def read_measured_rows(path: Path) -> list[dict] | None:
    """Return the rows of a table written by write_measured_rows, or None when it was never written."""
    import json

    return json.loads(path.read_text())["rows"] if path.is_file() else None


# The look every page the project writes itself shares (the index, the HTML copies of Markdown pages).
PAGE_STYLE = ("body{font-family:sans-serif;max-width:78em;margin:2em auto;padding:0 1em}"
              "table{border-collapse:collapse;font-size:.9em}td,th{padding:.3em .6em;border-bottom:1px solid #ccc}")


def write_markdown_page(markdown_path: Path) -> Path:
    """Write an HTML copy of a Markdown page beside it (same name, .html; tables rendered, nothing fetched from the
    network) and return its path, so that a browser shows the page rather than its source."""
    import html

    import mistune

    text = markdown_path.read_text(encoding="utf-8")
    title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")), markdown_path.stem)
    body = mistune.create_markdown(plugins=["table"])(text)
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}code{{background:#f4f4f4}}</style></head><body>\n{body}</body></html>\n")
    target = markdown_path.with_suffix(".html")
    write_atomically(target, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return target
