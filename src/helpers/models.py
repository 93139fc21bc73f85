"""Model builders (Keras 3 API only, so every backend works), the augmentation block and a registry by name."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from helpers import config

NUMBER_OF_CLASSES = len(config.CLASS_NAMES)

# What the specification (DESIGN.md section 2) claims for each model, beside what it really is.
SPECIFICATION_CLAIMED_PARAMETERS = {"rnn": 825_000, "hybrid": 1_220_000, "cnn": 1_500_000}


def augmentation_block(seed: int | None = None, name: str = "augmentation") -> keras.Sequential:
    """Return the specified augmentation (random horizontal flip, rotation, zoom); active only while training."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.1, fill_mode="constant", seed=seed),
            layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
        ],
        name=name,
    )


def _input_stem(image_size: int, augment: bool, seed: int | None) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Return the image input (uint8 pixels 0-255) and the tensor after augmentation and rescaling to [0, 1]."""
    inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
    features = augmentation_block(seed)(inputs) if augment else inputs
    features = layers.Rescaling(1.0 / 255.0, name="rescale")(features)
    return inputs, features


# The softmax layers are float32 under any dtype policy, so mixed precision never rounds the probabilities.


def _recurrent_head(features: keras.KerasTensor, lstm_units: int = 128) -> keras.KerasTensor:
    """Return the specified head: BiLSTM -> Dropout 0.5 -> Dense 64 relu -> Dropout 0.3 -> softmax over classes.

    The LSTM keeps Keras' defaults (tanh, sigmoid, no recurrent dropout, no unroll, bias) so it is cuDNN-eligible.
    """
    features = layers.Bidirectional(layers.LSTM(lstm_units), name="bidirectional_lstm")(features)
    features = layers.Dropout(0.5, name="dropout_lstm")(features)
    features = layers.Dense(64, activation="relu", name="dense")(features)
    features = layers.Dropout(0.3, name="dropout_dense")(features)
    return layers.Dense(NUMBER_OF_CLASSES, activation="softmax", dtype="float32", name="class_probabilities")(features)


def build_rnn(image_size: int = config.DEFAULT_IMAGE_SIZE, augment: bool = True,
              seed: int | None = None) -> keras.Model:
    """Build the specified RNN: image rows as time steps -> Conv1D(64, 5) -> BatchNorm -> MaxPool1D -> BiLSTM head."""
    inputs, features = _input_stem(image_size, augment, seed)
    features = layers.Reshape((image_size, image_size), name="rows_as_time_steps")(features)
    features = layers.Conv1D(64, 5, padding="same", activation="relu", name="conv1d")(features)
    features = layers.BatchNormalization(name="batch_normalization")(features)
    features = layers.MaxPooling1D(2, name="max_pooling1d")(features)
    return keras.Model(inputs, _recurrent_head(features), name="rnn")


def build_hybrid(image_size: int = config.DEFAULT_IMAGE_SIZE, augment: bool = True,
                 seed: int | None = None) -> keras.Model:
    """Build the specified hybrid: Conv2D(32) -> pool -> Conv2D(64) -> pool, feature-map rows -> BiLSTM head."""
    inputs, features = _input_stem(image_size, augment, seed)
    features = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2d_1")(features)
    features = layers.MaxPooling2D(name="max_pooling2d_1")(features)
    features = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2d_2")(features)
    features = layers.MaxPooling2D(name="max_pooling2d_2")(features)
    rows = image_size // 4
    features = layers.Reshape((rows, rows * 64), name="feature_rows_as_time_steps")(features)
    return keras.Model(inputs, _recurrent_head(features), name="hybrid")


def build_cnn(image_size: int = config.DEFAULT_IMAGE_SIZE, augment: bool = True,
              seed: int | None = None) -> keras.Model:
    """Build the CNN baseline (about 1.5M parameters): four Conv-BatchNorm-pool blocks -> Dense(256) -> softmax."""
    inputs, features = _input_stem(image_size, augment, seed)
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        features = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv2d_{block}")(features)
        features = layers.BatchNormalization(name=f"batch_normalization_{block}")(features)
        features = layers.Activation("relu", name=f"relu_{block}")(features)
        features = layers.MaxPooling2D(name=f"max_pooling2d_{block}")(features)
    features = layers.Flatten(name="flatten")(features)
    features = layers.Dropout(0.5, name="dropout_features")(features)
    features = layers.Dense(256, activation="relu", name="dense")(features)
    features = layers.Dropout(0.3, name="dropout_dense")(features)
    outputs = layers.Dense(NUMBER_OF_CLASSES, activation="softmax", dtype="float32",
                           name="class_probabilities")(features)
    return keras.Model(inputs, outputs, name="cnn")


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "rnn": build_rnn,
    "hybrid": build_hybrid,
    "cnn": build_cnn,
}


def build_model(name: str, image_size: int = config.DEFAULT_IMAGE_SIZE, augment: bool = True,
                seed: int | None = None) -> keras.Model:
    """Build a registered model by name, or fail listing the known names."""
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_BUILDERS)}") from None
    return builder(image_size=image_size, augment=augment, seed=seed)


def layer_table(model: keras.Model) -> list[dict[str, object]]:
    """Return one row per top-level layer: name, type, output shape and parameter count."""
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        rows.append({"layer": layer.name, "type": type(layer).__name__,
                     "output_shape": tuple(shape.shape) if shape is not None else None,
                     "parameters": layer.count_params()})
    return rows
