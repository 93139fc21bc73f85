"""Inference on image files with a saved model: a Python function and the `brain-mri-predict` console command.

Exit statuses of the command: 0 every file predicted and none flagged (or flags without --strict); 1 a file could
not be read; 2 no usable model; 3 with --strict, an input was flagged; 4 the results could not be written (closed
standard output, full disk); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from helpers import commands, config, interrupts
from helpers.inputs.images import CorruptImageError, open_greyscale, prepare_image
from helpers.inputs.volumes import Slice, instance_order, is_dicom, is_nifti, is_volume, read_slices, series_summaries
from helpers.modeling.adaptation import MINIMUM_IMAGES, AdaptationError, adapted_model
from helpers.modeling.saved_models import (
    ModelFileError,
    ModelNotFoundError,
    SavedModel,
    load_saved_model,
)
from helpers.uncertainty.conformal import describe_set

# Input checks: images smaller than this on a side, or with almost no contrast, are flagged.
MINIMUM_IMAGE_SIDE = 32
NEAR_CONSTANT_STANDARD_DEVIATION = 2.0
# brain-mri-predict's own statuses beside helpers.commands': a file that could not be read is EXIT_FAILED.
EXIT_NO_MODEL, EXIT_FLAGGED = 2, 3
EXIT_NO_OUTPUT = 4  # the results could not be written (closed standard output, full disk)
# Files read and predicted at a time by predict_files (memory stays bounded for any folder).
FILES_PER_CHUNK = 256
# The command runs Keras on its NumPy backend where JAX is installed (the backend's convolutions are jax.lax's):
# importing TensorFlow takes ~9 s of a 10 s call on 2 cores, and the NumPy backend's probabilities equal TensorFlow's
# within 1e-6 (tests/test_predict.py checks 1e-5). Keras probes for TensorFlow and scikit-learn when they are
# installed (0.7 s more); the command needs neither, so it hides both from Keras.
INFERENCE_BACKEND = "numpy"
MODULES_THE_COMMAND_HIDES = ("tensorflow", "sklearn")


@dataclass(frozen=True)
class Prediction:
    """The prediction for one file: class and confidence, or the reason it could not be read; flags name what makes
    the input doubtful (too small, near-constant, unlike the training images)."""

    file: str
    predicted_class: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    prediction_set: list[str] | None = None  # the conformal set at the model's stated coverage level
    novelty_score: float | None = None  # how unlike the training images (higher: less alike)
    series: str | None = None  # the DICOM series or volume a slice belongs to (None for an image file)
    answer_withheld: bool = False  # True when a flag says the class is not to be taken as an answer


def use_inference_backend() -> str:
    """Choose Keras' NumPy backend for this process unless Keras is loaded or $KERAS_BACKEND names another; return
    the backend Keras will use. Called by the command only: notebooks keep their training backend."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("jax") is None:
        return "tensorflow"  # Keras' NumPy backend computes convolutions with jax.lax (pip install ".[jax]")
    backend = os.environ.setdefault("KERAS_BACKEND", INFERENCE_BACKEND)
    if backend == INFERENCE_BACKEND and not any(isinstance(finder, _HiddenModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HiddenModules())
    return backend


class _HiddenModules:
    """An import hook under which the modules the command hides are absent: importing one raises ImportError, which
    Keras treats as "not installed" (a None entry in sys.modules would count as imported)."""

    def find_spec(self, name: str, path=None, target=None):
        if name.split(".")[0] in MODULES_THE_COMMAND_HIDES:
            raise ModuleNotFoundError(f"{name} is not needed by brain-mri-predict", name=name)
        return None


def expand_folders(paths: list[str]) -> tuple[list[str], list[str]]:
    """Replace each folder by the files it holds that the command reads (images and NIfTI volumes sorted by name; DICOM
    files by series and instance number; hidden entries skipped); return the files and one note per folder naming
    what it held besides them (not read) or that it held nothing readable."""
    files, notes = [], []
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            files.append(path)
            continue
        plain, dicom, others = [], [], []
        try:
            entries = sorted(folder.iterdir())
        except OSError as error:  # an unreadable folder is one failed input, like an unreadable file
            files.append(path)
            notes.append(f"{folder}: cannot list the folder ({error.strerror or error})")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file() and is_dicom(entry):
                dicom.append(entry)
            elif entry.is_file() and (entry.suffix.lower() in config.IMAGE_EXTENSIONS or is_nifti(entry)):
                plain.append(entry)
            else:
                others.append(entry.name)
        if not plain and not dicom:
            files.append(path)  # predict_files reports it as a folder, not an image
            notes.append(f"{folder}: holds no image, DICOM or NIfTI file")
        elif others:
            notes.append(f"{folder}: {len(others)} entr{'y' if len(others) == 1 else 'ies'} not read (subfolders or "
                         f"other kinds of file): {', '.join(others)}")
        files.extend(str(entry) for entry in [*plain, *instance_order(dicom)])
    return files, notes


def input_flags(width: int, height: int, pixels: np.ndarray) -> list[str]:
    """Return what makes an image doubtful before any model sees it: too small, or near-constant."""
    flags = []
    if min(width, height) < MINIMUM_IMAGE_SIDE:
        flags.append(f"too small ({width}x{height}, under {MINIMUM_IMAGE_SIDE} px)")
    if float(np.std(pixels)) < NEAR_CONSTANT_STANDARD_DEVIATION:
        flags.append(f"near-constant (pixel standard deviation {float(np.std(pixels)):.1f})")
    return flags


def why_not_a_file(path: Path) -> str:
    """Return why a path that is neither a folder nor a regular file cannot be read: missing, a broken link, a link
    loop, or a kind of file that is not an image (a FIFO, a device, a socket)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop"
        if path.is_symlink():
            return "no such file (a broken link)"
        return "no such file" if error.errno == errno.ENOENT else f"cannot read ({error.strerror or error})"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a special file")
    return f"not a regular file ({kind})"


def _read_input(file: str | os.PathLike, saved: SavedModel) -> list[tuple[str, str | None, np.ndarray, list[str]]]:
    """Decode one file as in training: (name, series, model input, input flags) per slice; one for an image file,
    one per frame or slice for DICOM and NIfTI (helpers.inputs.volumes)."""
    path = Path(file)
    if path.is_dir():
        raise CorruptImageError(f"{file}: is a folder, not an image file")
    if not path.is_file():
        raise CorruptImageError(f"{file}: {why_not_a_file(path)}")
    slices = read_slices(path) if is_volume(path) else [Slice(str(file), None, open_greyscale(path))]
    return [(piece.name, piece.series, prepare_image(piece.image, saved.image_size, saved.preprocessing)[0],
             input_flags(piece.image.width, piece.image.height, np.asarray(piece.image))) for piece in slices]


def _predict_batch(saved: SavedModel, batch: np.ndarray, batch_size: int, level: float | None,
                   adapted=None) -> list[dict]:
    """Return per image its class, confidence, probabilities and flags; with an uncertainty record the probabilities
    are calibrated and each image gets its conformal set and novelty score. adapted: the model adapted to the series
    (helpers.modeling.adaptation), which gives the probabilities; novelty stays the trained model's."""
    from helpers.uncertainty.conformal import NO_FIT_LEVEL
    from helpers.uncertainty.novelty import feature_extractor, logit_layers

    record = saved.uncertainty
    if record is None:
        raw = np.asarray((adapted or saved.model).predict(batch, batch_size=batch_size, verbose=0), dtype=np.float64)
        calibrated, sets, novelty, statistics, no_class_fits = raw, None, None, None, None
    else:
        saved.extractor = saved.extractor or feature_extractor(saved.model)
        raw, features = saved.extractor.predict(batch, batch_size=batch_size, verbose=0)
        raw = np.asarray(raw, dtype=np.float64)
        novelty = record.novelty(raw, np.asarray(features, dtype=np.float64), logit_layers(saved.model))
        statistics = record.statistics_novelty(batch)
        if adapted is not None:
            raw = np.asarray(adapted.predict(batch, batch_size=batch_size, verbose=0), dtype=np.float64)
        calibrated = record.calibrated(raw)
        sets, no_class_fits = record.answer_sets(calibrated, level)
    predictions = []
    for index, row in enumerate(calibrated):
        best = int(row.argmax())
        found = []
        if record is not None and novelty is not None and novelty[index] > record.threshold:
            found.append(f"unlike the training images ({record.method} {novelty[index]:.0f} over "
                         f"{record.threshold:.0f})")
        if record is not None and statistics is not None and statistics[index] > record.statistics_threshold:
            found.append(f"unlike the training images (image statistics {statistics[index]:.1f} over "
                         f"{record.statistics_threshold:.1f})")
        if record is None and saved.confidence_threshold is not None and row[best] < saved.confidence_threshold:
            found.append(f"unlike the training images (confidence {row[best]:.2f} under "
                         f"{saved.confidence_threshold:.2f})")
        if record is not None and no_class_fits is not None and no_class_fits[index]:
            found.append(f"no class fits (an empty conformal set at the {NO_FIT_LEVEL:.0%} level)")
        predictions.append({"predicted_class": saved.class_names[best], "confidence": float(row[best]),
                            "probabilities": {name: float(value) for name, value in zip(saved.class_names, row)},
                            "prediction_set": (None if sets is None else
                                               [name for name, inside in zip(saved.class_names, sets[index])
                                                if inside]),
                            "novelty_score": None if novelty is None else float(novelty[index]), "flags": found})
    return predictions


def _read_or_error(file: str | os.PathLike, saved: SavedModel) -> list | Prediction:
    """Return a file's slices as _read_input does, or its error entry."""
    try:
        return _read_input(file, saved)
    except CorruptImageError as error:
        return Prediction(str(file), None, None, None, str(error))
    except Exception as error:  # a reader's own failure on an unusual file ends that file only, never the others
        reason = str(error).splitlines()[0] if str(error) else ""
        return Prediction(str(file), None, None, None, f"{file}: cannot read ({type(error).__name__}: {reason})")


def predict_files(files: Sequence[str | os.PathLike] | str | os.PathLike,
                  model: SavedModel | str | os.PathLike | None = None, batch_size: int = 64,
                  progress: bool | None = False, level: float | None = None,
                  workers: int | None = None, adapt: bool = False) -> list[Prediction]:
    """Predict the class of every image file (one path, or a list of them), and of every slice of a DICOM file or NIfTI
    volume (named "file#index"); unreadable files get an error entry and the others are still predicted. A model with
    an uncertainty record gives calibrated probabilities, a conformal set at `level` (default: the record's, 0.9) and
    a novelty flag.

    Files are decoded on `workers` threads (default: one per CPU core, at most 8) and predicted FILES_PER_CHUNK at a
    time, so memory stays bounded for any number of files. progress: a progress bar over the files on stderr (None:
    only when stderr is a terminal). adapt: predict with the model's batch-normalisation statistics re-estimated on
    every image of the call (one series, folder or source; helpers.modeling.adaptation raises AdaptationError for too
    few images or a model without batch normalisation)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    files = [os.fsdecode(files)] if isinstance(files, (str, bytes, os.PathLike)) else list(files)
    saved = model if isinstance(model, SavedModel) else load_saved_model(model)
    results: list[Prediction] = []
    read_chunks: list[tuple[list, list]] = []  # with adapt, every chunk is read before any is predicted
    threads = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            tqdm(total=len(files), desc="reading images", unit="file", leave=False,
                 disable=None if progress is None else not progress) as shown:
        for start in range(0, len(files), FILES_PER_CHUNK):
            chunk = files[start:start + FILES_PER_CHUNK]
            entries: list[Prediction | tuple] = []
            images = []
            for read in pool.map(lambda file: _read_or_error(file, saved), chunk):
                shown.update(1)
                if isinstance(read, Prediction):
                    entries.append(read)
                    continue
                for name, series, image, found in read:
                    entries.append((name, series, found))
                    images.append(image)
            read_chunks.append((entries, images))
            if not adapt:
                results.extend(_chunk_results(saved, *read_chunks.pop(), batch_size, level))
    if adapt:
        every = np.asarray([image for _, images in read_chunks for image in images])
        adapted = adapted_model(saved.model, every[..., np.newaxis], batch_size, name=str(saved.path))
        for entries, images in read_chunks:
            results.extend(_chunk_results(saved, entries, images, batch_size, level, adapted))
    return results


def _chunk_results(saved: SavedModel, entries: list, images: list, batch_size: int, level: float | None,
                   adapted=None) -> list[Prediction]:
    """Return the predictions of one chunk of read files: its error entries as they are, its slices predicted."""
    predicted = iter(_predict_batch(saved, np.stack(images)[..., np.newaxis], batch_size, level, adapted)
                     if images else [])
    results = []
    for entry in entries:
        if isinstance(entry, Prediction):
            results.append(entry)
            continue
        name, series, found = entry
        prediction = next(predicted)
        flags = [*found, *prediction.pop("flags")]
        results.append(Prediction(name, **prediction, flags=flags, series=series, answer_withheld=bool(flags)))
    return results


def series_table(predictions: list[Prediction], class_names: tuple[str, ...]) -> list[dict]:
    """Return one summary per DICOM series or volume among the predictions (helpers.inputs.volumes.series_summaries)."""
    return series_summaries([asdict(prediction) for prediction in predictions], class_names, config.NO_TUMOUR_CLASS)


CLASS_WIDTH = 13  # "(meningioma?)": a withheld answer


def shown_name(text: str) -> str:
    """Return a file name (or message) on one line: newlines, tabs and other control characters escaped."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def format_table(predictions: list[Prediction], model_name: str = "", level: float | None = None,
                 series: list[dict] | None = None) -> str:
    """Return the predictions as an aligned text table, one line per file or slice: file, class, confidence, the
    conformal set (when the model has one) and flags (or the error); then one line per series summary."""
    names = {id(prediction): shown_name(prediction.file) for prediction in predictions}
    width = max([len("file")] + [len(name) for name in names.values()])
    with_sets = any(prediction.prediction_set is not None for prediction in predictions)
    sets = {id(prediction): describe_set(prediction.prediction_set)
            for prediction in predictions if prediction.prediction_set is not None}
    set_width = max([len("set")] + [len(text) for text in sets.values()])
    lines = [f"model: {model_name}"] if model_name else []
    if with_sets and level is not None:
        lines.append(f"set: the classes a {level:.0%} conformal prediction set holds")
    lines.append(f"{'file':<{width}}  {'class':<{CLASS_WIDTH}}  confidence  "
                 + (f"{'set':<{set_width}}  " if with_sets else "") + "flags")
    for prediction in predictions:
        if prediction.error:
            reason = shown_name(prediction.error.removeprefix(f"{prediction.file}: "))
            lines.append(f"{names[id(prediction)]:<{width}}  {'ERROR':<{CLASS_WIDTH}}  {reason}")
        else:
            shown = f"{sets.get(id(prediction), ''):<{set_width}}  " if with_sets else ""
            answer, flags = prediction.predicted_class, "; ".join(prediction.flags)
            if prediction.answer_withheld:
                answer, flags = f"({answer}?)", f"ANSWER WITHHELD: {flags}"
            lines.append(f"{names[id(prediction)]:<{width}}  {answer:<{CLASS_WIDTH}}  "
                         f"{prediction.confidence:10.3f}  {shown}{flags}".rstrip())
    for summary in series or []:
        counts = ", ".join(f"{name} {count}" for name, count in summary["slices_per_class"].items() if count)
        slices = f"{summary['slices']} slice{'' if summary['slices'] == 1 else 's'}"
        lines.append(shown_name(f"series {summary['series']}: {slices} ({counts}); highest tumour probability "
                                f"{summary['highest_tumour_probability']:.3f} at {summary['at_slice']}"))
    return "\n".join(lines)


