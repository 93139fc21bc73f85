"""helpers.analysis.plots: every figure function draws from the data it is given and returns a figure with its
panels."""

from __future__ import annotations

import base64
import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from helpers.analysis import plots
from helpers.evaluation import SPECIFICATION_CLAIMED_RNN_PER_CLASS, per_class_table, reliability_table
from helpers.inputs import data


def test_every_figure_function_returns_a_drawn_figure(phantom_root):
    dataset = data.load_dataset(phantom_root, progress=False)
    split = dataset.training
    generator = np.random.default_rng(0)
    labels = dataset.testing.labels
    probabilities = generator.dirichlet(np.ones(4), size=len(labels))
    predicted = probabilities.argmax(axis=1)
    history = pd.DataFrame({"epoch": [1, 2], "loss": [1.2, 0.9], "val_loss": [1.3, 1.0], "accuracy": [0.4, 0.6],
                            "val_accuracy": [0.35, 0.5]})
    table = pd.DataFrame({"accuracy": [0.8, 0.9], "accuracy_low": [0.75, 0.87], "accuracy_high": [0.84, 0.93],
                          "macro_f1": [0.79, 0.9], "macro_f1_low": [0.7, 0.85], "macro_f1_high": [0.85, 0.94],
                          "parameters": [235_140, 1_439_140], "seconds_per_epoch": [2.5, 9.0]}, index=["rnn", "cnn"])
    per_class = per_class_table(labels, predicted)
    figures = {
        "class_balance": plots.class_balance(pd.DataFrame({"training": split.class_counts()})),
        "sizes": plots.image_sizes_and_modes(data.image_properties(phantom_root)),
        "samples": plots.sample_grid(split, per_class=3),
        "means": plots.mean_images(split),
        "intensities": plots.intensity_histograms(split),
        "sequence": plots.rows_as_sequence(split.images[0]),
        "curves": plots.training_curves({"seed 1": history}),
        "claimed": plots.measured_versus_claimed(per_class, SPECIFICATION_CLAIMED_RNN_PER_CLASS),
        "comparison": plots.model_comparison(table),
        "confusion": plots.confusion_matrices({"rnn": np.eye(4, dtype=int), "cnn": np.eye(4, dtype=int)}),
        "heatmap": plots.per_class_heatmap({"rnn": per_class, "cnn": per_class}),
        "confidence": plots.confidence_histograms({"rnn": (probabilities.max(axis=1), predicted == labels)}),
        "reliability": plots.reliability_diagram({"rnn": reliability_table(labels, probabilities)}),
        "overlap": plots.error_overlap({"rnn": predicted != labels, "hybrid": predicted == 0, "cnn": predicted == 1}),
        "rows": plots.row_importance(pd.DataFrame(generator.random((4, 16))), split.images[0], generator.random(16)),
        "sources": plots.intensity_by_source({"dataset glioma": split.images[:4], "Br35H": split.images[4:8]}),
    }
    panels = {"samples": 12, "means": 4, "sequence": 4, "comparison": 4, "confusion": 2}
    for name, figure in figures.items():
        assert isinstance(figure, Figure), name
        figure.canvas.draw()
        drawn = [axis for axis in figure.axes if axis.has_data() or axis.images]
        assert drawn, f"{name} drew nothing"
        if name in panels:
            assert len(figure.axes) >= panels[name], name
        labels = [text for axis in figure.axes for text in (axis.get_xlabel(), axis.get_ylabel(), axis.get_title())]
        assert "None" not in labels, f"{name} has an axis labelled None"
        shown, metadata = figure._repr_mimebundle_()  # what a notebook keeps: one image with its alt text
        (mimetype,) = set(shown) - {"text/plain"}
        assert mimetype == ("image/jpeg" if name in ("samples", "means", "sequence", "rows") else "image/png"), name
        assert len(metadata[mimetype]["alt"]) > 20 and "(" not in metadata[mimetype]["alt"], name
        assert base64.b64decode(shown[mimetype])[:3] in (b"\xff\xd8\xff", b"\x89PN"), name
    size_legend = [text.get_text() for text in figures["comparison"].axes[2].get_legend().get_texts()]
    assert size_legend == ["rnn", "cnn"], "the size plot names its points in a legend (labels beside them overlap)"
    overlap_labels = [label.get_text() for label in figures["overlap"].axes[0].get_yticklabels()]
    assert overlap_labels[0] == "all models" and "rnn and hybrid only" in overlap_labels


