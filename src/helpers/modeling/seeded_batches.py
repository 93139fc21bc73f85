"""Training batches and random draws that depend only on the seed and the epoch, so that a run interrupted and
resumed at epoch k trains exactly as an uninterrupted one from epoch k on, and the augmentation applied to each batch
by the input pipeline, outside the traced training step, so that every backend trains at full speed
(docs/decisions.md, "Augmentation in the input pipeline")."""

from __future__ import annotations

import math

import keras
import numpy as np

from helpers.modeling.models import AUGMENTATIONS, RandomAcquisition

# Each epoch's random draws (dropout) start at counter epoch * DRAWS_PER_EPOCH of every seed generator of the model;
# an epoch makes far fewer draws than this (a few per layer and step).
DRAWS_PER_EPOCH = 2**20
# Each batch's augmentation draws start at counter epoch * DRAWS_PER_EPOCH + batch * DRAWS_PER_BATCH of every seed
# generator of the augmentation (a layer makes at most a few draws a batch).
DRAWS_PER_BATCH = 64


def augmentation_parts(augmentation: str, seed: int | None) -> tuple[list[keras.layers.Layer],
                                                                      list[keras.layers.Layer]]:
    """Return a named augmentation split into its geometric layers (applied to an image and its outline together)
    and its acquisition layers (applied to the image only)."""
    builder = AUGMENTATIONS[augmentation]
    if builder is None:
        return [], []
    block = builder(seed)
    members = block.layers if isinstance(block, keras.Sequential) else [block]
    return ([layer for layer in members if not isinstance(layer, RandomAcquisition)],
            [layer for layer in members if isinstance(layer, RandomAcquisition)])


def _generators_of(layers: list[keras.layers.Layer]) -> list:
    """Return the seed generators of some layers, each once."""
    found: dict[int, object] = {}
    for layer in layers:
        for generator in getattr(layer, "_seed_generators", None) or []:
            found.setdefault(id(generator), generator)
    return list(found.values())


def _set_counters(generators: list, counter: int) -> None:
    """Set every seed generator's draw counter, keeping its own seed."""
    for generator in generators:
        state = keras.ops.convert_to_numpy(generator.state.value)
        generator.state.assign(np.array([state[0], counter], dtype=state.dtype))


class BatchAugmentation:
    """A recipe's augmentation (models.AUGMENTATIONS, the same Keras layers a shipped model carries) applied to one
    training batch at a time, eagerly: an outline moves with its image, and the draws depend only on (seed, epoch,
    batch). The layers that share a seed draw the same numbers, as they do inside a model."""

    def __init__(self, augmentation: str, seed: int | None) -> None:
        self.geometric, self.acquisition = augmentation_parts(augmentation, seed)
        self.generators = _generators_of([*self.geometric, *self.acquisition])

    def __bool__(self) -> bool:
        return bool(self.geometric or self.acquisition)

    def __call__(self, images: np.ndarray, epoch: int, batch: int,
                 outlines: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Return a batch of (N, S, S, 1) images (and their outlines) augmented as float32 0-255 arrays."""
        _set_counters(self.generators, epoch * DRAWS_PER_EPOCH + batch * DRAWS_PER_BATCH)
        stacked = images if outlines is None else np.concatenate([images, outlines], axis=-1)
        for layer in self.geometric:
            stacked = layer(stacked, training=True)
        stacked = keras.ops.convert_to_numpy(stacked).astype(np.float32)
        changed = stacked[..., :1]
        for layer in self.acquisition:
            changed = layer(changed, training=True)
        return (keras.ops.convert_to_numpy(changed).astype(np.float32),
                None if outlines is None else stacked[..., 1:])


class SeededBatches(keras.utils.PyDataset):
    """The training set in batches, shuffled anew each epoch by a permutation drawn from (seed, epoch) alone, each
    batch augmented by the pipeline when an augmentation is given (images: the array, or the "image" entry of a dict
    whose "outline" moves with it)."""

    def __init__(self, inputs: np.ndarray | dict[str, np.ndarray], labels: np.ndarray,
                 weights: np.ndarray | None, batch_size: int, seed: int, first_epoch: int = 0,
                 augmentation: BatchAugmentation | None = None) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.inputs, self.labels, self.weights = inputs, np.asarray(labels), weights
        self.batch_size, self.seed, self.augmentation = batch_size, seed, augmentation
        self.set_epoch(first_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Order the batches as epoch `epoch` sees them."""
        self.epoch = epoch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        inputs = ({name: values[rows] for name, values in self.inputs.items()} if isinstance(self.inputs, dict)
                  else self.inputs[rows])
        if self.augmentation:
            inputs = self._augmented(inputs, index)
        if self.weights is None:
            return inputs, self.labels[rows]
        return inputs, self.labels[rows], self.weights[rows]

    def _augmented(self, inputs, index: int):
        """Return a batch's inputs with the image (and its outline) augmented for this epoch and batch."""
        assert self.augmentation is not None
        if not isinstance(inputs, dict):
            return self.augmentation(inputs, self.epoch, index)[0]
        image, outline = self.augmentation(inputs["image"], self.epoch, index, inputs.get("outline"))
        return {**inputs, "image": image, **({} if outline is None else {"outline": outline})}


class EpochSeeds(keras.callbacks.Callback):
    """At the start of every epoch, order the batches for that epoch and set every seed generator of the model to a
    state derived from its own seed and the epoch."""

    def __init__(self, batches: SeededBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        if self.batches.epoch != epoch:
            self.batches.set_epoch(epoch)
        _set_counters(seed_generators(self.model), epoch * DRAWS_PER_EPOCH)


def seed_generators(model: keras.Model) -> list:
    """Return the seed generators of every layer of a model (augmentation, dropout), each once."""
    return _generators_of(list(model._flatten_layers(include_self=True, recursive=True)))
