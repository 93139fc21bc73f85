"""How a notebook shows what it could not measure: an empty table cell, "not evaluated here" in prose, never NaN."""

from __future__ import annotations

import math

import pandas as pd

NOT_EVALUATED = "not evaluated here"


def percent(value: float | None, digits: int = 1) -> str:
    """Return a share as a percentage with the given decimals, or "not evaluated here" when it was not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_EVALUATED
    return f"{value:.{digits}%}"


def counts_text(found: dict[str, tuple[int, int]]) -> str:
    """Return "name: k of n" for each named count, or "none (no external test parts)" when there are none."""
    if not found:
        return "none (no external test parts)"
    return "; ".join(f"{name}: {count} of {total}" for name, (count, total) in found.items())


def _html_table(frame: pd.DataFrame) -> str:
    """Return a data frame's notebook HTML table with its missing cells left empty."""
    return frame.to_html(na_rep="", notebook=True, max_rows=pd.get_option("display.max_rows"),
                         max_cols=pd.get_option("display.max_columns"), show_dimensions=False)


def _text_table(frame: pd.DataFrame, printer, cycle: bool) -> None:
    """Write a data frame's plain-text table with its missing cells left empty."""
    printer.text(frame.to_string(na_rep=""))


def display_formatter():
    """Return this notebook kernel's display formatter (what turns a cell's value into its output), or None outside
    IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.display_formatter


def leave_missing_cells_empty(formatter) -> None:
    """Have an IPython display formatter show every data frame with its missing cells empty."""
    formatter.formatters["text/html"].for_type(pd.DataFrame, _html_table)
    formatter.formatters["text/plain"].for_type(pd.DataFrame, _text_table)
