"""Keras callbacks of a training run: its epoch timer, the dataset's own validation accuracy, the averaged weights
that judge an epoch, and Ctrl-C that was swallowed on its way."""

from __future__ import annotations

import time

import keras
import numpy as np

from helpers import interrupts

# The accuracy on the dataset's own validation images, logged apart from the external images a recipe adds to
# validation (otherwise val_accuracy is that figure).
DATASET_VALIDATION_METRIC = "val_dataset_accuracy"


class RaiseWhenInterrupted(keras.callbacks.Callback):
    """Raise KeyboardInterrupt at the next step when a Ctrl-C was swallowed on its way (helpers.interrupts)."""

    def on_train_batch_end(self, batch, logs=None):
        if interrupts.REQUESTED.is_set():
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        self.on_train_batch_end(0)


class EpochTimer(keras.callbacks.Callback):
    """Record the wall-clock seconds and the process's CPU seconds (every thread) of every training epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._started = self._cpu_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._cpu_started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)
        self.cpu_seconds.append(time.process_time() - self._cpu_started)
        if logs is not None:  # so that the history file written after it holds each epoch's seconds
            logs["cpu_seconds"] = self.cpu_seconds[-1]
            logs["seconds"] = self.seconds[-1]


class DatasetValidationAccuracy(keras.callbacks.Callback):
    """Log each epoch's accuracy on the dataset's own validation images as val_dataset_accuracy, apart from the
    external images a recipe adds to validation, so that recipes are compared on the same images (time-to-accuracy).
    Its predictions fall outside the epoch's timed seconds."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, model: keras.Model | None = None) -> None:
        super().__init__()
        self.images, self.labels, self.classifier = images, labels, model

    def on_epoch_end(self, epoch, logs=None):
        predicted = (self.classifier or self.model).predict(self.images, batch_size=256, verbose=0).argmax(axis=1)
        if logs is not None:
            logs[DATASET_VALIDATION_METRIC] = float((predicted == self.labels).mean())


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Judge every epoch on the optimizer's moving average of the weights (its `use_ema`), train on the raw ones.

    Validation, and every callback after this one at the epoch's end (the dataset's validation accuracy, the best
    checkpoint, the history), see the averaged weights; the callback `raw_weights_back()` returns, placed after them
    and before the per-epoch backup, swaps the raw weights back so that the backup and the next epoch hold them."""

    def __init__(self) -> None:
        super().__init__(swap_on_epoch=True)

    def raw_weights_back(self) -> keras.callbacks.Callback:
        """Return the callback that puts the raw weights back into the model at the epoch's end."""
        return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self.on_epoch_begin(epoch))
