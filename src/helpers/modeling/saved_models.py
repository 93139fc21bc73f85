"""Saved models as files: the published index (models/models.json), a model's label file, .keras files, ensembles and
the uncertainty record beside them, loaded with one clear error per problem."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import config
from helpers.inputs.images import PREPROCESSINGS
from helpers.modeling.run_folders import LABELS_FILE, MODEL_FILE
from helpers.uncertainty.record import UncertaintyRecord, record_path

# The published models: models/<name>.keras beside models/<name>.json (label order, image size, preprocessing).
MODEL_INDEX_FILE = "models.json"


class ModelNotFoundError(FileNotFoundError):
    """The model to predict with (or its label file) does not exist."""


class ModelFileError(ValueError):
    """A model or label file that exists but cannot be used (corrupt, or inconsistent with the model)."""


@dataclass
class SavedModel:
    """A Keras model with the label order and input size it was trained with."""

    path: Path
    model: Any
    class_names: tuple[str, ...]
    image_size: int
    preprocessing: str = "resize"  # helpers.inputs.images.PREPROCESSINGS: the same as in training
    confidence_threshold: float | None = None  # below it an input is flagged (models without an uncertainty record)
    name: str = ""
    uncertainty: UncertaintyRecord | None = None  # temperature, conformal scores, novelty (<name>.uncertainty.npz)
    extractor: Any = None  # the model with its penultimate features as a second output, built on first use


def _read_model_json(path: Path, what: str) -> object:
    """Return a JSON file beside the models, failing with ModelFileError naming it when unreadable or not JSON."""
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the {what} ({error.strerror or error})") from None
    except ValueError as error:
        raise ModelFileError(f"{path}: not a valid {what} (invalid JSON: {error})") from None


def default_model_path(models_dir: Path | None = None) -> Path:
    """Return the published default model (named in models/models.json), failing with the path when there is none."""
    models_dir = models_dir or config.MODELS_DIR
    index = models_dir / MODEL_INDEX_FILE
    try:
        published = index.is_file()
    except OSError as error:  # e.g. a models folder this user may not enter
        raise ModelFileError(f"{index}: cannot read the model index ({error.strerror or error})") from None
    if not published:
        raise ModelNotFoundError(f"{index}: no published models; run the full study and `make publish` "
                                 f"or pass a model path")
    content = _read_model_json(index, "model index")
    if not isinstance(content, dict) or not isinstance(content.get("default"), str):
        raise ModelFileError(f"{index}: not a valid model index (expected a JSON object naming its \"default\" file)")
    return models_dir / content["default"]


def labels_path(model_path: Path) -> Path:
    """Return the label file stored beside a model: <name>.json next to <name>.keras."""
    return model_path.with_suffix(".json")


def read_label_file(label_file: Path) -> dict:
    """Read and check a label file: class names (a list of names) and an image size (an integer of 8 to 1024)."""
    labels = _read_model_json(label_file, "label file")
    if not isinstance(labels, dict):
        raise ModelFileError(f"{label_file}: not a valid label file (expected a JSON object)")
    names, size = labels.get("class_names"), labels.get("image_size")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise ModelFileError(f"{label_file}: 'class_names' must be a non-empty list of class names")
    if size is None:
        raise ModelFileError(f"{label_file}: 'image_size' is missing")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 1024:
        raise ModelFileError(f"{label_file}: 'image_size' must be an integer from 8 to 1024, not {size!r}")
    return labels


def _load_keras_file(path: Path, label_file: Path, labels: dict):
    """Load one .keras model and check it against its label file (input size, number of classes)."""
    import keras

    import helpers.modeling.models  # noqa: F401  (registers the project's custom layers for deserialisation)

    if not path.is_file():
        raise ModelNotFoundError(f"{path}: file not found (a model needs its .keras file and label .json)")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:  # unreadable is not damaged
        raise ModelFileError(f"{path}: cannot read the model file ({error.strerror or error})") from None
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would call a damaged archive "not found"
        raise ModelFileError(f"{path}: cannot load the model (not a .keras archive: the file is damaged or of "
                             f"another kind)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for a damaged archive
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFileError(f"{path}: cannot load the model ({type(error).__name__}: {reason})") from None
    side, outputs = model.input_shape[1], model.output_shape[-1]
    if side is not None and side != labels["image_size"]:
        raise ModelFileError(f"{label_file}: image_size {labels['image_size']} does not match the model's "
                             f"{side}x{side} input")
    if outputs != len(labels["class_names"]):
        raise ModelFileError(f"{label_file}: {len(labels['class_names'])} class names for a model with {outputs} "
                             f"outputs")
    return model


def _load_ensemble(label_file: Path, labels: dict):
    """Load the members an ensemble's label file names (paths relative to it) as one model averaging them."""
    from helpers.modeling.models import build_ensemble

    members = labels.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(member, str) for member in members):
        raise ModelFileError(f"{label_file}: 'members' must list the ensemble's .keras files (a label file of one "
                             f"model lies beside its .keras file: pass that instead)")
    return build_ensemble([_load_keras_file(label_file.parent / member, label_file, labels) for member in members],
                          labels.get("model", label_file.stem))


def load_saved_model(model_path: str | os.PathLike | None = None) -> SavedModel:
    """Load a published or named model with its label order, image size and preprocessing: a .keras file (its .json
    label file beside it), a training run folder, or an ensemble's label file (its members' probabilities averaged)."""
    path = Path(model_path) if model_path else default_model_path()
    label_file = path if path.suffix == ".json" else labels_path(path)
    if path.is_dir():  # a training run folder: model.keras and labels.json
        path, label_file = path / MODEL_FILE, path / LABELS_FILE
    for required in (path, label_file):
        if not required.is_file():
            raise ModelNotFoundError(f"{required}: file not found (a model needs its .keras file and label .json)")
    labels = read_label_file(label_file)
    model = _load_ensemble(label_file, labels) if path.suffix == ".json" else _load_keras_file(path, label_file, labels)
    preprocessing = labels.get("preprocessing", "resize")
    if preprocessing not in PREPROCESSINGS:  # older label files described the resizing in words
        preprocessing = "resize"
    record = record_path(label_file)
    try:
        uncertainty = UncertaintyRecord.load(record) if record.is_file() else None
    except (OSError, ValueError, KeyError) as error:
        raise ModelFileError(f"{record}: not a valid uncertainty record ({error})") from None
    return SavedModel(path=path, model=model, class_names=tuple(labels["class_names"]),
                      image_size=labels["image_size"], preprocessing=preprocessing,
                      confidence_threshold=labels.get("confidence_threshold"),
                      name=labels.get("model", path.stem if path.name != MODEL_FILE else path.parent.name),
                      uncertainty=uncertainty)
