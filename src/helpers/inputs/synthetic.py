"""Small synthetic MRI-like phantom datasets in the Kaggle folder layout, for tests and the offline demo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, overload

import numpy as np
from PIL import Image, ImageFilter

from helpers import config
from helpers.files import staged_directory

FILE_PREFIX = {"Training": "Tr", "Testing": "Te"}
CLASS_ABBREVIATION = {"glioma": "gl", "meningioma": "me", "notumor": "no", "pituitary": "pi"}
# (width, height) of generated files: square and not, so the loader's resizing is exercised.
PHANTOM_SIZES = ((128, 128), (96, 96), (112, 96), (80, 120), (150, 150))


def _ellipse(height: int, width: int, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """Return a boolean mask of the filled ellipse with centre (y, x) and radii (ry, rx)."""
    rows, columns = np.mgrid[0:height, 0:width]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((columns - centre[1]) / radii[1]) ** 2 <= 1.0


def _smooth_noise(height: int, width: int, blur: float, generator: np.random.Generator) -> np.ndarray:
    """Return spatially smoothed noise in [0, 1], a texture like brain tissue."""
    noise = Image.fromarray((generator.random((height, width)) * 255).astype(np.uint8))
    smoothed = np.asarray(noise.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float64)
    spread = smoothed.max() - smoothed.min()
    return (smoothed - smoothed.min()) / spread if spread > 0 else np.zeros_like(smoothed)


@overload
def make_phantom_image(class_name: str, width: int, height: int, generator: np.random.Generator,
                       with_mask: Literal[False] = False) -> np.ndarray: ...
@overload
def make_phantom_image(class_name: str, width: int, height: int, generator: np.random.Generator,
                       with_mask: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...
def make_phantom_image(class_name: str, width: int, height: int, generator: np.random.Generator,
                       with_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Return one uint8 greyscale phantom slice: skull, textured hemispheres, ventricles and a class-typical mass
    (with_mask: and the mass's boolean mask)."""
    if class_name not in config.CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {', '.join(config.CLASS_NAMES)}")
    centre = (height * generator.uniform(0.47, 0.53), width * generator.uniform(0.47, 0.53))
    radii = (height * generator.uniform(0.38, 0.43), width * generator.uniform(0.33, 0.39))
    brain = _ellipse(height, width, centre, radii)
    skull = _ellipse(height, width, centre, (radii[0] * 1.08, radii[1] * 1.09)) & ~brain
    image = np.zeros((height, width))
    texture = _smooth_noise(height, width, blur=max(1.0, width / 60), generator=generator)
    image[brain] = 85 + 55 * texture[brain]
    image[skull] = generator.uniform(190, 230)
    columns = np.arange(width)[np.newaxis, :]
    image[brain & (np.abs(columns - centre[1]) < max(1, width // 100))] *= 0.55  # the midline
    for side in (-1, 1):  # two dark lateral ventricles
        ventricle = _ellipse(height, width, (centre[0] - 0.05 * radii[0], centre[1] + side * 0.18 * radii[1]),
                             (0.22 * radii[0], 0.08 * radii[1]))
        image[ventricle] = 35

    if class_name == "glioma":  # an irregular mass of several blobs inside one hemisphere, darker core
        side = generator.choice([-1, 1])
        mass_centre = (centre[0] + generator.uniform(-0.3, 0.2) * radii[0],
                       centre[1] + side * generator.uniform(0.35, 0.55) * radii[1])
        size = generator.uniform(0.24, 0.32) * radii[1]
        mass = np.zeros_like(brain)
        for _ in range(5):
            offset = generator.normal(0, 0.45 * size, 2)
            mass |= _ellipse(height, width, (mass_centre[0] + offset[0], mass_centre[1] + offset[1]),
                             (size * generator.uniform(0.5, 1.0), size * generator.uniform(0.5, 1.0)))
        mass &= brain
        image[mass] = 170 + 40 * texture[mass]
        image[mass & _ellipse(height, width, mass_centre, (0.4 * size, 0.4 * size))] = 60
        tumour = mass
    elif class_name == "meningioma":  # a round, bright, well-bounded mass at the brain's edge
        angle = generator.uniform(0, 2 * np.pi)
        size = generator.uniform(0.2, 0.26) * radii[1]
        mass_centre = (centre[0] + (radii[0] - 0.6 * size) * np.sin(angle),
                       centre[1] + (radii[1] - 0.6 * size) * np.cos(angle))
        mass = _ellipse(height, width, mass_centre, (size, size)) & brain
        image[mass] = generator.uniform(200, 235)
        tumour = mass
    elif class_name == "pituitary":  # a small bright mass near the centre-bottom
        size = generator.uniform(0.14, 0.18) * radii[1]
        mass_centre = (centre[0] + generator.uniform(0.5, 0.62) * radii[0],
                       centre[1] + generator.uniform(-0.08, 0.08) * radii[1])
        tumour = _ellipse(height, width, mass_centre, (size * 0.8, size * 1.1))
        image[tumour] = generator.uniform(195, 235)
    else:
        tumour = np.zeros_like(brain)

    image += generator.normal(0, 6, image.shape)  # scanner noise
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return (pixels, tumour) if with_mask else pixels


def _save_phantom(pixels: np.ndarray, path_without_suffix: Path, variant: int) -> Path:
    """Save a phantom in one of several encodings (greyscale or RGB JPEG, palette or RGBA PNG) by variant."""
    grey = Image.fromarray(pixels)
    if variant % 7 == 5:
        path = path_without_suffix.with_suffix(".png")
        grey.convert("P").save(path)
    elif variant % 7 == 6:
        path = path_without_suffix.with_suffix(".png")
        rgba = grey.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(path)
    elif variant % 2:
        path = path_without_suffix.with_suffix(".jpg")
        grey.convert("RGB").save(path, quality=92)
    else:
        path = path_without_suffix.with_suffix(".jpg")
        grey.save(path, quality=92)
    return path


def make_phantom_dataset(root: str | os.PathLike, training_per_class: int = 60, testing_per_class: int = 20,
                         seed: int = config.DEFAULT_SEED, overwrite: bool = False) -> Path:
    """Write a phantom dataset (Training/ and Testing/ with the four class folders) and return its root.

    Files have mixed sizes and encodings (greyscale and RGB JPEG, palette and RGBA PNG) so that they exercise
    the real loader. The folder appears only when complete.
    """
    root = Path(root).resolve()
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root}: already exists; pass overwrite=True to replace it")
    if training_per_class < 1 or testing_per_class < 1:
        raise ValueError("a phantom dataset needs at least one image per class in each split")
    generator = np.random.default_rng(seed)
    with staged_directory(root) as staging:
        for split, count in (("Training", training_per_class), ("Testing", testing_per_class)):
            for class_name in config.CLASS_NAMES:
                folder = staging / split / class_name
                folder.mkdir(parents=True)
                for number in range(count):
                    width, height = PHANTOM_SIZES[generator.integers(len(PHANTOM_SIZES))]
                    pixels = make_phantom_image(class_name, width, height, generator)
                    name = f"{FILE_PREFIX[split]}-{CLASS_ABBREVIATION[class_name]}_{number:04d}"
                    _save_phantom(pixels, folder / name, number)
    return root


# The external phantoms come from another "scanner": a darker contrast curve (gamma) and a wider field of view.
EXTERNAL_PHANTOM_GAMMA = 1.6
EXTERNAL_PHANTOM_BORDER = 0.2


def _external_phantom(class_name: str, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return a tumour phantom as another scanner would show it, with its tumour mask."""
    pixels, mask = make_phantom_image(class_name, 112, 112, generator, with_mask=True)
    border = int(EXTERNAL_PHANTOM_BORDER * 112)
    pixels = np.pad(255.0 * (pixels / 255.0) ** EXTERNAL_PHANTOM_GAMMA, border).round().astype(np.uint8)
    return pixels, np.pad(mask, border)


def make_phantom_external_sets(root: str | os.PathLike, per_part: int = 30, seed: int = config.DEFAULT_SEED,
                               overwrite: bool = False) -> Path:
    """Write generated stand-ins of the external sets (config.PHANTOM_EXTERNAL_SETS) and return their root.

    phantom-tumour holds tumours of every kind with box outlines in a VGG Image Annotator file; phantom-glioma holds
    gliomas of several "patients" with PNG masks and phantom-tumour-free tumour-free slices of them, both again in a
    second "sequence" (phantom-second-*). The folder appears only when complete.
    """
    import json

    root = Path(root).resolve()
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root}: already exists; pass overwrite=True to replace it")
    generator = np.random.default_rng(seed)
    tumour_classes = [name for name in config.CLASS_NAMES if name != config.NO_TUMOUR_CLASS]
    with staged_directory(root) as staging:
        for part in ("train", "test"):
            outlines = {}
            folder = staging / "phantom-tumour" / part
            folder.mkdir(parents=True)
            for number in range(per_part):
                pixels, mask = _external_phantom(tumour_classes[number % len(tumour_classes)], generator)
                name = f"y{part}{number:03d}.jpg"
                Image.fromarray(pixels).save(folder / name, quality=92)
                rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                x = [int(columns[0]), int(columns[-1]), int(columns[-1]), int(columns[0])]
                y = [int(rows[0]), int(rows[0]), int(rows[-1]), int(rows[-1])]
                outlines[name] = {"filename": name, "regions": [
                    {"shape_attributes": {"name": "polygon", "all_points_x": x, "all_points_y": y}}]}
            (staging / "phantom-tumour" / "annotations").mkdir(exist_ok=True)
            (staging / "phantom-tumour" / "annotations" / f"{part}.json").write_text(json.dumps(outlines))
            masks = staging / "phantom-glioma" / "masks"
            masks.mkdir(parents=True, exist_ok=True)
            for collection, class_name in (("glioma", "glioma"), ("tumour-free", config.NO_TUMOUR_CLASS)):
                first = staging / f"phantom-{collection}" / part
                second = staging / f"phantom-second-{collection}" / part
                first.mkdir(parents=True)
                second.mkdir(parents=True)
                for number in range(per_part):
                    pixels, mask = _external_phantom(class_name, generator)
                    name = f"TCGA_PH_{part[:2].upper()}{number // 5:02d}_20000101_{collection[0]}{number % 5}.png"
                    Image.fromarray(pixels).save(first / name)
                    Image.fromarray(_second_sequence(pixels)).save(second / name)
                    if class_name != config.NO_TUMOUR_CLASS:
                        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / name)
    return root


def _second_sequence(pixels: np.ndarray) -> np.ndarray:
    """Return a phantom as a second MRI sequence would show it: the contrast curve bent the other way."""
    return (255.0 * (pixels / 255.0) ** (1.0 / EXTERNAL_PHANTOM_GAMMA ** 2)).round().astype(np.uint8)