def _write_output(text: str) -> bool:
    """Print the results and flush them; on a closed or failing standard output (a full disk, a closed pipe) say so
    in one line on stderr and return False."""
    try:
        if sys.stdout is None:
            raise OSError("standard output is closed")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        print(f"error: cannot write the results to standard output ({reason})", file=sys.stderr)
        with contextlib.suppress(AttributeError, OSError, ValueError):  # the rest of the buffer goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Print the class and confidence of each image file. Exit 0 when all were predicted, 1 if a file failed, 2 if no
    model could be loaded, 3 with --strict when an input was flagged, 130 when interrupted."""
    interrupts.until_output("nothing was predicted")
    try:
        return _predict_command(argv)
    finally:
        interrupts.command_started()


def _parser():
    """Return the command line parser of brain-mri-predict."""
    import argparse

    parser = argparse.ArgumentParser(prog="brain-mri-predict", description=main.__doc__)
    parser.add_argument("files", nargs="+", help="image files (any size, greyscale or colour), DICOM files, NIfTI "
                                                   "volumes (.nii, .nii.gz), or folders of them (a DICOM series)")
    parser.add_argument("--model", default=None,
                        help="a .keras model (with its .json label file beside it), a run folder, or an ensemble's "
                             ".json label file; default: the published model in models/")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 3 when an input is flagged (too small, near-constant, or unlike the "
                             "training images)")
    parser.add_argument("--level", type=float, default=None,
                        help="coverage level of the prediction sets, between 0 and 1 (default: the model's, 0.9)")
    parser.add_argument("--adapt", action="store_true",
                        help=f"re-estimate the model's batch-normalisation statistics on the images of this call "
                             f"before predicting (one series, folder or source; at least {MINIMUM_IMAGES} images)")
    return parser


def _predict_command(argv: list[str] | None) -> int:
    """Run brain-mri-predict (main's body, while Ctrl-C ends it at once until the results are printed)."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.level is not None and not 0.0 < arguments.level < 1.0:
        parser.error(f"--level must lie between 0 and 1 (for example 0.9), not {arguments.level}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    backend = use_inference_backend()
    files, notes = expand_folders(arguments.files)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        try:
            saved = load_saved_model(arguments.model)
        except (ModelNotFoundError, ModelFileError) as error:
            commands.failed(error)
            return EXIT_NO_MODEL
        predictions = predict_files(files, saved, progress=None if len(files) > 1 else False, level=arguments.level,
                                    adapt=arguments.adapt)
    except AdaptationError as error:
        commands.failed(error)
        return commands.EXIT_FAILED
    except KeyboardInterrupt:
        return commands.stopped("nothing was predicted")
    if interrupts.REQUESTED.is_set():  # a Ctrl-C that a library swallowed still ends the command
        return commands.stopped("nothing was printed")
    interrupts.command_started()
    level = arguments.level or (saved.uncertainty.level if saved.uncertainty else None)
    series = series_table(predictions, saved.class_names)
    adapted_to = sum(1 for item in predictions if not item.error) if arguments.adapt else None
    if arguments.json:
        text = json.dumps({"model": str(saved.path), "model_name": saved.name, "backend": backend,
                           "calibrated": saved.uncertainty is not None, "set_level": level,
                           "adapted_to_images": adapted_to,
                           "predictions": [asdict(item) for item in predictions], "series": series}, indent=2)
    else:
        text = format_table(predictions, f"{saved.name} ({saved.path})" + (
            f", adapted to these {adapted_to} images" if adapted_to else ""), level, series)
    if not _write_output(text):
        return EXIT_NO_OUTPUT
    failed = [prediction for prediction in predictions if prediction.error]
    flagged = [prediction for prediction in predictions if prediction.flags]
    if failed:
        print(f"{len(failed)} of {len(predictions)} files could not be predicted", file=sys.stderr)
        return commands.EXIT_FAILED
    if flagged:
        print(f"{len(flagged)} of {len(predictions)} inputs flagged", file=sys.stderr)
        return EXIT_FLAGGED if arguments.strict else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
