"""Independent tumour sets: locate them, decode images and tumour outlines alike, split their train parts."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.model_selection import GroupShuffleSplit

from helpers import config
from helpers.inputs.data import (
    ImageSplit,
    MRIDataset,
    chosen_folder,
    dataset_fingerprint,
    file_hashes,
    image_files,
    load_dataset,
    split_validation,
)
from helpers.inputs.images import CorruptImageError, DataError, open_greyscale, prepare_image, prepare_mask

# Share of each external train part held out for validation (model selection), split by patient where known.
EXTERNAL_VALIDATION_FRACTION = 0.3
# TCGA slice names start with the patient: TCGA_<site>_<patient>_<date>_<slice>.png.
PATIENT_PATTERN = re.compile(r"^(TCGA_[A-Z0-9]+_[A-Z0-9]+)_")
# Paths of external images inside training splits start with this, so that they are told apart from the dataset's.
PATH_PREFIX = "external/"


class ExternalSetError(DataError):
    """An external set that is misplaced, incomplete or not laid out as configured."""


@dataclass
class ExternalImages:
    """One external set decoded like the dataset: images, tumour masks at the same size, paths, patient groups."""

    spec: config.ExternalSet
    images: np.ndarray  # (N, size, size) uint8
    masks: np.ndarray  # (N, size, size) bool; all False where the set gives no outline for an image
    paths: np.ndarray  # relative to the external-data folder
    groups: np.ndarray  # patient id where the file name gives one, else the file name
    hashes: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labels(self) -> np.ndarray:
        """Return the training label of every image: the truth's class index, or ANY_TUMOUR_LABEL."""
        label = (config.ANY_TUMOUR_LABEL if self.spec.truth == config.ANY_TUMOUR
                 else config.CLASS_NAMES.index(self.spec.truth))
        return np.full(len(self), label, dtype=np.int64)

    def take(self, indices: np.ndarray) -> ExternalImages:
        """Return the images at the given indices as a new set of the same kind."""
        return ExternalImages(self.spec, self.images[indices], self.masks[indices], self.paths[indices],
                              self.groups[indices], self.hashes[indices])

    def as_split(self) -> ImageSplit:
        """Return the images as a training split (labels as in `labels`, paths prefixed with external/)."""
        return ImageSplit(self.images, self.labels, np.array([PATH_PREFIX + path for path in self.paths]),
                          self.hashes)


