"""How a notebook shows a figure of the study: as an image with alt text (what the figure shows), scans as JPEG and
charts as PNG, so that a report stays small and readable without sight."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable

from matplotlib.figure import Figure

SHOWN_DPI = 100
JPEG_QUALITY = 85


class StudyFigure(Figure):
    """A figure a notebook shows with alt text (what the figure shows); one holding scans as JPEG, charts as PNG."""

    alt_text = ""

    def _repr_mimebundle_(self, include=None, exclude=None) -> tuple[dict, dict]:
        """Return the figure as an image with its alt text, the form IPython and nbconvert show."""
        holds_scans = any(axes.images for axes in self.axes)
        mimetype, options = (("image/jpeg", {"format": "jpeg", "pil_kwargs": {"quality": JPEG_QUALITY}})
                             if holds_scans else ("image/png", {"format": "png"}))
        buffer = io.BytesIO()
        self.savefig(buffer, dpi=SHOWN_DPI, bbox_inches="tight", **options)
        return ({mimetype: base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": self.alt_text},
                {mimetype: {"alt": self.alt_text}})


def alt_text(plot: Callable) -> str:
    """Return a figure function's description for readers who cannot see it: its docstring's first paragraph, without
    the parenthesised argument names."""
    paragraph = (plot.__doc__ or plot.__name__.replace("_", " ")).strip().split("\n\n")[0]
    return re.sub(r"\s*\([^()]*\)", "", " ".join(paragraph.split()))


def draw_each_figure_once(formatter) -> None:
    """Have an IPython display formatter show a study figure as its own image only: the inline backend's PNG printer
    (registered for every matplotlib figure) is replaced, for study figures, by one that adds nothing."""
    formatter.formatters["image/png"].for_type(StudyFigure, lambda figure: None)
