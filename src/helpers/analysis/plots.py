"""Every figure of the study (seaborn/matplotlib); each function returns a figure, which a notebook shows once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from itertools import combinations
from typing import TypeVar

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from cycler import cycler
from matplotlib.figure import Figure

from helpers import config
from helpers.analysis.shown_figures import StudyFigure, alt_text
from helpers.inputs.data import ImageSplit

# The study's look (seaborn's whitegrid at notebook scale), applied while a figure is drawn, never to the caller's
# own matplotlib settings.
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"),
         "axes.prop_cycle": cycler(color=sns.color_palette("deep"))}
Plot = TypeVar("Plot", bound=Callable[..., Figure])
def _styled(plot: Plot) -> Plot:
    """Make a figure function draw in the study's style, its figure carrying the function's description as alt text."""

    @functools.wraps(plot)
    def styled(*arguments, **options):
        with matplotlib.rc_context(STYLE):
            figure = plot(*arguments, **options)
        figure.alt_text = alt_text(plot)
        return figure

    return styled  # type: ignore[return-value]


def _subplots(rows: int = 1, columns: int = 1, figsize: tuple[float, float] = (8, 4), **options):
    """Return a new figure (not registered with pyplot, so a notebook shows it once) and its axes."""
    figure = StudyFigure(figsize=figsize, layout="constrained")
    return figure, figure.subplots(rows, columns, **options)


@_styled
def class_balance(split_table: pd.DataFrame) -> Figure:
    """Bar chart of images per class (rows of split_table) in each split (its columns)."""
    long = split_table.rename_axis("class").reset_index().melt(id_vars="class", var_name="split", value_name="images")
    figure, axes = _subplots(figsize=(8, 4))
    sns.barplot(data=long, x="class", y="images", hue="split", ax=axes)
    for container in axes.containers:
        axes.bar_label(container, fontsize=8)
    axes.set_title("Images per class and split")
    return figure


@_styled
def image_sizes_and_modes(properties: pd.DataFrame, top: int = 10) -> Figure:
    """Bars of the most common original image sizes, and of colour modes per split."""
    sizes = (properties["width"].astype(str) + "x" + properties["height"].astype(str)).value_counts()
    figure, (left, right) = _subplots(1, 2, figsize=(12, 4))
    shown = sizes.head(top)
    sns.barplot(x=shown.values, y=shown.index, ax=left, color="steelblue")
    left.set(title=f"Most common sizes ({len(sizes)} distinct; {sizes.iloc[top:].sum()} images in the rest)",
             xlabel="images", ylabel="width x height")
    modes = properties.groupby(["split", "mode"]).size().rename("images").reset_index()
    sns.barplot(data=modes, x="mode", y="images", hue="split", ax=right)
    for container in right.containers:
        right.bar_label(container, fontsize=8)
    right.set(title="Colour mode of the files", yscale="log")
    return figure


@_styled
def image_gallery(images: np.ndarray, captions: list[str], columns: int = 6, title: str = "",
                  cell_size: float = 1.8) -> Figure:
    """Grid of greyscale images, each with its caption."""
    count = max(len(images), 1)
    rows = int(np.ceil(count / columns))
    figure, axes = _subplots(rows, columns, figsize=(columns * cell_size, rows * (cell_size + 0.35)),
                                squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index < len(images):
            axis.imshow(np.squeeze(images[index]), cmap="gray", vmin=0, vmax=255)
            axis.set_title(captions[index], fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


@_styled
def sample_grid(split: ImageSplit, class_names: tuple[str, ...] = config.CLASS_NAMES, per_class: int = 6,
                seed: int = config.DEFAULT_SEED) -> Figure:
    """A row of randomly chosen images for each class."""
    generator = np.random.default_rng(seed)
    chosen, captions = [], []
    for label, name in enumerate(class_names):
        members = np.flatnonzero(split.labels == label)
        for index in generator.choice(members, size=min(per_class, len(members)), replace=False):
            chosen.append(split.images[index])
            captions.append(name)
    return image_gallery(np.stack(chosen), captions, columns=per_class, title="Random images per class")


@_styled
def mean_images(split: ImageSplit, class_names: tuple[str, ...] = config.CLASS_NAMES) -> Figure:
    """The pixel-wise mean image of each class, on one shared intensity scale."""
    figure, axes = _subplots(1, len(class_names), figsize=(3 * len(class_names), 3.3))
    for label, (axis, name) in enumerate(zip(axes, class_names)):
        axis.imshow(split.images[split.labels == label].mean(axis=0), cmap="magma", vmin=0, vmax=255)
        axis.set_title(f"{name} (n={int((split.labels == label).sum())})")
        axis.axis("off")
    figure.suptitle("Mean image per class")
    return figure


@_styled
def intensity_histograms(split: ImageSplit, class_names: tuple[str, ...] = config.CLASS_NAMES) -> Figure:
    """Density of pixel intensities per class (black background pixels, value < 8, left out)."""
    figure, axes = _subplots(figsize=(8, 4))
    for label, name in enumerate(class_names):
        pixels = split.images[split.labels == label].ravel()
        axes.hist(pixels[pixels >= 8], bins=64, range=(0, 255), density=True, histtype="step", linewidth=1.6,
                  label=name)
    axes.set(title="Pixel intensity per class (background excluded)", xlabel="intensity", ylabel="density")
    axes.legend()
    return figure


@_styled
def rows_as_sequence(image: np.ndarray, caption: str = "", rows: tuple[int, ...] = (16, 32, 48)) -> Figure:
    """How the RNN reads an image: 64 time steps (rows) of 64 features each, as a heatmap and a few row profiles."""
    image = np.squeeze(image)
    figure, (picture, heatmap, profiles) = _subplots(1, 3, figsize=(15, 4.2))
    picture.imshow(image, cmap="gray", vmin=0, vmax=255)
    for row in rows:
        picture.axhline(row, linewidth=1, color=sns.color_palette()[rows.index(row)])
    picture.set_title(caption or "image")
    picture.axis("off")
    sns.heatmap(image, cmap="viridis", ax=heatmap, cbar_kws={"label": "intensity"}, xticklabels=8, yticklabels=8)
    heatmap.set(title="The same image as a sequence", xlabel="feature (column)", ylabel="time step (row)")
    for row in rows:
        profiles.plot(image[row], label=f"time step {row}")
    profiles.set(title="Input vectors at a few time steps", xlabel="feature (column)", ylabel="intensity")
    profiles.legend()
    return figure


# The training curves' legend sits below both panels, and the figure grows by a row of it per LEGEND_COLUMNS entries.
LEGEND_COLUMNS = 3
LEGEND_ROW_INCHES = 0.2


@_styled
def training_curves(histories: dict[str, pd.DataFrame]) -> Figure:
    """Loss and accuracy per epoch, training (dashed) and validation (solid), for each labelled run."""
    legend_rows = -(-2 * len(histories) // LEGEND_COLUMNS)
    figure, (loss, accuracy) = _subplots(1, 2, figsize=(12, 4 + LEGEND_ROW_INCHES * legend_rows))
    for (label, history), colour in zip(histories.items(), sns.color_palette(n_colors=len(histories))):
        for axis, metric in ((loss, "loss"), (accuracy, "accuracy")):
            axis.plot(history["epoch"], history[metric], linestyle="--", color=colour, label=f"{label} training")
            axis.plot(history["epoch"], history[f"val_{metric}"], color=colour, label=f"{label} validation")
    loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    accuracy.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    figure.legend(*accuracy.get_legend_handles_labels(), loc="outside lower center", ncols=LEGEND_COLUMNS, fontsize=8)
    return figure


@_styled
def measured_versus_claimed(measured: pd.DataFrame, claimed: pd.DataFrame, metric: str = "f1") -> Figure:
    """Grouped bars of one per-class metric: this run's measurement beside the specification's claim."""
    table = pd.DataFrame({"measured": measured[metric], "claimed by the specification": claimed[metric]})
    long = table.rename_axis("class").reset_index().melt(id_vars="class", var_name="source", value_name=metric)
    figure, axes = _subplots(figsize=(8, 4))
    sns.barplot(data=long, x="class", y=metric, hue="source", ax=axes)
    for container in axes.containers:
        axes.bar_label(container, fmt="%.2f", fontsize=8)
    axes.set(title=f"Per-class {metric}: measured versus claimed", ylim=(0, 1.08))
    return figure


@_styled
def model_comparison(table: pd.DataFrame) -> Figure:
    """Accuracy with 95% CI, macro-F1 with 95% CI, parameters versus accuracy, and seconds per epoch, per model.

    table: one row per model (index) with accuracy, accuracy_low, accuracy_high, macro_f1, macro_f1_low,
    macro_f1_high, parameters and seconds_per_epoch.
    """
    figure, axes = _subplots(1, 4, figsize=(18, 4))
    colours = sns.color_palette(n_colors=len(table))
    names = list(table.index)
    for axis, metric in zip(axes[:2], ("accuracy", "macro_f1")):
        errors = np.vstack([table[metric] - table[f"{metric}_low"], table[f"{metric}_high"] - table[metric]])
        axis.bar(names, table[metric], yerr=errors, capsize=6, color=colours)
        axis.set(title=f"Test {metric.replace('_', '-')} (95% CI)",
                 ylim=(max(0.0, float(table[f"{metric}_low"].min()) - 0.1), 1.0))
    for colour, (name, row) in zip(colours, table.iterrows()):
        axes[2].scatter(row["parameters"], row["accuracy"], s=80, color=colour, label=name)
    axes[2].legend(fontsize=8)
    axes[2].set(title="Size versus accuracy", xlabel="parameters", ylabel="test accuracy", xscale="log")
    axes[3].bar(names, table["seconds_per_epoch"], color=colours)
    axes[3].set(title="Training time", ylabel="seconds per epoch")
    return figure


@_styled
def confusion_matrices(matrices: dict[str, np.ndarray], class_names: tuple[str, ...] = config.CLASS_NAMES) -> Figure:
    """Confusion matrices (counts, rows = true class) side by side."""
    figure, axes = _subplots(1, len(matrices), figsize=(5 * len(matrices), 4.4), squeeze=False)
    for axis, (name, matrix) in zip(axes[0], matrices.items()):
        sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=axis, xticklabels=class_names,
                    yticklabels=class_names)
        axis.set(title=name, xlabel="predicted", ylabel="true")
    return figure


@_styled
def per_class_heatmap(tables: dict[str, pd.DataFrame]) -> Figure:
    """Heatmap of precision, recall and F1 per class (rows) for each model (column groups)."""
    combined = pd.concat({name: table[["precision", "recall", "f1"]] for name, table in tables.items()}, axis=1)
    figure, axes = _subplots(figsize=(1.1 * combined.shape[1] + 2, 3.6))
    sns.heatmap(combined, annot=True, fmt=".2f", cmap="RdYlGn", vmin=0.5, vmax=1.0, ax=axes)
    axes.set(title="Precision, recall and F1 per class and model", xlabel="", ylabel="")
    return figure


@_styled
def confidence_histograms(confidences: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Histograms of top-class confidence, correct versus wrong, per model."""
    figure, axes = _subplots(1, len(confidences), figsize=(5 * len(confidences), 3.6), squeeze=False,
                                sharey=True)
    for axis, (name, (confidence, correct)) in zip(axes[0], confidences.items()):
        bins = np.linspace(0.25, 1.0, 16)
        axis.hist(confidence[correct], bins=bins, alpha=0.7, label=f"correct ({int(correct.sum())})")
        axis.hist(confidence[~correct], bins=bins, alpha=0.7, label=f"wrong ({int((~correct).sum())})")
        axis.set(title=name, xlabel="confidence of the predicted class", ylabel="images", yscale="log")
        axis.legend()
    return figure


