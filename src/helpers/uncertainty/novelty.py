"""Scores of how unlike the training images an input is, from a model's penultimate features, and the detector that
flags inputs above a threshold set on validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers import config
from helpers.uncertainty.conformal import GUARANTEE, guaranteed_rank

# The detector's scores; higher means more unlike the training images. "mahalanobis": the distance to the nearest
# class mean under the classes' shared covariance (Lee et al. 2018); "energy": minus the log-sum-exp of the logits
# (Liu et al. 2020); "confidence": one minus the top-class probability, the cut the command used before.
METHODS = ("mahalanobis", "energy", "confidence")
# The share of images like the validation images the flag may catch (the feature score and the image statistics
# together), held with probability GUARANTEE over the validation draw (guaranteed_flag_rate).
VALIDATION_FLAG_RATE = 0.02
# The image statistics: intensity histogram bins, rings of the radial profile, gradient histogram bins, bins of the
# gradients' orientation (appended last, so records written before it read the first columns only).
HISTOGRAM_BINS, RINGS, GRADIENT_BINS, ORIENTATION_BINS = 16, 6, 8, 16
# The image statistics' score: the mean distance to this many nearest training inputs, in standardised statistics.
NEIGHBOURS = 5


def _heads(model) -> list:
    """Return the models whose last layer is the class-probability layer: the model itself, or an ensemble's members."""
    import keras

    members = [layer for layer in model.layers if isinstance(layer, keras.Model)
               and any(inner.name == "class_probabilities" for inner in layer.layers)]
    return members or [model]


def feature_extractor(model):
    """Return a Keras model mapping images to (probabilities, penultimate features of every member side by side)."""
    import keras

    image = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="image")
    probabilities, features = [], []
    for head in _heads(model):
        tapped = keras.Model(head.inputs[0], [head.outputs[0], head.get_layer("class_probabilities").input])
        member_probabilities, member_features = tapped(image)
        probabilities.append(member_probabilities)
        features.append(member_features)
    mean = probabilities[0] if len(probabilities) == 1 else keras.layers.Average()(probabilities)
    joined = features[0] if len(features) == 1 else keras.layers.Concatenate()(features)
    return keras.Model(image, [mean, joined], name=f"{model.name}_features")


def logit_layers(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the kernel and bias of every member's class-probability layer, in the feature extractor's order."""
    return [(np.asarray(kernel), np.asarray(bias))
            for kernel, bias in (head.get_layer("class_probabilities").get_weights() for head in _heads(model))]


def energy_scores(features: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Return minus the log-sum-exp of each member's logits, averaged over the members."""
    scores, start = [], 0
    for kernel, bias in layers:
        logits = features[:, start:start + kernel.shape[0]] @ kernel + bias
        start += kernel.shape[0]
        top = logits.max(axis=1, keepdims=True)
        scores.append(-(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))))
    return np.mean(scores, axis=0)


