"""Why a model decides: saliency maps (occlusion for every model, Grad-CAM where there are 2-D convolutions), the
pointing score against tumour outlines, an estimate of each slice's plane, and a probe of how separable the sources are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from helpers import config

NO_TUMOUR_INDEX = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
PLANES = ("axial", "coronal", "sagittal")
# Plane rules on the standardised 64 px slice: a sagittal slice is not mirror-symmetric left to right, a coronal one
# (with the neck below) is less symmetric top to bottom than an axial one. Measured agreement on slices known to be
# axial (the external sets) is reported beside every use (notebook 06); treat the planes as estimates.
SAGITTAL_BELOW = 0.45
CORONAL_BELOW = 0.45
OCCLUDED_IMAGES_PER_CALL = 4096  # occluded copies per predict call: few calls, bounded memory


def tumour_score(probabilities: np.ndarray) -> np.ndarray:
    """Return the summed probability of the tumour classes (1 - P(no tumour)) per image."""
    return 1.0 - np.asarray(probabilities)[:, NO_TUMOUR_INDEX]


def occlusion_maps(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, patch: int = 8,
                   stride: int = 4, images_per_call: int = OCCLUDED_IMAGES_PER_CALL) -> np.ndarray:
    """Return, per image, how much blanking each patch lowers the tumour score, spread over the patch's pixels.

    predict maps uint8 images (N, size, size, 1) to class probabilities; the result has shape (N, size, size).
    Works for any model, the row-reading RNN included. The occluded copies go to predict in as few calls as
    images_per_call allows.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    count, size = images.shape[0], images.shape[1]
    starts = range(0, size - patch + 1, stride)
    corners = [(top, left) for top in starts for left in starts]
    baseline = tumour_score(predict(images))
    total = np.zeros((count, size, size), np.float32)
    cover = np.zeros((size, size), np.float32)
    step = max(1, images_per_call // max(count, 1))
    for first in range(0, len(corners), step):
        chunk = corners[first:first + step]
        occluded = np.repeat(images[np.newaxis], len(chunk), axis=0)
        for index, (top, left) in enumerate(chunk):
            occluded[index, :, top:top + patch, left:left + patch] = 0
        scores = tumour_score(predict(occluded.reshape(-1, *images.shape[1:]))).reshape(len(chunk), count)
        for index, (top, left) in enumerate(chunk):
            total[:, top:top + patch, left:left + patch] += (baseline - scores[index])[:, None, None]
            cover[top:top + patch, left:left + patch] += 1
    return total / np.maximum(cover, 1)


def last_convolution_layer(model) -> str | None:
    """Return the name of the model's last top-level layer with a 2-D feature map (None for the row-reading RNN)."""
    kinds = ("Conv2D", "Activation", "BatchNormalization")
    for layer in reversed(model.layers):
        output = getattr(layer, "output", None)
        if type(layer).__name__ in kinds and output is not None and len(output.shape) == 4:
            return layer.name
    return None


def grad_cam(model, images: np.ndarray, layer_name: str | None = None, batch_size: int = 128) -> np.ndarray:
    """Return Grad-CAM maps of the tumour score (N, size, size), scaled to [0, 1] per image (TensorFlow backend)."""
    import keras
    import tensorflow as tf

    layer_name = layer_name or last_convolution_layer(model)
    if layer_name is None:
        raise ValueError(f"{model.name}: no 2-D convolution to take Grad-CAM from; use occlusion_maps")
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"Grad-CAM here needs the TensorFlow backend, not {keras.backend.backend()}")
    probe = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        with tf.GradientTape() as tape:
            features, probabilities = probe(batch, training=False)
            score = 1.0 - probabilities[:, NO_TUMOUR_INDEX]
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        maps.append(tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy())
    stacked = np.concatenate(maps)
    peak = stacked.reshape(len(stacked), -1).max(axis=1)[:, None, None]
    return np.where(peak > 0, stacked / np.where(peak > 0, peak, 1), 0.0)


