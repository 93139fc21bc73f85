"""Model builders (Keras 3 API only, so every backend works), the augmentations and a registry by name."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import layers, ops

from helpers import config
from helpers.modeling.randomisation import RandomConvolution

NUMBER_OF_CLASSES = len(config.CLASS_NAMES)

# What the specification (docs/design.md) claims for each model, beside what it really is.
SPECIFICATION_CLAIMED_PARAMETERS = {"rnn": 825_000, "hybrid": 1_220_000, "cnn": 1_500_000}


# The specified augmentation's ranges: rotation by up to 0.1 of a full turn either way, zoom by up to 10% either way.
ROTATION_FACTOR = 0.1
ZOOM_FACTOR = 0.1


def augmentation_block(seed: int | None = None, name: str = "augmentation") -> keras.Sequential:
    """Return the specified augmentation (random horizontal flip, rotation, zoom); active only while training.

    The three layers get the same seed, so they draw the same random numbers: an image's rotation and zoom move
    together (their effects on a test pattern correlate at 0.94; unseeded layers: -0.09). Every run of the study so far
    trained this way; the fused augmentation draws the three independently.
    """
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(ROTATION_FACTOR, fill_mode="constant", seed=seed),
            layers.RandomZoom(ZOOM_FACTOR, fill_mode="constant", seed=seed),
        ],
        name=name,
    )


@keras.saving.register_keras_serializable(package="helpers")
class RandomFlipRotationZoom(layers.Layer):
    """The specified augmentation's flip, rotation and zoom as one random affine transform per image (training only).

    Keras' three layers resample every image twice (rotation, then zoom) and flip it in a third pass; composing the
    three into one matrix resamples once, for the same ranges, at under half the cost on the CPU, with the three
    drawn independently (see augmentation_block).
    """

    def __init__(self, rotation_factor: float = ROTATION_FACTOR, zoom_factor: float = ZOOM_FACTOR,
                 seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rotation_factor, self.zoom_factor, self.seed = rotation_factor, zoom_factor, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        count = ops.shape(images)[0]
        angle = keras.random.uniform((count,), -self.rotation_factor, self.rotation_factor,
                                     seed=self.seed_generator) * (2.0 * math.pi)
        zoom = keras.random.uniform((count,), 1.0 - self.zoom_factor, 1.0 + self.zoom_factor, seed=self.seed_generator)
        flip = ops.where(keras.random.uniform((count,), seed=self.seed_generator) < 0.5, -1.0, 1.0)
        # Output pixel p samples the input at centre + zoom * rotation(angle) @ flip @ (p - centre).
        cosine, sine = ops.cos(angle) * zoom, ops.sin(angle) * zoom
        row_x, row_y = cosine * flip, -sine
        column_x, column_y = sine * flip, cosine
        centre_y = (ops.cast(ops.shape(images)[1], "float32") - 1.0) / 2.0
        centre_x = (ops.cast(ops.shape(images)[2], "float32") - 1.0) / 2.0
        zeros = ops.zeros_like(angle)
        transform = ops.stack([row_x, row_y, centre_x - row_x * centre_x - row_y * centre_y,
                               column_x, column_y, centre_y - column_x * centre_x - column_y * centre_y,
                               zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="constant")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rotation_factor": self.rotation_factor, "zoom_factor": self.zoom_factor,
                "seed": self.seed}


def fused_augmentation(seed: int | None = None, name: str = "augmentation") -> RandomFlipRotationZoom:
    """Return the specified augmentation fused into one random affine transform; active only while training."""
    return RandomFlipRotationZoom(seed=seed, name=name)


CURVE_SEGMENTS = 4


def random_intensity_curve(pixels, strength: float, seed_generator):
    """Map each [0, 1] image through its own random increasing piecewise-linear curve (CURVE_SEGMENTS segments whose
    slopes are e^u, u uniform in +-strength), so that no source's intensity histogram is kept."""
    count = ops.shape(pixels)[0]
    slopes = ops.exp(keras.random.uniform((count, CURVE_SEGMENTS), -strength, strength, seed=seed_generator))
    knots = ops.concatenate([ops.zeros((count, 1)), ops.cumsum(slopes, axis=1)], axis=1)
    knots = knots / knots[:, -1:]  # (count, segments + 1) from 0 to 1
    flat = ops.reshape(pixels, (count, -1))
    position = ops.clip(flat * CURVE_SEGMENTS, 0.0, CURVE_SEGMENTS - 1e-4)
    segment = ops.cast(ops.floor(position), "int32")
    low = ops.take_along_axis(knots, segment, axis=1)
    high = ops.take_along_axis(knots, segment + 1, axis=1)
    return ops.reshape(low + (high - low) * (position - ops.cast(segment, "float32")), ops.shape(pixels))