@_styled
def reliability_diagram(tables: dict[str, pd.DataFrame]) -> Figure:
    """Accuracy against mean confidence per confidence bin (from evaluation.reliability_table), per model."""
    figure, axes = _subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, table in tables.items():
        filled = table.dropna()
        axes.plot(filled["confidence"], filled["accuracy"], marker="o", label=name)
    axes.set(title="Reliability diagram", xlabel="mean confidence in bin", ylabel="accuracy in bin",
             xlim=(0.2, 1.01), ylim=(0, 1.01))
    axes.legend()
    return figure


@_styled
def error_overlap(wrong: dict[str, np.ndarray]) -> Figure:
    """Bars of test images misclassified by every model, by each pair only, and by one model only."""
    names = list(wrong)
    masks = {name: np.asarray(mask, dtype=bool) for name, mask in wrong.items()}
    counts = {"all models": int(np.logical_and.reduce(list(masks.values())).sum())}
    if len(names) > 2:
        for first, second in combinations(names, 2):
            others = [masks[name] for name in names if name not in (first, second)]
            only_pair = masks[first] & masks[second] & ~np.logical_or.reduce(others)
            counts[f"{first} and {second} only"] = int(only_pair.sum())
    for name in names:
        others = [masks[other] for other in names if other != name]
        counts[f"{name} only"] = int((masks[name] & ~np.logical_or.reduce(others)).sum())
    figure, axes = _subplots(figsize=(8, 0.45 * len(counts) + 1.2))
    sns.barplot(x=list(counts.values()), y=list(counts.keys()), ax=axes, color="indianred")
    axes.bar_label(axes.containers[0])
    axes.set(title="Which models get the same test images wrong", xlabel="misclassified test images")
    return figure


