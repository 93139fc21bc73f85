"""Training for invariance: a source adversary behind gradient reversal, and outline supervision (training only).

train_model wraps a model in a training model when a recipe asks for either: the wrapper takes each image with its
tumour outline (the input pipeline augments the two together), feeds the image to the model (built without its own
augmentation), and adds two losses:
- a class-conditional source adversary: from the features the classifier reads, a head guesses each image's source
  among the images of the same training label; the features receive its gradient reversed (Ganin & Lempitsky 2015),
  so that within a class no source can be told apart;
- outline supervision: from the last spatial map before the model summarises it (rows for the row-reading models),
  a 1x1 head predicts which cells hold tumour, against the outline where one is known (external tumour outlines,
  and "nothing" on tumour-free images); dataset tumour images, whose outline is unknown, weigh nothing.
The model shipped is the plain architecture with the trained weights (shipped_model).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from helpers import config
from helpers.inputs.external import PATH_PREFIX, ExternalImages
from helpers.inputs.sources import image_sources
from helpers.modeling import models
from helpers.modeling.models import build_model

# Training labels the adversary conditions on: the classes, then ANY_TUMOUR_LABEL.
CONDITIONS = len(config.CLASS_NAMES) + 1
INPUT_NAMES = ("image", "source", "condition", "outline", "outline_known")


@keras.saving.register_keras_serializable(package="helpers")
class GradientReversal(layers.Layer):
    """Pass features unchanged forward and multiply their gradient by -strength backward."""

    def __init__(self, strength: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.strength = strength

    def call(self, features):
        return ops.stop_gradient(features * (1.0 + self.strength)) - self.strength * features

    def get_config(self) -> dict:
        return {**super().get_config(), "strength": self.strength}


def conditional_source_loss(source_probabilities, sources, conditions):
    """Return per image the cross-entropy of its source under the adversary's row for its training label."""
    row = ops.one_hot(ops.cast(ops.reshape(conditions, (-1,)), "int32"), CONDITIONS)  # (B, conditions)
    chosen = ops.sum(source_probabilities * ops.expand_dims(row, -1), axis=1)  # (B, sources)
    number = ops.shape(source_probabilities)[-1]
    truth = ops.one_hot(ops.cast(ops.reshape(sources, (-1,)), "int32"), number)
    return -ops.log(ops.clip(ops.sum(chosen * truth, axis=-1), 1e-7, 1.0))


def outline_grid(masks, grid_shape: tuple[int, ...]):
    """Return (B, *grid_shape) 0/1 targets: 1 where a cell of the (B, S, S, 1) 0-255 mask holds any outlined pixel
    (a one-axis grid counts image rows)."""
    size = ops.shape(masks)[1]
    inside = ops.cast(masks > 127.5, "float32")
    if len(grid_shape) == 1:
        rows = ops.max(inside, axis=(2, 3))[..., None]  # (B, S, 1)
        step = size // grid_shape[0]
        return ops.max_pool(rows, step, strides=step)[..., 0]
    step = size // grid_shape[0]
    return ops.max_pool(inside, step, strides=step)[..., 0]


def outline_loss(logits, targets, known):
    """Return the mean binary cross-entropy of the (B, *grid, 1) outline logits against (B, *grid) targets over the
    images whose outline is known (per-image weights `known`, 0 or 1); 0 when none is known."""
    cells = ops.binary_crossentropy(ops.cast(targets, "float32"), logits[..., 0], from_logits=True)
    per_image = ops.mean(ops.reshape(cells, (ops.shape(cells)[0], -1)), axis=-1)
    weights = ops.reshape(ops.cast(known, "float32"), (-1,))
    return ops.sum(per_image * weights) / ops.maximum(ops.sum(weights), 1.0)


@keras.saving.register_keras_serializable(package="helpers")
class AuxiliaryLoss(layers.Layer):
    """Add a training-only loss (source adversary or outline) to the model and pass the class probabilities on; it
    computes in float32 whatever the precision policy (its inputs are cast to it)."""

    def __init__(self, kind: str, weight: float = 1.0, **kwargs) -> None:
        super().__init__(**{"dtype": "float32", **kwargs})
        if kind not in ("source", "outline"):
            raise ValueError(f"unknown auxiliary loss {kind!r}; choose source or outline")
        self.kind, self.weight = kind, weight

    def call(self, inputs):
        probabilities, prediction, target, extra = inputs
        if self.kind == "source":
            loss = ops.mean(conditional_source_loss(prediction, target, extra))
        else:
            loss = outline_loss(prediction, outline_grid(target, tuple(prediction.shape[1:-1])), extra)
        self.add_loss(self.weight * loss)
        return probabilities

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, "weight": self.weight}