def random_bias_field(shape, strength: float, seed_generator):
    """Return a smooth multiplicative field per image, e^(second-order polynomial of the position) with coefficients
    uniform in +-strength, like an MRI coil's intensity non-uniformity."""
    count, rows, columns = shape[0], shape[1], shape[2]
    y = ops.reshape(ops.linspace(-1.0, 1.0, rows), (1, -1, 1, 1))
    x = ops.reshape(ops.linspace(-1.0, 1.0, columns), (1, 1, -1, 1))
    terms = [x, y, x * y, x * x, y * y]
    coefficients = keras.random.uniform((count, len(terms)), -strength, strength, seed=seed_generator)
    field = sum(ops.reshape(coefficients[:, index], (-1, 1, 1, 1)) * term for index, term in enumerate(terms))
    return ops.exp(field)


# The source-breaking augmentation: the specified flip, rotation and zoom, then random changes of contrast,
# gamma, brightness, blur and noise, so that a scanner's look tells nothing about a class (its strength:
# docs/decisions.md, "Input size and augmentation").
@keras.saving.register_keras_serializable(package="helpers")
class RandomAcquisition(layers.Layer):
    """Random acquisition changes of uint8-range slices: gamma, contrast, brightness, blur, noise (training only)."""

    def __init__(self, gamma: float = 0.3, contrast: float = 0.2, brightness: float = 0.05, blur: float = 0.5,
                 noise: float = 0.03, seed: int | None = None, bias_field: float = 0.0, curve: float = 0.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.gamma, self.contrast, self.brightness, self.blur, self.noise = gamma, contrast, brightness, blur, noise
        self.bias_field, self.curve = bias_field, curve
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        count = ops.shape(images)[0]

        def draw(low: float, high: float):
            return ops.reshape(keras.random.uniform((count,), low, high, seed=self.seed_generator), (-1, 1, 1, 1))

        pixels = ops.clip(ops.cast(images, "float32") / 255.0, 0.0, 1.0)
        if self.curve:
            pixels = random_intensity_curve(pixels, self.curve, self.seed_generator)
        if self.bias_field:
            pixels = pixels * random_bias_field(ops.shape(pixels), self.bias_field, self.seed_generator)
        pixels = ops.power(pixels + 1e-6, ops.exp(draw(-self.gamma, self.gamma)))
        mean = ops.mean(pixels, axis=(1, 2, 3), keepdims=True)
        pixels = (pixels - mean) * draw(1.0 - self.contrast, 1.0 + self.contrast) + mean
        pixels = pixels + draw(-self.brightness, self.brightness)
        blurred = ops.average_pool(pixels, 3, strides=1, padding="same")
        pixels = pixels + (blurred - pixels) * draw(0.0, self.blur)
        pixels = pixels + keras.random.normal(ops.shape(pixels), seed=self.seed_generator) * draw(0.0, self.noise)
        return ops.clip(pixels, 0.0, 1.0) * 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "gamma": self.gamma, "contrast": self.contrast, "brightness": self.brightness,
                "blur": self.blur, "noise": self.noise, "seed": self.seed, "bias_field": self.bias_field,
                "curve": self.curve}


