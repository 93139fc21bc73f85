"""Inference on image files with a saved model: a Python function and the `brain-mri-predict` console command."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from helpers import config
from helpers.data import PREPROCESSINGS, CorruptImageError, decode_image

# The published models: models/<name>.keras beside models/<name>.json (label order, image size, preprocessing).
MODEL_INDEX_FILE = "models.json"


class ModelNotFoundError(FileNotFoundError):
    """The model to predict with (or its label file) does not exist."""


@dataclass(frozen=True)
class Prediction:
    """The prediction for one file: class and confidence, or the reason it could not be read."""

    file: str
    predicted_class: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    error: str | None = None


@dataclass
class SavedModel:
    """A Keras model with the label order and input size it was trained with."""

    path: Path
    model: object
    class_names: tuple[str, ...]
    image_size: int
    preprocessing: str = "resize"  # helpers.data.PREPROCESSINGS: the same as in training


def default_model_path(models_dir: Path | None = None) -> Path:
    """Return the published default model (named in models/models.json), failing with the path when there is none."""
    models_dir = models_dir or config.MODELS_DIR
    index = models_dir / MODEL_INDEX_FILE
    if not index.is_file():
        raise ModelNotFoundError(f"{index}: no published models; run the full study and `make publish` "
                                 f"or pass a model path")
    return models_dir / json.loads(index.read_text())["default"]


def labels_path(model_path: Path) -> Path:
    """Return the label file stored beside a model: <name>.json next to <name>.keras."""
    return model_path.with_suffix(".json")


def load_saved_model(model_path: str | os.PathLike | None = None) -> SavedModel:
    """Load a published or named .keras model with its label order, image size and preprocessing."""
    import keras

    import helpers.models  # noqa: F401  (registers the project's custom layers for deserialisation)

    path = Path(model_path) if model_path else default_model_path()
    label_file = labels_path(path)
    if path.is_dir():  # a training run folder: model.keras and labels.json
        path, label_file = path / "model.keras", path / "labels.json"
    for required in (path, label_file):
        if not required.is_file():
            raise ModelNotFoundError(f"{required}: file not found (a model needs its .keras file and label .json)")
    labels = json.loads(label_file.read_text())
    preprocessing = labels.get("preprocessing", "resize")
    if preprocessing not in PREPROCESSINGS:  # label files before issue 12 described the resizing in words
        preprocessing = "resize"
    return SavedModel(path=path, model=keras.saving.load_model(path, compile=False),
                      class_names=tuple(labels["class_names"]), image_size=int(labels["image_size"]),
                      preprocessing=preprocessing)


def predict_files(files: list[str | os.PathLike], model: SavedModel | str | os.PathLike | None = None,
                  batch_size: int = 64) -> list[Prediction]:
    """Predict the class of every image file; unreadable files get an error entry and the others are still predicted."""
    saved = model if isinstance(model, SavedModel) else load_saved_model(model)
    results: dict[int, Prediction] = {}
    images, positions = [], []
    for position, file in enumerate(files):
        try:
            if not Path(file).is_file():
                raise CorruptImageError(f"{file}: no such file")
            images.append(decode_image(file, saved.image_size, saved.preprocessing))
            positions.append(position)
        except CorruptImageError as error:
            results[position] = Prediction(str(file), None, None, None, str(error))
    if images:
        batch = np.stack(images)[..., np.newaxis]
        probabilities = np.asarray(saved.model.predict(batch, batch_size=batch_size, verbose=0), dtype=np.float64)
        for position, row in zip(positions, probabilities):
            best = int(row.argmax())
            results[position] = Prediction(str(files[position]), saved.class_names[best], float(row[best]),
                                           {name: float(value) for name, value in zip(saved.class_names, row)})
    return [results[position] for position in range(len(files))]


def format_table(predictions: list[Prediction]) -> str:
    """Return the predictions as an aligned text table: file, class, confidence (or the error)."""
    width = max([len("file")] + [len(prediction.file) for prediction in predictions])
    lines = [f"{'file':<{width}}  {'class':<10}  confidence"]
    for prediction in predictions:
        if prediction.error:
            lines.append(f"{prediction.file:<{width}}  {'ERROR':<10}  {prediction.error}")
        else:
            lines.append(f"{prediction.file:<{width}}  {prediction.predicted_class:<10}  {prediction.confidence:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the class and confidence of each image file; exit 1 if any file failed, 2 if no model could be loaded."""
    import argparse

    parser = argparse.ArgumentParser(prog="brain-mri-predict", description=main.__doc__)
    parser.add_argument("files", nargs="+", help="image files (any size, greyscale or colour)")
    parser.add_argument("--model", default=None,
                        help="a .keras model (with its .json label file beside it) or a run folder; "
                             "default: the published model in models/")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    arguments = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        saved = load_saved_model(arguments.model)
    except (ModelNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictions = predict_files(arguments.files, saved)
    if arguments.json:
        print(json.dumps({"model": str(saved.path), "predictions": [asdict(item) for item in predictions]}, indent=2))
    else:
        print(format_table(predictions))
    failed = [prediction for prediction in predictions if prediction.error]
    if failed:
        print(f"{len(failed)} of {len(predictions)} files could not be predicted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