@dataclass
class ClassGaussians:
    """Class means and the shared precision matrix of training features (Ledoit-Wolf shrunk covariance)."""

    means: np.ndarray  # (classes, features)
    precision: np.ndarray  # (features, features)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> ClassGaussians:
        """Fit the class means and the shared covariance of the features around them (kept in float32, as shipped)."""
        from sklearn.covariance import LedoitWolf

        features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
        classes = np.unique(labels)
        means = np.stack([features[labels == label].mean(axis=0) for label in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        return cls(means=means.astype(np.float32), precision=precision.astype(np.float32))

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Return each image's squared Mahalanobis distance to the nearest class mean."""
        features = np.asarray(features, dtype=np.float64)
        gaps = features[:, None, :] - np.asarray(self.means, dtype=np.float64)[None, :, :]
        return np.einsum("ncf,fg,ncg->nc", gaps, np.asarray(self.precision, dtype=np.float64), gaps).min(axis=1)


@dataclass
class StatisticsNeighbours:
    """The training inputs' image statistics, standardised, to score new inputs by their nearest neighbours among
    them (a head seen in any plane or source is near some of them; a photograph is near none)."""

    reference: np.ndarray  # (images, statistics) standardised statistics of the training inputs, float16
    centre: np.ndarray  # (statistics,) their mean before standardising
    scale: np.ndarray  # (statistics,) their standard deviation (1 where constant)

    @classmethod
    def fit(cls, statistics: np.ndarray) -> StatisticsNeighbours:
        """Standardise the training inputs' statistics and keep them as the reference (in float16: half the bytes a
        published record carries; its rounding, under 0.1% of a standardised unit, moves no flag)."""
        statistics = np.asarray(statistics, dtype=np.float64)
        centre, scale = statistics.mean(axis=0), statistics.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        return cls(reference=((statistics - centre) / scale).astype(np.float16), centre=centre, scale=scale)

    def distances(self, statistics: np.ndarray) -> np.ndarray:
        """Return each input's mean Euclidean distance to its NEIGHBOURS nearest reference inputs (statistics added
        after the reference was fitted are appended last: the reference's columns are read)."""
        from scipy.spatial import KDTree

        known = np.asarray(statistics, dtype=np.float64)[:, :self.reference.shape[1]]
        count = min(NEIGHBOURS, len(self.reference))
        distances = KDTree(np.asarray(self.reference, dtype=np.float64)).query((known - self.centre) / self.scale,
                                                                              k=count)[0]
        return np.asarray(distances).reshape(len(known), count).mean(axis=1)


def novelty_scores(method: str, probabilities: np.ndarray, features: np.ndarray,
                   gaussians: ClassGaussians | None = None,
                   layers: list[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Return the scores of one method (METHODS) for images given their probabilities and features."""
    config.check_choice("novelty score", method, METHODS)
    if method == "mahalanobis":
        if gaussians is None:
            raise ValueError("Mahalanobis scores need the class Gaussians (gaussians=)")
        return gaussians.distances(features)
    if method == "energy":
        if layers is None:
            raise ValueError("energy scores need the class-probability layers (layers=)")
        return energy_scores(features, layers)
    return 1.0 - np.asarray(probabilities).max(axis=1)


def image_statistics(images: np.ndarray) -> np.ndarray:
    """Return a model-independent description of each (N, size, size) uint8 model input: its intensity histogram,
    its mean intensity in rings around the centre, its gradient histogram, its share of flat non-dark pixels and the
    orientation of its gradients."""
    pixels = np.asarray(images, dtype=np.float32).reshape(len(images), *np.shape(images)[1:3]) / 255.0
    size = pixels.shape[1]
    rows, columns = np.mgrid[0:size, 0:size]
    radius = np.hypot(rows - (size - 1) / 2, columns - (size - 1) / 2) / (size / 2)
    rings = np.minimum((radius * 4).astype(int), RINGS - 1)
    gradients = (np.abs(np.diff(pixels, axis=1))[:, :, :-1] + np.abs(np.diff(pixels, axis=2))[:, :-1, :])
    histogram = np.stack([np.histogram(image, bins=HISTOGRAM_BINS, range=(0, 1))[0] for image in pixels])
    gradient_histogram = np.stack([np.histogram(image, bins=GRADIENT_BINS, range=(0, 0.5))[0]
                                   for image in gradients])
    radial = np.stack([pixels[:, rings == ring].mean(axis=1) for ring in range(RINGS)], axis=1)
    flat = ((gradients == 0) & (pixels[:, :-1, :-1] > 0.05)).mean(axis=(1, 2))[:, np.newaxis]
    return np.concatenate([np.sqrt(histogram / size ** 2), radial, np.sqrt(gradient_histogram / gradients[0].size),
                           flat, orientation_histogram(pixels)], axis=1)


def orientation_histogram(pixels: np.ndarray) -> np.ndarray:
    """Return the square root of each (N, size, size) image's share of gradient magnitude in each orientation bin (0
    to 180 degrees): a photograph's straight edges crowd a few bins, a head's curves spread over all."""
    vertical, horizontal = np.gradient(np.asarray(pixels, dtype=np.float32), axis=(1, 2))
    magnitude = np.hypot(horizontal, vertical)
    angle = np.mod(np.arctan2(vertical, horizontal), np.pi)
    bins = np.minimum((angle / np.pi * ORIENTATION_BINS).astype(int), ORIENTATION_BINS - 1)
    shares = np.stack([(magnitude * (bins == index)).sum(axis=(1, 2)) for index in range(ORIENTATION_BINS)], axis=1)
    return np.sqrt(shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-9))


def threshold_for(validation_scores: np.ndarray, rate: float = VALIDATION_FLAG_RATE) -> float:
    """Return the score above which at most `rate` of the validation images lie."""
    return float(np.quantile(np.asarray(validation_scores), 1.0 - rate, method="higher"))


def auroc(inside_scores: np.ndarray, outside_scores: np.ndarray) -> float:
    """Return the area under the ROC curve of telling outliers (positive) from familiar images by the score."""
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.zeros(len(inside_scores)), np.ones(len(outside_scores))]
    return float(roc_auc_score(truth, np.r_[inside_scores, outside_scores]))


def guaranteed_flag_rate(count: int, rate: float = VALIDATION_FLAG_RATE, guarantee: float | None = GUARANTEE) -> float:
    """Return the share of count validation images to flag so that at most rate of images like them are flagged,
    with probability guarantee over the validation draw (None: rate itself, met on average only)."""
    if guarantee is None or count < 2:
        return rate
    # threshold_for at this rate picks the guaranteed rank's score among the count.
    return min(rate, 1.0 - (guaranteed_rank(1.0 - rate, count, guarantee) - 1) / (count - 1))


def union_thresholds(first_scores: np.ndarray, second_scores: np.ndarray,
                     rate: float = VALIDATION_FLAG_RATE) -> tuple[float, float]:
    """Return a threshold for each of two scores of the same validation images, each flagging the same share of them,
    the largest share for which either score together flags at most `rate` of them."""
    first_scores, second_scores = np.asarray(first_scores), np.asarray(second_scores)
    low, high = rate / 2, rate
    for _ in range(30):
        middle = (low + high) / 2
        flagged = ((first_scores > threshold_for(first_scores, middle))
                   | (second_scores > threshold_for(second_scores, middle))).mean()
        low, high = (middle, high) if flagged <= rate else (low, middle)
    return threshold_for(first_scores, low), threshold_for(second_scores, low)