def pointing_hits(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Return, per image with an outline, whether the saliency map's peak falls inside the tumour mask."""
    maps, masks = np.asarray(maps), np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must have the same shape")
    outlined = masks.reshape(len(masks), -1).any(axis=1)
    peaks = maps.reshape(len(maps), -1).argmax(axis=1)
    return masks.reshape(len(masks), -1)[np.arange(len(masks)), peaks][outlined]


def pointing_score(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Return the share of outlined images whose saliency peak is inside the tumour, beside the chance rate (the
    mean share of the image the tumour covers: a peak placed at random)."""
    hits = pointing_hits(maps, masks)
    outlined = np.asarray(masks, dtype=bool)[np.asarray(masks).reshape(len(masks), -1).any(axis=1)]
    return {"images": int(len(hits)), "pointing_score": float(hits.mean()) if len(hits) else float("nan"),
            "chance": float(outlined.mean()) if len(outlined) else float("nan")}


def _mirror_correlation(images: np.ndarray, axis: int) -> np.ndarray:
    """Return, per image, the correlation of its pixels with its mirror image along an axis (1: rows, 2: columns)."""
    values = np.asarray(images, dtype=np.float32)
    centred = values - values.mean(axis=(1, 2), keepdims=True)
    mirrored = np.flip(centred, axis=axis)
    return (centred * mirrored).sum(axis=(1, 2)) / np.maximum((centred * centred).sum(axis=(1, 2)), 1e-6)


def estimate_planes(images: np.ndarray) -> np.ndarray:
    """Return an estimated slice plane (axial, coronal, sagittal) per (N, size, size) standardised image."""
    left_right = _mirror_correlation(images, axis=2)
    top_bottom = _mirror_correlation(images, axis=1)
    return np.where(left_right < SAGITTAL_BELOW, "sagittal", np.where(top_bottom < CORONAL_BELOW, "coronal", "axial"))


def source_features(images: np.ndarray) -> np.ndarray:
    """Return low-level features of each image: a 16-bin intensity histogram and an 8x8 thumbnail."""
    images = np.asarray(images, dtype=np.float32)
    histograms = np.stack([np.histogram(image, bins=16, range=(0, 256))[0] for image in images]) / images[0].size
    size = images.shape[1]
    thumbnails = images.reshape(len(images), 8, size // 8, 8, size // 8).mean(axis=(2, 4)) / 255.0
    return np.hstack([histograms, thumbnails.reshape(len(images), -1)])


def source_probe(images_by_source: dict[str, np.ndarray], folds: int = 5,
                 seed: int = config.DEFAULT_SEED) -> dict[str, Any]:
    """Return how well a linear model tells the sources apart from low-level features (cross-validated accuracy,
    balanced over sources, beside the chance rate)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    names = list(images_by_source)
    features = np.vstack([source_features(images_by_source[name]) for name in names])
    sources = np.concatenate([np.full(len(images_by_source[name]), index) for index, name in enumerate(names)])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    with threadpool_limits(1, user_api="blas"):  # docs/decisions.md, "`make demo` in about five minutes"
        guessed = cross_val_predict(probe, features, sources,
                                    cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    recalls = {name: float((guessed[sources == index] == index).mean()) for index, name in enumerate(names)}
    return {"sources": names, "balanced_accuracy": float(np.mean(list(recalls.values()))),
            "chance": 1.0 / len(names), "recall_per_source": recalls}


# A tumour counts as visible on a slice when its mean intensity differs from the tissue just around it by at least
# this many standard deviations of that tissue (the contrast-to-noise ratio of the outline against its rim).
VISIBLE_CONTRAST = 1.0


def tumour_contrast(images: np.ndarray, masks: np.ndarray, rim: int = 3) -> np.ndarray:
    """Return, per image, |mean inside the outline - mean of the head pixels in a rim around it| over the rim's
    standard deviation; NaN where an image has no outline or no head pixels around it."""
    from scipy.ndimage import binary_dilation

    contrast = np.full(len(images), np.nan)
    for index, (image, mask) in enumerate(zip(np.asarray(images, np.float64), np.asarray(masks, bool))):
        if not mask.any():
            continue
        around = binary_dilation(mask, iterations=rim) & ~mask & (image > 0)
        if around.sum() < 2:
            continue
        spread = max(float(image[around].std()), 1.0)
        contrast[index] = abs(float(image[mask].mean()) - float(image[around].mean())) / spread
    return contrast


def visibility_table(outlined: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Return, per set of (images, masks), the outlined images, their median tumour contrast and the share of
    tumours visible by VISIBLE_CONTRAST."""
    rows = {}
    for name, (images, masks) in outlined.items():
        contrast = tumour_contrast(images, masks)
        measured = contrast[~np.isnan(contrast)]
        rows[name] = {"outlined images": int(len(measured)), "median contrast": float(np.median(measured)),
                      "visible": int((measured >= VISIBLE_CONTRAST).sum()),
                      "share visible": float((measured >= VISIBLE_CONTRAST).mean())}
    return pd.DataFrame(rows).T
