"""Random convolutions of the training images (RandConv, Xu et al. 2021): each image filtered by a random kernel of
its own, so that the texture and contrast a source gives its slices tell nothing about a class."""

from __future__ import annotations

import keras
from keras import layers, ops

# The kernels' sides (a random one per image) and the largest, whose window every kernel fits in.
KERNEL_SIDES = (3, 5)
WINDOW = max(KERNEL_SIDES)


def random_kernels(count, seed_generator):
    """Return (count, WINDOW * WINDOW) random kernels: normal weights with spread 1 / side inside a centred square of a
    side drawn from KERNEL_SIDES, zero outside it."""
    offsets = ops.abs(ops.arange(WINDOW, dtype="float32") - (WINDOW - 1) / 2)
    reach = ops.maximum(offsets[:, None], offsets[None, :])  # (WINDOW, WINDOW) distance from the centre in steps
    choice = keras.random.randint((count,), 0, len(KERNEL_SIDES), seed=seed_generator)
    sides = ops.take(ops.convert_to_tensor(KERNEL_SIDES, dtype="float32"), choice)
    inside = ops.cast(ops.reshape(reach, (1, -1)) <= ops.reshape((sides - 1) / 2, (-1, 1)), "float32")
    weights = keras.random.normal((count, WINDOW * WINDOW), seed=seed_generator)
    return weights * inside / ops.reshape(sides, (-1, 1))


def filter_images(pixels, kernels):
    """Return each (N, rows, columns, 1) image correlated with its own (N, WINDOW * WINDOW) kernel, zero-padded."""
    rows, columns = ops.shape(pixels)[1], ops.shape(pixels)[2]
    margin = WINDOW // 2
    padded = ops.pad(pixels, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    filtered = ops.zeros_like(pixels)
    for index in range(WINDOW * WINDOW):
        row, column = divmod(index, WINDOW)
        weight = ops.reshape(kernels[:, index], (-1, 1, 1, 1))
        filtered = filtered + weight * padded[:, row:row + rows, column:column + columns, :]
    return filtered


@keras.saving.register_keras_serializable(package="helpers")
class RandomConvolution(layers.Layer):
    """Filter each uint8-range training image, with probability rate, by its own random kernel (random_kernels), give
    the result the image's mean and spread, and blend the two by a uniform random weight (training only)."""

    def __init__(self, rate: float = 0.5, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        pixels = ops.cast(images, "float32")
        count = ops.shape(pixels)[0]
        filtered = filter_images(pixels, random_kernels(count, self.seed_generator))
        mean, spread = ops.mean(pixels, axis=(1, 2, 3), keepdims=True), ops.std(pixels, axis=(1, 2, 3), keepdims=True)
        centred = filtered - ops.mean(filtered, axis=(1, 2, 3), keepdims=True)
        matched = centred / (ops.std(filtered, axis=(1, 2, 3), keepdims=True) + 1e-6) * spread + mean
        blend = ops.reshape(keras.random.uniform((count,), seed=self.seed_generator), (-1, 1, 1, 1))
        chosen = ops.reshape(keras.random.uniform((count,), seed=self.seed_generator) < self.rate, (-1, 1, 1, 1))
        return ops.clip(ops.where(chosen, blend * pixels + (1.0 - blend) * matched, pixels), 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