def spatial_features(model: keras.Model) -> keras.KerasTensor:
    """Return the last spatial map of a model: the input of the first layer that summarises it to one vector."""
    for layer in model.layers:
        if len(layer.output.shape) == 2:
            return layer.input[0] if isinstance(layer.input, list) else layer.input
    raise ValueError(f"{model.name}: no layer summarises a spatial map")


def build_training_model(model_name: str, image_size: int, seed: int | None, sources: int, source_adversary: float,
                         outline_supervision: float) -> tuple[keras.Model, keras.Model]:
    """Return the training model (inputs INPUT_NAMES, output the class probabilities, the auxiliary losses added) and
    the model it trains, built without augmentation (the input pipeline augments)."""
    core = build_model(model_name, image_size=image_size, augmentation="none", seed=seed)
    tapped = keras.Model(core.inputs, [core.output, core.get_layer("class_probabilities").input,
                                       spatial_features(core)], name=f"{model_name}_tapped")
    inputs = {"image": keras.Input((image_size, image_size, 1), name="image"),
              "source": keras.Input((), dtype="int32", name="source"),
              "condition": keras.Input((), dtype="int32", name="condition"),
              "outline": keras.Input((image_size, image_size, 1), name="outline"),
              "outline_known": keras.Input((), name="outline_known")}
    image, outline = inputs["image"], inputs["outline"]
    probabilities, features, spatial = tapped(image)
    if source_adversary > 0:
        reversed_features = GradientReversal(source_adversary, name="gradient_reversal")(features)
        guesses = layers.Dense(CONDITIONS * sources, name="source_logits")(reversed_features)
        guesses = layers.Reshape((CONDITIONS, sources), name="source_per_label")(guesses)
        guesses = layers.Softmax(axis=-1, name="source_probabilities")(guesses)
        probabilities = AuxiliaryLoss("source", name="source_adversary")(
            [probabilities, guesses, inputs["source"], inputs["condition"]])
    if outline_supervision > 0:
        logits = layers.Dense(1, name="outline_logits")(spatial)
        probabilities = AuxiliaryLoss("outline", outline_supervision, name="outline_supervision")(
            [probabilities, logits, outline, inputs["outline_known"]])
    return keras.Model(inputs, probabilities, name=f"{model_name}_invariance_training"), core


def training_sources(paths: np.ndarray) -> tuple[str, ...]:
    """Return the sources of a training split in a fixed order: the adversary's classes."""
    return tuple(sorted(set(image_sources(paths))))


def training_inputs(split, external: dict[str, ExternalImages], sources: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Return the training model's inputs for a split: images, source index, training label, outline (0/255) and
    whether the outline is known (an external outline; tumour-free images: nothing). An external image of the split
    must be among the external sets given, whose outlines it reads."""
    outlines = np.zeros((*split.images.shape, 1), dtype=np.uint8)
    known = np.zeros(len(split), dtype=np.float32)
    lookup = {PATH_PREFIX + path: (images, index) for images in external.values()
              for index, path in enumerate(images.paths)}
    no_tumour = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    for row, path in enumerate(np.asarray(split.paths).astype(str)):
        if split.labels[row] == no_tumour:
            known[row] = 1.0
        elif path.startswith(PATH_PREFIX):
            if path not in lookup:
                raise ValueError(f"{path}: an external training image whose set was not given (pass external=, "
                                 "whose outlines the training reads)")
            images, index = lookup[path]
            if images.masks[index].any():
                outlines[row, ..., 0] = images.masks[index] * 255
                known[row] = 1.0
    origin = image_sources(split.paths)
    source_index = np.array([sources.index(name) if name in sources else 0 for name in origin], dtype=np.int32)
    return {"image": split.images[..., np.newaxis], "source": source_index,
            "condition": np.asarray(split.labels, dtype=np.int32), "outline": outlines, "outline_known": known}


def shipped_model(trained: keras.Model, model_name: str, image_size: int, augmentation: str,
                  seed: int | None) -> keras.Model:
    """Return the plain architecture (with its augmentation) holding the weights the training model trained."""
    return models.shipped_model(trained.get_layer(f"{model_name}_tapped"), model_name, image_size, augmentation, seed)