def test_training_curves_of_many_runs_keep_their_panels_and_draw_without_warnings():
    history = pd.DataFrame({"epoch": [1, 2], "loss": [1.2, 0.9], "val_loss": [1.3, 1.0], "accuracy": [0.4, 0.6],
                            "val_accuracy": [0.35, 0.5]})
    runs = {f"crnn (dataset-only) seed {seed} {index}": history for index in range(5) for seed in (42, 43, 44)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied": the legend squeezed the axes to nothing
        figure = plots.training_curves(runs)
        figure._repr_mimebundle_()
    assert all(axis.get_position().height > 0.3 for axis in figure.axes)
    assert len(figure.legends[0].get_texts()) == 2 * len(runs)


def test_the_both_sides_figure_draws_every_interval_it_promises():
    from matplotlib.container import ErrorbarContainer

    rows = []
    for model in ("rnn", "cnn"):
        for source, sensitivity, specificity in (("official Testing", 0.98, 0.95), ("Br35H", 0.9, np.nan),
                                                 ("TCGA FLAIR", 0.8, 0.4)):
            row = {"model": model, "source": source, "tumour sensitivity": sensitivity, "specificity": specificity,
                   "balanced accuracy": (sensitivity + specificity) / 2}
            for name in ("tumour sensitivity", "specificity", "balanced accuracy"):
                row[f"{name} low"], row[f"{name} high"] = row[name] - 0.05, row[name] + 0.05
            rows.append(row)
    figure = plots.source_sides(pd.DataFrame(rows))
    drawn = [sum(len(container.lines[2][0].get_segments()) for container in axis.containers
                 if isinstance(container, ErrorbarContainer)) for axis in figure.axes[:3]]
    assert drawn == [6, 4, 4], "one interval per bar, none where a source has no such side"
    alone = pd.DataFrame(rows)[lambda table: table["source"] == "official Testing"]  # no external set found
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a library's warning would print in the notebook
        plots.source_sides(alone).canvas.draw()


def test_figures_draw_in_the_study_style_without_changing_the_callers_settings():
    import matplotlib

    before = dict(matplotlib.rcParams)
    figure = plots.class_balance(pd.DataFrame({"Training": [10, 12], "Testing": [3, 4]}, index=["glioma", "notumor"]))
    axis = figure.axes[0]
    assert dict(matplotlib.rcParams) == before
    assert all(line.get_visible() for line in axis.yaxis.get_gridlines()), "seaborn's whitegrid"
    assert axis.yaxis.label.get_fontsize() == plots.STYLE["axes.labelsize"]


def test_a_notebook_draws_each_study_figure_once_as_its_own_image():
    from IPython.core.formatters import DisplayFormatter

    from helpers.analysis.shown_figures import draw_each_figure_once

    formatter = DisplayFormatter()
    drawn_by_backend = []
    formatter.formatters["image/png"].for_type(Figure, lambda figure: drawn_by_backend.append(figure) or b"\x89PNG")
    draw_each_figure_once(formatter)  # what Study.from_parameters does in a notebook
    chart, _ = formatter.format(plots.class_balance(pd.DataFrame({"training": [3, 4]}, index=["a", "b"])))
    scans, metadata = formatter.format(plots.image_gallery(np.zeros((2, 8, 8), np.uint8), ["a", "b"]))
    assert not drawn_by_backend, "the inline backend's PNG would draw the figure a second time"
    assert base64.b64decode(chart["image/png"])[:4] == b"\x89PNG"
    assert "image/png" not in scans
    assert metadata["image/jpeg"]["alt"] == "Grid of greyscale images, each with its caption."
