"""Training batches and random draws that depend only on the seed and the epoch, so that a run interrupted and
resumed at epoch k trains exactly as an uninterrupted one from epoch k on (docs/decisions.md)."""

from __future__ import annotations

import math

import keras
import numpy as np

# Each epoch's random draws (augmentation, dropout) start at counter epoch * DRAWS_PER_EPOCH of every seed generator;
# an epoch makes far fewer draws than this (a few per layer and step).
DRAWS_PER_EPOCH = 2**20


class SeededBatches(keras.utils.PyDataset):
    """The training set in batches, shuffled anew each epoch by a permutation drawn from (seed, epoch) alone."""

    def __init__(self, inputs: np.ndarray | dict[str, np.ndarray], labels: np.ndarray,
                 weights: np.ndarray | None, batch_size: int, seed: int, first_epoch: int = 0) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.inputs, self.labels, self.weights = inputs, np.asarray(labels), weights
        self.batch_size, self.seed = batch_size, seed
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
        if self.weights is None:
            return inputs, self.labels[rows]
        return inputs, self.labels[rows], self.weights[rows]


class EpochSeeds(keras.callbacks.Callback):
    """At the start of every epoch, order the batches for that epoch and set every seed generator of the model to a
    state derived from its own seed and the epoch."""

    def __init__(self, batches: SeededBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        if self.batches.epoch != epoch:
            self.batches.set_epoch(epoch)
        for generator in seed_generators(self.model):
            state = keras.ops.convert_to_numpy(generator.state.value)
            generator.state.assign(np.array([state[0], epoch * DRAWS_PER_EPOCH], dtype=state.dtype))


def seed_generators(model: keras.Model) -> list:
    """Return the seed generators of every layer of a model (augmentation, dropout), each once."""
    found: dict[int, object] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", None) or []:
            found.setdefault(id(generator), generator)
    return list(found.values())