def robust_augmentation(seed: int | None = None, name: str = "augmentation") -> keras.Sequential:
    """Return the source-breaking augmentation: the specified flip, rotation and zoom, then acquisition changes."""
    specified = augmentation_block(seed).layers
    return keras.Sequential([*specified, RandomAcquisition(seed=None if seed is None else seed + 1)], name=name)


def appearance_augmentation(seed: int | None = None, name: str = "augmentation") -> keras.Sequential:
    """Return the source-breaking augmentation with two appearance changes no source owns: a random intensity curve
    (a random histogram) and a random bias field."""
    specified = augmentation_block(seed).layers
    acquisition = RandomAcquisition(seed=None if seed is None else seed + 1, bias_field=0.3, curve=0.5)
    return keras.Sequential([*specified, acquisition], name=name)


def randomised_augmentation(seed: int | None = None, name: str = "augmentation") -> keras.Sequential:
    """Return the source-breaking augmentation with each image's texture randomised by a random convolution first."""
    convolution = RandomConvolution(seed=None if seed is None else seed + 2)
    acquisition = RandomAcquisition(seed=None if seed is None else seed + 1)
    return keras.Sequential([*augmentation_block(seed).layers, convolution, acquisition], name=name)


# How a model augments its training images: as specified (three Keras layers), fused into one transform, or not
# (why the recipes keep "layers": docs/decisions.md, "Input size and augmentation").
AUGMENTATIONS: dict[str, Callable[..., layers.Layer] | None] = {
    "layers": augmentation_block, "fused": fused_augmentation, "robust": robust_augmentation,
    "appearance": appearance_augmentation, "randomised": randomised_augmentation, "none": None}
# Each augmentation in words, for the model card.
AUGMENTATION_WORDS: dict[str, str] = {
    "layers": "the specified random flip, rotation and zoom", "fused": "the specified flip, rotation and zoom fused "
    "into one transform", "robust": "the specified flip, rotation and zoom plus random contrast, gamma, blur and noise",
    "appearance": "the robust augmentation plus random intensity curves and bias fields",
    "randomised": "the robust augmentation after a random convolution of half the images", "none": "no augmentation"}


