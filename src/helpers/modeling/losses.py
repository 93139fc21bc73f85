"""The partial-label loss and metric: a label names one class, or "some tumour" (any tumour class), as the external
tumour sets without a type give them."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from helpers import config

# Which classes each training label allows: a class its own, ANY_TUMOUR_LABEL (the last row) every tumour class.
ALLOWED_CLASSES = np.vstack([np.eye(len(config.CLASS_NAMES), dtype=np.float32),
                             np.array([[name != config.NO_TUMOUR_CLASS for name in config.CLASS_NAMES]], np.float32)])


def _allowed(labels):
    """Return, per label, the 0/1 row of the classes a prediction may fall in."""
    indices = ops.cast(ops.reshape(labels, (-1,)), "int32")
    return ops.take(ops.convert_to_tensor(ALLOWED_CLASSES), indices, axis=0)


@keras.saving.register_keras_serializable(package="helpers")
class PartialLabelCrossentropy(keras.losses.Loss):
    """Cross-entropy of the summed probability of the classes a label allows (one class, or any tumour class), with
    label smoothing towards the uniform distribution."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "partial_label_crossentropy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        probabilities = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0)
        loss = -ops.log(ops.clip(ops.sum(probabilities * _allowed(y_true), axis=-1), 1e-7, 1.0))
        if self.label_smoothing:
            uniform = -ops.mean(ops.log(probabilities), axis=-1)
            loss = (1.0 - self.label_smoothing) * loss + self.label_smoothing * uniform
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="helpers", name="partial_label_accuracy")
def partial_label_metric(y_true, y_pred):
    """Return 1 where the predicted class is one the label allows (its class, or any tumour class), else 0."""
    predicted = ops.expand_dims(ops.argmax(y_pred, axis=-1), -1)
    return ops.squeeze(ops.take_along_axis(_allowed(y_true), predicted, axis=-1), -1)