def locate_external(external_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the external-data folder: the argument, else $BRAIN_MRI_EXTERNAL_DIR, else data/external if present.

    None means "not evaluated": nothing was asked for and the default folder does not exist. A folder that was asked
    for (argument or variable) but does not exist is an error.
    """
    candidate, source = chosen_folder(external_dir, config.EXTERNAL_DIR_VARIABLE, config.DEFAULT_EXTERNAL_DIR,
                                      "external_dir")
    if source == "the default folder":
        return candidate if candidate.is_dir() else None
    if not candidate.is_dir():
        raise ExternalSetError(f"{candidate}: no external-data folder (from {source})")
    return candidate


def _patient(path: Path) -> str:
    """Return the patient id in a file name where it gives one, else the file name."""
    found = PATIENT_PATTERN.match(path.name)
    return found.group(1) if found else path.name


def _shape_outline(shape: dict) -> list[tuple[float, float]]:
    """Return a VGG Image Annotator region (polygon, ellipse or circle) as a polygon of (x, y) points."""
    if shape["name"] == "polygon":
        return list(zip(shape["all_points_x"], shape["all_points_y"]))
    if shape["name"] in ("ellipse", "circle"):
        radius_x = shape["rx"] if shape["name"] == "ellipse" else shape["r"]
        radius_y = shape["ry"] if shape["name"] == "ellipse" else shape["r"]
        angle = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        turn = float(shape.get("theta", 0.0))
        x, y = radius_x * np.cos(angle), radius_y * np.sin(angle)
        return list(zip(shape["cx"] + x * np.cos(turn) - y * np.sin(turn),
                        shape["cy"] + x * np.sin(turn) + y * np.cos(turn)))
    raise KeyError(shape["name"])


def _polygon_masks(annotation_file: Path) -> dict[str, list[list[tuple[float, float]]]]:
    """Read a VGG Image Annotator file: file name -> outlines (polygons, ellipses, circles) as (x, y) polygons."""
    try:
        content = json.loads(annotation_file.read_text())
    except (OSError, ValueError) as error:
        raise ExternalSetError(f"{annotation_file}: cannot read the tumour outlines ({error})") from None
    entries = content.get("_via_img_metadata", content) if isinstance(content, dict) else None
    if not isinstance(entries, dict):
        raise ExternalSetError(f"{annotation_file}: not a VGG Image Annotator file (expected an object of images)")
    polygons: dict[str, list[list[tuple[float, float]]]] = {}
    for key, entry in entries.items():
        try:
            shapes = [region["shape_attributes"] for region in entry.get("regions", [])]
            polygons[entry["filename"]] = [_shape_outline(shape) for shape in shapes]
        except (KeyError, TypeError, AttributeError):
            raise ExternalSetError(f"{annotation_file}: entry {key!r} has no filename or malformed regions") from None
    return polygons


def load_external_set(spec: config.ExternalSet, root: Path, image_size: int = config.DEFAULT_IMAGE_SIZE,
                      preprocessing: str = "resize", first: int | None = None) -> ExternalImages:
    """Decode one external set (its first images in file order when first is given) and its tumour outlines with the
    dataset's own preprocessing (prepare_image)."""
    folder, annotations = root / spec.folder, (root / spec.annotations if spec.annotations else None)
    if not folder.is_dir():
        raise ExternalSetError(f"{folder}: external set {spec.name} not found")
    if annotations is not None and not annotations.exists():
        raise ExternalSetError(f"{annotations}: tumour outlines of {spec.name} not found")
    files = image_files(folder, "external set folder", ExternalSetError)[:first]
    polygons = _polygon_masks(annotations) if annotations is not None and annotations.is_file() else None
    images, masks = [], []
    for path in files:
        grey = open_greyscale(path)
        image, box = prepare_image(grey, image_size, preprocessing)
        if annotations is None:
            full_mask = np.zeros((grey.size[1], grey.size[0]), dtype=bool)
        elif polygons is not None:
            outline = Image.new("L", grey.size, 0)
            for polygon in polygons.get(path.name, []):
                if len(polygon) >= 3:
                    ImageDraw.Draw(outline).polygon(polygon, fill=255)
            full_mask = np.asarray(outline) > 0
        else:
            mask_path = annotations / path.with_suffix(".png").name
            try:
                with Image.open(mask_path) as mask_image:
                    mask_grey = mask_image.convert("L")
            except OSError as error:
                raise CorruptImageError(f"{mask_path}: cannot read the tumour mask of {path.name} ({error})") from None
            if mask_grey.size != grey.size:
                mask_grey = mask_grey.resize(grey.size, Image.Resampling.NEAREST)
            full_mask = np.asarray(mask_grey) > 127
        images.append(image)
        masks.append(prepare_mask(full_mask, box, image_size))
    relative = np.array([path.relative_to(root).as_posix() for path in files])
    return ExternalImages(spec, np.stack(images), np.stack(masks), relative,
                          np.array([_patient(path) for path in files]), np.array(file_hashes(files)))


def load_external_sets(external_dir: str | os.PathLike | None = None, image_size: int = config.DEFAULT_IMAGE_SIZE,
                       preprocessing: str = "resize", sets: tuple[config.ExternalSet, ...] = config.EXTERNAL_SETS,
                       parts: tuple[str, ...] = ("train", "test"), first: int | None = None
                       ) -> dict[str, ExternalImages]:
    """Load every configured set of the given parts that is present (the first images of each when first is given);
    {} when no external folder is configured."""
    root = locate_external(external_dir)
    if root is None:
        return {}
    return {spec.name: load_external_set(spec, root, image_size, preprocessing, first)
            for spec in sets if spec.part in parts and (root / spec.folder).is_dir()}


def of_collections(external: dict[str, ExternalImages],
                   collections: tuple[str, ...] | None) -> dict[str, ExternalImages]:
    """Return the external sets that belong to the given collections (None: every set)."""
    if collections is None:
        return dict(external)
    return {name: images for name, images in external.items() if images.spec.collection in collections}


def external_fingerprint(external: dict[str, ExternalImages],
                         collections: tuple[str, ...] | None = None) -> str | None:
    """Return one SHA-256 over the path and content of every image of the given collections' sets (None: all), or
    None when there are none."""
    external = of_collections(external, collections)
    if not external:
        return None
    paths = [path for item in external.values() for path in item.paths]
    hashes = [value for item in external.values() for value in item.hashes]
    return dataset_fingerprint(paths, hashes)


def split_external(images: ExternalImages, fraction: float = EXTERNAL_VALIDATION_FRACTION,
                   seed: int = config.DEFAULT_SEED) -> tuple[ExternalImages, ExternalImages]:
    """Split an external train part into training and validation images; a patient never falls on both sides."""
    if images.spec.part != "train":
        raise ValueError(f"{images.spec.name}: only train parts may be used for training or validation")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    kept, held_out = next(splitter.split(images.paths, groups=images.groups))
    return images.take(np.sort(kept)), images.take(np.sort(held_out))


def join_splits(*splits: ImageSplit) -> ImageSplit:
    """Return one split holding the images of all the given splits, in order."""
    return ImageSplit(*(np.concatenate([getattr(split, name) for split in splits])
                        for name in ("images", "labels", "paths", "hashes")))


def dataset_rows(paths: np.ndarray) -> np.ndarray:
    """Return the indices of the image paths that belong to the dataset itself, not to the external sets."""
    return np.flatnonzero(~np.char.startswith(np.asarray(paths).astype(str), PATH_PREFIX))


def add_external_training(training: ImageSplit, validation: ImageSplit, external: dict[str, ExternalImages],
                          seed: int = config.DEFAULT_SEED,
                          collections: tuple[str, ...] | None = None) -> tuple[ImageSplit, ImageSplit]:
    """Return training and validation joined by the train parts of the given collections' sets (None: every set),
    each split by patient (split_external)."""
    parts = [split_external(images, seed=seed) for images in of_collections(external, collections).values()
             if images.spec.part == "train"]
    return (join_splits(training, *[kept.as_split() for kept, _ in parts]),
            join_splits(validation, *[held_out.as_split() for _, held_out in parts]))


@dataclass
class TrainingData:
    """What one training run reads: the dataset, its training/validation/test splits, and the external sets."""

    dataset: MRIDataset
    training: ImageSplit
    validation: ImageSplit
    external: dict[str, ExternalImages]
    collections: tuple[str, ...] | None = None  # the collections whose train parts joined training (None: all)

    @property
    def external_fingerprint(self) -> str | None:
        """Return the fingerprint of the external images of the collections trained on, or None when there are none."""
        return external_fingerprint(self.external, self.collections)


def load_training_data(data_dir: str | os.PathLike | None, image_size: int, preprocessing: str,
                       external_training: bool, external_dir: str | os.PathLike | None = None,
                       progress: bool = True, sets: tuple[config.ExternalSet, ...] = config.EXTERNAL_SETS,
                       collections: tuple[str, ...] | None = None, on_error: str = "raise") -> TrainingData:
    """Load the dataset with a preprocessing (on_error as load_dataset's), split validation as the study does, and
    add the train parts of the given collections (None: every set) to training and validation when asked (failing
    when none are found, since the recipe relies on them)."""
    dataset = load_dataset(data_dir, image_size, progress=progress, preprocessing=preprocessing, on_error=on_error)
    external = load_external_sets(external_dir, image_size, preprocessing, sets=sets)
    if external_training and not any(images.spec.part == "train"
                                     for images in of_collections(external, collections).values()):
        raise ExternalSetError(f"{locate_external(external_dir) or config.DEFAULT_EXTERNAL_DIR}: the recipe trains "
                               f"on the external sets' train parts but none were found; set "
                               f"${config.EXTERNAL_DIR_VARIABLE}")
    return assemble_training_data(dataset, external, external_training, collections)


def assemble_training_data(dataset: MRIDataset, external: dict[str, ExternalImages], external_training: bool,
                           collections: tuple[str, ...] | None = None) -> TrainingData:
    """Split validation as the study does and add the given collections' train parts (None: every set) when asked."""
    training, validation = split_validation(dataset.training, seed=config.DEFAULT_SEED)
    if external_training:
        training, validation = add_external_training(training, validation, external, collections=collections)
    return TrainingData(dataset, training, validation, external, collections)
