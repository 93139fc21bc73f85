"""Adaptation to a series at prediction time: a copy of a model whose batch-normalisation statistics are re-estimated on
a batch of images from one series, folder or source (AdaBN), layer after layer in the order the image passes them.
Why and what it was measured to do: docs/decisions.md, "Adaptation to a series"."""

from __future__ import annotations

from typing import Any

import numpy as np

# Fewer images than this estimate a layer's mean and variance too loosely to replace the training statistics.
MINIMUM_IMAGES = 32


class AdaptationError(ValueError):
    """A model or a batch of images that adaptation cannot use (no batch normalisation, too few images)."""


def normalisation_layers(model) -> list:
    """Return the batch-normalisation layers of a model, those of its nested models included, in graph order."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(normalisation_layers(layer))
    return found


def copy_model(model):
    """Return an independent copy of a model with the same weights."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _input_statistics(layer, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean and variance of a batch-normalisation layer's inputs over every axis but its own."""
    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    axes = [axis % inputs.ndim for axis in axes]
    reduced = tuple(axis for axis in range(inputs.ndim) if axis not in axes)
    values = inputs.astype(np.float64)
    return values.mean(axis=reduced), values.var(axis=reduced)


def adapt_in_place(model, images: np.ndarray, batch_size: int = 64) -> int:
    """Re-estimate the statistics of a model's batch-normalisation layers on images in graph order (each layer sees
    the outputs of the layers adapted before it, so a copy adapted before is adapted afresh); return how many layers
    it adapted."""
    import keras

    adapted = 0
    for layer in model.layers:
        is_normalisation = isinstance(layer, keras.layers.BatchNormalization)
        if not is_normalisation and not (isinstance(layer, keras.Model) and normalisation_layers(layer)):
            continue
        # where the layer is called in this model's graph (a nested model's own `input` is its inner Input)
        called_on = keras.layers.Layer.input.fget(layer)
        inputs = np.asarray(keras.Model(model.inputs, called_on).predict(images, batch_size=batch_size, verbose=0))
        if is_normalisation:
            mean, variance = _input_statistics(layer, inputs)
            layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
            adapted += 1
        else:
            adapted += adapt_in_place(layer, inputs, batch_size)
    return adapted


def adapted_model(model, images: np.ndarray, batch_size: int = 64, minimum: int = MINIMUM_IMAGES,
                  name: str | None = None) -> Any:
    """Return a copy of a model whose batch-normalisation statistics are those of these images (model inputs, N first);
    the model itself is unchanged. Raises AdaptationError, naming the model (or `name`), for a model without batch
    normalisation or fewer than `minimum` images."""
    images = np.asarray(images)
    shown = name or model.name
    if not normalisation_layers(model):
        raise AdaptationError(f"{shown}: has no batch-normalisation layer, so there is nothing to adapt")
    if len(images) < minimum:
        raise AdaptationError(f"{shown}: adaptation needs at least {minimum} images of one series, folder or source; "
                              f"{len(images)} given")
    copy = copy_model(model)
    adapt_in_place(copy, images, batch_size)
    return copy
