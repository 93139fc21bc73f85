"""Keras callbacks of a training run: its epoch timer, the dataset's own validation accuracy, and Ctrl-C that was
swallowed on its way."""

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
    """Record the wall-clock seconds of every training epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)
        if logs is not None:  # so that the history file written after it holds each epoch's seconds
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