def _input_stem(image_size: int, augmentation: str, seed: int | None) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Return the image input (uint8 pixels 0-255) and the tensor after augmentation and rescaling to [0, 1]."""
    inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
    builder = AUGMENTATIONS[augmentation]
    features = builder(seed)(inputs) if builder is not None else inputs
    features = layers.Rescaling(1.0 / 255.0, name="rescale")(features)
    return inputs, features


# The softmax layers are float32 under any dtype policy, so mixed precision never rounds the probabilities.


def _bidirectional_lstm(features: keras.KerasTensor, name: str, lstm_units: int = 128) -> keras.KerasTensor:
    """Return a BiLSTM's summary of a sequence; Keras' LSTM defaults (tanh, sigmoid, no recurrent dropout, no unroll,
    bias) keep it cuDNN-eligible."""
    return layers.Bidirectional(layers.LSTM(lstm_units), name=name)(features)


def _classifier_head(features: keras.KerasTensor) -> keras.KerasTensor:
    """Return the specified head: Dropout 0.5 -> Dense 64 relu -> Dropout 0.3 -> softmax over the classes."""
    features = layers.Dropout(0.5, name="dropout_lstm")(features)
    features = layers.Dense(64, activation="relu", name="dense")(features)
    features = layers.Dropout(0.3, name="dropout_dense")(features)
    return layers.Dense(NUMBER_OF_CLASSES, activation="softmax", dtype="float32", name="class_probabilities")(features)


def _recurrent_head(features: keras.KerasTensor) -> keras.KerasTensor:
    """Return the specified recurrent head: BiLSTM(128) over the sequence, then the classifier head."""
    return _classifier_head(_bidirectional_lstm(features, "bidirectional_lstm"))


# BatchNorm momentum of the project's models: at batch 128 an epoch is only 38 steps, and with Keras' default 0.99
# the moving statistics (used on validation) lag the data for the first ten epochs.
BATCH_NORM_MOMENTUM = 0.9


def _convolution_blocks(features: keras.KerasTensor, filters: tuple[int, ...],
                        momentum: float = BATCH_NORM_MOMENTUM) -> keras.KerasTensor:
    """Apply one Conv(3x3)-BatchNorm-ReLU-MaxPool block per filter count."""
    for block, count in enumerate(filters, start=1):
        features = layers.Conv2D(count, 3, padding="same", use_bias=False, name=f"conv2d_{block}")(features)
        features = layers.BatchNormalization(momentum=momentum, name=f"batch_normalization_{block}")(features)
        features = layers.Activation("relu", name=f"relu_{block}")(features)
        features = layers.MaxPooling2D(name=f"max_pooling2d_{block}")(features)
    return features


def build_rnn(image_size: int = config.DEFAULT_IMAGE_SIZE, augmentation: str = "layers",
              seed: int | None = None) -> keras.Model:
    """Build the specified RNN: image rows as time steps -> Conv1D(64, 5) -> BatchNorm -> MaxPool1D -> BiLSTM head."""
    inputs, features = _input_stem(image_size, augmentation, seed)
    features = layers.Reshape((image_size, image_size), name="rows_as_time_steps")(features)
    features = layers.Conv1D(64, 5, padding="same", activation="relu", name="conv1d")(features)
    features = layers.BatchNormalization(name="batch_normalization")(features)
    features = layers.MaxPooling1D(2, name="max_pooling1d")(features)
    return keras.Model(inputs, _recurrent_head(features), name="rnn")


def build_hybrid(image_size: int = config.DEFAULT_IMAGE_SIZE, augmentation: str = "layers",
                 seed: int | None = None) -> keras.Model:
    """Build the specified hybrid: Conv2D(32) -> pool -> Conv2D(64) -> pool, feature-map rows -> BiLSTM head."""
    inputs, features = _input_stem(image_size, augmentation, seed)
    features = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2d_1")(features)
    features = layers.MaxPooling2D(name="max_pooling2d_1")(features)
    features = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2d_2")(features)
    features = layers.MaxPooling2D(name="max_pooling2d_2")(features)
    rows = image_size // 4
    features = layers.Reshape((rows, rows * 64), name="feature_rows_as_time_steps")(features)
    return keras.Model(inputs, _recurrent_head(features), name="hybrid")


def _convolutional_classifier(name: str, filters: tuple[int, ...], dense_units: int, image_size: int, augmentation: str,
                              seed: int | None, momentum: float = BATCH_NORM_MOMENTUM) -> keras.Model:
    """Build a plain CNN: one Conv-BatchNorm-ReLU-pool block per filter count -> Flatten -> Dense -> softmax."""
    inputs, features = _input_stem(image_size, augmentation, seed)
    features = layers.Flatten(name="flatten")(_convolution_blocks(features, filters, momentum))
    features = layers.Dropout(0.5, name="dropout_features")(features)
    features = layers.Dense(dense_units, activation="relu", name="dense")(features)
    features = layers.Dropout(0.3, name="dropout_dense")(features)
    outputs = layers.Dense(NUMBER_OF_CLASSES, activation="softmax", dtype="float32",
                           name="class_probabilities")(features)
    return keras.Model(inputs, outputs, name=name)


def build_crnn(image_size: int = config.DEFAULT_IMAGE_SIZE, augmentation: str = "layers",
               seed: int | None = None) -> keras.Model:
    """Build the improved hybrid: Conv blocks of 16-32-64 filters, then BiLSTMs read the feature map's rows and columns.

    At 64x64 the map is 8x8x64: 8 rows and 8 columns of 512 features; the two BiLSTM summaries feed the RNN's head.
    """
    inputs, features = _input_stem(image_size, augmentation, seed)
    features = _convolution_blocks(features, (16, 32, 64))
    side, channels = image_size // 8, 64
    rows = layers.Reshape((side, side * channels), name="feature_rows_as_time_steps")(features)
    columns = layers.Permute((2, 1, 3), name="transpose")(features)
    columns = layers.Reshape((side, side * channels), name="feature_columns_as_time_steps")(columns)
    summary = layers.Concatenate(name="rows_and_columns")([_bidirectional_lstm(rows, "bidirectional_lstm_rows"),
                                                          _bidirectional_lstm(columns, "bidirectional_lstm_columns")])
    return keras.Model(inputs, _classifier_head(summary), name="crnn")


def build_cnn(image_size: int = config.DEFAULT_IMAGE_SIZE, augmentation: str = "layers",
              seed: int | None = None) -> keras.Model:
    """Build the CNN baseline (about 1.4M parameters): Conv blocks of 16-32-64-128 filters -> Dense(640) -> softmax.

    Its convolutions cost a quarter of cnn_wide's multiply-adds; the Dense layer keeps the size near the specified 1.5M.
    """
    return _convolutional_classifier("cnn", (16, 32, 64, 128), 640, image_size, augmentation, seed)


def build_cnn_wide(image_size: int = config.DEFAULT_IMAGE_SIZE, augmentation: str = "layers",
                   seed: int | None = None) -> keras.Model:
    """Build the first CNN baseline design (1.44M parameters): Conv blocks of 32-64-128-256 filters -> Dense(256).

    It keeps Keras' default BatchNorm momentum (0.99), as first designed and as the reference runs trained it.
    """
    return _convolutional_classifier("cnn_wide", (32, 64, 128, 256), 256, image_size, augmentation, seed, momentum=0.99)


@keras.saving.register_keras_serializable(package="helpers")
class BidirectionalLSTM2D(layers.Layer):
    """Sequencer's mixing layer: one BiLSTM sweeps every row, another every column, of a feature map (B, H, W, C).

    Their outputs (2 x units each per position) are concatenated and projected back to C channels. The LSTMs keep
    Keras' defaults, so they stay cuDNN-eligible on a GPU.
    """

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        # Bidirectional copies the LSTM it is given through its config and drops it. While a model loads, Keras keys
        # the configs it serialises by id(); a dropped LSTM's id, reused by the next block's, made that block's
        # forward LSTM a copy of an earlier backward one (1 load in 20 failed). Holding the given LSTMs, outside
        # Keras' layer tracking, keeps their ids unique.
        templates = (layers.LSTM(units, return_sequences=True), layers.LSTM(units, return_sequences=True))
        object.__setattr__(self, "_lstm_templates", templates)
        self.rows = layers.Bidirectional(templates[0], name="rows")
        self.columns = layers.Bidirectional(templates[1], name="columns")
        self.projection = None

    def build(self, input_shape) -> None:
        _, height, width, channels = input_shape
        self.rows.build((None, width, channels))
        self.columns.build((None, height, channels))
        projection = layers.Dense(channels, name="projection")
        projection.build((None, height, width, 4 * self.units))
        self.projection = projection

    def call(self, features):
        _, height, width, channels = ops.shape(features)
        rows = ops.reshape(self.rows(ops.reshape(features, (-1, width, channels))), (-1, height, width, 2 * self.units))
        columns = ops.reshape(self.columns(ops.reshape(ops.transpose(features, (0, 2, 1, 3)), (-1, height, channels))),
                              (-1, width, height, 2 * self.units))
        return self.projection(ops.concatenate([rows, ops.transpose(columns, (0, 2, 1, 3))], axis=-1))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


def _sequencer_block(features: keras.KerasTensor, units: int, block: int) -> keras.KerasTensor:
    """Apply one Sequencer block: LayerNorm -> BiLSTM2D -> residual, then LayerNorm -> channel MLP (x2) -> residual."""
    channels = features.shape[-1]
    mixed = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm_1")(features)
    mixed = BidirectionalLSTM2D(units, name=f"block{block}_bilstm2d")(mixed)
    features = layers.Add(name=f"block{block}_residual_1")([features, mixed])
    mixed = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm_2")(features)
    mixed = layers.Dense(2 * channels, activation="gelu", name=f"block{block}_mlp_1")(mixed)
    mixed = layers.Dense(channels, name=f"block{block}_mlp_2")(mixed)
    return layers.Add(name=f"block{block}_residual_2")([features, mixed])


def build_sequencer(image_size: int = config.DEFAULT_IMAGE_SIZE, augmentation: str = "layers",
                    seed: int | None = None, blocks: int = 3, units: int = 64) -> keras.Model:
    """Build the project's strong recurrent model (ReNet / Sequencer2D style, about 1.0M parameters).

    A convolutional stem (Conv-BatchNorm-ReLU-pool blocks of 32-64-128 filters) maps the image to an 8x8x128 grid
    at 64 px; residual blocks of row-and-column BiLSTMs with layer normalisation mix it; average pooling feeds softmax.
    """
    inputs, features = _input_stem(image_size, augmentation, seed)
    features = _convolution_blocks(features, (32, 64, 128))
    for block in range(1, blocks + 1):
        features = _sequencer_block(features, units, block)
    features = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(features)
    features = layers.GlobalAveragePooling2D(name="average_pool")(features)
    features = layers.Dropout(0.3, name="dropout_features")(features)
    outputs = layers.Dense(NUMBER_OF_CLASSES, activation="softmax", dtype="float32",
                           name="class_probabilities")(features)
    return keras.Model(inputs, outputs, name="sequencer")


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "rnn": build_rnn,
    "hybrid": build_hybrid,
    "crnn": build_crnn,
    "sequencer": build_sequencer,
    "cnn": build_cnn,
    "cnn_wide": build_cnn_wide,
}


def build_model(name: str, image_size: int = config.DEFAULT_IMAGE_SIZE, augmentation: str = "layers",
                seed: int | None = None) -> keras.Model:
    """Build a registered model by name with the named augmentation, or fail listing the known names."""
    config.check_choice("model", name, MODEL_BUILDERS)
    config.check_choice("augmentation", augmentation, AUGMENTATIONS)
    return MODEL_BUILDERS[name](image_size=image_size, augmentation=augmentation, seed=seed)


def shipped_model(trained: keras.Model, name: str, image_size: int, augmentation: str,
                  seed: int | None) -> keras.Model:
    """Return the registered architecture with its augmentation layers, holding the weights of a model trained
    without them (the input pipeline augmented its batches): each layer takes the weights of the trained layer of the
    same name."""
    model = build_model(name, image_size=image_size, augmentation=augmentation, seed=seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    return model


def build_ensemble(members: list[keras.Model], name: str = "ensemble") -> keras.Model:
    """Return one model whose output is the mean of its members' class probabilities (an ensemble of seeds)."""
    if not members:
        raise ValueError(f"{name}: an ensemble needs at least one member")
    shapes = {(tuple(member.inputs[0].shape[1:]), tuple(member.outputs[0].shape[1:])) for member in members}
    if len(shapes) > 1:
        raise ValueError(f"{name}: the members differ in input or output shape ({sorted(shapes)})")
    image = keras.Input(shape=tuple(members[0].inputs[0].shape[1:]), dtype=members[0].inputs[0].dtype, name="image")
    # each member as its own named sub-model: members of one architecture share layer names
    outputs = [keras.Model(member.inputs[0], member.outputs[0], name=f"member_{index}")(image)
               for index, member in enumerate(members)]
    mean = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="mean_probability")(outputs)
    return keras.Model(image, mean, name=name)


def layer_table(model: keras.Model) -> list[dict[str, Any]]:
    """Return one row per top-level layer: name, type, output shape and parameter count."""
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        rows.append({"layer": layer.name, "type": type(layer).__name__,
                     "output_shape": tuple(shape.shape) if shape is not None else None,
                     "parameters": layer.count_params()})
    return rows