@_styled
def row_importance(importance_by_class: pd.DataFrame, image: np.ndarray, image_importance: np.ndarray,
                   caption: str = "") -> Figure:
    """Occlusion saliency of the RNN: mean importance per row band and class, and one image with its bands."""
    figure, (heatmap, picture) = _subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
    sns.heatmap(importance_by_class, cmap="rocket_r", ax=heatmap, cbar_kws={"label": "probability drop"})
    heatmap.set(title="Mean drop in the predicted class's probability when a band of rows is blanked",
                xlabel="row band (top to bottom)", ylabel="predicted class")
    image = np.squeeze(image)
    band = image.shape[0] // len(image_importance)
    overlay = np.repeat(np.clip(image_importance, 0, None), band)[:, np.newaxis] * np.ones((1, image.shape[1]))
    picture.imshow(image, cmap="gray", vmin=0, vmax=255)
    picture.imshow(overlay, cmap="rocket_r", alpha=0.45)
    picture.set_title(caption or "rows that drive this prediction")
    picture.axis("off")
    return figure


@_styled
def source_montage(images_by_source: dict[str, np.ndarray], per_source: int = 6, seed: int = 0) -> Figure:
    """One row of random images per source (the dataset's classes, each external set)."""
    generator = np.random.default_rng(seed)
    figure, axes = _subplots(len(images_by_source), per_source, figsize=(per_source * 1.5, len(images_by_source) * 1.6),
                             squeeze=False)
    for row, (name, images) in enumerate(images_by_source.items()):
        chosen = generator.choice(len(images), size=min(per_source, len(images)), replace=False)
        for column, axis in enumerate(axes[row]):
            axis.axis("off")
            if column < len(chosen):
                axis.imshow(images[chosen[column]], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(name, fontsize=9, loc="left")
    return figure


@_styled
def intensity_by_source(images_by_source: dict[str, np.ndarray]) -> Figure:
    """Density of pixel intensities (background excluded) per source, and the share of background per source."""
    figure, (left, right) = _subplots(1, 2, figsize=(12, 4))
    for name, images in images_by_source.items():
        values = images[images > 10]
        sns.kdeplot(x=np.random.default_rng(0).choice(values, size=min(50_000, len(values))), ax=left, label=name)
    left.set(title="Pixel intensities inside the image (> 10)", xlabel="intensity", xlim=(0, 255))
    left.legend(fontsize=8)
    background = pd.Series({name: float((images <= 10).mean()) for name, images in images_by_source.items()})
    sns.barplot(x=background.values, y=background.index, ax=right, color="slategray")
    right.set(title="Share of background pixels (<= 10)", xlabel="share", ylabel="")
    return figure


@_styled
def source_sides(table: pd.DataFrame) -> Figure:
    """Tumour sensitivity, specificity and balanced accuracy with 95% CIs per source (panels) and model (bars)."""
    figures = ("tumour sensitivity", "specificity", "balanced accuracy")
    sources = list(dict.fromkeys(table["source"]))
    figure, axes = _subplots(1, len(figures), figsize=(5 * len(figures), 4.5), sharey=True, squeeze=False)
    for axis, figure_name in zip(axes[0], figures):
        shown = table.dropna(subset=[figure_name])
        sns.barplot(data=shown, x="source", y=figure_name, hue="model", order=sources, ax=axis)
        for container, (_, group) in zip(axis.containers, shown.groupby("model", sort=False)):
            group = group.set_index("source").reindex([source for source in sources if source in set(group["source"])])
            centres = [patch.get_x() + patch.get_width() / 2 for patch in container.patches]
            middle, low, high = (group[column].to_numpy(dtype=float) for column in
                                 (figure_name, f"{figure_name} low", f"{figure_name} high"))
            axis.errorbar(centres[:len(group)], middle, yerr=[middle - low, high - middle], fmt="none", color="black",
                          capsize=2)
        axis.set(ylim=(0, 1.05), title=figure_name, xlabel="", ylabel="share")
        axis.tick_params(axis="x", labelrotation=20)
        axis.get_legend().remove()
    axes[0, -1].legend(*axes[0, 0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.0, 1.0),
                       fontsize=8)
    figure.suptitle("Both sides of every source (95% bootstrap CI; — where a source has no such side)")
    return figure


@_styled
def saliency_gallery(images: np.ndarray, masks: np.ndarray, maps_by_method: dict[str, np.ndarray],
                     captions: list[str]) -> Figure:
    """Rows of images with the tumour outline, then one column per saliency method with its peak marked."""
    columns = 1 + len(maps_by_method)
    figure, axes = _subplots(len(images), columns, figsize=(columns * 1.8, len(images) * 1.9), squeeze=False)
    for row, image in enumerate(images):
        outlined = bool(np.asarray(masks[row]).any())
        axes[row, 0].imshow(image, cmap="gray", vmin=0, vmax=255)
        if outlined:
            axes[row, 0].contour(masks[row], levels=[0.5], colors="lime", linewidths=0.8)
        axes[row, 0].set_title(captions[row], fontsize=7)
        for column, (method, maps) in enumerate(maps_by_method.items(), start=1):
            axis = axes[row, column]
            axis.imshow(image, cmap="gray", vmin=0, vmax=255)
            axis.imshow(maps[row], cmap="inferno", alpha=0.55)
            if outlined:
                axis.contour(masks[row], levels=[0.5], colors="lime", linewidths=0.8)
            peak = np.unravel_index(int(np.argmax(maps[row])), maps[row].shape)
            axis.plot(peak[1], peak[0], marker="x", color="cyan", markersize=7)
            if row == 0:
                axis.set_title(method, fontsize=8)
        for axis in axes[row]:
            axis.axis("off")
    return figure


@_styled
def risk_coverage(curves: dict[str, list[dict[str, float]]]) -> Figure:
    """Accuracy on the most confident share of the images against that share, one line per set of images."""
    figure, axes = _subplots(figsize=(6.5, 4.5))
    for name, curve in curves.items():
        table = pd.DataFrame(curve)
        axes.plot(table["coverage"], table["accuracy"], marker="o", label=name)
    axes.set(title="Selective prediction: abstain on the least confident", xlabel="share of images answered",
             ylabel="accuracy on the answered images", xlim=(1.02, 0.45))
    axes.legend(fontsize=8)
    return figure


@_styled
def flagged_shares(shares: pd.Series, allowed: float) -> Figure:
    """Horizontal bars of the share of images flagged as unlike the training images, per set of images or outlier
    kind, with the share allowed on familiar images marked."""
    figure, axes = _subplots(figsize=(7, 0.35 * len(shares) + 1.2))
    sns.barplot(x=shares.values, y=shares.index, ax=axes, color="indianred")
    axes.axvline(allowed, color="grey", linestyle=":", label=f"allowed on familiar images ({allowed:.0%})")
    axes.set(title="Flagged as unlike the training images", xlabel="share flagged", xlim=(0, 1.0), ylabel="")
    axes.legend(fontsize=8, loc="lower right")
    return figure


@_styled
def frontier(points: pd.DataFrame, front: list[tuple[str, str]] | None = None, source: str = "") -> Figure:
    """Official-split accuracy (x) against balanced accuracy on a source held out of training (y): one point per
    model and recipe with its seeds' spread as error bars, marker area by training minutes, the front joined."""
    figure, axis = _subplots(figsize=(8, 5.5))
    measured = points.dropna(subset=["held_out_balanced_accuracy"])
    markers = dict(zip(dict.fromkeys(points["recipe"]), "osD^v"))
    colours = dict(zip(dict.fromkeys(points["model"]), sns.color_palette("deep")))
    largest = max(float(measured["wall_minutes"].max()), 1.0) if len(measured) else 1.0
    for point in measured.itertuples():
        axis.errorbar(100 * point.official_accuracy, 100 * point.held_out_balanced_accuracy,
                      xerr=100 * point.official_accuracy_std,
                      yerr=100 * np.nan_to_num(point.held_out_balanced_accuracy_std),
                      fmt="none", ecolor=colours[point.model], alpha=0.6)
        axis.scatter(100 * point.official_accuracy, 100 * point.held_out_balanced_accuracy,
                     s=40 + 460 * point.wall_minutes / largest, marker=markers[point.recipe],
                     color=colours[point.model], edgecolor="black", linewidth=0.6, zorder=3)
        axis.annotate(f"{point.model} ({point.recipe})", (100 * point.official_accuracy,
                                                            100 * point.held_out_balanced_accuracy),
                      textcoords="offset points", xytext=(6, 6), fontsize=9)
    chosen = measured.set_index(["recipe", "model"]).loc[list(front)] if front else measured.iloc[:0]
    if len(chosen) > 1:
        axis.plot(100 * chosen["official_accuracy"], 100 * chosen["held_out_balanced_accuracy"], color="grey",
                  linestyle="--", linewidth=1, label="the front: no point better on both axes")
        axis.legend(loc="lower left", fontsize=9)
    axis.set(xlabel="official Testing accuracy (%)",
             ylabel=f"balanced accuracy on {source or 'a source'} held out of training (%)",
             title="Accuracy on the dataset against a source never trained on (marker area: training minutes)")
    return figure
